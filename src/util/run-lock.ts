import {randomBytes} from 'node:crypto'
import {readlinkSync} from 'node:fs'
import {open, readdir, readFile, rm, stat, writeFile} from 'node:fs/promises'
import {hostname} from 'node:os'
import {dirname, join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

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
  token?: string
}

const PID_NAMESPACE = (() => {
  try {
    return readlinkSync('/proc/self/ns/pid')
  } catch {
    return undefined
  }
})()

export function thisRun(): RunOwner {
  // The token tells apart two owners one process writes in the same millisecond: a holder lets go
  // of a file only while it holds its own content, and another lock of this process is not its own.
  return {pid: process.pid, host: hostname(), ...(PID_NAMESPACE ? {pidNamespace: PID_NAMESPACE} : {}), startedAt: new Date().toISOString(), token: randomBytes(6).toString('hex')}
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

/** The lock file cannot be created where it must be: a missing or read-only folder. */
export class LockUnwritableError extends UserFacingError {
  constructor(readonly path: string, what: string, readonly reason: string) {
    const full = reason === 'ENOSPC' || reason === 'EDQUOT'
    super(
      `${what} cannot be used: its lock file ${path} cannot be created (${reason})`,
      full ? 'Free space on that disk, or give a path on another one.' : 'Give a path in a folder that exists and that you can write.',
      full ? 'no-space' : 'usage', 'lock-unwritable',
    )
  }
}

/**
 * A holder touches its lock this often, and a lock untouched for LOCK_LEASE_MS is taken over
 * whoever left it: a run killed on another machine or in a container (whose process ID means
 * nothing here), a process ID reused since, a lock file left empty by a kill as it was taken.
 */
export const LOCK_REFRESH_MS = 15_000
export const LOCK_LEASE_MS = 90_000

/**
 * A lock file that keeps two runs off the same thing (an export's folder, a mirror's state file,
 * a receipt): created exclusively with its owner inside, touched while the run holds it, removed
 * when the run ends. A lock left by a run that was killed is taken over: at once when its owner
 * is certainly gone (see ownerIsGone), otherwise once it has not been touched for LOCK_LEASE_MS.
 * A lock in use refuses a second run at once, before it writes anything.
 */
export class RunLock {
  private readonly refresh: {stop(): Promise<void>}

  private constructor(readonly path: string, private readonly content: string, refreshMs: number) {
    this.refresh = keepWritten(path, content, refreshMs)
  }

  /** `what` names the thing locked in the refusal: "The export folder out/". */
  static async acquire(path: string, what: string, options: {refreshMs?: number} = {}): Promise<RunLock> {
    const content = `${JSON.stringify(thisRun())}\n`
    for (let attempt = 0; attempt < 100; attempt++) {
      if (await createLockFile(path, content).catch((error: unknown) => {
        throw new LockUnwritableError(path, what, (error as NodeJS.ErrnoException).code ?? (error as Error).message)
      })) return new RunLock(path, content, options.refreshMs ?? LOCK_REFRESH_MS)
      const text = await readFile(path, 'utf8').catch(() => undefined)
      if (text === undefined) continue // Released meanwhile: try again.
      const owner = parseOwner(text)
      if (!((owner && ownerIsGone(owner)) || await untouchedFor(path) > LOCK_LEASE_MS)) throw busy(path, what, owner)
      await removeAbandoned(path, text)
    }

    throw busy(path, what, undefined)
  }

  /** Removes the lock, if it still is this run's (a run suspended past the lease may find it taken over). */
  async release(): Promise<void> {
    await this.refresh.stop()
    if ((await readFile(this.path, 'utf8').catch(() => undefined)) === this.content) await rm(this.path, {force: true})
  }
}

/**
 * Removes an abandoned lock, one run at a time (a second file, created exclusively, says who),
 * and only if it still is the lock judged abandoned: runs that find it at the same moment must not
 * remove the lock one of them has just taken. Whoever then creates the lock file first has it.
 */
async function removeAbandoned(path: string, abandoned: string): Promise<void> {
  const turn = `${path}.taking-over`
  if (!(await createLockFile(turn, `${process.pid}\n`))) {
    // Another run is at it; one killed in those few instants left its file: gone after a while.
    if (await untouchedFor(turn) > TAKE_OVER_MS) await rm(turn, {force: true})
    else await sleep(10)
    return
  }
  try {
    if ((await readFile(path, 'utf8').catch(() => undefined)) === abandoned) await rm(path, {force: true})
  } finally {
    await rm(turn, {force: true})
  }
}

/**
 * Touches a file every `refreshMs` by writing its content again: the file system then stamps the
 * time with its own clock (an NFS or SMB server's, not this machine's, which may be far off). The
 * file is opened for each touch and closed after (closing sends the write to an NFS server; a file
 * held open could not be removed there), and written only if it still holds this run's content: a
 * lock taken over and made anew by another run is left as it is, and touching stops.
 */
export function keepWritten(path: string, content: string, refreshMs: number): {stop(): Promise<void>} {
  let touching: Promise<void> = Promise.resolve()
  let stopped = false
  const touch = async () => {
    const file = await open(path, 'r+')
    try {
      if ((await file.readFile('utf8')) !== content) {
        stopped = true
        return
      }

      await file.write(content, 0, 'utf8')
    } finally {
      await file.close()
    }
  }
  // Each touch is timed from the end of the last one: on a slow file system (NFS) they never pile up.
  let timer: NodeJS.Timeout
  const next = () => {
    timer = setTimeout(() => {
      touching = touch().then(() => {
        if (!stopped) next()
      }, () => {})
    }, refreshMs).unref()
  }
  next()
  return {
    async stop() {
      stopped = true
      clearTimeout(timer)
      await touching
    },
  }
}

/**
 * How long since a file was last written, in ms (0 when it is gone), by the clock of the file
 * system it is on: a probe file written in `probeFolder` (by default beside it) now says what
 * time that clock shows. This machine's clock may be far from the one of the machine that wrote
 * the file (a shared folder). Where no probe can be written, this machine's clock it is.
 */
export async function untouchedFor(path: string, probeFolder = dirname(path)): Promise<number> {
  const touched = (await stat(path).catch(() => undefined))?.mtimeMs
  if (touched === undefined) return 0
  return (await fileSystemNow(probeFolder) ?? Date.now()) - touched
}

const CLOCK_PROBE = '.orthanc-replicate-clock-'

/** A probe lives for microseconds: one this much older than now was left by a run killed meanwhile. */
const LEFT_PROBE_MS = 60_000

async function fileSystemNow(folder: string): Promise<number | undefined> {
  const probe = join(folder, `${CLOCK_PROBE}${process.pid}-${randomBytes(4).toString('hex')}`)
  try {
    await writeFile(probe, '', {flag: 'wx', mode: 0o600})
    const now = (await stat(probe)).mtimeMs
    await removeLeftProbes(folder, now)
    return now
  } catch {
    return undefined
  } finally {
    await rm(probe, {force: true})
  }
}

async function removeLeftProbes(folder: string, now: number): Promise<void> {
  const names = (await readdir(folder).catch(() => [] as string[])).filter((name) => name.startsWith(CLOCK_PROBE))
  for (const name of names) {
    const path = join(folder, name)
    const written = (await stat(path).catch(() => undefined))?.mtimeMs
    if (written !== undefined && now - written > LEFT_PROBE_MS) await rm(path, {force: true}).catch(() => {})
  }
}

/** Longer than any take-over lasts. */
const TAKE_OVER_MS = 10_000

async function createLockFile(path: string, content: string): Promise<boolean> {
  let handle
  try {
    handle = await open(path, 'wx', 0o600)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false
    throw error
  }

  try {
    try {
      await handle.writeFile(content)
      await handle.sync()
    } finally {
      await handle.close()
    }
  } catch (error) {
    // Ours, and empty or cut (a full disk): left there, it would hold off every run for the lease.
    await rm(path, {force: true}).catch(() => {})
    throw error
  }

  return true
}

function busy(path: string, what: string, owner: RunOwner | undefined): UserFacingError {
  const by = owner ? ` (process ${owner.pid}${owner.host && owner.host !== hostname() ? ` on ${owner.host}` : ''}${owner.startedAt ? `, since ${owner.startedAt}` : ''})` : ''
  return new UserFacingError(
    `${what} is in use by another run${by}: two runs at once would write over each other`,
    `Wait for that run to end, or stop it. A lock its run no longer touches is taken over after ${LOCK_LEASE_MS / 1000} s; if that run is certainly gone, removing ${path} does it now.`,
    'usage', 'in-use',
  )
}
