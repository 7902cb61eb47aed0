import {readElementHeader, requireBytes, skipElementValue} from './element-reader.js'
import {NotDicomError} from './not-dicom-error.js'
import {FILE_META_GROUP, FILE_META_GROUP_LENGTH, TRANSFER_SYNTAX_UID} from './tags.js'
import {
  type DataSetEncoding,
  EXPLICIT_LITTLE_ENDIAN_ENCODING,
  EXPLICIT_VR_BIG_ENDIAN,
  EXPLICIT_VR_LITTLE_ENDIAN,
  IMPLICIT_VR_LITTLE_ENDIAN,
} from './transfer-syntax.js'
import {trimDicomPadding} from './values.js'

export interface FileMeta {
  transferSyntaxUid: string
  // Offset of the first byte of the data set, right after the file meta group.
  dataSetOffset: number
}

/**
 * How a file holds its data set. Orthanc 1.10.1 accepts and stores all three as they came (checked
 * with POST /instances): a Part 10 file; the meta group without the 128-byte preamble and "DICM";
 * a bare data set in implicit VR little endian, explicit VR little endian or explicit VR big endian.
 * A "DICM" prefix without the preamble, on the other hand, it refuses.
 */
export type DicomFraming = 'part10' | 'meta-without-preamble' | 'data-set'

export interface DataSetLocation extends FileMeta {
  framing: DicomFraming
}

const PREAMBLE_LENGTH = 128
const MAGIC = 'DICM'

export function readFileMeta(bytes: Buffer): FileMeta {
  if (!hasPart10Magic(bytes)) {
    throw new NotDicomError('no-dicm-magic', `no "${MAGIC}" at offset ${PREAMBLE_LENGTH}`)
  }
  return readMetaGroup(bytes, PREAMBLE_LENGTH + MAGIC.length)
}

/**
 * Where the data set starts and how it is encoded, whatever the framing. A bare data set has no
 * transfer syntax to read: its encoding is told from its first element, as DCMTK does, and reported
 * as the matching uncompressed transfer syntax.
 */
export function locateDataSet(bytes: Buffer): DataSetLocation {
  if (hasPart10Magic(bytes)) return {framing: 'part10', ...readFileMeta(bytes)}
  if (startsWithMetaGroup(bytes)) return {framing: 'meta-without-preamble', ...readMetaGroup(bytes, 0)}
  const encoding = guessDataSetEncoding(bytes)
  if (encoding === undefined) {
    throw new NotDicomError('no-dicm-magic', `no "${MAGIC}" at offset ${PREAMBLE_LENGTH}, and no data element at offset 0`)
  }
  const transferSyntaxUid = !encoding.explicitVr ? IMPLICIT_VR_LITTLE_ENDIAN : encoding.littleEndian ? EXPLICIT_VR_LITTLE_ENDIAN : EXPLICIT_VR_BIG_ENDIAN
  return {framing: 'data-set', transferSyntaxUid, dataSetOffset: 0}
}

function hasPart10Magic(bytes: Buffer): boolean {
  return bytes.length >= PREAMBLE_LENGTH + MAGIC.length && bytes.toString('latin1', PREAMBLE_LENGTH, PREAMBLE_LENGTH + 4) === MAGIC
}

function readMetaGroup(bytes: Buffer, start: number): FileMeta {
  const declaredEnd = readDeclaredEnd(bytes, start)

  let position = start
  let transferSyntaxUid: string | undefined
  // Trust the group length when present: for a deflated data set the bytes after the
  // meta group are compressed and could happen to look like another group 0002 tag.
  while (declaredEnd === undefined ? nextGroupIsFileMeta(bytes, position) : position < declaredEnd) {
    const header = readElementHeader(bytes, position, EXPLICIT_LITTLE_ENDIAN_ENCODING)
    const end = skipElementValue(bytes, header, EXPLICIT_LITTLE_ENDIAN_ENCODING)
    if (header.tag === TRANSFER_SYNTAX_UID) {
      transferSyntaxUid = trimDicomPadding(bytes.toString('latin1', header.valueOffset, end))
    }
    position = end
  }

  if (transferSyntaxUid === undefined || transferSyntaxUid === '') {
    throw new NotDicomError('missing-attribute', 'file meta information has no Transfer Syntax UID (0002,0010)')
  }
  return {transferSyntaxUid, dataSetOffset: position}
}

function readDeclaredEnd(bytes: Buffer, start: number): number | undefined {
  const header = readElementHeader(bytes, start, EXPLICIT_LITTLE_ENDIAN_ENCODING)
  if (header.tag !== FILE_META_GROUP_LENGTH || header.length !== 4) {
    return undefined
  }
  requireBytes(bytes, header.valueOffset, 4)
  return header.valueOffset + 4 + bytes.readUInt32LE(header.valueOffset)
}

function nextGroupIsFileMeta(bytes: Buffer, position: number): boolean {
  return position + 2 <= bytes.length && bytes.readUInt16LE(position) === FILE_META_GROUP
}

// The meta group is always explicit VR little endian: (0002,xxxx) then a VR.
export function startsWithMetaGroup(bytes: Buffer): boolean {
  return bytes.length >= 8 && bytes.readUInt16LE(0) === FILE_META_GROUP && isVr(bytes, 4)
}

const LARGEST_DATA_SET_GROUP = 0x7fe0
const VALUE_REPRESENTATIONS = new Set([
  'AE', 'AS', 'AT', 'CS', 'DA', 'DS', 'DT', 'FD', 'FL', 'IS', 'LO', 'LT', 'OB', 'OD', 'OF', 'OL', 'OV', 'OW',
  'PN', 'SH', 'SL', 'SQ', 'SS', 'ST', 'SV', 'TM', 'UC', 'UI', 'UL', 'UN', 'UR', 'US', 'UT', 'UV',
])

/**
 * The encoding of a bare data set, from its first element: the byte order that gives the smaller
 * (even, data set) group number, explicit VR when a VR follows the tag. Implicit VR big endian is
 * no DICOM encoding, so a big-endian guess needs a VR. Undefined when the bytes cannot start a data set.
 */
function guessDataSetEncoding(bytes: Buffer): DataSetEncoding | undefined {
  if (bytes.length < 8) return undefined
  const little = bytes.readUInt16LE(0)
  const big = bytes.readUInt16BE(0)
  const explicitVr = isVr(bytes, 4)
  const plausible = (group: number) => group >= 0x0004 && group <= LARGEST_DATA_SET_GROUP && group % 2 === 0
  if (plausible(little) && (little <= big || !plausible(big))) {
    // Implicit VR: a 32-bit length that must fit in the file, unless undefined (a sequence).
    const length = bytes.readUInt32LE(4)
    if (!explicitVr && length !== 0xffffffff && length > bytes.length - 8) return undefined
    return {explicitVr, littleEndian: true}
  }
  if (plausible(big) && explicitVr) return {explicitVr: true, littleEndian: false}
  return undefined
}

function isVr(bytes: Buffer, offset: number): boolean {
  return VALUE_REPRESENTATIONS.has(bytes.toString('latin1', offset, offset + 2))
}
