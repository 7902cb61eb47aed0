import {BufferCursor, type ByteCursor, ChunkCursor} from './byte-cursor.js'
import {readHeaderAt, walkValue, WalkBudget, type WalkLimits} from './element-reader.js'
import {readFileMeta} from './file-meta.js'
import {NotDicomError} from './not-dicom-error.js'
import {inflatingCursor} from './parse.js'
import {type DataSetEncoding, transferSyntaxLayout} from './transfer-syntax.js'
import type {InflateBounds} from '../util/bounded-inflate.js'

/** What checking bytes before an upload found. */
export interface SafetyReport {
  /**
   * Whether the whole data set was walked. When not, `why` says what stopped the walk (not
   * DICOM, malformed, cut short): whatever follows that point was not checked, and a server
   * parses it its own way, so a cautious caller does not send such bytes.
   */
  walked: boolean
  why?: string
  /** Headers read (elements, items, delimiters). */
  elements: number
  /** The deepest sequence nesting met. */
  deepestSequence: number
  /** What a deflated data set inflated to. */
  inflatedBytes?: number
}

export interface SafetyLimits {
  walk?: WalkLimits
  inflate?: InflateBounds
}

/**
 * Checks bytes about to be sent to a server (POST /instances) for what would harm it: sequences
 * nested beyond any real file (Orthanc 1.10.1 crashes on a few thousand levels), more elements
 * than any real file, a deflated data set that inflates beyond its bounds. Throws
 * NotDicomError('hostile') naming what it found; callers report it as a problem of kind
 * 'hostile' and send nothing. Otherwise returns what it walked (see SafetyReport.walked).
 *
 * Every element of the data set is visited, inside sequences and items of defined length too,
 * and inside defined-length UN and implicit VR values that start like a sequence (a server's
 * dictionary would read them as one). Memory: the bytes given plus a chunk of inflated output;
 * time: linear in the size, bounded by the element limit.
 */
export function checkSafeToSend(bytes: Uint8Array, limits: SafetyLimits = {}): SafetyReport {
  const file = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const budget = new WalkBudget(limits.walk)
  const report = (walked: boolean, cursor?: ByteCursor, why?: string): SafetyReport => ({
    walked, why, elements: budget.elements, deepestSequence: budget.deepest,
    inflatedBytes: cursor instanceof ChunkCursor ? cursor.produced : undefined,
  })
  let located: {cursor: ByteCursor; encoding: DataSetEncoding}
  try {
    located = locateDataSet(file, limits.inflate)
  } catch (error) {
    if (error instanceof NotDicomError && error.reason !== 'hostile') return report(false, undefined, error.message)
    throw error
  }

  const {cursor, encoding} = located
  try {
    while (!cursor.atEnd()) {
      const header = readHeaderAt(cursor, encoding)
      budget.count(header.valueOffset)
      walkValue(cursor, header, encoding, budget, 'all')
    }
  } catch (error) {
    if (error instanceof NotDicomError && error.reason !== 'hostile') return report(false, cursor, error.message)
    throw error
  }

  return report(true, cursor)
}

/**
 * Where the data set starts and how it is encoded: after the file meta group of a Part 10 file,
 * or, for a data set stored without preamble and meta group (Orthanc accepts those), guessed
 * from its first element.
 */
function locateDataSet(file: Buffer, bounds?: InflateBounds): {cursor: ByteCursor; encoding: DataSetEncoding} {
  try {
    const {transferSyntaxUid, dataSetOffset} = readFileMeta(file)
    const layout = transferSyntaxLayout(transferSyntaxUid)
    const dataSet = file.subarray(dataSetOffset)
    return {cursor: layout.deflated ? inflatingCursor(dataSet, bounds) : new BufferCursor(dataSet), encoding: layout}
  } catch (error) {
    if (!(error instanceof NotDicomError) || error.reason !== 'no-dicm-magic') throw error
    const encoding = rawDataSetEncoding(file)
    if (!encoding) throw error
    return {cursor: new BufferCursor(file), encoding}
  }
}

/** A raw data set starts with a low group number (0002 or 0008 in practice); the bytes after its tag say whether a VR follows. */
function rawDataSetEncoding(file: Buffer): DataSetEncoding | undefined {
  if (file.length < 8) return undefined
  const hasVr = isUpperCaseLetter(file[4]) && isUpperCaseLetter(file[5])
  if (file.readUInt16LE(0) <= 0x0008 && file.readUInt16LE(0) > 0) return {explicitVr: hasVr, littleEndian: true}
  if (file.readUInt16BE(0) <= 0x0008 && file.readUInt16BE(0) > 0 && hasVr) return {explicitVr: true, littleEndian: false}
  return undefined
}

function isUpperCaseLetter(byte: number | undefined): boolean {
  return byte !== undefined && byte >= 0x41 && byte <= 0x5a
}
