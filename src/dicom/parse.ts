import {BufferCursor, type ByteCursor, ChunkCursor} from './byte-cursor.js'
import {orthancCharset} from './charset.js'
import {readHeaderAt, walkValue, WalkBudget} from './element-reader.js'
import {type DicomFraming, locateDataSet} from './file-meta.js'
import {NotDicomError} from './not-dicom-error.js'
import {orthancIdentifierValue} from './orthanc-id.js'
import {
  DOUBLE_FLOAT_PIXEL_DATA,
  FLOAT_PIXEL_DATA,
  formatTag,
  PATIENT_ID,
  PIXEL_DATA,
  ROWS,
  SERIES_INSTANCE_UID,
  SOP_INSTANCE_UID,
  SPECIFIC_CHARACTER_SET,
  STUDY_INSTANCE_UID,
} from './tags.js'
import {type DataSetEncoding, transferSyntaxLayout} from './transfer-syntax.js'
import {DEFAULT_INFLATE_BOUNDS, describeInflateLimit, type InflateBounds, inflateLimit} from '../util/bounded-inflate.js'
import {InflateError, inflateRawChunks} from '../util/inflate.js'

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
//
// Bounded whatever the input: sequences are walked without recursion, no deeper than
// DEFAULT_WALK_LIMITS allows and with a bounded element count, and a deflated data set is
// inflated as it is read, never held whole, within DEFAULT_INFLATE_BOUNDS (then inflated to
// its end, to tell a whole file from one cut short). Past a limit: NotDicomError('hostile').
export function readDicomIdentifiers(bytes: Uint8Array): DicomIdentifiers {
  const file = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  let framing: DicomFraming | undefined
  try {
    const location = locateDataSet(file)
    framing = location.framing
    return identify(file, framing, location.transferSyntaxUid, location.dataSetOffset)
  } catch (error) {
    if (!(error instanceof NotDicomError) || error.reason === 'hostile') throw error
    // Without "DICM" nothing says the bytes were meant as DICOM: failing to read them as a data
    // set means they are something else, not a damaged DICOM file. A hostile one stays hostile.
    if (framing === 'data-set') throw new NotDicomError('no-dicm-magic', `not a DICOM file or data set: ${error.message}`)
    // A file that says it is DICOM ("DICM", or a file meta group) and lacks what identifies an
    // instance is a damaged one: passed over as "not DICOM", it would be lost without a word.
    if (error.reason === 'missing-attribute') throw new NotDicomError('malformed', `a DICOM file without what identifies an instance: ${error.detail}`)
    throw error
  }
}

function identify(file: Buffer, framing: DicomFraming, transferSyntaxUid: string, dataSetOffset: number): DicomIdentifiers {
  const layout = transferSyntaxLayout(transferSyntaxUid)
  const cursor = layout.deflated ? inflatingCursor(file.subarray(dataSetOffset)) : new BufferCursor(file.subarray(dataSetOffset))
  const {values, hasPixelData, describesImage} = scanTopLevel(cursor, layout, new WalkBudget())
  if (cursor instanceof ChunkCursor) cursor.drain()

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

// Identifiers are at most 64 characters; a "value" far longer is not one, and is not kept.
const MAX_IDENTIFIER_BYTES = 64 * 1024

function scanTopLevel(cursor: ByteCursor, encoding: DataSetEncoding, budget: WalkBudget): TopLevelScan {
  const values = new Map<number, ElementValue>()
  let describesImage = false
  let hasFloatPixelData = false
  while (!cursor.atEnd()) {
    const header = readHeaderAt(cursor, encoding)
    budget.count(header.valueOffset)
    // Top-level tags ascend, so nothing wanted can follow Pixel Data.
    if (header.tag >= PIXEL_DATA) {
      walkValue(cursor, header, encoding, budget, 'delimited')
      return {values, hasPixelData: header.tag === PIXEL_DATA || hasFloatPixelData, describesImage}
    }
    if (header.tag === ROWS) describesImage = true
    if (header.tag === FLOAT_PIXEL_DATA || header.tag === DOUBLE_FLOAT_PIXEL_DATA) hasFloatPixelData = true
    if (WANTED_TAGS.has(header.tag) && header.length !== undefined) {
      if (header.length > MAX_IDENTIFIER_BYTES) throw new NotDicomError('malformed', `${formatTag(header.tag)} at offset ${header.valueOffset} is ${header.length} bytes long, far more than an identifier`)
      values.set(header.tag, {bytes: cursor.take(header.length), vr: header.vr})
    } else {
      walkValue(cursor, header, encoding, budget, 'delimited')
    }
  }
  return {values, hasPixelData: hasFloatPixelData, describesImage}
}

/** A deflated data set's bytes, inflated as they are read, within the bounds. */
export function inflatingCursor(compressed: Buffer, bounds: InflateBounds = DEFAULT_INFLATE_BOUNDS): ChunkCursor {
  return new ChunkCursor(boundedInflate(compressed, bounds), () => 'the inflated data set has')
}

function* boundedInflate(compressed: Buffer, bounds: InflateBounds): Generator<Buffer, void, undefined> {
  const limit = inflateLimit(compressed.length, bounds)
  let total = 0
  try {
    for (const chunk of inflateRawChunks(compressed)) {
      total += chunk.length
      if (total > limit) {
        throw new NotDicomError('hostile', `the deflated data set inflates to more than ${describeInflateLimit(compressed.length, bounds)}: a decompression bomb`)
      }
      yield chunk
    }
  } catch (error) {
    if (error instanceof InflateError) throw new NotDicomError(error.reason, `deflated data set does not inflate: ${error.message}`)
    throw error
  }
}
