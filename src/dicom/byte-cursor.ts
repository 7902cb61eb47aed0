import {ChunkQueue} from '../util/chunk-queue.js'
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
  private readonly queue = new ChunkQueue()
  private ended = false
  /** Bytes the iterator produced in all. */
  produced = 0

  constructor(private readonly source: Iterator<Buffer>, private readonly describeEnd: () => string) {}

  peek(count: number): Buffer {
    this.fill(count)
    return this.queue.peek(count)
  }

  take(count: number): Buffer {
    this.require(count)
    this.position += count
    return this.queue.take(count)
  }

  skip(count: number): void {
    let left = count
    while (left > 0) {
      if (this.queue.length === 0 && !this.pull()) throw this.truncated(left)
      const dropped = this.queue.drop(left)
      this.position += dropped
      left -= dropped
    }
  }

  atEnd(): boolean {
    this.fill(1)
    return this.queue.length === 0
  }

  /** Reads what is left to the end, keeping nothing: the iterator checks and counts it all. */
  drain(): void {
    do {
      this.position += this.queue.length
      this.queue.clear()
    } while (this.pull())
  }

  private require(count: number): void {
    this.fill(count)
    if (this.queue.length < count) throw this.truncated(count)
  }

  private truncated(count: number): NotDicomError {
    return new NotDicomError('truncated', `needed ${count} bytes at offset ${this.position}, ${this.describeEnd()} ${this.position + this.queue.length}`)
  }

  private fill(count: number): void {
    while (this.queue.length < count) {
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

    this.queue.push(next.value)
    this.produced += next.value.length
    return true
  }
}
