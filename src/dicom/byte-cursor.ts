import {NotDicomError} from './not-dicom-error.js'

/**
 * A data set's bytes, read front to back: a whole buffer, or chunks as an inflater produces
 * them. The element walker needs no more than this, so a deflated data set is never held whole.
 */
export interface ByteCursor {
  /** Offset of the next byte from the start of the data set. */
  readonly position: number
  /** Up to `count` next bytes without consuming them (fewer only at the end); count is small. */
  peek(count: number): Buffer
  /** Consumes `count` bytes and returns them; the caller bounds count. Throws NotDicomError('truncated'). */
  take(count: number): Buffer
  /** Consumes `count` bytes without keeping them. Throws NotDicomError('truncated'). */
  skip(count: number): void
  atEnd(): boolean
}

export class BufferCursor implements ByteCursor {
  position = 0

  constructor(private readonly bytes: Buffer) {}

  peek(count: number): Buffer {
    return this.bytes.subarray(this.position, this.position + count)
  }

  take(count: number): Buffer {
    this.require(count)
    const taken = this.bytes.subarray(this.position, this.position + count)
    this.position += count
    return taken
  }

  skip(count: number): void {
    this.require(count)
    this.position += count
  }

  atEnd(): boolean {
    return this.position >= this.bytes.length
  }

  private require(count: number): void {
    if (this.position + count > this.bytes.length) {
      throw new NotDicomError('truncated', `needed ${count} bytes at offset ${this.position}, file has ${this.bytes.length}`)
    }
  }
}

/**
 * Bytes pulled from an iterator of chunks (an inflater's output) as the walker needs them, and
 * dropped once consumed: memory is a chunk or two, whatever the total. Errors the iterator
 * throws (the inflater's, or a limit's) pass through.
 */
export class ChunkCursor implements ByteCursor {
  position = 0
  private chunks: Buffer[] = []
  private available = 0
  private ended = false
  /** Bytes the iterator produced in all. */
  produced = 0

  constructor(private readonly source: Iterator<Buffer>, private readonly describeEnd: () => string) {}

  peek(count: number): Buffer {
    this.fill(count)
    const first = this.chunks[0]
    if (first && first.length >= count) return first.subarray(0, count)
    return Buffer.concat(this.chunks, this.available).subarray(0, count)
  }

  take(count: number): Buffer {
    this.require(count)
    const pieces: Buffer[] = []
    let left = count
    while (left > 0) {
      const chunk = this.chunks[0]!
      const piece = chunk.length <= left ? chunk : chunk.subarray(0, left)
      pieces.push(piece)
      this.consume(piece.length)
      left -= piece.length
    }

    return pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces, count)
  }

  skip(count: number): void {
    let left = count
    while (left > 0) {
      if (this.available === 0 && !this.pull()) throw this.truncated(left)
      const step = Math.min(left, this.chunks[0]!.length)
      this.consume(step)
      left -= step
    }
  }

  atEnd(): boolean {
    this.fill(1)
    return this.available === 0
  }

  /** Reads what is left to the end, keeping nothing: the iterator checks and counts it all. */
  drain(): void {
    this.chunks = []
    this.position += this.available
    this.available = 0
    while (this.pull()) {
      this.position += this.available
      this.chunks = []
      this.available = 0
    }
  }

  private require(count: number): void {
    this.fill(count)
    if (this.available < count) throw this.truncated(count)
  }

  private truncated(count: number): NotDicomError {
    return new NotDicomError('truncated', `needed ${count} bytes at offset ${this.position}, ${this.describeEnd()} ${this.position + this.available}`)
  }

  private fill(count: number): void {
    while (this.available < count) {
      if (!this.pull()) return
    }
  }

  private pull(): boolean {
    if (this.ended) return false
    const next = this.source.next()
    if (next.done) {
      this.ended = true
      return false
    }

    if (next.value.length > 0) {
      this.chunks.push(next.value)
      this.available += next.value.length
      this.produced += next.value.length
    }

    return true
  }

  private consume(count: number): void {
    const chunk = this.chunks[0]!
    if (count === chunk.length) this.chunks.shift()
    else this.chunks[0] = chunk.subarray(count)
    this.available -= count
    this.position += count
  }
}
