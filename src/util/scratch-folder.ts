import {mkdtemp, readdir, readFile, rm, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {keepWritten, LOCK_LEASE_MS, LOCK_REFRESH_MS, ownerIsGone, parseOwner, thisRun, untouchedFor} from './run-lock.js'

/** In each scratch folder: the process that made it (and its machine and PID namespace). */
export const OWNER_FILE = 'owner.pid'

/** The touch of each scratch folder this run made and has not removed. */
const touching = new Map<string, {stop(): Promise<void>}>()

/**
 * A private folder (0700) for what must not outlive the run that made it: the spool of a bag read
 * from a pipe (decrypted patient data), the private copy of a SQLite index, the plan of an export
 * to a stream, a sync's comparison. Each run removes its own when it ends, even when interrupted;
 * a run that is killed outright (kill -9, a power cut) cannot. So each folder names the process
 * that made it, which touches that file while it runs, as it does its locks (see RunLock); the
 * next run that makes one of the same kind in the same place first removes those whose process is
 * certainly gone, and those untouched for LOCK_LEASE_MS, whoever made them (another machine or
 * PID namespace on a shared --spool-dir, a container). A folder that names no one is left.
 */
export async function makeScratchFolder(parent: string, prefix: string, options: {refreshMs?: number} = {}): Promise<string> {
  await removeAbandoned(parent, prefix)
  const dir = await mkdtemp(join(parent, prefix))
  const owner = join(dir, OWNER_FILE)
  const content = `${JSON.stringify(thisRun())}\n`
  try {
    await writeFile(owner, content, {mode: 0o600, flag: 'wx'})
  } catch (error) {
    await rm(dir, {recursive: true, force: true})
    throw error
  }

  // Touched until the folder is removed (by its users, with removeScratchFolder).
  touching.set(dir, keepWritten(owner, content, options.refreshMs ?? LOCK_REFRESH_MS))
  return dir
}

/**
 * Removes a scratch folder this run made, once its touch has stopped: a touch in flight holds the
 * owner file open, and on NFS a file held open cannot be removed (the folder would stay).
 */
export async function removeScratchFolder(dir: string): Promise<void> {
  await touching.get(dir)?.stop()
  touching.delete(dir)
  await rm(dir, {recursive: true, force: true})
}

async function removeAbandoned(parent: string, prefix: string): Promise<void> {
  const names = await readdir(parent).catch(() => [] as string[])
  await Promise.all(names.filter((name) => name.startsWith(prefix)).map(async (name) => {
    const dir = join(parent, name)
    const ownerFile = join(dir, OWNER_FILE)
    const owner = parseOwner(await readFile(ownerFile, 'utf8').catch(() => ''))
    if (!owner) return
    // Judged by the clock of the folder's file system (probed in the parent, which this run can write).
    if (!ownerIsGone(owner) && !(await untouchedFor(ownerFile, parent) > LOCK_LEASE_MS)) return
    // Another user's folder cannot be removed, and is not ours to judge: left as it is.
    await rm(dir, {recursive: true, force: true}).catch(() => {})
  }))
}
