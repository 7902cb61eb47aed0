import type {Writable} from 'node:stream'

import {endStream, writeWithBackpressure} from './streams.js'

/** Lines gathered up to this size go to the file in one write. */
const BATCH_CHARS = 1024 * 1024

/**
 * Writes a JSON-lines file in batches of about 1 MiB. One write per line (per instance) cost a
 * trip through Node's thread pool each, on the main thread that a transfer is bound by. Use it
 * only for files that are not read back before they are ended: a batch is held in memory until
 * it is full or the file ends.
 */
export class BatchedLineWriter {
  private batch: string[] = []
  private chars = 0

  constructor(private readonly file: Writable) {}

  async write(line: string): Promise<void> {
    this.batch.push(line)
    this.chars += line.length
    if (this.chars >= BATCH_CHARS) await this.flush()
  }

  async end(): Promise<void> {
    await this.flush()
    await endStream(this.file)
  }

  private async flush(): Promise<void> {
    const text = this.batch.join('')
    this.batch = []
    this.chars = 0
    if (text) await writeWithBackpressure(this.file, text)
  }
}
