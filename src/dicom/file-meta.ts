import {readElementHeader, requireBytes, skipElementValue} from './element-reader.js'
import {NotDicomError} from './not-dicom-error.js'
import {FILE_META_GROUP, FILE_META_GROUP_LENGTH, TRANSFER_SYNTAX_UID} from './tags.js'
import {EXPLICIT_LITTLE_ENDIAN_ENCODING} from './transfer-syntax.js'
import {trimDicomPadding} from './values.js'

export interface FileMeta {
  transferSyntaxUid: string
  // Offset of the first byte of the data set, right after the file meta group.
  dataSetOffset: number
}

const PREAMBLE_LENGTH = 128
const MAGIC = 'DICM'

export function readFileMeta(bytes: Buffer): FileMeta {
  if (bytes.length < PREAMBLE_LENGTH + MAGIC.length || bytes.toString('latin1', PREAMBLE_LENGTH, PREAMBLE_LENGTH + 4) !== MAGIC) {
    throw new NotDicomError('no-dicm-magic', `no "${MAGIC}" at offset ${PREAMBLE_LENGTH}`)
  }
  const start = PREAMBLE_LENGTH + MAGIC.length
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
