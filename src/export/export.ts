import {createHash, randomUUID} from 'node:crypto'
import {createReadStream} from 'node:fs'
import {access, constants, readdir, readFile, rm, stat, statfs} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {basename, isAbsolute, join, relative, resolve, sep} from 'node:path'
import type {Writable} from 'node:stream'

import {ARCHIVE_FORMAT, ARCHIVE_FORMAT_VERSION, FORMAT_VERSION_WITH_PROTECTION, FORMAT_VERSION_WITHOUT_PROTECTION, type VolumeHeader, VOLUME_NAME_PATTERN, volumeName} from '../archive/format.js'
import type {Endpoint, Hop, InstanceFilters, InstanceRecord, ResourceRecord, SourceIdentity, StudyExpectation} from '../model.js'
import {unarchivable} from '../archive/manifest-schema.js'
import {FILTERS_MATCHED_NOTHING_HINT, UserFacingError} from '../errors.js'
import type {OrthancClient} from '../orthanc/client.js'
import {type ArchivedInstance, type ArchiveSink, FolderArchiveSink, StreamArchiveSink, type VolumeContentsHeld} from '../sinks/archive-sink.js'
import {fetchVerifiedAttachment, fetchVerifiedInstance} from '../sources/orthanc-instance.js'
import {SideDataReader} from '../sources/side-data.js'
import type {SelectedStudy} from '../sources/orthanc-selection.js'
import {type JobConcurrency, jobConcurrency} from '../transfer/adaptive-concurrency.js'
import {runTransfer} from '../transfer/engine.js'
import type {JobEventListener, ProgressListener} from '../transfer/progress.js'
import {emptyStats, type PlannedCounts, recordFailure, type TransferStats} from '../transfer/stats.js'
import {crashPoint} from '../util/crash-points.js'
import {writeJsonAtomically} from '../util/json-file.js'
import {makePrivateFolder} from '../util/private-files.js'
import {type AgeEncryptionKeys, AgeWrongKeyError, createDecryptingReader, encryptedSizeBound, parseRecipient} from '../crypto/age.js'
import {formatBytes} from '../util/format.js'
import {DEFAULT_STATE_FOLDER, type ExcludeInstance, type ExportPlan, isStateFileName, loadPlan, MAX_RECORD_BYTES_PER_VOLUME, parseStateJson, type PlannedEntry, planExport, readPlannedVolume} from './plan.js'
import {readVolumeManifest, writeChain} from './since.js'
import type {ReceiptInUse} from './exclusions.js'
import {PatientIndex} from './patient-index.js'
import {makeScratchFolder, removeScratchFolder} from '../util/scratch-folder.js'
import {RunLock} from '../util/run-lock.js'

export type ExportOutput = {kind: 'directory'; path: string} | {kind: 'stream'; stream: Writable}

export interface ExportOptions {
  client: OrthancClient
  output: ExportOutput
  filters: InstanceFilters
  maxVolumeBytes: number
  maxVolumeInstances: number
  /** Downloads at once; undefined: adaptive, from 8 up to what the link and the source reward. */
  concurrency?: number
  /** Volume file names: PREFIX-0001-of-0003.tar */
  namePrefix: string
  dryRun: boolean
  /** Also write index.csv with patient names and IDs beside the volumes (off by default: drives get lost). */
  patientIndex: boolean
  /** Leaves out instances the other side already has (incremental export, import receipts). */
  exclude?: ExcludeInstance
  /** Where this data came from, when it arrived by an earlier archive. */
  hops?: Hop[]
  /** For an incremental export: the export it adds to, and what of it is gone from the source. */
  incrementalBase?: {group: string; changeCursor: number}
  /** The change the exclusions read the source's log up to: the export's cursor (see PlanOptions.changeCursor). */
  changeCursor?: number
  /** Says what `exclude` leaves out (base group, receipts), so that a resumed run is the same run. */
  exclusions?: string
  /** The import receipts `exclude` reads, as the summary names them. */
  receipts?: ReceiptInUse[]
  /** Every instance the exports this one continues hold: with this export's own, the chain list it leaves for the next --since. */
  chainBase?: string[]
  /** Encrypt every volume (or the stream) in the age format to these keys. */
  encryption?: AgeEncryptionKeys
  /**
   * Where the export keeps its state (plan, done-records, chain list), for a resume and a later
   * --since: by default a folder inside the output. Elsewhere, the output holds nothing but what
   * is meant to travel. Only for an output folder.
   */
  stateDir?: string
  signal?: AbortSignal
  onProgress?: ProgressListener
  /** The plan (before anything is written), each failure and each retry. */
  onEvent?: JobEventListener
}

export interface ExportSummary extends TransferStats {
  dryRun: boolean
  source: Endpoint
  output: string
  group: string
  /** Volumes of the export, and how many this run wrote (the others were already complete). */
  volumes: number
  volumesWritten: number
  /** The whole export, as planned: all a dry run does. The same as `planned`. */
  instancesPlanned: number
  bytesPlanned: number
  planned: PlannedCounts
  changeCursor: number
  /**
   * Instances that could not be described when the export was planned (among `failed`). The plan
   * is fixed once volumes are named, so a resume does not try them again: an export `--since`
   * this one, into another folder, takes them.
   */
  notPlanned: number
  /** Instances the filters selected that `--since` or `--exclude-receipt` left out, as the far side has them. */
  leftOut: number
  /** The receipts that left instances out: which server each says holds them, and how many. */
  receipts?: ReceiptInUse[]
  /** Downloads at once: fixed by --concurrency, or where the adaptive concurrency settled. */
  concurrency: number
  concurrencyAdaptive: boolean
}

/** An export under way: its options, and the concurrency its volumes' downloads share. */
type ExportRun = ExportOptions & {downloads: JobConcurrency}

/**
 * Exports a server's instances into archive volumes: plans (or resumes a plan), checks free
 * space, then writes each volume that is not done. A volume is done once it is complete on the
 * disk with no failed instance; a finished volume that holds failures is written again on the
 * next run, so what failed is retried. The plan stays in the output's state folder.
 */
export async function exportArchive(options: ExportOptions): Promise<ExportSummary> {
  const started = Date.now()
  // Recipients from the library API have not been through the command line's checks: a bad one fails here, before anything is written.
  if (options.encryption && 'recipients' in options.encryption) await Promise.all(options.encryption.recipients.map((recipient) => parseRecipient(recipient, 'encryption recipient')))
  const source = await sourceIdentity(options.client, options.signal)
  // A stream is cut into bags of the volume size too: the far side holds one bag on disk until
  // its tag manifest, which comes last, proves it. Volumes are planned in plaintext bytes: an
  // encrypted one is planned that much smaller than the limit, so that its file stays within it.
  const maxVolumeBytes = options.encryption ? plaintextWithin(options.maxVolumeBytes, options.encryption) : options.maxVolumeBytes
  const fingerprint: ExportFingerprint = {
    server: source.server, filters: filtersDigest(options.filters), maxVolumeBytes: options.maxVolumeBytes, maxVolumeInstances: options.maxVolumeInstances,
    prefix: options.namePrefix, hops: options.hops ?? [], patientIndex: options.patientIndex, exclusions: options.exclusions ?? '',
    encryption: !options.encryption ? 'none' : 'passphrase' in options.encryption ? 'passphrase' : [...options.encryption.recipients].sort(),
  }
  const toFolder = options.output.kind === 'directory' && !options.dryRun
  if (options.stateDir !== undefined) {
    if (options.output.kind === 'stream') throw new UserFacingError('--state is for an export to a folder: an export to a stream keeps no state', 'Leave out --state with --output -.', 'usage', 'bad-state')
    if (toFolder) await checkStateFolder(options.stateDir, (options.output as {path: string}).path)
  }
  const createdFolder = toFolder ? await prepareOutputFolder((options.output as {path: string}).path) : false
  // Two exports into one folder, or with one state, at once would write over each other's plan and volumes.
  const locks = toFolder ? await lockExport((options.output as {path: string}).path, options.stateDir) : []
  const stateDir = toFolder ? options.stateDir ?? join((options.output as {path: string}).path, DEFAULT_STATE_FOLDER) : await makeScratchFolder(tmpdir(), 'orthanc-replicate-plan-')
  const index = options.patientIndex ? new PatientIndex() : undefined

  const summary: ExportSummary = {
    ...emptyStats(),
    dryRun: options.dryRun === true,
    source: {url: source.server, name: source.name, version: source.version},
    output: options.output.kind === 'directory' ? options.output.path : '-',
    group: '',
    volumes: 0,
    volumesWritten: 0,
    notPlanned: 0,
    leftOut: 0,
    ...(options.receipts ? {receipts: options.receipts} : {}),
    instancesPlanned: 0,
    bytesPlanned: 0,
    planned: {instances: 0, bytes: 0},
    changeCursor: 0,
    concurrency: 0,
    concurrencyAdaptive: false,
  }
  const run: ExportRun = {...options, downloads: jobConcurrency(options.concurrency, {itemsPerUnit: 1, congestion: () => options.client.http.stats.congestion})}
  Object.assign(summary, run.downloads.settled())
  let keepFolder = true
  try {
    let plan = toFolder ? await loadPlan(stateDir) : undefined
    if (plan) refuseOtherExport((options.output as {path: string}).path, plan.fingerprint, fingerprint)
    else if (toFolder) await refuseVolumesWithoutState((options.output as {path: string}).path, options.namePrefix, options.stateDir !== undefined)

    const resumed = plan !== undefined
    if (!plan) {
      plan = await planExport(stateDir, {
        client: options.client,
        filters: options.filters,
        maxVolumeBytes,
        maxVolumeInstances: options.maxVolumeInstances,
        concurrency: options.concurrency,
        fingerprint: JSON.stringify(fingerprint),
        group: randomUUID(),
        source,
        hops: options.hops ?? [],
        incrementalBase: options.incrementalBase,
        changeCursor: options.changeCursor,
        exclude: options.exclude,
        onStudy: index ? (study: SelectedStudy) => index.add(study) : undefined,
        signal: options.signal,
        onProgress: options.onProgress,
        onEvent: options.onEvent,
      })
      crashPoint('export:plan-saved')
      // Written as soon as the plan says which volume holds which study.
      if (index && toFolder) await index.write((options.output as {path: string}).path, plan, options.namePrefix, options.encryption)
    } else if (index && toFolder && !(await stat(PatientIndex.pathIn((options.output as {path: string}).path, options.encryption)).catch(() => undefined))) {
      // The run that planned stopped before it wrote the index: asked for, so written now.
      await index.addPlanned(plan, options.client, options.signal)
      await index.write((options.output as {path: string}).path, plan, options.namePrefix, options.encryption)
    }
    // Written by the run that planned, with its passphrase: none other may finish the export.
    if (resumed && index && toFolder && options.encryption) {
      const written = PatientIndex.pathIn((options.output as {path: string}).path, options.encryption)
      if (await stat(written).catch(() => undefined)) await refuseOtherPassphrase(written, options.encryption)
    }
    // A run killed while it wrote the index left its temporary copy (patient names) beside the
    // volumes; a resume that has its index already would not write over it. This run holds the folder.
    if (toFolder) await PatientIndex.removeLeftovers((options.output as {path: string}).path)

    const planned = plan.volumes.reduce((sum, volume) => sum + volume.instances, 0)
    const bytesPlanned = plan.volumes.reduce((sum, volume) => sum + volume.payloadBytes, 0)
    Object.assign(summary, {
      group: plan.group,
      volumes: plan.volumes.length,
      instancesPlanned: planned,
      bytesPlanned,
      planned: {instances: planned, bytes: bytesPlanned},
      changeCursor: plan.changeCursor,
      leftOut: plan.leftOut ?? 0,
    })
    for (const failure of plan.planningFailures) recordFailure(summary, failure)
    // Beyond the listed ones, counted: as many as planning met.
    summary.notPlanned = Math.max(plan.planningFailed ?? 0, plan.planningFailures.length)
    summary.failed += summary.notPlanned - plan.planningFailures.length

    if (planned === 0 && plan.planningFailures.length === 0 && !resumed) {
      // Nothing to write, nothing to resume: leave the place as it was found.
      keepFolder = false
      // An incremental export with nothing new is a success with nothing to write.
      if (options.exclude) return finished(summary, started)
      throw new UserFacingError('no instance matches the filters', FILTERS_MATCHED_NOTHING_HINT, 'nothing-matched', 'nothing-matched')
    }

    const planEvent = {type: 'plan', instances: planned, bytes: bytesPlanned, volumes: plan.volumes.length} as const
    if (options.dryRun || options.output.kind === 'stream') options.onEvent?.(planEvent)
    if (options.dryRun) return finished(summary, started)
    try {
      if (options.output.kind === 'directory') {
        const held = await writeVolumeFiles(options.output.path, plan, stateDir, run, summary)
        await writeChain(stateDir, options.chainBase ?? [], held)
      } else {
        await writeVolumeStream(options.output.stream, plan, stateDir, run, summary)
      }
    } finally {
      Object.assign(summary, run.downloads.settled())
    }

    summary.retries += options.client.http.stats.retries
    return finished(summary, started)
  } catch (error) {
    // Interrupted: what is done stays done, and the summary says how far it got.
    if (options.signal?.aborted && isAbort(error)) {
      summary.interrupted = true
      return finished(summary, started)
    }
    throw error
  } finally {
    if (!toFolder) await removeScratchFolder(stateDir)
    else if (!keepFolder) {
      await rm(stateDir, {recursive: true, force: true})
      if (createdFolder) await rm((options.output as {path: string}).path, {recursive: true, force: true})
    }
    for (const lock of locks) await lock.release()
  }
}

/** The lock file an export holds in its output folder while it runs (left out of what import reads). */
export const EXPORT_LOCK_FILE = '.orthanc-replicate.lock'

async function lockExport(output: string, stateDir: string | undefined): Promise<RunLock[]> {
  const locks = [await RunLock.acquire(join(output, EXPORT_LOCK_FILE), `The export folder ${output}`)]
  try {
    // Beside the state folder, which may not exist yet (nor the folders above it); the default
    // state folder, given as --state, has the output's lock already.
    const stateLock = stateDir === undefined ? undefined : `${resolve(stateDir)}.lock`
    if (stateLock !== undefined && stateLock !== resolve(locks[0]!.path)) {
      await makePrivateFolder(resolve(stateDir!))
      locks.push(await RunLock.acquire(stateLock, `The export state ${stateDir}`))
    }
  } catch (error) {
    await locks[0]!.release()
    throw error
  }
  return locks
}

function finished(summary: ExportSummary, started: number): ExportSummary {
  summary.durationMs = Date.now() - started
  return summary
}

function isAbort(error: unknown): boolean {
  return (error as Error | undefined)?.name === 'AbortError'
}

/** What makes an export the same export: a run with other values cannot resume it. */
type ExportFingerprint = Record<string, unknown>

/** The most plaintext whose encrypted file is no larger than `limit` bytes. */
function plaintextWithin(limit: number, encryption: AgeEncryptionKeys): number {
  let plaintext = limit
  for (let over = encryptedSizeBound(plaintext, encryption) - limit; over > 0; over = encryptedSizeBound(plaintext, encryption) - limit) plaintext -= over
  return Math.max(0, plaintext)
}

/**
 * The filters as an export's fingerprint keeps them: a digest, which tells a resume whether they
 * are the same without writing patient IDs or study UIDs into the state on the drive.
 */
function filtersDigest(filters: InstanceFilters): string {
  return `sha256:${createHash('sha256').update(JSON.stringify(filters)).digest('hex')}`
}

function refuseOtherExport(folder: string, stored: string, current: ExportFingerprint): void {
  let before: ExportFingerprint
  try {
    before = JSON.parse(stored) as ExportFingerprint
  } catch {
    before = {}
  }

  // A plan written before the filters were kept as a digest: its own filters, digested.
  if (before.filters !== undefined && typeof before.filters !== 'string') before.filters = filtersDigest(before.filters as InstanceFilters)
  const differences = Object.keys({...before, ...current}).filter((key) => JSON.stringify(before[key]) !== JSON.stringify(current[key]))
  if (differences.length === 0) return
  const shown = differences.map((key) => (key === 'filters' || key === 'exclusions' || key === 'hops'
    ? key
    : `${key} (${JSON.stringify(current[key])} now, ${JSON.stringify(before[key])} in the folder)`))
  throw new UserFacingError(
    `${folder} holds another export, which differs from this command in: ${shown.join(', ')}`,
    'Export into an empty folder, or repeat the original command exactly (same URL, filters and limits) to resume that export.',
    'usage', 'other-export-in-folder')
}

/**
 * A state folder the user named: planning empties it, so it must be new, empty, or hold nothing
 * but an export's state (the one to resume). Anything else is refused before a byte is written.
 */
async function checkStateFolder(path: string, output: string): Promise<void> {
  const refuse = (why: string) => new UserFacingError(`--state ${path ? `"${path}"` : '(empty)'} ${why}`, 'Give --state a folder of its own: a new or empty one, or the --state of the export to resume.', 'usage', 'bad-state')
  if (path.trim() === '') throw refuse('is empty')
  // The output inside it (or the same folder) would be emptied with it.
  const outputWithin = relative(resolve(path), resolve(output))
  const outside = isAbsolute(outputWithin) || outputWithin === '..' || outputWithin.startsWith(`..${sep}`)
  if (!outside) throw refuse(outputWithin === '' ? 'is the --output folder' : 'holds the --output folder')
  const existing = await stat(path).catch(() => undefined)
  if (!existing) return
  if (!existing.isDirectory()) throw refuse('is a file, not a folder')
  const others = (await readdir(path)).filter((name) => !isStateFileName(name))
  if (others.length > 0) throw refuse(`holds files that are not an export's state (${others.slice(0, 3).join(', ')}${others.length > 3 ? ', ...' : ''})`)
}

/**
 * Volumes of this name in the output and no plan: an export whose state is elsewhere (given as
 * --state, or moved off the drive). Planning anew would write a plan beside them and then refuse
 * them as another export's, or, encrypted, write them all again: refused before that.
 */
async function refuseVolumesWithoutState(output: string, prefix: string, stateGiven: boolean): Promise<void> {
  const volumes = (await readdir(output)).filter((name) => VOLUME_NAME_PATTERN.exec(name)?.groups?.prefix === prefix).sort()
  if (volumes.length === 0) return
  throw new UserFacingError(
    `--output "${output}" holds volumes of an earlier export (${volumes[0]}${volumes.length > 1 ? ', ...' : ''}) and not its state`,
    stateGiven
      ? 'Give --state the folder that export used, to resume it; or export into an empty folder.'
      : `To resume, give --state the folder that export used, or put its ${DEFAULT_STATE_FOLDER} folder back beside the volumes; or export into an empty folder.`,
    'usage', 'state-missing')
}

/**
 * Makes sure the output is a folder that can be written, creating it if needed; returns whether
 * it was created (an export that ends up writing nothing removes what it created).
 */
async function prepareOutputFolder(path: string): Promise<boolean> {
  const unusable = (why: string) => new UserFacingError(`--output ${path ? `"${path}"` : '(empty)'} ${why}`, 'Give a folder for the volumes (it is created if missing), or - for stdout.', 'usage', 'bad-output')
  if (path.trim() === '') throw unusable('is empty')
  const existing = await stat(path).catch(() => undefined)
  if (existing && !existing.isDirectory()) throw unusable(VOLUME_NAME_PATTERN.test(basename(path)) ? 'is a volume file, not a folder' : 'is a file, not a folder')
  try {
    if (!existing) await makePrivateFolder(path)
    await access(path, constants.W_OK)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    throw unusable(code === 'EROFS' ? 'is on a read-only filesystem' : code === 'EACCES' || code === 'EPERM' ? 'cannot be written by this user' : `cannot be used (${code})`)
  }

  return !existing
}

/** Writes every volume not done yet; returns the IDs of the instances the export's finished volumes hold. */
async function writeVolumeFiles(dir: string, plan: ExportPlan, stateDir: string, options: ExportRun, summary: ExportSummary): Promise<string[]> {
  const count = plan.volumes.length
  const sink = new FolderArchiveSink(dir, {encryption: options.encryption})
  const pending: number[] = []
  const held: string[] = []
  let leftovers = 0
  for (const [index, volume] of plan.volumes.entries()) {
    const file = sink.volumeFile(volumeName(options.namePrefix, index + 1, count))
    leftovers += (await stat(`${file}.partial`).catch(() => undefined))?.size ?? 0
    const state = await finishedVolume(file, stateDir, index + 1, plan.group, options.encryption !== undefined)
    held.push(...state.written)
    if (state.done) summary.skipped += volume.instances
    else pending.push(index + 1)
  }

  const firstDone = plan.volumes.findIndex((_, index) => !pending.includes(index + 1))
  if (firstDone >= 0 && options.encryption) await refuseOtherPassphrase(sink.volumeFile(volumeName(options.namePrefix, firstDone + 1, count)), options.encryption)
  options.onEvent?.({type: 'plan', instances: summary.instancesPlanned, bytes: summary.bytesPlanned, volumes: count, volumesDone: count - pending.length})
  // Our own unfinished volumes are deleted before anything is written: their space counts as free.
  const plaintext = pending.reduce((sum, number) => sum + plan.volumes[number - 1]!.bytes, 0)
  await checkFreeSpace(dir, (options.encryption ? encryptedSizeBound(plaintext, options.encryption) : plaintext) - leftovers)
  for (const number of pending) {
    // What it holds is recorded before it takes its name: a volume with its final name always has its record.
    const recordHeld = (contents: VolumeContentsHeld) => writeJsonAtomically(doneRecordPath(stateDir, number), {group: plan.group, written: contents.written, failed: contents.failed, bytes: contents.bytes} satisfies DoneRecord)
    const written = await writeVolume(sink, plan, stateDir, number, options, recordHeld)
    held.push(...written.held.written)
    countVolume(summary, written.stats)
  }

  return held
}

/**
 * The plan records that an export is encrypted with a passphrase, never the passphrase: resumed
 * with another, it would hold volumes that no one passphrase opens, and say it was finished. The
 * first finished volume is opened with the passphrase given (its header alone tells).
 */
async function refuseOtherPassphrase(file: string, keys: AgeEncryptionKeys): Promise<void> {
  if (!('passphrase' in keys)) return
  const plaintext = createDecryptingReader(createReadStream(file), {passphrases: [keys.passphrase]}, {source: file})
  try {
    // The first plaintext chunk: the header opened.
    for await (const chunk of plaintext) if (chunk) break
  } catch (error) {
    if (error instanceof AgeWrongKeyError) {
      throw new UserFacingError(
        `${file}, finished by an earlier run of this export, does not open with the passphrase given: the export was begun with another one, and its volumes would need two`,
        'Give the passphrase the export was begun with, or export into an empty folder.',
        'usage', 'other-passphrase',
      )
    }
    // Damaged or cut short: no question of the passphrase (verify checks the volume itself).
  } finally {
    plaintext.destroy()
  }
}

/** What a finished volume holds, kept in the export's state folder: read on resume, even when the volume is encrypted. */
interface DoneRecord {
  group: string
  written: string[]
  failed: string[]
  /** The volume file's size when it was finished (absent in records of earlier versions). */
  bytes?: number
}

function doneRecordPath(stateDir: string, volume: number): string {
  return join(stateDir, `volume-${String(volume).padStart(4, '0')}.done.json`)
}

/**
 * Whether a volume file on the disk is done: complete, of this export, with no failed instance
 * (one that held failures is written again, so that they are retried); and what it holds.
 */
async function finishedVolume(file: string, stateDir: string, volume: number, group: string, encrypted: boolean): Promise<{done: boolean; written: string[]}> {
  const onDisk = await stat(file).catch(() => undefined)
  if (!onDisk) return {done: false, written: []}
  let record: DoneRecord | undefined
  try {
    record = parseStateJson<DoneRecord>(await readFile(doneRecordPath(stateDir, volume), 'utf8'), doneRecordPath(stateDir, volume))
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
  }

  if (!record) {
    // A volume from before these records: an encrypted one cannot be read without a key, so it is written again.
    if (encrypted) return {done: false, written: []}
    const manifest = await readVolumeManifest(file)
    record = {group: manifest.group, written: 'failed' in manifest ? manifest.instances.map((instance) => instance.id) : [], failed: 'failed' in manifest ? manifest.failed.map((failure) => failure.id) : ['unfinished']}
  }

  if (record.group !== group) {
    throw new UserFacingError(`${file} belongs to another export (group ${record.group})`, 'Export into an empty folder, or move that volume away.', 'usage', 'other-export-in-folder')
  }

  // Cut short or replaced since it was finished (a copy that failed, a file put in its place): written again.
  if (record.bytes !== undefined && onDisk.size !== record.bytes) return {done: false, written: []}
  return {done: record.failed.length === 0, written: record.failed.length === 0 ? record.written : []}
}

async function writeVolumeStream(stream: Writable, plan: ExportPlan, stateDir: string, options: ExportRun, summary: ExportSummary): Promise<void> {
  const sink = new StreamArchiveSink(stream, {encryption: options.encryption})
  try {
    for (let number = 1; number <= plan.volumes.length; number++) countVolume(summary, (await writeVolume(sink, plan, stateDir, number, options)).stats)
    await sink.close()
  } catch (error) {
    sink.abort(error as Error)
    throw error
  }
}

/** A volume is counted once it is finished: its instances are transferred, its failures failed. */
function countVolume(summary: ExportSummary, written: TransferStats): void {
  summary.volumesWritten++
  summary.transferred += written.transferred
  summary.bytes += written.bytes
  summary.retries += written.retries
  summary.failed += written.failed - written.failures.length
  for (const failure of written.failures) recordFailure(summary, failure)
}

/** Side data the archive format cannot hold: the instance is failed, not written, its volume whole. */
class UnarchivableError extends Error {
  readonly problemKind = 'rejected' as const
}

/**
 * The instance records and resource records a volume can hold as they are. A record its readers
 * would refuse (a metadata value over 1 MiB...) would make the whole volume unproven, all of its
 * instances lost to an import that exited 0 here: its instance is failed instead, naming why, and
 * goes in the manifest without its side data; a resource record so is left out, and the
 * instances that carry it failed.
 */
function archivableParts(entries: PlannedEntry[]): {records: InstanceRecord[]; resources: ResourceRecord[]; refused: Map<string, string>} {
  const refused = new Map<string, string>()
  const records: InstanceRecord[] = []
  const resources: ResourceRecord[] = []
  for (const {record, resources: carried = []} of entries) {
    const problems = unarchivable(record)
    const kept: ResourceRecord[] = []
    for (const resource of carried) {
      const found = unarchivable(resource)
      if (found.length === 0) kept.push(resource)
      else problems.push(...found.map((problem) => `its ${resource.level}'s ${problem}`))
    }
    // Alone in a volume, its records still make the volume's tag files larger than a reader takes.
    const bytes = Buffer.byteLength(JSON.stringify(record)) + Buffer.byteLength(JSON.stringify(kept))
    if (bytes > MAX_RECORD_BYTES_PER_VOLUME) problems.push(`its side data and its parents' take ${bytes} bytes in the volume's manifests, more than the ${MAX_RECORD_BYTES_PER_VOLUME} a volume's records may`)
    else resources.push(...kept)
    if (problems.length === 0) {
      records.push(record)
      continue
    }
    refused.set(record.id, `its side data cannot go into an archive (${problems.join('; ')}): mend it on the source, then export again`)
    records.push({...record, userMetadata: {}, systemMetadata: {}, attachments: [], labels: []})
  }
  return {records, resources, refused}
}

/**
 * The version a volume declares: the oldest that reads it whole, so that an older reader on the
 * far side of an air gap still takes what it can.
 */
function formatVersionFor(studies: StudyExpectation[], resources: ResourceRecord[]): number {
  if (studies.some((study) => study.farSideInstances !== undefined)) return ARCHIVE_FORMAT_VERSION
  return resources.some((resource) => resource.protected) ? FORMAT_VERSION_WITH_PROTECTION : FORMAT_VERSION_WITHOUT_PROTECTION
}

/** Writes one volume into the sink; returns what went into it. An interruption leaves it unfinished (throws). */
async function writeVolume(
  sink: ArchiveSink, plan: ExportPlan, stateDir: string, number: number, options: ExportRun, onSealed?: (held: VolumeContentsHeld) => Promise<void>,
): Promise<{stats: TransferStats; held: VolumeContentsHeld}> {
  const count = plan.volumes.length
  const entries: PlannedEntry[] = []
  for await (const entry of readPlannedVolume(stateDir, number)) entries.push(entry)
  // A list cut short or written over (a full disk, a second run before runs were locked) would
  // make a volume that holds less than the plan promises, and looks whole.
  const planned = plan.volumes[number - 1]!.instances
  if (entries.length !== planned) {
    throw new UserFacingError(
      `the export's state is damaged: volume ${number}'s list in ${stateDir} holds ${entries.length} instance(s), its plan ${planned}`,
      'Export into a new, empty folder: this state cannot be resumed.', 'bad-input', 'damaged-state')
  }
  const {records, resources, refused} = archivableParts(entries)
  const header: VolumeHeader = {
    format: ARCHIVE_FORMAT,
    formatVersion: formatVersionFor(plan.volumes[number - 1]!.studyIds.map((id) => plan.studies[id]!), resources),
    group: plan.group,
    volume: number,
    volumeCount: count,
    source: plan.source,
    exportedAt: plan.createdAt,
    // Identifier filters as counts (the plan keeps no more): a lost drive names no patient.
    filters: plan.filters,
    changeCursor: plan.changeCursor,
    hops: plan.hops,
    incrementalBase: plan.incrementalBase,
    ...(plan.farSideStudies ? {farSideStudies: plan.farSideStudies} : {}),
    studies: Object.fromEntries(plan.volumes[number - 1]!.studyIds.map((id) => [id, plan.studies[id]!])),
  }
  const volume = await sink.openVolume({
    bagName: volumeName(options.namePrefix, number, count),
    header,
    instances: records,
    resources,
    mtime: new Date(plan.createdAt),
    bagInfo: {
      group: plan.group,
      volume: number,
      volumeCount: count,
      baggingDate: plan.createdAt.slice(0, 10),
      software: 'orthanc-replicate',
      description: `DICOM instances exported from Orthanc "${plan.source.name}" (${plan.source.version}); archive format ${ARCHIVE_FORMAT} v${header.formatVersion}`,
    },
    onSealed,
  })

  try {
    const doneBefore = number === 1 ? 0 : plan.volumes.slice(0, number - 1).reduce((sum, planned) => sum + planned.instances, 0)
    const bytesBefore = number === 1 ? 0 : plan.volumes.slice(0, number - 1).reduce((sum, planned) => sum + planned.payloadBytes, 0)
    const sideData = new SideDataReader(options.client)
    // The downloads' concurrency carries over from the volume before, and goes on adapting.
    options.downloads.resume()
    const stats = await runTransfer({
      items: toAsync(entries),
      concurrency: options.downloads.inFlight,
      control: options.downloads.control,
      signal: options.signal,
      phase: 'export',
      describe: ({record}) => ({id: record.id}),
      sizeOf: ({record, resources: carried}) => record.size + record.attachments.reduce((sum, attachment) => sum + attachment.size, 0)
        + (carried ?? []).reduce((sum, resource) => sum + resource.attachments.reduce((total, attachment) => total + attachment.size, 0), 0),
      async work({record, resources: carried}, signal): Promise<ArchivedInstance> {
        const unreadable = refused.get(record.id)
        if (unreadable) throw new UnarchivableError(unreadable)
        const dicom = await fetchVerifiedInstance(options.client, record.id, record.md5, signal, record.size)
        const attachments = await Promise.all(record.attachments.map((attachment) => fetchVerifiedAttachment(options.client, record.id, attachment, signal)))
        // The side data of its patient, study or series that goes in with this instance, checked against the plan's MD5s.
        const resourceFiles: ArchivedInstance['resourceFiles'] = []
        for (const resource of carried ?? []) {
          for (const attachment of resource.attachments) {
            const data = await sideData.attachmentBytes(resource, attachment.contentType, signal)
            resourceFiles.push({path: attachment.path, data: data!})
          }
        }
        return {record, dicom, attachments, resourceFiles}
      },
      commit: (_entry, instance) => volume.store(instance),
      onFailure: (problem) => options.onEvent?.({type: 'failure', problem}),
      onRetry: (item, attempt, error) => options.onEvent?.({type: 'retry', id: item.id, attempt, reason: (error as Error).message}),
      onProgress: options.onProgress && ((event) => options.onProgress!({
        ...event,
        done: doneBefore + event.done,
        bytes: bytesBefore + (event.bytes ?? 0),
        total: plan.volumes.reduce((sum, planned) => sum + planned.instances, 0),
        totalBytes: plan.volumes.reduce((sum, planned) => sum + planned.payloadBytes, 0),
      })),
    })
    if (stats.interrupted) throw options.signal?.reason ?? new DOMException('interrupted', 'AbortError')
    // Every planned instance not written is listed as failed, with its reason when the summary kept it.
    const held = await volume.finish(new Map(stats.failures.map((failure) => [failure.id, failure.reason])))
    return {stats, held}
  } catch (error) {
    volume.abort(error as Error)
    throw error
  }
}

async function sourceIdentity(client: OrthancClient, signal?: AbortSignal): Promise<SourceIdentity> {
  const system = await client.system(signal)
  return {
    server: client.display,
    name: system.Name,
    version: system.Version,
    databaseBackend: system.DatabaseBackendPlugin ?? 'SQLite (built-in)',
    storageBackend: system.StorageAreaPlugin ?? 'filesystem (built-in)',
  }
}

async function checkFreeSpace(dir: string, needed: number): Promise<void> {
  const stats = await statfs(dir)
  const available = Number(stats.bavail) * Number(stats.bsize)
  if (available < needed) {
    throw new UserFacingError(
      `not enough free space in ${dir}: the export needs ${formatBytes(needed)}, ${formatBytes(available)} are free`,
      'Free some space or choose another output folder; running the same command again resumes where it stopped.',
      'no-space', 'no-space')
  }
}



async function* toAsync<T>(items: Iterable<T>): AsyncGenerator<T> {
  yield* items
}
