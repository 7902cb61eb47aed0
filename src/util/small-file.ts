import {readFileSync, statSync} from 'node:fs'

/**
 * A small file the user names (a password, a certificate, a list of IDs), read whole. Only a
 * regular file of at most `maxBytes`: a FIFO would block the process before any signal can stop
 * it, and /dev/zero or a wrong large file would fill the memory. The error's `code` says which
 * (ENOTFILE, ETOOBIG), as a system error's would.
 */
export function readSmallFile(path: string, maxBytes: number): Buffer {
  const stats = statSync(path)
  if (!stats.isFile()) throw Object.assign(new Error(`${path} is not a regular file`), {code: 'ENOTFILE: not a regular file'})
  if (stats.size > maxBytes) throw Object.assign(new Error(`${path} holds ${stats.size} bytes`), {code: `ETOOBIG: larger than ${maxBytes} bytes`})
  return readFileSync(path)
}

/** Passwords and certificates: a certificate chain is a few kB. */
export const CREDENTIAL_FILE_BYTES = 1024 * 1024
/** A list of IDs for a filter: a million patient IDs. */
export const LIST_FILE_BYTES = 64 * 1024 * 1024
