import {NotDicomError} from './not-dicom-error.js'
import {
  formatTag,
  ITEM,
  ITEM_DELIMITATION,
  SEQUENCE_DELIMITATION,
  tagOf,
} from './tags.js'
import {type DataSetEncoding, IMPLICIT_LITTLE_ENDIAN_ENCODING} from './transfer-syntax.js'

export interface ElementHeader {
  tag: number
  // Absent in implicit VR data sets and on item and delimitation tags, which never carry one.
  vr: string | undefined
  // Absent when the element has undefined length (0xFFFFFFFF).
  length: number | undefined
  valueOffset: number
}

const UNDEFINED_LENGTH = 0xffffffff
const ITEM_GROUP = 0xfffe

// In explicit VR these VRs are followed by two reserved bytes and a 32-bit length;
// every other VR has a 16-bit length.
const VRS_WITH_32_BIT_LENGTH = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'SV', 'UC', 'UN', 'UR', 'UT', 'UV'])

export function readElementHeader(bytes: Buffer, offset: number, encoding: DataSetEncoding): ElementHeader {
  requireBytes(bytes, offset, 8)
  const littleEndian = encoding.littleEndian
  const group = littleEndian ? bytes.readUInt16LE(offset) : bytes.readUInt16BE(offset)
  const element = littleEndian ? bytes.readUInt16LE(offset + 2) : bytes.readUInt16BE(offset + 2)
  const tag = tagOf(group, element)

  if (group === ITEM_GROUP || !encoding.explicitVr) {
    const length = littleEndian ? bytes.readUInt32LE(offset + 4) : bytes.readUInt32BE(offset + 4)
    return {tag, vr: undefined, length: definedLength(length), valueOffset: offset + 8}
  }

  const vr = bytes.toString('latin1', offset + 4, offset + 6)
  if (!isUpperCaseLetter(bytes[offset + 4]) || !isUpperCaseLetter(bytes[offset + 5])) {
    throw new NotDicomError('malformed', `invalid VR for ${formatTag(tag)} at offset ${offset + 4}`)
  }
  if (VRS_WITH_32_BIT_LENGTH.has(vr)) {
    requireBytes(bytes, offset, 12)
    const length = littleEndian ? bytes.readUInt32LE(offset + 8) : bytes.readUInt32BE(offset + 8)
    return {tag, vr, length: definedLength(length), valueOffset: offset + 12}
  }
  const length = littleEndian ? bytes.readUInt16LE(offset + 6) : bytes.readUInt16BE(offset + 6)
  return {tag, vr, length, valueOffset: offset + 8}
}

// Returns the offset just past the element's value. Values of defined length are
// jumped over without looking inside, which is why no data dictionary is needed even
// for implicit VR: only undefined-length values (sequences, UN holding a sequence,
// encapsulated pixel data) have to be walked, and those are self-delimiting.
export function skipElementValue(bytes: Buffer, header: ElementHeader, encoding: DataSetEncoding): number {
  if (header.length !== undefined) {
    requireBytes(bytes, header.valueOffset, header.length)
    return header.valueOffset + header.length
  }
  // PS3.5 6.2.2: a UN value of undefined length is a sequence encoded in implicit VR little endian.
  const itemEncoding = header.vr === 'UN' ? IMPLICIT_LITTLE_ENDIAN_ENCODING : encoding
  return skipItems(bytes, header.valueOffset, itemEncoding)
}

function skipItems(bytes: Buffer, offset: number, encoding: DataSetEncoding): number {
  let position = offset
  for (;;) {
    const item = readElementHeader(bytes, position, encoding)
    if (item.tag === SEQUENCE_DELIMITATION) {
      return item.valueOffset
    }
    if (item.tag !== ITEM) {
      throw new NotDicomError('malformed', `expected an item, found ${formatTag(item.tag)} at offset ${position}`)
    }
    if (item.length === undefined) {
      position = skipItemContent(bytes, item.valueOffset, encoding)
    } else {
      requireBytes(bytes, item.valueOffset, item.length)
      position = item.valueOffset + item.length
    }
  }
}

function skipItemContent(bytes: Buffer, offset: number, encoding: DataSetEncoding): number {
  let position = offset
  for (;;) {
    const header = readElementHeader(bytes, position, encoding)
    if (header.tag === ITEM_DELIMITATION) {
      return header.valueOffset
    }
    position = skipElementValue(bytes, header, encoding)
  }
}

export function requireBytes(bytes: Buffer, offset: number, count: number): void {
  if (offset + count > bytes.length) {
    throw new NotDicomError('truncated', `needed ${count} bytes at offset ${offset}, file has ${bytes.length}`)
  }
}

function definedLength(length: number): number | undefined {
  return length === UNDEFINED_LENGTH ? undefined : length
}

function isUpperCaseLetter(byte: number | undefined): boolean {
  return byte !== undefined && byte >= 0x41 && byte <= 0x5a
}
