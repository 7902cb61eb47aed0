import {rename, writeFile} from 'node:fs/promises'

/** Writes a JSON file through a temporary file and a rename, so that a crash never leaves half of it. */
export async function writeJsonAtomically(path: string, value: unknown): Promise<void> {
  await writeFile(`${path}.tmp`, `${JSON.stringify(value, null, 1)}\n`)
  await rename(`${path}.tmp`, path)
}
