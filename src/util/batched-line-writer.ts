import type {FileHandle} from 'node:fs/promises'

import {openPrivateFile} from './private-files.js'

/** Lines gathered up to this size go to the file in one write. */
const BATCH_CHARS = 1024 * 1024

/**
 * Writes a JSON-lines file in batches of about 1 MiB. One write per line (per instance) cost a
 * trip through Node's thread pool each, on the main thread that a transfer is bound by. Use it
 * only for files that are not read back before they are ended: a batch is held in memory until
 * it is full or the file ends. Writes go through a file handle, whose failures (a full disk) are
 * rejected promises for the caller, never an 'error' event nobody listens to.
 */
export class BatchedLineWriter {
  /** File writes made so far. */
  writes = 0
  private batch: string[] = []
  private chars = 0
  /** Batches are written one after another, in order, whoever triggered them. */
  private queue: Promise<void> = Promise.resolve()

  private constructor(private readonly handle: FileHandle) {}

  /** Creates (or empties) the file, private to its owner (and the sharing group, if any). */
  static async create(path: string): Promise<BatchedLineWriter> {
    return new BatchedLineWriter(await openPrivateFile(path, 'w'))
  }

  async write(line: string): Promise<void> {
    this.batch.push(line)
    this.chars += line.length
    if (this.chars >= BATCH_CHARS) await this.flush()
  }

  /** Writes what is left, flushes it to the disk when asked, and closes the file. */
  async end(options: {sync?: boolean} = {}): Promise<void> {
    try {
      await this.flush()
      if (options.sync) await this.handle.sync()
    } finally {
      await this.handle.close()
    }
  }

  /** Closes the file without writing what is left: the job failed, the file is not to be used. */
  async abandon(): Promise<void> {
    this.batch = []
    await this.handle.close().catch(() => {})
  }

  private async flush(): Promise<void> {
    const text = this.batch.join('')
    this.batch = []
    this.chars = 0
    if (!text) return this.queue
    const written = this.queue.then(async () => {
      this.writes++
      await this.handle.write(text)
    })
    // A failed write fails its caller; later batches are not written after it.
    this.queue = written
    return written
  }
}
