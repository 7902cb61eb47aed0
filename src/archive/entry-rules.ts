import {constants as bufferConstants} from 'node:buffer'

import {printable} from '../util/printable.js'

/**
 * What an archive entry may be, checked on the header before any byte of it is used. The
 * rules follow Python's PEP 706 "data" filter: regular files only, relative paths that stay
 * inside the bag, no links or devices, sizes within limits.
 */

export interface EntryHeader {
  name: string
  type: string
  size: number
  linkname?: string | null
  /** GNU sparse keys in its pax header: its data is a sparse map, not the file's bytes. */
  sparse?: boolean
}

export interface EntryLimits {
  /** Largest payload entry accepted (an instance or attachment). */
  maxEntryBytes: number
  /** Largest tag file accepted (manifests of a volume). */
  maxTagFileBytes: number
}

export const DEFAULT_ENTRY_LIMITS: EntryLimits = {
  maxEntryBytes: 8 * 1024 ** 3,
  maxTagFileBytes: 16 * 1024 ** 2,
}

/**
 * An accepted entry is held in one Buffer, so none may be larger than 4 GiB whatever the limits
 * say: the largest Buffer on Node 20, and as far as a DICOM file's 32-bit lengths reach.
 */
export const MAX_ENTRY_IN_MEMORY = Math.min(bufferConstants.MAX_LENGTH, 4 * 1024 ** 3)

export interface EntryLocation {
  /** The bag's root directory: the volume's name. */
  bag: string
  /** The path inside the bag: bagit.txt, data/dicom/..., orthanc/manifest.json */
  path: string
}

export class EntryRefusedError extends Error {
  constructor(readonly entry: string, readonly reason: string, readonly kind: 'hostile' | 'duplicate' = 'hostile') {
    super(`archive entry "${printable(entry)}" refused: ${reason}`)
    this.name = 'EntryRefusedError'
  }
}

/** Throws EntryRefusedError for a header this format never contains; returns where the entry belongs otherwise. */
export function checkEntryHeader(header: EntryHeader, limits: EntryLimits): EntryLocation | undefined {
  const {name} = header
  if (header.type === 'directory') {
    if (header.size !== 0) throw new EntryRefusedError(name, `a directory entry that carries ${header.size} bytes of data`)
    return undefined
  }

  if (header.type === 'symlink' || header.type === 'link') throw new EntryRefusedError(name, `${header.type === 'link' ? 'hard' : 'symbolic'} link (to "${printable(header.linkname ?? '')}")`)
  if (header.type !== 'file' && header.type !== 'contiguous-file') throw new EntryRefusedError(name, `${header.type} entries are not allowed`)
  if (header.sparse) throw new EntryRefusedError(name, 'sparse file entries are not allowed (their data is a map of holes, not the file)')
  if (name.includes('\0') || name.includes('\\')) throw new EntryRefusedError(name, 'the path contains a NUL or a backslash')
  if (name.startsWith('/') || /^[a-zA-Z]:/.test(name)) throw new EntryRefusedError(name, 'absolute path')
  const parts = name.split('/')
  if (parts.some((part) => part === '..')) throw new EntryRefusedError(name, 'the path climbs out with ".."')
  if (parts.some((part) => part === '' || part === '.')) throw new EntryRefusedError(name, 'the path has empty or "." segments')
  if (parts.length < 2) throw new EntryRefusedError(name, 'the entry is not inside a bag directory')
  const path = parts.slice(1).join('/')
  const limit = Math.min(path.startsWith('data/') ? limits.maxEntryBytes : limits.maxTagFileBytes, MAX_ENTRY_IN_MEMORY)
  if (!(header.size >= 0) || header.size > limit) throw new EntryRefusedError(name, `size ${header.size} is over the limit of ${limit} bytes`)
  return {bag: parts[0]!, path}
}

// Entry names come from the archive: shown without control characters (see printable).
export {printable}
