/**
 * A raw deflate (RFC 1951) decoder that hands its output over in chunks as it goes, synchronously.
 *
 * Node's zlib inflates synchronously only all at once (inflateSync), and in pieces only
 * asynchronously (streams). Reading a deflated DICOM data set needs both: the parser is
 * synchronous, and what a few compressed megabytes inflate to must never be held whole. This
 * decoder keeps the 32 KiB window deflate needs plus one output chunk, whatever the output size;
 * the caller counts what it receives and stops iterating when it has seen enough.
 *
 * Modelled on zlib's reference decoder puff.c (Mark Adler), with a 9-bit lookup table in front
 * of the canonical decode. It validates what puff validates: block types, stored lengths, code
 * sets (over-subscribed or incomplete), symbols and distances.
 */

export class InflateError extends Error {
  constructor(readonly reason: 'truncated' | 'malformed', message: string) {
    super(message)
    this.name = 'InflateError'
  }
}

const MAX_BITS = 15
const WINDOW = 32 * 1024
/** Output is handed over at most this many bytes at a time. */
export const INFLATE_CHUNK = 96 * 1024
const FAST_BITS = 9

const LENGTH_BASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258]
const LENGTH_EXTRA = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0]
const DISTANCE_BASE = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577]
const DISTANCE_EXTRA = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13]
const CODE_LENGTH_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]

interface Huffman {
  /** Number of codes of each length. */
  count: Uint16Array
  /** Symbols ordered by code. */
  symbol: Uint16Array
  /** For codes of up to FAST_BITS bits, by their next FAST_BITS input bits: (symbol << 4) | length, or 0. */
  fast: Int32Array
}

/** Builds a canonical code from code lengths; returns how many codes are left unused (0: complete), or -1 when over-subscribed. */
function buildHuffman(lengths: ArrayLike<number>, offset: number, n: number): {huffman: Huffman; left: number} {
  const count = new Uint16Array(MAX_BITS + 1)
  for (let index = 0; index < n; index++) count[lengths[offset + index]!]!++
  const huffman: Huffman = {count, symbol: new Uint16Array(n), fast: new Int32Array(1 << FAST_BITS)}
  if (count[0] === n) return {huffman, left: 0}
  let left = 1
  for (let length = 1; length <= MAX_BITS; length++) {
    left <<= 1
    left -= count[length]!
    if (left < 0) return {huffman, left}
  }

  const offsets = new Uint16Array(MAX_BITS + 2)
  for (let length = 1; length <= MAX_BITS; length++) offsets[length + 1] = offsets[length]! + count[length]!
  const next = new Uint16Array(MAX_BITS + 1)
  let code = 0
  for (let length = 1; length <= MAX_BITS; length++) {
    code = (code + (length === 1 ? 0 : count[length - 1]!)) << 1
    next[length] = code
  }

  for (let symbol = 0; symbol < n; symbol++) {
    const length = lengths[offset + symbol]!
    if (length === 0) continue
    huffman.symbol[offsets[length]!++] = symbol
    const assigned = next[length]!++
    if (length > FAST_BITS) continue
    // Deflate sends codes most significant bit first into a stream read least significant bit first.
    let reversed = 0
    for (let bit = 0; bit < length; bit++) reversed |= ((assigned >> bit) & 1) << (length - 1 - bit)
    for (let index = reversed; index < 1 << FAST_BITS; index += 1 << length) huffman.fast[index] = (symbol << 4) | length
  }

  return {huffman, left}
}

const FIXED = (() => {
  const lengths = new Uint8Array(288 + 30)
  lengths.fill(8, 0, 144)
  lengths.fill(9, 144, 256)
  lengths.fill(7, 256, 280)
  lengths.fill(8, 280, 288)
  lengths.fill(5, 288, 318)
  return {lengths: buildHuffman(lengths, 0, 288).huffman, distances: buildHuffman(lengths, 288, 30).huffman}
})()

/**
 * Inflates `input`, a raw deflate stream, yielding the output in chunks of at most INFLATE_CHUNK
 * bytes (each a fresh Buffer the caller may keep). Throws InflateError when the stream is
 * malformed or ends before its last block. Bytes after the last block are ignored, as zlib does.
 */
export function* inflateRawChunks(input: Buffer): Generator<Buffer, void, undefined> {
  const inflater = new RawInflater(input)
  for (;;) {
    const chunk = inflater.fill()
    if (chunk.length > 0) yield chunk
    if (inflater.done) return
  }
}

class RawInflater {
  done = false
  private readonly out = Buffer.allocUnsafe(INFLATE_CHUNK)
  private outPos = 0
  /** Start of the bytes not yet handed over. */
  private flushed = 0
  /** Bytes produced in all, to check distances against. */
  private produced = 0
  private inPos = 0
  private bitBuffer = 0
  private bitCount = 0
  private state: 'block-header' | 'stored' | 'codes' = 'block-header'
  private last = false
  private storedLeft = 0
  private lengths: Huffman = FIXED.lengths
  private distances: Huffman = FIXED.distances
  /** A match cut short by the end of the output buffer, finished on the next fill. */
  private copyLeft = 0
  private copyDistance = 0

  constructor(private readonly input: Buffer) {}

  /** Decodes until the output buffer is full or the stream ends; returns what was produced since the last call. */
  fill(): Buffer {
    if (this.outPos === this.out.length) {
      // Keep the last 32 KiB: matches reach that far back.
      this.out.copyWithin(0, this.outPos - WINDOW, this.outPos)
      this.outPos = WINDOW
      this.flushed = WINDOW
    }

    while (this.outPos < this.out.length && !this.done) {
      if (this.state === 'block-header') this.blockHeader()
      else if (this.state === 'stored') this.stored()
      else this.codes()
    }

    const chunk = Buffer.from(this.out.subarray(this.flushed, this.outPos))
    this.flushed = this.outPos
    return chunk
  }

  private truncated(): InflateError {
    return new InflateError('truncated', `the deflate stream ends at byte ${this.input.length} before its last block`)
  }

  private malformed(what: string): InflateError {
    return new InflateError('malformed', `${what} (deflate stream, near byte ${this.inPos})`)
  }

  private bits(count: number): number {
    while (this.bitCount < count) {
      if (this.inPos >= this.input.length) throw this.truncated()
      this.bitBuffer |= this.input[this.inPos++]! << this.bitCount
      this.bitCount += 8
    }

    const value = this.bitBuffer & ((1 << count) - 1)
    this.bitBuffer >>>= count
    this.bitCount -= count
    return value
  }

  private blockHeader(): void {
    if (this.last) {
      this.done = true
      return
    }

    this.last = this.bits(1) === 1
    const type = this.bits(2)
    if (type === 0) {
      // Stored: give back whole bytes read ahead, then start on a byte boundary.
      this.inPos -= this.bitCount >> 3
      this.bitBuffer = 0
      this.bitCount = 0
      if (this.inPos + 4 > this.input.length) throw this.truncated()
      const length = this.input.readUInt16LE(this.inPos)
      if ((length ^ 0xffff) !== this.input.readUInt16LE(this.inPos + 2)) throw this.malformed('a stored block whose length does not match its complement')
      this.inPos += 4
      this.storedLeft = length
      this.state = 'stored'
    } else if (type === 1) {
      this.lengths = FIXED.lengths
      this.distances = FIXED.distances
      this.state = 'codes'
    } else if (type === 2) {
      this.dynamicTables()
      this.state = 'codes'
    } else {
      throw this.malformed('an invalid block type')
    }
  }

  private stored(): void {
    const step = Math.min(this.storedLeft, this.out.length - this.outPos)
    if (this.inPos + step > this.input.length) throw this.truncated()
    this.input.copy(this.out, this.outPos, this.inPos, this.inPos + step)
    this.inPos += step
    this.outPos += step
    this.produced += step
    this.storedLeft -= step
    if (this.storedLeft === 0) this.state = 'block-header'
  }

  private dynamicTables(): void {
    const lengthCount = this.bits(5) + 257
    const distanceCount = this.bits(5) + 1
    const codeCount = this.bits(4) + 4
    if (lengthCount > 286 || distanceCount > 30) throw this.malformed('too many length or distance codes')
    const codeLengths = new Uint8Array(19)
    for (let index = 0; index < codeCount; index++) codeLengths[CODE_LENGTH_ORDER[index]!] = this.bits(3)
    const codeLengthCode = buildHuffman(codeLengths, 0, 19)
    if (codeLengthCode.left !== 0) throw this.malformed('an incomplete or over-subscribed code length code')
    const all = new Uint8Array(lengthCount + distanceCount)
    for (let index = 0; index < all.length;) {
      let symbol = this.decode(codeLengthCode.huffman)
      if (symbol < 16) {
        all[index++] = symbol
        continue
      }

      let repeated = 0
      if (symbol === 16) {
        if (index === 0) throw this.malformed('a repeated code length with none before it')
        repeated = all[index - 1]!
        symbol = 3 + this.bits(2)
      } else if (symbol === 17) {
        symbol = 3 + this.bits(3)
      } else {
        symbol = 11 + this.bits(7)
      }

      if (index + symbol > all.length) throw this.malformed('code lengths that run past their count')
      all.fill(repeated, index, index + symbol)
      index += symbol
    }

    if (all[256] === 0) throw this.malformed('no end-of-block code')
    const lengthCode = buildHuffman(all, 0, lengthCount)
    if (lengthCode.left < 0 || (lengthCode.left > 0 && lengthCount - lengthCode.huffman.count[0]! !== 1)) throw this.malformed('an incomplete or over-subscribed literal/length code')
    const distanceCode = buildHuffman(all, lengthCount, distanceCount)
    if (distanceCode.left < 0 || (distanceCode.left > 0 && distanceCount - distanceCode.huffman.count[0]! !== 1)) throw this.malformed('an incomplete or over-subscribed distance code')
    this.lengths = lengthCode.huffman
    this.distances = distanceCode.huffman
  }

  /** One symbol: the 9-bit table when the code is that short, else the canonical decode bit by bit. */
  private decode(huffman: Huffman): number {
    while (this.bitCount < 16 && this.inPos < this.input.length) {
      this.bitBuffer |= this.input[this.inPos++]! << this.bitCount
      this.bitCount += 8
    }

    const entry = huffman.fast[this.bitBuffer & FAST_MASK]!
    if (entry !== 0 && (entry & 15) <= this.bitCount) {
      this.bitBuffer >>>= entry & 15
      this.bitCount -= entry & 15
      return entry >> 4
    }

    let code = 0
    let first = 0
    let index = 0
    for (let length = 1; length <= MAX_BITS; length++) {
      code |= this.bits(1)
      const count = huffman.count[length]!
      if (code - count < first) return huffman.symbol[index + (code - first)]!
      index += count
      first += count
      first <<= 1
      code <<= 1
    }

    throw this.malformed('an invalid Huffman code')
  }

  /** Literals and matches until the end of the block or of the output buffer. */
  private codes(): void {
    const {out} = this
    const end = out.length
    if (this.copyLeft > 0) this.copy(this.copyLeft, this.copyDistance)
    while (this.outPos < end && this.copyLeft === 0) {
      const symbol = this.decode(this.lengths)
      if (symbol < 256) {
        out[this.outPos++] = symbol
        this.produced++
        continue
      }

      if (symbol === 256) {
        this.state = 'block-header'
        return
      }

      const lengthIndex = symbol - 257
      if (lengthIndex >= 29) throw this.malformed('an invalid length symbol')
      const length = LENGTH_BASE[lengthIndex]! + this.bits(LENGTH_EXTRA[lengthIndex]!)
      const distanceIndex = this.decode(this.distances)
      if (distanceIndex >= 30) throw this.malformed('an invalid distance symbol')
      const distance = DISTANCE_BASE[distanceIndex]! + this.bits(DISTANCE_EXTRA[distanceIndex]!)
      if (distance > this.produced) throw this.malformed('a distance further back than the start of the output')
      this.copy(length, distance)
    }
  }

  /** Copies a match, as much of it as the output buffer holds; the rest waits for the next fill. */
  private copy(length: number, distance: number): void {
    const {out} = this
    const step = Math.min(length, out.length - this.outPos)
    const from = this.outPos - distance
    if (distance === 1) {
      out.fill(out[from]!, this.outPos, this.outPos + step)
    } else if (distance >= step) {
      out.copy(out, this.outPos, from, from + step)
    } else {
      // An overlapping match repeats what it writes: byte by byte.
      for (let index = 0; index < step; index++) out[this.outPos + index] = out[from + index]!
    }

    this.outPos += step
    this.produced += step
    this.copyLeft = length - step
    this.copyDistance = distance
  }
}

const FAST_MASK = (1 << FAST_BITS) - 1
