import type {FileHandle} from 'node:fs/promises'
import type {Readable} from 'node:stream'

/**
 * Bytes in order, from a stream or a file, for the tar scanner. Only what a caller asks for is
 * kept: a stream's chunks are dropped as soon as they are consumed, and a file skips by seeking.
 */
export interface TarSource {
  /** Offset of the next byte, from the start of the input. */
  readonly position: number
  /** The next `length` bytes, or fewer at the end of the input; gathered from what arrives, never allocated ahead. */
  read(length: number): Promise<Buffer>
  /** Skips up to `length` bytes; returns how many were there. */
  skip(length: number): Promise<number>
  /** Puts back bytes just read (the tail of the last read), to be read again. */
  unread(bytes: Buffer): void
  close(): Promise<void>
}

/** A readable stream (stdin, a pipe, a file read in order). */
export class StreamSource implements TarSource {
  position = 0
  private readonly iterator: AsyncIterator<unknown>
  private chunks: Buffer[] = []
  private available = 0
  private ended = false

  constructor(input: Readable) {
    this.iterator = input[Symbol.asyncIterator]()
  }

  async read(length: number): Promise<Buffer> {
    while (this.available < length) {
      if (!(await this.pull())) break
    }

    const wanted = Math.min(length, this.available)
    const first = this.chunks[0]
    let result: Buffer
    if (first && first.length >= wanted) {
      result = first.subarray(0, wanted)
      this.consume(wanted)
    } else {
      const pieces: Buffer[] = []
      let left = wanted
      while (left > 0) {
        const chunk = this.chunks[0]!
        const piece = chunk.length <= left ? chunk : chunk.subarray(0, left)
        pieces.push(piece)
        this.consume(piece.length)
        left -= piece.length
      }

      result = Buffer.concat(pieces, wanted)
    }

    return result
  }

  async skip(length: number): Promise<number> {
    let skipped = 0
    while (skipped < length) {
      if (this.available === 0 && !(await this.pull())) break
      const step = Math.min(length - skipped, this.chunks[0]!.length)
      this.consume(step)
      skipped += step
    }

    return skipped
  }

  unread(bytes: Buffer): void {
    if (bytes.length === 0) return
    this.chunks.unshift(bytes)
    this.available += bytes.length
    this.position -= bytes.length
  }

  async close(): Promise<void> {
    this.chunks = []
    this.available = 0
    // Ends the iteration, which destroys the stream: nothing more is read from it.
    if (!this.ended) await this.iterator.return?.()
  }

  private consume(length: number): void {
    const chunk = this.chunks[0]!
    if (length === chunk.length) this.chunks.shift()
    else this.chunks[0] = chunk.subarray(length)
    this.available -= length
    this.position += length
  }

  private async pull(): Promise<boolean> {
    if (this.ended) return false
    const next = await this.iterator.next()
    if (next.done) {
      this.ended = true
      return false
    }

    const chunk = typeof next.value === 'string' ? Buffer.from(next.value) : next.value as Buffer
    if (chunk.length > 0) {
      this.chunks.push(chunk)
      this.available += chunk.length
    }

    return true
  }
}

/** A file read by offset: skipping its data costs no reading. Headers are read through a small read-ahead buffer. */
export class FileSource implements TarSource {
  position = 0
  private buffer: Buffer = Buffer.alloc(0)
  private bufferStart = 0

  constructor(private readonly file: FileHandle, readonly size: number) {}

  async read(length: number): Promise<Buffer> {
    const wanted = Math.max(0, Math.min(length, this.size - this.position))
    const offset = this.position - this.bufferStart
    if (offset < 0 || offset + wanted > this.buffer.length) {
      if (wanted > READ_AHEAD) return this.readDirect(wanted)
      this.bufferStart = this.position
      this.buffer = await this.readAt(this.position, Math.min(READ_AHEAD, this.size - this.position))
    }

    const start = this.position - this.bufferStart
    const result = this.buffer.subarray(start, start + wanted)
    this.position += result.length
    return result
  }

  async skip(length: number): Promise<number> {
    const skipped = Math.max(0, Math.min(length, this.size - this.position))
    this.position += skipped
    return skipped
  }

  unread(bytes: Buffer): void {
    this.position -= bytes.length
  }

  async close(): Promise<void> {
    this.buffer = Buffer.alloc(0)
    await this.file.close()
  }

  private async readDirect(length: number): Promise<Buffer> {
    const result = await this.readAt(this.position, length)
    this.position += result.length
    return result
  }

  private async readAt(position: number, length: number): Promise<Buffer> {
    const buffer = Buffer.allocUnsafe(length)
    let filled = 0
    while (filled < length) {
      const {bytesRead} = await this.file.read(buffer, filled, length - filled, position + filled)
      if (bytesRead === 0) break
      filled += bytesRead
    }

    return filled === length ? buffer : buffer.subarray(0, filled)
  }
}

/** Headers and small entries are read 64 KiB at a time; larger reads go straight to the file. */
const READ_AHEAD = 64 * 1024
