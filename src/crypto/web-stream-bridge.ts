import {Duplex} from 'node:stream'

/**
 * Feeds a web ReadableStream from Node writes, one piece per pull. A write completes (its
 * callback is called) only once the consumer has pulled its last piece, so a fast writer waits
 * for a slow consumer and nothing piles up in between.
 */
export class PulledInput {
  readonly stream: ReadableStream<Uint8Array>
  /** The consumer asked for more after the last byte: it read to the end of the input. */
  readAfterEnd = false
  private controller?: ReadableStreamDefaultController<Uint8Array>
  private pieces: Uint8Array[] = []
  private whenTaken?: () => void
  private wake?: () => void
  private ended = false
  private closed = false

  /** `maxPiece`: writes are cut into pieces no larger, so the consumer never gets more at once. */
  constructor(private readonly maxPiece: number) {
    this.stream = new ReadableStream<Uint8Array>({
      start: (controller) => {
        this.controller = controller
      },
      pull: (controller) => this.pull(controller),
      cancel: () => this.release(),
      // Pulled only when the consumer reads: nothing is taken ahead.
    }, {highWaterMark: 0})
  }

  /** Hands a written chunk to the consumer; `whenTaken` runs once it has all been pulled. */
  offer(chunk: Uint8Array, whenTaken: () => void): void {
    if (this.closed || chunk.length === 0) {
      whenTaken()
      return
    }

    for (let offset = 0; offset < chunk.length; offset += this.maxPiece) this.pieces.push(chunk.subarray(offset, offset + this.maxPiece))
    this.whenTaken = whenTaken
    this.wake?.()
  }

  end(): void {
    this.ended = true
    this.wake?.()
  }

  /** Makes the consumer's reads fail: the writer side was destroyed. */
  fail(error: Error): void {
    if (this.closed) return
    try {
      this.controller?.error(error)
    } catch {
      // Already closed or errored.
    }

    this.release()
  }

  private async pull(controller: ReadableStreamDefaultController<Uint8Array>): Promise<void> {
    while (this.pieces.length === 0 && !this.ended && !this.closed) await new Promise<void>((resolve) => (this.wake = resolve))
    this.wake = undefined
    if (this.closed) return
    const piece = this.pieces.shift()
    if (piece) {
      controller.enqueue(piece)
      if (this.pieces.length === 0) this.takeAll()
      return
    }

    this.readAfterEnd = true
    this.closed = true
    controller.close()
  }

  /** The consumer went away (it cancelled, or failed): writers must not wait for it. */
  private release(): void {
    this.closed = true
    this.pieces = []
    this.takeAll()
    this.wake?.()
  }

  private takeAll(): void {
    const whenTaken = this.whenTaken
    this.whenTaken = undefined
    whenTaken?.()
  }
}

/**
 * A Node Duplex around a web-streams transformation such as age-encryption's encrypt and
 * decrypt (`ReadableStream` in, `Promise<ReadableStream>` out), so that it fits in
 * `stream/promises.pipeline` between a file and a tar reader or writer.
 *
 * Memory stays bounded whatever the stream's length: a write is held until the transformation
 * takes it (PulledInput), and the transformation's output is read only while this Duplex's own
 * reader wants more. Between the two sit the transformation's own buffers (for age, one 64 KiB
 * chunk each way).
 */
export abstract class WebTransformDuplex extends Duplex {
  protected readonly input: PulledInput
  private reader?: Promise<ReadableStreamDefaultReader<Uint8Array> | undefined>
  private pumping = false

  constructor(maxPiece: number) {
    super({readableHighWaterMark: 128 * 1024})
    this.input = new PulledInput(maxPiece)
  }

  /** Starts the transformation on `input`; resolves to its output. */
  protected abstract transform(input: ReadableStream<Uint8Array>): Promise<ReadableStream<Uint8Array>>

  /** Turns an error of the transformation into what this stream's reader should see. */
  protected describeFailure(error: unknown): Error {
    return error instanceof Error ? error : new Error(String(error))
  }

  /** Called with each chunk the transformation outputs, before it is passed on. */
  protected onOutputChunk(_chunk: Uint8Array): void {}

  // Started here rather than in the constructor, so that a subclass's fields exist when its transform runs.
  override _construct(callback: (error?: Error | null) => void): void {
    let output: Promise<ReadableStream<Uint8Array>>
    try {
      output = this.transform(this.input.stream)
    } catch (error) {
      callback(this.describeFailure(error))
      return
    }

    this.reader = output.then((stream) => stream.getReader(), (error: unknown) => {
      this.fail(error)
      return undefined
    })
    callback()
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.input.offer(chunk, () => callback())
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.input.end()
    callback()
  }

  override _read(): void {
    if (this.pumping) return
    this.pumping = true
    void this.pump()
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.input.fail(error ?? new Error('the stream was destroyed'))
    void this.reader?.then((reader) => reader?.cancel().catch(() => {}))
    callback(error)
  }

  protected fail(error: unknown): void {
    if (this.destroyed) return
    this.destroy(this.describeFailure(error))
  }

  private async pump(): Promise<void> {
    const reader = await this.reader
    if (!reader) return
    try {
      for (;;) {
        const {done, value} = await reader.read()
        if (this.destroyed) return
        if (done) {
          this.push(null)
          return
        }

        this.onOutputChunk(value)
        // An empty chunk (the empty last chunk of an empty plaintext) would stall a byte stream.
        if (value.length > 0 && !this.push(value)) break
      }

      this.pumping = false
    } catch (error) {
      this.fail(error)
    }
  }
}
