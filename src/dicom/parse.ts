import {inflateRawSync} from 'node:zlib'
import {decodeText} from './charset.js'
import {readElementHeader, skipElementValue} from './element-reader.js'
import {readFileMeta} from './file-meta.js'
import {NotDicomError} from './not-dicom-error.js'
import {
  PATIENT_ID,
  PIXEL_DATA,
  SERIES_INSTANCE_UID,
  SOP_INSTANCE_UID,
  SPECIFIC_CHARACTER_SET,
  STUDY_INSTANCE_UID,
} from './tags.js'
import {type DataSetEncoding, transferSyntaxLayout} from './transfer-syntax.js'
import {trimDicomPadding} from './values.js'

export interface DicomIdentifiers {
  patientId: string
  studyInstanceUid: string
  seriesInstanceUid: string
  sopInstanceUid: string
  transferSyntaxUid: string
  // False for a file that ends cleanly before (7FE0,0010), such as Orthanc's
  // "dicom-until-pixel-data" attachment, or for an instance without an image.
  hasPixelData: boolean
}

const WANTED_TAGS = new Set([SPECIFIC_CHARACTER_SET, SOP_INSTANCE_UID, PATIENT_ID, STUDY_INSTANCE_UID, SERIES_INSTANCE_UID])

// Reads the identifiers Orthanc uses to file an instance. Only top-level elements up to
// Pixel Data are examined; the pixel data value itself is bounds-checked, not read, so a
// whole file cut short inside its pixels is still reported as truncated.
export function readDicomIdentifiers(bytes: Uint8Array): DicomIdentifiers {
  const file = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const {transferSyntaxUid, dataSetOffset} = readFileMeta(file)
  const layout = transferSyntaxLayout(transferSyntaxUid)
  const dataSet = layout.deflated ? inflateDataSet(file.subarray(dataSetOffset)) : file.subarray(dataSetOffset)
  const {values, hasPixelData} = scanTopLevel(dataSet, layout)

  const characterSet = values.get(SPECIFIC_CHARACTER_SET)?.toString('latin1') ?? ''
  const text = (tag: number): string => trimDicomPadding(decodeText(values.get(tag) ?? Buffer.alloc(0), characterSet))
  const uid = (tag: number, name: string): string => {
    const value = trimDicomPadding(values.get(tag)?.toString('latin1') ?? '')
    if (value === '') {
      throw new NotDicomError('missing-attribute', `no ${name} in the data set`)
    }
    return value
  }

  return {
    patientId: text(PATIENT_ID),
    studyInstanceUid: uid(STUDY_INSTANCE_UID, 'Study Instance UID (0020,000D)'),
    seriesInstanceUid: uid(SERIES_INSTANCE_UID, 'Series Instance UID (0020,000E)'),
    sopInstanceUid: uid(SOP_INSTANCE_UID, 'SOP Instance UID (0008,0018)'),
    transferSyntaxUid,
    hasPixelData,
  }
}

interface TopLevelScan {
  values: Map<number, Buffer>
  hasPixelData: boolean
}

function scanTopLevel(dataSet: Buffer, encoding: DataSetEncoding): TopLevelScan {
  const values = new Map<number, Buffer>()
  let position = 0
  while (position < dataSet.length) {
    const header = readElementHeader(dataSet, position, encoding)
    const end = skipElementValue(dataSet, header, encoding)
    // Top-level tags ascend, so nothing wanted can follow Pixel Data.
    if (header.tag >= PIXEL_DATA) {
      return {values, hasPixelData: header.tag === PIXEL_DATA}
    }
    if (WANTED_TAGS.has(header.tag)) {
      values.set(header.tag, dataSet.subarray(header.valueOffset, end))
    }
    position = end
  }
  return {values, hasPixelData: false}
}

function inflateDataSet(compressed: Buffer): Buffer {
  try {
    return inflateRawSync(compressed)
  } catch (error) {
    // zlib reports a stream that stops before its final block as a buffer error.
    const code = (error as {code?: string}).code
    const reason = code === 'Z_BUF_ERROR' ? 'truncated' : 'malformed'
    throw new NotDicomError(reason, `deflated data set does not inflate: ${(error as Error).message}`)
  }
}
