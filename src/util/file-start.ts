import {open} from 'node:fs/promises'

/** The first `bytes` bytes of a file (fewer when it is shorter); nothing when it cannot be opened. */
export async function fileStart(path: string, bytes: number): Promise<Buffer> {
  const file = await open(path, 'r').catch(() => undefined)
  if (!file) return Buffer.alloc(0)
  try {
    const start = Buffer.alloc(bytes)
    return start.subarray(0, (await file.read(start, 0, bytes, 0)).bytesRead)
  } finally {
    await file.close()
  }
}
