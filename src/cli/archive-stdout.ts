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
export function archiveStdout(): Writable {
  if (process.stdout.isTTY) {
    throw new UserFacingError('standard output is a terminal: an archive there would only scroll by', 'Redirect it to a file or a pipe (export -o - > archive.tar, or | ssh ...), or give --output a folder.', 'usage', 'stdout-is-terminal')
  }

  const kind = fstatSync(1)
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
