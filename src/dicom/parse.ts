import {inflateRawSync} from 'node:zlib'
import {orthancCharset} from './charset.js'
import {readElementHeader, skipElementValue} from './element-reader.js'
import {type DicomFraming, locateDataSet} from './file-meta.js'
import {NotDicomError} from './not-dicom-error.js'
import {orthancIdentifierValue} from './orthanc-id.js'
import {
  DOUBLE_FLOAT_PIXEL_DATA,
  FLOAT_PIXEL_DATA,
  PATIENT_ID,
  PIXEL_DATA,
  ROWS,
  SERIES_INSTANCE_UID,
  SOP_INSTANCE_UID,
  SPECIFIC_CHARACTER_SET,
  STUDY_INSTANCE_UID,
} from './tags.js'
import {type DataSetEncoding, transferSyntaxLayout} from './transfer-syntax.js'

export type {DicomFraming} from './file-meta.js'

export interface DicomIdentifiers {
  /** The identifiers as Orthanc reads them (see orthancIdentifierValue), so they hash to its IDs. */
  patientId: string
  studyInstanceUid: string
  seriesInstanceUid: string
  sopInstanceUid: string
  transferSyntaxUid: string
  // False for a file that ends cleanly before (7FE0,0010), such as Orthanc's
  // "dicom-until-pixel-data" attachment, or for an instance without an image.
  hasPixelData: boolean
  /**
   * Rows (0028,0010) is there: the data set describes an image. Without pixel data that is the
   * mark of a header-only copy, where an instance without an image (a report) has no Rows.
   */
  describesImage: boolean
  framing: DicomFraming
}

interface ElementValue {
  bytes: Buffer
  vr: string | undefined
}

const WANTED_TAGS = new Set([SPECIFIC_CHARACTER_SET, SOP_INSTANCE_UID, PATIENT_ID, STUDY_INSTANCE_UID, SERIES_INSTANCE_UID])

// Reads the identifiers Orthanc uses to file an instance, from a Part 10 file or a bare data set.
// Only top-level elements up to Pixel Data are examined; the pixel data value itself is
// bounds-checked, not read, so a whole file cut short inside its pixels is still reported as truncated.
export function readDicomIdentifiers(bytes: Uint8Array): DicomIdentifiers {
  const file = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const {framing, transferSyntaxUid, dataSetOffset} = locateDataSet(file)
  try {
    return identify(file, framing, transferSyntaxUid, dataSetOffset)
  } catch (error) {
    // Without "DICM" nothing says the bytes were meant as DICOM: failing to read them as a data
    // set means they are something else, not a damaged DICOM file.
    if (framing === 'data-set' && error instanceof NotDicomError) throw new NotDicomError('no-dicm-magic', `not a DICOM file or data set: ${error.message}`)
    throw error
  }
}

function identify(file: Buffer, framing: DicomFraming, transferSyntaxUid: string, dataSetOffset: number): DicomIdentifiers {
  const layout = transferSyntaxLayout(transferSyntaxUid)
  const dataSet = layout.deflated ? inflateDataSet(file.subarray(dataSetOffset)) : file.subarray(dataSetOffset)
  const {values, hasPixelData, describesImage} = scanTopLevel(dataSet, layout)

  const charset = orthancCharset(values.get(SPECIFIC_CHARACTER_SET)?.bytes)
  const uid = (tag: number, name: string): string => {
    const element = values.get(tag)
    const value = element === undefined ? '' : orthancIdentifierValue(element.bytes, element.vr, 'UI', charset)
    if (value === '') {
      throw new NotDicomError('missing-attribute', `no ${name} in the data set`)
    }
    return value
  }
  const patient = values.get(PATIENT_ID)

  return {
    patientId: patient === undefined ? '' : orthancIdentifierValue(patient.bytes, patient.vr, 'LO', charset),
    studyInstanceUid: uid(STUDY_INSTANCE_UID, 'Study Instance UID (0020,000D)'),
    seriesInstanceUid: uid(SERIES_INSTANCE_UID, 'Series Instance UID (0020,000E)'),
    sopInstanceUid: uid(SOP_INSTANCE_UID, 'SOP Instance UID (0008,0018)'),
    transferSyntaxUid,
    hasPixelData,
    describesImage,
    framing,
  }
}

interface TopLevelScan {
  values: Map<number, ElementValue>
  hasPixelData: boolean
  describesImage: boolean
}

function scanTopLevel(dataSet: Buffer, encoding: DataSetEncoding): TopLevelScan {
  const values = new Map<number, ElementValue>()
  let describesImage = false
  let hasFloatPixelData = false
  let position = 0
  while (position < dataSet.length) {
    const header = readElementHeader(dataSet, position, encoding)
    const end = skipElementValue(dataSet, header, encoding)
    // Top-level tags ascend, so nothing wanted can follow Pixel Data.
    if (header.tag >= PIXEL_DATA) {
      return {values, hasPixelData: header.tag === PIXEL_DATA || hasFloatPixelData, describesImage}
    }
    if (WANTED_TAGS.has(header.tag)) {
      values.set(header.tag, {bytes: dataSet.subarray(header.valueOffset, end), vr: header.vr})
    }
    if (header.tag === ROWS) describesImage = true
    if (header.tag === FLOAT_PIXEL_DATA || header.tag === DOUBLE_FLOAT_PIXEL_DATA) hasFloatPixelData = true
    position = end
  }
  return {values, hasPixelData: hasFloatPixelData, describesImage}
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
