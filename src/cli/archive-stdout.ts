import {createWriteStream, fstatSync} from 'node:fs'
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
  return kind.isFIFO() || kind.isSocket() ? process.stdout : createWriteStream('', {fd: 1, autoClose: false})
}
