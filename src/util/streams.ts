import type {Readable, Writable} from 'node:stream'

/** Reads a whole stream into one buffer: only for bodies known to be small or bounded. */
export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string))
  return Buffer.concat(chunks)
}

/** Writes a chunk, and waits for the stream to drain when its buffer is full. */
export async function writeWithBackpressure(stream: Writable, chunk: string | Buffer): Promise<void> {
  if (!stream.write(chunk)) await new Promise<void>((resolve) => stream.once('drain', () => resolve()))
}

/** Ends a stream and waits until everything written has been flushed, or it failed. */
export async function endStream(stream: Writable): Promise<void> {
  await new Promise<void>((resolve, reject) => stream.end((error?: Error | null) => (error ? reject(error) : resolve())))
}
