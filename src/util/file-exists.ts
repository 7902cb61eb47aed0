import {stat} from 'node:fs/promises'

/** Whether something exists at `path` (a file, a folder, anything `stat` can see). */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path)
    return true
  } catch {
    return false
  }
}
