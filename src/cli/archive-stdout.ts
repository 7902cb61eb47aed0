import fs, {createWriteStream, fstatSync} from 'node:fs'
import type {Writable} from 'node:stream'

import {UserFacingError} from '../errors.js'

/**
 * Standard output as a place to write an archive to. Into a pipe or a socket it is
 * process.stdout, whose failures (a reader gone) arrive as errors on the stream. Into a file or
 * a device, Node writes process.stdout synchronously and a failure (a full disk, /dev/full) is
 * thrown where nobody can catch it: there, descriptor 1 is written through a file stream, whose
 * failures reach the writer like any other.
 */
export function archiveStdout(options: {dryRun?: boolean} = {}): Writable {
  if (process.stdout.isTTY) {
    throw new UserFacingError('standard output is a terminal: an archive there would only scroll by', 'Redirect it to a file or a pipe (export -o - > archive.tar, or | ssh ...), or give --output a folder.', 'usage', 'stdout-is-terminal')
  }

  const kind = fstatSync(1)
  // Node gives a process started with descriptor 1 closed (>&-) /dev/null in its place: every
  // write would succeed, and the export end with exit 0 with its archive nowhere.
  if (!options.dryRun && isDiscardingDevice(kind)) {
    throw new UserFacingError('standard output is /dev/null or /dev/zero (or was closed): the archive would be thrown away', 'Redirect it to a file or a pipe (export -o - > archive.tar, or | ssh ...), give --output a folder, or use --dry-run to see what would be exported.', 'usage', 'stdout-discards')
  }
  if (kind.isFIFO() || kind.isSocket()) return process.stdout
  // Descriptor 1 carries the archive alone, through the stream below: nothing written to
  // process.stdout may land in it. oclif still writes an empty string there when the command
  // ends, which on a full device failed too and ended the process with exit 1, not 13.
  process.stdout.write = ((...args: unknown[]) => {
    const callback = args.find((arg) => typeof arg === 'function') as (() => void) | undefined
    if (callback) queueMicrotask(callback)
    return true
  }) as typeof process.stdout.write
  // A stream destroyed on an error closes its descriptor whatever autoClose says: descriptor 1
  // closed, that last write failed with EBADF, and the next file opened could have taken number 1.
  // Descriptor 1 stays open: it is the process's.
  return createWriteStream('', {fd: 1, autoClose: false, fs: {...fs, close: (_fd: number, callback: (error: NodeJS.ErrnoException | null) => void) => callback(null)}})
}

const DISCARDING_DEVICES = ['/dev/null', '/dev/zero']

function isDiscardingDevice(stdout: fs.Stats): boolean {
  if (!stdout.isCharacterDevice()) return false
  return DISCARDING_DEVICES.some((path) => {
    try {
      return fs.statSync(path).rdev === stdout.rdev
    } catch {
      return false
    }
  })
}
