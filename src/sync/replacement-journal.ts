import {createHash, randomBytes} from 'node:crypto'
import {chmod, lstat, mkdtemp, readdir, readFile, rename, rm, rmdir, writeFile} from 'node:fs/promises'
import {homedir} from 'node:os'
import {isAbsolute, join} from 'node:path'

import {UserFacingError} from '../errors.js'
import type {ResourceLevel, SideData} from '../model.js'
import {FileTooLargeError, isFileSystemError, readWholeFile} from '../sources/dicom-folder.js'
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
  /** Its entry, now in this run's folder: removed once written back. */
  entry: string
  instanceId: string
  kept: KeptResource[]
  /** The levels its deletion took, when its answer came before the run ended; else not known (all of them). */
  went?: ResourceLevel[]
}

const RUN_PREFIX = 'run-'
const MAKING_PREFIX = 'making-'
const OWNER_FILE = 'owner.pid'
const TARGET_FILE = 'target.txt'
const ENTRY_SUFFIX = '.json'
const LEVELS = new Set<string>(['instance', 'series', 'study', 'patient'])
// Orthanc's IDs: nothing else names a resource an entry writes onto.
const ORTHANC_ID = /^[0-9a-f]{8}(-[0-9a-f]{8}){4}$/
/** Far above what a replacement holds (64 MiB, base64): a larger entry is not one this tool wrote. */
const LARGEST_ENTRY_BYTES = 512 * 1024 * 1024

/** The run folders this process made and has not closed: another pass of the same mirror may not take them over. */
const liveFolders = new Set<string>()

/**
 * Where replacements into `targetUrl` are journaled by default: the user's state folder
 * ($XDG_STATE_HOME when it is an absolute path, else ~/.local/state), one folder per target. Not
 * the temporary folder: a power cut is what the journal is for, and a reboot may empty /tmp. The
 * target is told by its URL as written (credentials left out): another spelling of the same server
 * (localhost for 127.0.0.1) is another folder, so the README asks for one spelling.
 */
export function defaultJournalFolder(targetUrl: string): string {
  const configured = process.env.XDG_STATE_HOME
  const stateHome = configured && isAbsolute(configured) ? configured : join(homedir(), '.local', 'state')
  return join(stateHome, 'orthanc-replicate', 'replacements', createHash('sha256').update(targetUrl).digest('hex').slice(0, 16))
}

/**
 * What replacements hold of the target's own (see replace.ts), on disk from just before the
 * deletion until the write-back: a run killed in between (kill -9, a power cut) leaves it for the
 * next run into the same target, which takes it over and writes it back. Patient data: private
 * files (0600) in private folders (0700).
 *
 * Each run writes in a folder of its own that names its process, touched while it runs (as its
 * locks are), made whole under another name and then renamed, so that no run is ever seen without
 * its owner. A folder whose process is certainly gone (or is this one, from an earlier pass), or
 * untouched for LOCK_LEASE_MS, is taken over entry by entry (a rename: two runs never both take
 * one). Each entry is a file of its own, so that a replacement of an instance begun again never
 * touches what an earlier one left. A run leaves its folder behind only when something in it
 * could not be written back.
 */
export class ReplacementJournal {
  private runFolder: Promise<string> | undefined
  private touch: {stop(): Promise<void>} | undefined

  constructor(readonly folder: string, private readonly targetUrl = '') {}

  /** Before the deletion: returns the entry once it is on the disk. */
  async record(instanceId: string, kept: KeptResource[]): Promise<string> {
    const entry = join(await this.ownFolder(), `${instanceId}.${randomBytes(6).toString('hex')}${ENTRY_SUFFIX}`)
    try {
      await this.write(entry, instanceId, kept)
    } catch (error) {
      if (!isFileSystemError(error)) throw error
      throw unwritable(this.folder, error)
    }
    return entry
  }

  /**
   * Once the deletion answered: which levels it took, so that only those get their data back,
   * whoever writes it back. Returns false when the disk would not take it: past the deletion,
   * stopping would leave the instance off the target until the next run. The replacement goes on
   * (this run knows what went); the entry written before the deletion stands, without the levels,
   * and only a run killed before the write-back ends leaves it so (its successor then writes back
   * at every level whatever is absent there).
   */
  async noteWent(entry: string, instanceId: string, kept: KeptResource[], went: Iterable<ResourceLevel>): Promise<boolean> {
    try {
      await this.write(entry, instanceId, kept, [...went])
      return true
    } catch (error) {
      if (!isFileSystemError(error)) throw error
      return false
    }
  }

  /** Once written back, or once nothing went: the entry is no longer needed. */
  async remove(entry: string): Promise<void> {
    await rm(entry, {force: true})
  }

  /** Replacements left by runs that are gone, now this run's to write back (and to leave again if it cannot). */
  async takeOver(): Promise<LeftReplacement[]> {
    const names = await readdir(this.folder).catch(() => [] as string[])
    const left: LeftReplacement[] = []
    for (const name of names.filter((entry) => entry.startsWith(RUN_PREFIX))) {
      const folder = join(this.folder, name)
      if (liveFolders.has(folder) || !(await isRealFolder(folder)) || !(await this.isAbandoned(folder))) continue
      for (const file of (await readdir(folder).catch(() => [] as string[])).filter((entry) => entry.endsWith(ENTRY_SUFFIX))) {
        const mine = join(await this.ownFolder(), file)
        // Another run took it first.
        if (!(await rename(join(folder, file), mine).then(() => true, () => false))) continue
        // Private, whatever mode it was left with.
        await chmod(mine, 0o600).catch(() => {})
        left.push(await readEntry(mine, file))
      }
      // What else a kill leaves there: an entry it was writing (`.tmp`: cut short; a first write
      // came before the DELETE, and a rewrite leaves the entry it would have replaced standing)
      // and the owner file. Not recursively: a run judged gone by its lease may still write an
      // entry there, and that stays for the next run.
      await removeLeftovers(folder)
    }
    // Folders killed while being made hold only their owner file. One without it may be another
    // run's, between its making and its owner file: left.
    for (const name of names.filter((entry) => entry.startsWith(MAKING_PREFIX))) {
      const folder = join(this.folder, name)
      const owner = parseOwner(await readFile(join(folder, OWNER_FILE), 'utf8').catch(() => ''))
      if (owner && (await isRealFolder(folder)) && (await this.isAbandoned(folder))) await removeLeftovers(folder)
    }
    if (this.runFolder !== undefined) await syncDirectory(await this.runFolder)
    return left
  }

  /** At the end of the run: its folder goes unless something in it still waits to be written back. */
  async close(): Promise<void> {
    if (this.runFolder === undefined) return
    const folder = await this.runFolder
    await this.touch?.stop()
    liveFolders.delete(folder)
    const waiting = (await readdir(folder).catch(() => [] as string[])).some((file) => file.endsWith(ENTRY_SUFFIX))
    if (!waiting) await rm(folder, {recursive: true, force: true})
  }

  private async write(entry: string, instanceId: string, kept: KeptResource[], went?: ResourceLevel[]): Promise<void> {
    const content = {
      instanceId,
      ...(went ? {went} : {}),
      kept: kept.map(({level, id, data, bytes}) => ({level, id, data, bytes: Object.fromEntries([...bytes].map(([contentType, value]) => [contentType, value.toString('base64')]))})),
    }
    await writeFileDurably(entry, JSON.stringify(content))
  }

  private async isAbandoned(folder: string): Promise<boolean> {
    const ownerFile = join(folder, OWNER_FILE)
    const owner = parseOwner(await readFile(ownerFile, 'utf8').catch(() => ''))
    // Folders are renamed into place with their owner file: one without is not this tool's own, or is its last remains.
    if (!owner) return true
    if (owner.pid === process.pid && ownerIsThisMachine(owner)) return true
    return ownerIsGone(owner) || (await untouchedFor(ownerFile, this.folder)) > LOCK_LEASE_MS
  }

  /** Where this run writes: made on first need, so that a sync that replaces nothing writes nothing. */
  private ownFolder(): Promise<string> {
    this.runFolder ??= (async () => {
      let making: string | undefined
      try {
        await makePrivateFolder(this.folder)
        // Which server this folder is for, for a person looking at the journal (no credentials: the URL as displayed).
        await writeFile(join(this.folder, TARGET_FILE), `${this.targetUrl}\n`, {mode: 0o600}).catch(() => {})
        making = await mkdtemp(join(this.folder, MAKING_PREFIX))
        const content = `${JSON.stringify(thisRun())}\n`
        await writeFile(join(making, OWNER_FILE), content, {mode: 0o600, flag: 'wx'})
        const folder = join(this.folder, RUN_PREFIX + making.slice(join(this.folder, MAKING_PREFIX).length))
        await rename(making, folder)
        liveFolders.add(folder)
        this.touch = keepWritten(join(folder, OWNER_FILE), content, LOCK_REFRESH_MS)
        return folder
      } catch (error) {
        // Never renamed into place: nobody else would ever remove it.
        if (making) await rm(making, {recursive: true, force: true}).catch(() => {})
        if (!isFileSystemError(error)) throw error
        throw unwritable(this.folder, error)
      }
    })()
    return this.runFolder
  }
}

async function removeLeftovers(folder: string): Promise<void> {
  for (const name of await readdir(folder).catch(() => [] as string[])) {
    if (name === OWNER_FILE || name.endsWith(`${ENTRY_SUFFIX}.tmp`)) await rm(join(folder, name), {force: true}).catch(() => {})
  }
  await rmdir(folder).catch(() => {})
}

function ownerIsThisMachine(owner: {host?: string}): boolean {
  return owner.host === undefined || owner.host === thisRun().host
}

async function isRealFolder(path: string): Promise<boolean> {
  return (await lstat(path).catch(() => undefined))?.isDirectory() === true
}

function unwritable(folder: string, error: NodeJS.ErrnoException): UserFacingError {
  const full = error.code === 'ENOSPC' || error.code === 'EDQUOT'
  return new UserFacingError(
    `the replacement journal cannot be written in ${folder} (${error.message}): no instance is replaced without it, and none was`,
    full
      ? 'Free space on that disk, or set XDG_STATE_HOME to an absolute path of a folder on another one, and run again.'
      : 'Make that folder writable, or set XDG_STATE_HOME to an absolute path of a folder you can write, and run again.',
    full ? 'no-space' : 'usage', 'journal-unwritable',
  )
}

/** An entry as written by `write`, checked: anything else is refused, never written onto a server. */
async function readEntry(path: string, name: string): Promise<LeftReplacement> {
  let text: string
  try {
    text = (await readWholeFile(path, LARGEST_ENTRY_BYTES)).toString('utf8')
  } catch (error) {
    if (!(error instanceof FileTooLargeError) && !isFileSystemError(error)) throw error
    throw unreadable(path, error.message)
  }
  const entry = parseEntry(text)
  if (entry === undefined || !name.startsWith(`${entry.instanceId}.`)) throw unreadable(path, 'not an entry this tool wrote, or damaged')
  return {entry: path, ...entry}
}

function unreadable(path: string, reason: string): UserFacingError {
  return new UserFacingError(
    `a replacement journal entry cannot be read: ${path} (${reason}); it holds a target's own metadata or attachments that an earlier run deleted with a copy it replaced`,
    'Look at it and move it out of the journal folder (what it holds is then yours to put back by hand), then run again.',
    'usage', 'journal-unreadable',
  )
}

function parseEntry(text: string): Omit<LeftReplacement, 'entry'> | undefined {
  try {
    const entry = JSON.parse(text) as {instanceId?: unknown; went?: unknown; kept?: unknown}
    if (typeof entry.instanceId !== 'string' || !ORTHANC_ID.test(entry.instanceId) || !Array.isArray(entry.kept)) return undefined
    if (entry.went !== undefined && !(Array.isArray(entry.went) && entry.went.every((level) => LEVELS.has(level as string)))) return undefined
    const kept: KeptResource[] = []
    for (const resource of entry.kept as Array<Record<string, unknown>>) {
      const {level, id, data, bytes} = resource ?? {}
      if (typeof level !== 'string' || !LEVELS.has(level) || typeof id !== 'string' || !ORTHANC_ID.test(id) || !isSideData(data)) return undefined
      const attachmentBytes = checkedBytes(data, bytes)
      if (attachmentBytes === undefined) return undefined
      kept.push({level: level as ResourceLevel, id, data, bytes: attachmentBytes})
    }
    return {instanceId: entry.instanceId, kept, ...(entry.went ? {went: entry.went as ResourceLevel[]} : {})}
  } catch {
    return undefined
  }
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/

/** The bytes of each attachment the data lists, each matching the MD5 it was read with; undefined when any is not so. */
function checkedBytes(data: SideData, bytes: unknown): Map<number, Buffer> | undefined {
  if (typeof bytes !== 'object' || bytes === null) return undefined
  const found = new Map<number, Buffer>()
  for (const [key, value] of Object.entries(bytes as Record<string, unknown>)) {
    if (!/^\d+$/.test(key) || typeof value !== 'string' || !BASE64.test(value)) return undefined
    found.set(Number(key), Buffer.from(value, 'base64'))
  }
  const matches = (attachment: SideData['attachments'][number]) => {
    const content = found.get(attachment.contentType)
    return content !== undefined && (attachment.md5 === '' || createHash('md5').update(content).digest('hex') === attachment.md5)
  }
  return data.attachments.every(matches) && found.size === data.attachments.length ? found : undefined
}

// What goes into a request's path (a metadata name, a label) is held to Orthanc's own rules.
const NAME = /^[A-Za-z0-9_-]{1,256}$/

function isSideData(data: unknown): data is SideData {
  const candidate = data as Partial<SideData> | undefined
  if (typeof candidate !== 'object' || candidate === null || typeof candidate.systemMetadata !== 'object') return false
  const {userMetadata, attachments, labels} = candidate
  return typeof userMetadata === 'object' && userMetadata !== null && Object.entries(userMetadata).every(([name, value]) => NAME.test(name) && typeof value === 'string')
    && Array.isArray(attachments) && attachments.every((attachment) => Number.isInteger(attachment?.contentType) && attachment.contentType >= 1024 && attachment.contentType <= 65_535 && typeof attachment.md5 === 'string')
    && Array.isArray(labels) && labels.every((label) => typeof label === 'string' && NAME.test(label))
    && (candidate.protected === undefined || candidate.protected === true)
}
