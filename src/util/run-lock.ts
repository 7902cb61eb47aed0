import {readlinkSync} from 'node:fs'
import {open, readFile, rm, stat} from 'node:fs/promises'
import {hostname} from 'node:os'

import {UserFacingError} from '../errors.js'

/**
 * Who holds a lock or made a scratch folder: enough to tell whether it still runs. A process ID
 * means something only on its own machine and in its own PID namespace (a container, `unshare`),
 * so both are named with it.
 */
export interface RunOwner {
  pid: number
  host?: string
  pidNamespace?: string
  startedAt?: string
}

const PID_NAMESPACE = (() => {
  try {
    return readlinkSync('/proc/self/ns/pid')
  } catch {
    return undefined
  }
})()

export function thisRun(): RunOwner {
  return {pid: process.pid, host: hostname(), ...(PID_NAMESPACE ? {pidNamespace: PID_NAMESPACE} : {}), startedAt: new Date().toISOString()}
}

/** An owner as written, or the bare process ID earlier versions wrote; undefined when neither. */
export function parseOwner(text: string): RunOwner | undefined {
  const bare = text.trim()
  if (/^\d+$/.test(bare)) return {pid: Number(bare)}
  try {
    const owner = JSON.parse(bare) as Partial<RunOwner>
    return Number.isInteger(owner.pid) && owner.pid! > 0 ? owner as RunOwner : undefined
  } catch {
    return undefined
  }
}

/**
 * Whether the owner is certainly gone: it ran here, in this PID namespace, and no process has its
 * ID. An owner from another machine or namespace may still run: never judged gone. (A bare ID,
 * from an earlier version, is judged by the ID alone, as then.)
 */
export function ownerIsGone(owner: RunOwner): boolean {
  if (owner.host !== undefined && owner.host !== hostname()) return false
  if (owner.pidNamespace !== undefined && owner.pidNamespace !== PID_NAMESPACE) return false
  try {
    process.kill(owner.pid, 0)
    return false
  } catch (error) {
    // Another user's process answers EPERM: it runs.
    return (error as NodeJS.ErrnoException).code !== 'EPERM'
  }
}

/** A lock whose file is still empty or unreadable after this long was left by a run killed as it took it. */
const HALF_WRITTEN_LOCK_MS = 60_000

/**
 * A lock file that keeps two runs off the same thing (an export's folder, a mirror's state file,
 * a receipt): created exclusively with its owner inside, removed when the run ends. A lock left by
 * a run that was killed is taken over, but only when its owner is certainly gone (see
 * ownerIsGone); otherwise the second run is refused at once, before it writes anything.
 */
export class RunLock {
  private constructor(readonly path: string) {}

  /** `what` names the thing locked in the refusal: "the export folder out/". */
  static async acquire(path: string, what: string): Promise<RunLock> {
    for (let attempt = 0; attempt < 3; attempt++) {
      if (await createLockFile(path)) return new RunLock(path)
      const text = await readFile(path, 'utf8').catch(() => undefined)
      if (text === undefined) continue // Released meanwhile: try again.
      const owner = parseOwner(text)
      const age = Date.now() - ((await stat(path).catch(() => undefined))?.mtimeMs ?? Date.now())
      const abandoned = owner ? ownerIsGone(owner) : age > HALF_WRITTEN_LOCK_MS
      if (!abandoned) throw busy(path, what, owner)
      // Taken over only if it is still the lock judged abandoned (another run may have taken it over already).
      if ((await readFile(path, 'utf8').catch(() => undefined)) === text) await rm(path, {force: true})
    }

    throw busy(path, what, undefined)
  }

  async release(): Promise<void> {
    await rm(this.path, {force: true})
  }
}

async function createLockFile(path: string): Promise<boolean> {
  let handle
  try {
    handle = await open(path, 'wx', 0o600)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false
    throw error
  }

  try {
    await handle.writeFile(`${JSON.stringify(thisRun())}\n`)
    await handle.sync()
  } finally {
    await handle.close()
  }

  return true
}

function busy(path: string, what: string, owner: RunOwner | undefined): UserFacingError {
  const by = owner ? ` (process ${owner.pid}${owner.host && owner.host !== hostname() ? ` on ${owner.host}` : ''}${owner.startedAt ? `, since ${owner.startedAt}` : ''})` : ''
  return new UserFacingError(
    `${what} is in use by another run${by}: two runs at once would write over each other`,
    `Wait for that run to end, or stop it. If it is certainly gone (another machine's run that was killed), remove ${path} and run again.`,
    'usage', 'in-use',
  )
}
