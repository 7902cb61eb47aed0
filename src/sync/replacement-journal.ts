import {createHash} from 'node:crypto'
import {mkdtemp, readdir, readFile, rename, rm, writeFile} from 'node:fs/promises'
import {homedir} from 'node:os'
import {join} from 'node:path'

import type {ResourceLevel, SideData} from '../model.js'
import {syncDirectory, writeFileDurably} from '../util/json-file.js'
import {makePrivateFolder} from '../util/private-files.js'
import {keepWritten, LOCK_LEASE_MS, LOCK_REFRESH_MS, ownerIsGone, parseOwner, thisRun, untouchedFor} from '../util/run-lock.js'

/** What a replacement keeps of the target's own beside one resource. */
export interface KeptResource {
  level: ResourceLevel
  id: string
  data: SideData
  bytes: Map<number, Buffer>
}

/** One replacement begun by a run that is gone: what it kept, to be written back. */
export interface LeftReplacement {
  instanceId: string
  kept: KeptResource[]
}

const RUN_PREFIX = 'run-'
const OWNER_FILE = 'owner.pid'
const ENTRY_SUFFIX = '.json'
// Instance IDs as Orthanc writes them: nothing else is a file name here.
const INSTANCE_ID = /^[0-9a-f]{8}(-[0-9a-f]{8}){4}$/

/**
 * Where replacements into `targetUrl` are journaled by default: the user's state folder
 * ($XDG_STATE_HOME, else ~/.local/state), one folder per target. Not the temporary folder: a
 * power cut is what the journal is for, and a reboot may empty /tmp.
 */
export function defaultJournalFolder(targetUrl: string): string {
  const stateHome = process.env.XDG_STATE_HOME || join(homedir(), '.local', 'state')
  return join(stateHome, 'orthanc-replicate', 'replacements', createHash('sha256').update(targetUrl).digest('hex').slice(0, 16))
}

/**
 * What replacements hold of the target's own (see replace.ts), on disk from just before the
 * deletion until the write-back: a run killed in between (kill -9, a power cut) leaves it for the
 * next run into the same target, which takes it over and writes it back. Patient data: private
 * files (0600) in private folders (0700).
 *
 * Each run writes in a folder of its own that names its process, touched while it runs (as its
 * locks are). A folder whose process is certainly gone, or untouched for LOCK_LEASE_MS, is taken
 * over entry by entry (a rename: two runs never both take one). A run leaves its folder behind
 * only when something in it could not be written back.
 */
export class ReplacementJournal {
  private runFolder: Promise<string> | undefined
  private touch: {stop(): Promise<void>} | undefined

  constructor(readonly folder: string) {}

  /** Before the deletion: returns once the entry is on the disk. */
  async record(instanceId: string, kept: KeptResource[]): Promise<void> {
    const folder = await this.ownFolder()
    const entry = {
      instanceId,
      kept: kept.map(({level, id, data, bytes}) => ({level, id, data, bytes: Object.fromEntries([...bytes].map(([contentType, content]) => [contentType, content.toString('base64')]))})),
    }
    await writeFileDurably(join(folder, `${instanceId}${ENTRY_SUFFIX}`), JSON.stringify(entry))
  }

  /** Once written back, or once nothing went: the entry is no longer needed. */
  async remove(instanceId: string): Promise<void> {
    if (this.runFolder === undefined) return
    await rm(join(await this.runFolder, `${instanceId}${ENTRY_SUFFIX}`), {force: true})
  }

  /** Replacements left by runs that are gone, now this run's to write back (and to leave again if it cannot). */
  async takeOver(): Promise<LeftReplacement[]> {
    const names = await readdir(this.folder).catch(() => [] as string[])
    const left: LeftReplacement[] = []
    for (const name of names.filter((entry) => entry.startsWith(RUN_PREFIX))) {
      const folder = join(this.folder, name)
      if (this.runFolder !== undefined && folder === await this.runFolder) continue
      const ownerFile = join(folder, OWNER_FILE)
      const owner = parseOwner(await readFile(ownerFile, 'utf8').catch(() => ''))
      // A folder left without its owner file (killed as it was made) is abandoned too.
      if (owner && !ownerIsGone(owner) && !(await untouchedFor(ownerFile, this.folder) > LOCK_LEASE_MS)) continue
      for (const entry of (await readdir(folder).catch(() => [] as string[])).filter((file) => file.endsWith(ENTRY_SUFFIX))) {
        const mine = join(await this.ownFolder(), entry)
        // Another run took it first.
        if (!(await rename(join(folder, entry), mine).then(() => true, () => false))) continue
        const parsed = parseEntry(await readFile(mine, 'utf8'))
        if (parsed) left.push(parsed)
      }
      await rm(folder, {recursive: true, force: true}).catch(() => {})
    }
    if (this.runFolder !== undefined) await syncDirectory(await this.runFolder)
    return left
  }

  /** At the end of the run: its folder goes unless something in it still waits to be written back. */
  async close(): Promise<void> {
    if (this.runFolder === undefined) return
    const folder = await this.runFolder
    await this.touch?.stop()
    const waiting = (await readdir(folder).catch(() => [] as string[])).some((file) => file.endsWith(ENTRY_SUFFIX))
    if (!waiting) await rm(folder, {recursive: true, force: true})
  }

  /** Where this run writes: made on first need, so that a sync that replaces nothing writes nothing. */
  private ownFolder(): Promise<string> {
    this.runFolder ??= (async () => {
      await makePrivateFolder(this.folder)
      const folder = await mkdtemp(join(this.folder, RUN_PREFIX))
      const content = `${JSON.stringify(thisRun())}\n`
      await writeFile(join(folder, OWNER_FILE), content, {mode: 0o600, flag: 'wx'})
      this.touch = keepWritten(join(folder, OWNER_FILE), content, LOCK_REFRESH_MS)
      return folder
    })()
    return this.runFolder
  }
}

function parseEntry(text: string): LeftReplacement | undefined {
  try {
    const entry = JSON.parse(text) as {instanceId?: unknown; kept?: Array<{level: ResourceLevel; id: string; data: SideData; bytes: Record<string, string>}>}
    if (typeof entry.instanceId !== 'string' || !INSTANCE_ID.test(entry.instanceId) || !Array.isArray(entry.kept)) return undefined
    return {
      instanceId: entry.instanceId,
      kept: entry.kept.map(({level, id, data, bytes}) => ({level, id, data, bytes: new Map(Object.entries(bytes).map(([contentType, content]) => [Number(contentType), Buffer.from(content, 'base64')]))})),
    }
  } catch {
    // A half-written entry cannot be: entries are written to a temporary file, then renamed.
    return undefined
  }
}
