import {open, rename, rm} from 'node:fs/promises'
import {dirname} from 'node:path'

import {crashPoint} from './crash-points.js'
import {openPrivateFile} from './private-files.js'

/**
 * Replaces a file so that a crash at any moment leaves either the old content or the new, whole:
 * the new content goes to a temporary file, is flushed to the disk, takes the final name, and
 * the folder's entry is flushed too.
 */
export async function writeFileDurably(path: string, data: string | Buffer): Promise<void> {
  const temporary = `${path}.tmp`
  await rm(temporary, {force: true})
  const handle = await openPrivateFile(temporary, 'wx')
  try {
    try {
      await handle.writeFile(data)
      await handle.sync()
    } finally {
      await handle.close()
    }

    crashPoint('file:temporary-written')
    await rename(temporary, path)
  } catch (error) {
    // A disk that filled up, a path taken: no cut or stray copy is left beside the file (it may hold patient data).
    await rm(temporary, {force: true}).catch(() => {})
    throw error
  }
  crashPoint('file:renamed')
  await syncDirectory(dirname(path))
}

export async function writeJsonAtomically(path: string, value: unknown): Promise<void> {
  await writeFileDurably(path, `${JSON.stringify(value, null, 1)}\n`)
}

/** Flushes a folder's entries (a rename, a new file) to the disk. */
export async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}
