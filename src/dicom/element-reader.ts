import {BufferCursor, type ByteCursor} from './byte-cursor.js'
import {NotDicomError} from './not-dicom-error.js'
import {
  formatTag,
  ITEM,
  ITEM_DELIMITATION,
  PIXEL_DATA,
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

/**
 * Bounds on what one data set may make a reader do. Real files nest sequences a handful of
 * levels deep (SR content trees, enhanced multi-frame functional groups: under 20); Orthanc
 * 1.10.1 crashes on files nested several thousand deep, so such files are refused before they
 * are sent. The element count bounds the time a walk takes whatever the file's size.
 */
export interface WalkLimits {
  /** Sequences inside sequences: deeper is hostile. */
  maxSequenceDepth: number
  /** Element, item and delimiter headers read in one data set: more is hostile. */
  maxElements: number
}

export const DEFAULT_WALK_LIMITS: WalkLimits = {maxSequenceDepth: 128, maxElements: 5_000_000}

/** What one walk of a data set has used of its limits. */
export class WalkBudget {
  elements = 0
  deepest = 0

  constructor(readonly limits: WalkLimits = DEFAULT_WALK_LIMITS) {}

  count(offset: number): void {
    if (++this.elements > this.limits.maxElements) throw new NotDicomError('hostile', `more than ${this.limits.maxElements} elements (at offset ${offset}): no real file has that many`)
  }

  enter(depth: number, offset: number): void {
    if (depth > this.limits.maxSequenceDepth) throw new NotDicomError('hostile', `sequences nested more than ${this.limits.maxSequenceDepth} deep (at offset ${offset}): no real file nests that deep, and some servers crash on it`)
    if (depth > this.deepest) this.deepest = depth
  }
}

/** Reads the element header at `offset`; `base` is added to offsets in messages (where `bytes` starts in the data set). */
export function readElementHeader(bytes: Buffer, offset: number, encoding: DataSetEncoding, base = 0): ElementHeader {
  requireBytes(bytes, offset, 8, base)
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
    throw new NotDicomError('malformed', `invalid VR for ${formatTag(tag)} at offset ${base + offset + 4}`)
  }
  if (VRS_WITH_32_BIT_LENGTH.has(vr)) {
    requireBytes(bytes, offset, 12, base)
    const length = littleEndian ? bytes.readUInt32LE(offset + 8) : bytes.readUInt32BE(offset + 8)
    return {tag, vr, length: definedLength(length), valueOffset: offset + 12}
  }
  const length = littleEndian ? bytes.readUInt16LE(offset + 6) : bytes.readUInt16BE(offset + 6)
  return {tag, vr, length, valueOffset: offset + 8}
}

/** Reads the element header at the cursor and consumes it; `valueOffset` is where its value starts. */
export function readHeaderAt(cursor: ByteCursor, encoding: DataSetEncoding): ElementHeader {
  const start = cursor.position
  const head = cursor.peek(12)
  const header = readElementHeader(head, 0, encoding, start)
  cursor.skip(header.valueOffset)
  return {...header, valueOffset: start + header.valueOffset}
}

// Returns the offset just past the element's value. Values of defined length are
// jumped over without looking inside, which is why no data dictionary is needed even
// for implicit VR: only undefined-length values (sequences, UN holding a sequence,
// encapsulated pixel data) have to be walked, and those are self-delimiting.
export function skipElementValue(bytes: Buffer, header: ElementHeader, encoding: DataSetEncoding, budget = new WalkBudget()): number {
  if (header.length !== undefined) {
    requireBytes(bytes, header.valueOffset, header.length)
    return header.valueOffset + header.length
  }
  const cursor = new BufferCursor(bytes)
  cursor.skip(header.valueOffset)
  walkValue(cursor, header, encoding, budget, 'delimited')
  return cursor.position
}

/**
 * How far a walk looks inside values. 'delimited': only into undefined-length values, which
 * must be walked to find their end (what reading identifiers needs). 'all': into every sequence
 * and item, of defined length too, and into defined-length UN or implicit VR values that start
 * like a sequence, as a server's parser would (what checking input before sending it needs).
 */
export type WalkMode = 'delimited' | 'all'

interface Frame {
  kind: 'sequence' | 'item'
  encoding: DataSetEncoding
  /** Where a defined-length frame ends; undefined for one closed by a delimiter. */
  end: number | undefined
  /** The nearest end of this frame or any around it: nothing inside may go past it. */
  limit: number
  /** Items of encapsulated pixel data: fragments, never data sets. */
  fragments: boolean
  /** A value only guessed to be a sequence: if it does not parse as one, it is skipped as bytes. */
  guessed: boolean
}

/**
 * Walks past one element's value, the cursor at its first byte, without recursion: nested
 * sequences are a stack, bounded by the budget's depth, and every header read counts towards
 * its element limit. Throws NotDicomError ('truncated', 'malformed', or 'hostile' when a
 * limit is passed).
 */
export function walkValue(cursor: ByteCursor, header: ElementHeader, encoding: DataSetEncoding, budget: WalkBudget, mode: WalkMode): void {
  const stack: Frame[] = []
  let depth = 0

  const pushSequence = (element: ElementHeader, elementEncoding: DataSetEncoding, limit: number, guessed: boolean) => {
    depth++
    budget.enter(depth, element.valueOffset)
    const end = element.length === undefined ? undefined : cursor.position + element.length
    stack.push({
      kind: 'sequence',
      // PS3.5 6.2.2: a UN value holding a sequence is encoded in implicit VR little endian.
      encoding: element.vr === 'UN' ? IMPLICIT_LITTLE_ENDIAN_ENCODING : elementEncoding,
      end,
      limit: Math.min(limit, end ?? Number.POSITIVE_INFINITY),
      fragments: element.length === undefined && (element.tag === PIXEL_DATA || (element.vr !== undefined && element.vr !== 'SQ' && element.vr !== 'UN')),
      guessed,
    })
  }

  const skipWithin = (length: number, limit: number) => {
    if (cursor.position + length > limit) throw new NotDicomError('malformed', `a value of ${length} bytes at offset ${cursor.position} runs past the end of the item or sequence holding it (offset ${limit})`)
    cursor.skip(length)
  }

  /** An element's value, the cursor at its start, inside a frame whose contents end by `limit`. */
  const enterValue = (element: ElementHeader, elementEncoding: DataSetEncoding, limit: number) => {
    if (element.length === undefined) return pushSequence(element, elementEncoding, limit, false)
    if (mode === 'all' && element.length > 0) {
      if (element.length > limit - cursor.position) throw new NotDicomError('malformed', `a value of ${element.length} bytes at offset ${cursor.position} runs past the end of the item or sequence holding it (offset ${limit})`)
      if (element.vr === 'SQ') return pushSequence(element, elementEncoding, limit, false)
      if (looksLikeSequence(cursor, element, elementEncoding)) return pushSequence(element, elementEncoding, limit, true)
    }

    skipWithin(element.length, limit)
  }

  const readWithin = (frame: Frame): ElementHeader => {
    const start = cursor.position
    const element = readElementHeader(cursor.peek(12), 0, frame.encoding, start)
    if (start + element.valueOffset > frame.limit) throw new NotDicomError('malformed', `an element header at offset ${start} runs past the end of the item or sequence holding it (offset ${frame.limit})`)
    budget.count(start)
    cursor.skip(element.valueOffset)
    return {...element, valueOffset: start + element.valueOffset}
  }

  enterValue(header, encoding, Number.POSITIVE_INFINITY)
  while (stack.length > 0) {
    const frame = stack.at(-1)!
    if (frame.end !== undefined && cursor.position >= frame.end) {
      stack.pop()
      if (frame.kind === 'sequence') depth--
      continue
    }

    try {
      const element = readWithin(frame)
      if (frame.kind === 'sequence') {
        if (element.tag === SEQUENCE_DELIMITATION && frame.end === undefined) {
          stack.pop()
          depth--
        } else if (element.tag !== ITEM) {
          throw new NotDicomError('malformed', `expected an item, found ${formatTag(element.tag)} at offset ${element.valueOffset - 8}`)
        } else if (element.length === undefined) {
          stack.push({kind: 'item', encoding: frame.encoding, end: undefined, limit: frame.limit, fragments: false, guessed: false})
        } else if (mode === 'all' && !frame.fragments && element.length > 0) {
          if (element.length > frame.limit - cursor.position) throw new NotDicomError('malformed', `an item of ${element.length} bytes at offset ${cursor.position} runs past the end of its sequence (offset ${frame.limit})`)
          const end = cursor.position + element.length
          stack.push({kind: 'item', encoding: frame.encoding, end, limit: end, fragments: false, guessed: false})
        } else {
          skipWithin(element.length, frame.limit)
        }
      } else if (element.tag === ITEM_DELIMITATION && frame.end === undefined) {
        stack.pop()
      } else {
        enterValue(element, frame.encoding, frame.limit)
      }
    } catch (error) {
      if (!(error instanceof NotDicomError) || error.reason === 'hostile') throw error
      // A value guessed to be a sequence that does not parse as one is bytes after all: skip to its end.
      let guessed = stack.length - 1
      while (guessed >= 0 && !stack[guessed]!.guessed) guessed--
      if (guessed === -1) throw error
      const end = stack[guessed]!.end!
      depth -= stack.slice(guessed).filter((candidate) => candidate.kind === 'sequence').length
      stack.length = guessed
      cursor.skip(end - cursor.position)
    }
  }
}

/**
 * Whether a defined-length value not marked SQ holds a sequence all the same: a UN value, or
 * any value in implicit VR (where only a dictionary would say), that starts with an item tag.
 */
function looksLikeSequence(cursor: ByteCursor, element: ElementHeader, encoding: DataSetEncoding): boolean {
  if ((element.vr !== 'UN' && element.vr !== undefined) || element.tag === PIXEL_DATA || element.length! < 8) return false
  const start = cursor.peek(4)
  if (start.length < 4) return false
  const littleEndian = element.vr === 'UN' || encoding.littleEndian
  const group = littleEndian ? start.readUInt16LE(0) : start.readUInt16BE(0)
  const tag = littleEndian ? start.readUInt16LE(2) : start.readUInt16BE(2)
  return tagOf(group, tag) === ITEM
}

export function requireBytes(bytes: Buffer, offset: number, count: number, base = 0): void {
  if (offset + count > bytes.length) {
    throw new NotDicomError('truncated', `needed ${count} bytes at offset ${base + offset}, file has ${base + bytes.length}`)
  }
}

function definedLength(length: number): number | undefined {
  return length === UNDEFINED_LENGTH ? undefined : length
}

function isUpperCaseLetter(byte: number | undefined): boolean {
  return byte !== undefined && byte >= 0x41 && byte <= 0x5a
}
