import type {FileHandle} from 'node:fs/promises'
import type {Readable} from 'node:stream'

import {ChunkQueue} from '../util/chunk-queue.js'

/**
 * Bytes in order, from a stream or a file, for the tar scanner. Only what a caller asks for is
 * kept: a stream's chunks are dropped as soon as they are consumed, and a file skips by seeking.
 */
export interface TarSource {
  /** Offset of the next byte, from the start of the input. */
  readonly position: number
  /** The input's length, when it has one (a file); a stream may not end at all. */
  readonly size?: number
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
  private readonly queue = new ChunkQueue()
  private ended = false

  constructor(input: Readable) {
    this.iterator = input[Symbol.asyncIterator]()
  }

  async read(length: number): Promise<Buffer> {
    while (this.queue.length < length) {
      if (!(await this.pull())) break
    }

    const result = this.queue.take(length)
    this.position += result.length
    return result
  }

  async skip(length: number): Promise<number> {
    let skipped = 0
    while (skipped < length) {
      if (this.queue.length === 0 && !(await this.pull())) break
      const dropped = this.queue.drop(length - skipped)
      this.position += dropped
      skipped += dropped
    }

    return skipped
  }

  unread(bytes: Buffer): void {
    this.queue.unshift(bytes)
    this.position -= bytes.length
  }

  async close(): Promise<void> {
    this.queue.clear()
    // Ends the iteration, which destroys the stream: nothing more is read from it.
    if (!this.ended) await this.iterator.return?.()
  }

  private async pull(): Promise<boolean> {
    if (this.ended) return false
    const next = await this.iterator.next()
    if (next.done) {
      this.ended = true
      return false
    }

    this.queue.push(typeof next.value === 'string' ? Buffer.from(next.value) : next.value as Buffer)
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
