/**
 * One tar header block, and the extended headers (pax, GNU long names) that amend the next one:
 * parsed strictly, every numeric field range-checked, so that a damaged block is recognised as
 * damaged instead of being read as a plausible entry. Shared by the stream reader and the file
 * index (tar-scanner.ts).
 */

export const BLOCK = 512

/** pax and GNU long-name headers are a few hundred bytes in practice; larger ones are skipped unread. */
export const MAX_EXTENDED_HEADER_BYTES = 1024 * 1024

export interface HeaderBlock {
  name: string
  /** 'file', 'directory', 'symlink', 'pax-header', ... or `unknown type "c"`. */
  type: string
  size: number
  linkname: string
}

export type HeaderParse = {ok: true; header: HeaderBlock} | {ok: false; reason: string}

const TYPES: Record<string, string> = {
  '0': 'file', '\0': 'file', '7': 'contiguous-file', '1': 'link', '2': 'symlink', '3': 'character-device',
  '4': 'block-device', '5': 'directory', '6': 'fifo', x: 'pax-header', g: 'pax-global-header', L: 'gnu-long-path', K: 'gnu-long-link-path',
  // GNU extensions that are headers all the same: refused as entries, but a resynchronising reader may stop on them.
  D: 'gnu-dump-directory', M: 'gnu-multi-volume', N: 'gnu-old-long-name', S: 'gnu-sparse', V: 'gnu-volume-label',
}

export const EXTENDED_TYPES = new Set(['pax-header', 'pax-global-header', 'gnu-long-path', 'gnu-long-link-path'])

// Field positions (POSIX.1-1988 ustar; GNU uses the prefix area for other things).
const NUMERIC_FIELDS: Array<[name: string, start: number, length: number, signed: boolean]> = [
  ['mode', 100, 8, false], ['uid', 108, 8, false], ['gid', 116, 8, false], ['size', 124, 12, false], ['mtime', 136, 12, true],
]

const DEVICE_FIELDS: Array<[name: string, start: number, length: number, signed: boolean]> = [['devmajor', 329, 8, false], ['devminor', 337, 8, false]]

export function isZeroBlock(block: Buffer): boolean {
  for (let index = 0; index < block.length; index++) if (block[index] !== 0) return false
  return true
}

/** The offset of the first non-zero byte, or -1. */
export function firstNonZero(bytes: Buffer): number {
  for (let index = 0; index < bytes.length; index++) if (bytes[index] !== 0) return index
  return -1
}

/**
 * Parses a header block, or says why it is not one: a checksum that does not match, a magic
 * that is neither POSIX ustar nor GNU, a numeric field that is not a number in range.
 */
export function parseHeaderBlock(block: Buffer): HeaderParse {
  const magic = block.toString('latin1', 257, 263)
  const gnu = magic === 'ustar ' && block[263] === 0x20 && block[264] === 0
  if (magic !== 'ustar\0' && !gnu) return {ok: false, reason: 'no ustar magic'}
  const stored = parseNumeric(block, 148, 8, false)
  if (stored === undefined) return {ok: false, reason: 'the checksum field is not a number'}
  let unsigned = 0
  let signed = 0
  for (let index = 0; index < BLOCK; index++) {
    const byte = index >= 148 && index < 156 ? 0x20 : block[index]!
    unsigned += byte
    signed += byte > 127 ? byte - 256 : byte
  }

  // Some old writers summed signed bytes; both sums are accepted, as GNU tar does.
  if (stored !== unsigned && stored !== signed) return {ok: false, reason: `checksum mismatch (the header says ${stored}, its bytes sum to ${unsigned})`}
  const values = new Map<string, number>()
  for (const [name, start, length, signedField] of gnu ? NUMERIC_FIELDS : [...NUMERIC_FIELDS, ...DEVICE_FIELDS]) {
    const value = parseNumeric(block, start, length, signedField)
    if (value === undefined) return {ok: false, reason: `its ${name} field is not a number in range`}
    values.set(name, value)
  }

  const flag = String.fromCharCode(block[156]!)
  const name = cString(block.subarray(0, 100))
  // The prefix field is POSIX's; GNU keeps access and change times there.
  const prefix = gnu ? '' : cString(block.subarray(345, 500))
  return {
    ok: true,
    header: {
      name: prefix ? `${prefix}/${name}` : name,
      type: TYPES[flag] ?? `unknown type "${flag === '\0' ? '\\0' : flag}"`,
      size: values.get('size')!,
      linkname: cString(block.subarray(157, 257)),
    },
  }
}

/** Whether a valid header is also a plausible one: a known type, and a name for everything but extended headers. */
export function isPlausible(header: HeaderBlock): boolean {
  return !header.type.startsWith('unknown') && (EXTENDED_TYPES.has(header.type) || header.name.length > 0)
}

/**
 * A numeric header field: octal digits (leading spaces or zeros, ended by NUL or space, or
 * filling the field), or GNU base-256 when the high bit of the first byte is set (sizes of
 * 8 GiB and more, negative times). Undefined when it is neither, or out of the safe integer range.
 */
export function parseNumeric(block: Buffer, start: number, length: number, signed: boolean): number | undefined {
  const first = block[start]!
  if (first === 0xff) {
    // GNU base-256, negative: two's complement over the whole field (times before 1970).
    if (!signed) return undefined
    let magnitude = 0
    for (let index = start + 1; index < start + length; index++) {
      magnitude = magnitude * 256 + (0xff - block[index]!)
      if (magnitude > Number.MAX_SAFE_INTEGER) return undefined
    }

    return -(magnitude + 1)
  }

  if (first & 0x80) {
    // GNU base-256, positive: 0x80, then the value big-endian. Any other high bit is beyond the safe range.
    if (first !== 0x80) return undefined
    let value = 0
    for (let index = start + 1; index < start + length; index++) {
      value = value * 256 + block[index]!
      if (value > Number.MAX_SAFE_INTEGER) return undefined
    }

    return value
  }

  let index = start
  const end = start + length
  while (index < end && block[index] === 0x20) index++
  let value = 0
  for (; index < end; index++) {
    const byte = block[index]!
    if (byte === 0 || byte === 0x20) break
    if (byte < 0x30 || byte > 0x37) return undefined
    value = value * 8 + (byte - 0x30)
  }

  // After the terminator only NULs and spaces may follow.
  for (; index < end; index++) if (block[index] !== 0 && block[index] !== 0x20) return undefined
  return value
}

/** What pax records change for the entry they precede: only these keys matter to this reader. */
export interface PaxValues {
  path?: string
  linkpath?: string
  size?: number
  /** GNU sparse-file keys: the entry's data is not the file's bytes. */
  sparse?: boolean
}

export type PaxParse = {ok: true; values: PaxValues} | {ok: false; reason: string}

/** Parses pax records ("<length> <key>=<value>\n", the length counting the whole record), strictly. */
export function parsePaxRecords(data: Buffer): PaxParse {
  const values: PaxValues = {}
  let offset = 0
  while (offset < data.length) {
    // Some writers pad the record area with NULs.
    if (data[offset] === 0 && firstNonZero(data.subarray(offset)) === -1) break
    const space = data.indexOf(0x20, offset)
    if (space === -1 || space - offset > 20) return {ok: false, reason: `pax record at byte ${offset} has no length`}
    const lengthText = data.toString('latin1', offset, space)
    if (!/^[1-9]\d*$/.test(lengthText)) return {ok: false, reason: `pax record at byte ${offset} has no length`}
    const length = Number(lengthText)
    const end = offset + length
    if (end > data.length || length <= lengthText.length + 3) return {ok: false, reason: `pax record at byte ${offset} claims ${length} bytes, ${data.length - offset} are left`}
    if (data[end - 1] !== 0x0a) return {ok: false, reason: `pax record at byte ${offset} does not end with a newline`}
    const record = data.toString('utf8', space + 1, end - 1)
    const equals = record.indexOf('=')
    if (equals <= 0) return {ok: false, reason: `pax record at byte ${offset} has no key`}
    const key = record.slice(0, equals)
    const value = record.slice(equals + 1)
    if (key === 'path') values.path = value
    else if (key === 'linkpath') values.linkpath = value
    else if (key === 'size') {
      if (!/^\d{1,16}$/.test(value) || Number(value) > Number.MAX_SAFE_INTEGER) return {ok: false, reason: `pax size "${value.slice(0, 40)}" is not a number in range`}
      values.size = Number(value)
    } else if (key.startsWith('GNU.sparse.')) {
      values.sparse = true
    }

    offset = end
  }

  return {ok: true, values}
}

/** A NUL-terminated UTF-8 string (GNU long names, ustar fields). */
export function cString(field: Buffer): string {
  const end = field.indexOf(0)
  return field.subarray(0, end === -1 ? field.length : end).toString('utf8')
}

export function paddedSize(size: number): number {
  return Math.ceil(size / BLOCK) * BLOCK
}
