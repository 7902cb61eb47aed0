import type {FileHandle} from 'node:fs/promises'
import {open} from 'node:fs/promises'

/** One entry of a tar file, located without reading its data. */
export interface IndexedEntry {
  name: string
  type: string
  size: number
  linkname: string
  /** Where the entry's data starts in the file. */
  dataOffset: number
  /** The file ends before this entry's data does. */
  truncated: boolean
}

export interface TarIndex {
  entries: IndexedEntry[]
  /** The two zero blocks that close a tar were found. */
  endMarker: boolean
  /** Why the scan stopped early, if it did (a damaged header). */
  damage?: string
  fileSize: number
}

const BLOCK = 512
/** pax and GNU long-name headers are a few hundred bytes in practice; refuse to buffer more. */
const MAX_LONG_HEADER = 1024 * 1024

const TYPES: Record<string, string> = {
  '0': 'file', '\0': 'file', '7': 'contiguous-file', '1': 'link', '2': 'symlink', '3': 'character-device',
  '4': 'block-device', '5': 'directory', '6': 'fifo', x: 'pax-header', g: 'pax-global-header', L: 'gnu-long-path', K: 'gnu-long-link-path',
}

/**
 * Lists a tar file's entries by reading only their headers and seeking over their data: the
 * tag files at the end of a volume can be read before its payload is streamed. Handles ustar
 * prefixes, pax path/size records and GNU long names, with bounded header sizes.
 */
export async function indexTarFile(path: string): Promise<TarIndex> {
  const file = await open(path, 'r')
  try {
    const {size: fileSize} = await file.stat()
    const entries: IndexedEntry[] = []
    let offset = 0
    let pending: {path?: string; size?: number; linkpath?: string} = {}
    for (;;) {
      const block = await readAt(file, offset, BLOCK)
      if (block.length < BLOCK) return {entries, endMarker: false, fileSize, damage: block.length === 0 ? undefined : 'the file ends inside a header'}
      if (isZero(block)) {
        const next = await readAt(file, offset + BLOCK, BLOCK)
        return {entries, endMarker: next.length === BLOCK && isZero(next), fileSize}
      }

      if (!checksumMatches(block)) return {entries, endMarker: false, fileSize, damage: `damaged header at byte ${offset}`}
      const header = parseHeader(block)
      const dataOffset = offset + BLOCK
      const next = dataOffset + Math.ceil(header.size / BLOCK) * BLOCK
      if (header.type === 'pax-header' || header.type === 'pax-global-header' || header.type === 'gnu-long-path' || header.type === 'gnu-long-link-path') {
        if (header.size > MAX_LONG_HEADER) return {entries, endMarker: false, fileSize, damage: `extended header of ${header.size} bytes at byte ${offset}`}
        const data = await readAt(file, dataOffset, header.size)
        if (data.length < header.size) return {entries, endMarker: false, fileSize, damage: 'the file ends inside an extended header'}
        if (header.type === 'pax-header') pending = {...pending, ...parsePax(data)}
        else if (header.type === 'gnu-long-path') pending.path = cString(data)
        else if (header.type === 'gnu-long-link-path') pending.linkpath = cString(data)
        offset = next
        continue
      }

      const size = pending.size ?? header.size
      const entry: IndexedEntry = {
        name: pending.path ?? header.name,
        type: header.type,
        size,
        linkname: pending.linkpath ?? header.linkname,
        dataOffset,
        truncated: dataOffset + size > fileSize,
      }
      entries.push(entry)
      pending = {}
      offset = dataOffset + Math.ceil(size / BLOCK) * BLOCK
      if (entry.truncated) return {entries, endMarker: false, fileSize}
    }
  } finally {
    await file.close()
  }
}

/** Reads one indexed entry's bytes (for tag files; the caller bounds the size). */
export async function readIndexedEntry(path: string, entry: IndexedEntry): Promise<Buffer> {
  const file = await open(path, 'r')
  try {
    return await readAt(file, entry.dataOffset, entry.size)
  } finally {
    await file.close()
  }
}

async function readAt(file: FileHandle, position: number, length: number): Promise<Buffer> {
  const buffer = Buffer.alloc(length)
  let filled = 0
  while (filled < length) {
    const {bytesRead} = await file.read(buffer, filled, length - filled, position + filled)
    if (bytesRead === 0) break
    filled += bytesRead
  }

  return buffer.subarray(0, filled)
}

function isZero(block: Buffer): boolean {
  for (const byte of block) if (byte !== 0) return false
  return true
}

function checksumMatches(block: Buffer): boolean {
  let sum = 0
  for (let index = 0; index < BLOCK; index++) sum += index >= 148 && index < 156 ? 32 : block[index]!
  const stored = Number.parseInt(cString(block.subarray(148, 156)).trim(), 8)
  return stored === sum
}

function parseHeader(block: Buffer): {name: string; type: string; size: number; linkname: string} {
  const name = cString(block.subarray(0, 100))
  const magic = block.subarray(257, 263).toString('latin1')
  const prefix = magic.startsWith('ustar') && magic !== 'ustar ' ? cString(block.subarray(345, 500)) : ''
  const flag = String.fromCharCode(block[156]!)
  return {
    name: prefix ? `${prefix}/${name}` : name,
    type: TYPES[flag] ?? `unknown type "${flag}"`,
    size: parseNumber(block.subarray(124, 136)),
    linkname: cString(block.subarray(157, 257)),
  }
}

/** Octal digits, or GNU base-256 when the high bit of the first byte is set (sizes over 8 GiB). */
function parseNumber(field: Buffer): number {
  if (field[0]! & 0x80) {
    let value = 0
    for (let index = 1; index < field.length; index++) value = value * 256 + field[index]!
    return value
  }

  const text = cString(field).trim()
  return text === '' ? 0 : Number.parseInt(text, 8)
}

function parsePax(data: Buffer): {path?: string; size?: number; linkpath?: string} {
  const result: {path?: string; size?: number; linkpath?: string} = {}
  let rest = data
  while (rest.length > 0) {
    const space = rest.indexOf(0x20)
    const length = Number.parseInt(rest.subarray(0, space).toString('latin1'), 10)
    if (space <= 0 || !(length > space) || length > rest.length) break
    const record = rest.subarray(space + 1, length - 1).toString('utf8')
    const equals = record.indexOf('=')
    const key = record.slice(0, equals)
    const value = record.slice(equals + 1)
    if (key === 'path') result.path = value
    else if (key === 'linkpath') result.linkpath = value
    else if (key === 'size') result.size = Number(value)
    rest = rest.subarray(length)
  }

  return result
}

function cString(field: Buffer): string {
  const end = field.indexOf(0)
  return field.subarray(0, end === -1 ? field.length : end).toString('utf8')
}
