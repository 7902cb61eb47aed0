import {access, constants, open, stat, statfs} from 'node:fs/promises'
import type {FileHandle} from 'node:fs/promises'
import {join} from 'node:path'

import {UserFacingError} from '../errors.js'
import {makeScratchFolder, removeScratchFolder} from '../util/scratch-folder.js'

/**
 * A --spool-dir that cannot hold a spool is bad usage, said before anything is read: met only
 * once a stream's first volume arrives, it was taken for a failing drive (exit 16, "it resumes").
 */
export async function checkSpoolFolder(path: string): Promise<void> {
  const unusable = (why: string) => new UserFacingError(`--spool-dir ${path} ${why}`, 'Give --spool-dir a folder that exists and that this user can write, on a disk with room for one volume.', 'usage', 'unusable-spool-dir')
  const info = await stat(path).catch(() => undefined)
  if (!info) throw unusable('does not exist')
  if (!info.isDirectory()) throw unusable('is not a folder')
  await access(path, constants.W_OK | constants.X_OK).catch(() => {
    throw unusable('cannot be written by this user')
  })
}

/**
 * Where the payload of a bag read from a stream waits until the bag's tag files arrive and prove
 * it: nothing of a bag may reach a target before its whole trust chain is checked, and on a
 * stream the tag manifest comes last. One private file (0600, in a 0700 folder) per bag, read
 * back in arrival order, removed as soon as the bag is done.
 */
export class BagSpool {
  private readonly entries: Array<{path: string; offset: number; size: number}> = []
  private end = 0

  private constructor(private readonly dir: string, private readonly file: FileHandle) {}

  static async open(parent: string): Promise<BagSpool> {
    const dir = await makeScratchFolder(parent, 'orthanc-replicate-spool-')
    try {
      return new BagSpool(dir, await open(join(dir, 'payload'), 'wx+', 0o600))
    } catch (error) {
      await removeScratchFolder(dir)
      throw error
    }
  }

  /** Refuses to start a bag that cannot fit: better said now than after gigabytes. */
  static async ensureRoom(parent: string, bytes: number, what: string): Promise<void> {
    const stats = await statfs(parent)
    const free = stats.bavail * stats.bsize
    if (free < bytes) {
      throw new UserFacingError(
        `not enough room in ${parent} to hold ${what} (${bytes} bytes, ${free} free) while its checks are done`,
        'A volume read from a pipe waits on disk until its tag manifest has proven it: free space there, or give --spool-dir a folder on a larger disk.',
        'no-space', 'no-spool-space')
    }
  }

  async add(path: string, data: Buffer): Promise<void> {
    let written = 0
    while (written < data.length) written += (await this.file.write(data, written, data.length - written, this.end + written)).bytesWritten
    this.entries.push({path, offset: this.end, size: data.length})
    this.end += data.length
  }

  get size(): number {
    return this.end
  }

  /** The entries in the order they were added, read back from the disk. */
  async *readBack(): AsyncGenerator<{path: string; data: Buffer}> {
    for (const entry of this.entries) {
      const data = Buffer.allocUnsafe(entry.size)
      let filled = 0
      while (filled < entry.size) {
        const {bytesRead} = await this.file.read(data, filled, entry.size - filled, entry.offset + filled)
        if (bytesRead === 0) break
        filled += bytesRead
      }
      yield {path: entry.path, data: data.subarray(0, filled)}
    }
  }

  async dispose(): Promise<void> {
    await this.file.close().catch(() => {})
    await removeScratchFolder(this.dir)
  }
}
