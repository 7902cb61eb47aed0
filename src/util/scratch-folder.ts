import {mkdtemp, readdir, readFile, rm, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {ownerIsGone, parseOwner, thisRun} from './run-lock.js'

/** In each scratch folder: the process that made it (and its machine and PID namespace). */
export const OWNER_FILE = 'owner.pid'

/**
 * A private folder (0700) for what must not outlive the run that made it: the spool of a bag read
 * from a pipe (decrypted patient data), the private copy of a SQLite index, the plan of an export
 * to a stream, a sync's comparison. Each run removes its own when it ends, even when interrupted;
 * a run that is killed outright (kill -9, a power cut) cannot. So each folder names the process
 * that made it, and the next run that makes one of the same kind in the same place first removes
 * those whose process is gone. A folder whose process still runs, that another machine or PID
 * namespace made (a shared --spool-dir, a container), or that names none, is left.
 */
export async function makeScratchFolder(parent: string, prefix: string): Promise<string> {
  await removeAbandoned(parent, prefix)
  const dir = await mkdtemp(join(parent, prefix))
  try {
    await writeFile(join(dir, OWNER_FILE), `${JSON.stringify(thisRun())}\n`, {mode: 0o600, flag: 'wx'})
  } catch (error) {
    await rm(dir, {recursive: true, force: true})
    throw error
  }

  return dir
}

async function removeAbandoned(parent: string, prefix: string): Promise<void> {
  const names = await readdir(parent).catch(() => [] as string[])
  await Promise.all(names.filter((name) => name.startsWith(prefix)).map(async (name) => {
    const dir = join(parent, name)
    const owner = parseOwner(await readFile(join(dir, OWNER_FILE), 'utf8').catch(() => ''))
    if (!owner || !ownerIsGone(owner)) return
    // Another user's folder cannot be removed, and is not ours to judge: left as it is.
    await rm(dir, {recursive: true, force: true}).catch(() => {})
  }))
}
