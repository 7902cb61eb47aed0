import {createReadStream} from 'node:fs'
import {readdir, readFile, rm} from 'node:fs/promises'
import {join} from 'node:path'
import {createInterface} from 'node:readline'

import {UserFacingError} from '../errors.js'
import {type ExportProvenance, FAR_SIDE_SAMPLE, type FarSideStudy, recordedFilters} from '../archive/format.js'
import {type Hop, type InstanceFilters, type InstanceRecord, resourceKey, type ResourceRecord, type SourceIdentity, type StudyExpectation} from '../model.js'
import {DEFAULT_ENTRY_LIMITS} from '../archive/entry-rules.js'
import {tarEntryBytes} from '../archive/volume-writer.js'
import type {OrthancClient} from '../orthanc/client.js'
import {describeInstance} from '../sources/orthanc-instance.js'
import {selectInstances, type SelectedInstance, type SelectedStudy} from '../sources/orthanc-selection.js'
import {prefetchingSideData, SideDataReader} from '../sources/side-data.js'
import {jobConcurrency} from '../transfer/adaptive-concurrency.js'
import {runTransfer} from '../transfer/engine.js'
import type {JobEventListener, ProgressListener} from '../transfer/progress.js'
import type {TransferStats} from '../transfer/stats.js'
import {BatchedLineWriter} from '../util/batched-line-writer.js'
import {writeJsonAtomically} from '../util/json-file.js'
import {makePrivateFolder} from '../util/private-files.js'
import {OWNER_FILE} from '../util/scratch-folder.js'

export interface PlannedVolume {
  instances: number
  /** Bytes (UTF-8) its instance records take in contents.json: kept well under what a reader accepts for a tag file. */
  recordBytes?: number
  /** Bytes this volume will take on disk, tar overhead and tag files included. */
  bytes: number
  payloadBytes: number
  studyIds: string[]
}

/** Everything an export decided before downloading a byte; kept beside the volumes for resuming. */
export interface ExportPlan extends ExportProvenance {
  version: 1
  /** Same options, same fingerprint: a second run with it resumes instead of starting over. */
  fingerprint: string
  createdAt: string
  studies: Record<string, StudyExpectation>
  volumes: PlannedVolume[]
  /** Instances that could not be described while planning (deleted meanwhile, unreadable): the first ones in full. */
  planningFailures: TransferStats['failures']
  /** How many there were in all (absent from plans of earlier versions: the list's length). */
  planningFailed?: number
  /** Instances the filters selected that --since or --exclude-receipt left out: the far side has them. */
  leftOut?: number
}

/**
 * Whether an instance the filters selected is left out, as the far side has it. Asked with the
 * other selected instances of its study: one of them may be kept to carry what changed on the
 * study since (see since.ts).
 */
export type ExcludeInstance = (instance: SelectedInstance, studyInstances: readonly SelectedInstance[]) => boolean | Promise<boolean>

export interface PlanOptions {
  client: OrthancClient
  filters: InstanceFilters
  maxVolumeBytes: number
  maxVolumeInstances: number
  /** Requests at once; undefined: adaptive. */
  concurrency?: number
  fingerprint: string
  group: string
  source: SourceIdentity
  hops: Hop[]
  incrementalBase?: {group: string; changeCursor: number}
  /**
   * The change the exclusions read the log up to (--since): the plan's cursor. Read again here, it
   * would pass over what was logged in between (side data set, an instance stored again), which
   * neither this export took nor the next one, reading the log after it, would.
   */
  changeCursor?: number
  /** Leaves out instances the target side already has (incremental export, receipts). */
  exclude?: ExcludeInstance
  /** Called once per study selected, for the optional patient index. */
  onStudy?: (study: SelectedStudy) => void
  signal?: AbortSignal
  onProgress?: ProgressListener
  /** Told of each instance that could not be described. */
  onEvent?: JobEventListener
}

/**
 * contents.json holds every record of a volume, and manifest.json the same with SHA-256s: both
 * must stay under the size a reader accepts for a tag file (readers refuse larger ones, so that
 * a hostile archive cannot make them parse gigabytes of JSON). Half of it leaves room for the
 * header and the digests. Counted in bytes, as the reader counts: a character outside ASCII
 * takes two to four.
 */
export const MAX_RECORD_BYTES_PER_VOLUME = DEFAULT_ENTRY_LIMITS.maxTagFileBytes / 2

/** Room for bagit.txt, bag-info.txt, the tag manifest and the end-of-archive blocks. */
const VOLUME_FIXED_BYTES = 16 * 1024

const PLAN_FILE = 'plan.json'

/** Where an export keeps its state by default: inside its output folder, beside the volumes. */
export const DEFAULT_STATE_FOLDER = '.orthanc-replicate'

/** The list of every instance an export's chain holds, for the next --since (since.ts). */
export const CHAIN_FILE = 'exported-instances.txt'

/**
 * Whether a file is one an export keeps in its state folder, or its temporary name while
 * written: the plan, the chain list, each volume's planned entries and done-record.
 */
export function isStateFileName(name: string): boolean {
  const final = name.endsWith('.tmp') ? name.slice(0, -'.tmp'.length) : name
  return final === PLAN_FILE || final === CHAIN_FILE || /^volume-\d{4,}\.(jsonl|done\.json)$/.test(final)
}

/**
 * Plans an export into `stateDir`: selects instances, reads their details (sizes, MD5s,
 * metadata, attachments), and packs them in order into volumes no bigger than the limits.
 * Instance records go to one JSON-lines file per volume, so memory holds one volume at most.
 */
export async function planExport(stateDir: string, options: PlanOptions): Promise<ExportPlan> {
  // Whatever an earlier planning left goes. A scratch folder (a stream's or a dry run's plan) keeps
  // its owner file, or a killed run's plan would be left behind for good (see makeScratchFolder).
  const earlier = await readdir(stateDir).catch(() => [] as string[])
  if (earlier.includes(OWNER_FILE)) await Promise.all(earlier.filter((name) => name !== OWNER_FILE).map((name) => rm(join(stateDir, name), {recursive: true, force: true})))
  else await rm(stateDir, {recursive: true, force: true})
  // The plan names studies and instances: private to the user who exports.
  await makePrivateFolder(stateDir)
  // The cursor is read before listing: anything stored while we list shows up in the next incremental run.
  const changeCursor = options.changeCursor ?? await options.client.lastChange(options.signal)
  const studies: Record<string, StudyExpectation> = {}
  const volumes: PlannedVolume[] = []
  let current: {volume: PlannedVolume; file: BatchedLineWriter} | undefined

  const openVolume = async () => {
    const volume: PlannedVolume = {instances: 0, bytes: VOLUME_FIXED_BYTES, payloadBytes: 0, studyIds: []}
    volumes.push(volume)
    // Batched writes lose nothing here: an interrupted planning starts over, only a finished plan is resumed.
    current = {volume, file: await BatchedLineWriter.create(planVolumePath(stateDir, volumes.length))}
    return current
  }

  const closeVolume = async () => {
    if (!current) return
    // Flushed to the disk: the plan that names these files is written only once they are there.
    await current.file.end({sync: true})
    current = undefined
  }

  // Each volume carries the side data of the patients, studies and series of its instances:
  // a resource's record (and its attachments) goes with its first instance in the volume.
  let resourcesInVolume = new Set<string>()
  const lineFor = (entry: PlannedEntry) => `${JSON.stringify(entry)}\n`
  const append = async (record: InstanceRecord, resources: ResourceRecord[]) => {
    // Measured as if the volume were new (all its resources with it): if it fits there, it fits anywhere.
    const worst = Buffer.byteLength(lineFor({record, resources}))
    const footprint = recordFootprint(record, resources, worst)
    if (footprint + VOLUME_FIXED_BYTES > options.maxVolumeBytes) {
      throw new InstanceTooLargeError(record.id, footprint + VOLUME_FIXED_BYTES, options.maxVolumeBytes)
    }

    let target = current ?? await openVolume()
    const full = target.volume.instances >= options.maxVolumeInstances
      || target.volume.bytes + footprint > options.maxVolumeBytes
      || (target.volume.recordBytes ?? 0) + worst > MAX_RECORD_BYTES_PER_VOLUME
    if (full && target.volume.instances > 0) {
      await closeVolume()
      target = await openVolume()
    }
    if (target.volume.instances === 0) resourcesInVolume = new Set()

    const carried = resources.filter((resource) => !resourcesInVolume.has(resourceKey(resource)))
    for (const resource of carried) resourcesInVolume.add(resourceKey(resource))
    const line = lineFor(carried.length > 0 ? {record, resources: carried} : {record})
    const {volume, file} = target
    volume.instances++
    const lineBytes = Buffer.byteLength(line)
    volume.recordBytes = (volume.recordBytes ?? 0) + lineBytes
    volume.bytes += recordFootprint(record, carried, lineBytes)
    volume.payloadBytes += record.size + sumSizes(record.attachments) + carried.reduce((sum, resource) => sum + sumSizes(resource.attachments), 0)
    if (volume.studyIds.at(-1) !== record.studyId) volume.studyIds.push(record.studyId)
    await file.write(line)
  }

  const sideData = new SideDataReader(options.client)
  const leftOut = {instances: 0, wholeStudies: new FarSideSample()}
  const selected = prefetchingSideData(selectedInstances(options, studies, leftOut), sideData, options.signal)
  let stats: TransferStats
  try {
    const planning = jobConcurrency(options.concurrency, {itemsPerUnit: 1, congestion: () => options.client.http.stats.congestion})
    stats = await runTransfer({
      items: selected,
      concurrency: planning.inFlight,
      control: planning.control,
      signal: options.signal,
      phase: 'planning',
      // Planning reads descriptions, not files: counts only, so that no rate is shown for it.
      onProgress: options.onProgress && ((event) => options.onProgress!({phase: event.phase, done: event.done})),
      onFailure: (problem) => options.onEvent?.({type: 'failure', problem}),
      describe: (instance) => ({id: instance.id}),
      async work(instance, signal) {
        const [record, resources] = await Promise.all([describeInstance(options.client, instance, sideData, signal), sideData.resourcesOf(instance, signal)])
        return {record, resources}
      },
      async commit(_instance, {record, resources}) {
        await append(record, resources)
        return {kind: 'transferred', bytes: record.size}
      },
    })
  } catch (error) {
    await current?.file.abandon()
    throw error
  }

  if (stats.interrupted) {
    await current?.file.abandon()
    throw options.signal?.reason ?? new DOMException('interrupted', 'AbortError')
  }

  await closeVolume()

  const plan: ExportPlan = {
    version: 1,
    fingerprint: options.fingerprint,
    group: options.group,
    createdAt: new Date().toISOString(),
    source: options.source,
    changeCursor,
    // What identifier filters name is patient data: the plan, on the drive by default, keeps their counts.
    filters: recordedFilters(options.filters),
    hops: options.hops,
    incrementalBase: options.incrementalBase,
    studies,
    volumes,
    planningFailures: stats.failures,
    planningFailed: stats.failed,
    leftOut: leftOut.instances,
    farSideStudies: leftOut.wholeStudies.studies(),
  }
  await writeJsonAtomically(join(stateDir, PLAN_FILE), plan)
  return plan
}

/** Whether filters narrow the export, as a reader of its volumes judges it (filters recorded: none). */
function hasFilters(filters: InstanceFilters): boolean {
  return Object.values(recordedFilters(filters)).some((value) => value !== undefined)
}

async function* selectedInstances(options: PlanOptions, studies: Record<string, StudyExpectation>, leftOut: {instances: number; wholeStudies: FarSideSample}): AsyncGenerator<SelectedInstance> {
  for await (const study of selectInstances(options.client, options.filters, options.signal)) {
    // A study's instances asked about at once: an exclusion may ask the source (a receipt's MD5).
    const excluded = options.exclude ? await Promise.all(study.instances.map((instance) => options.exclude!(instance, study.instances))) : []
    const kept = study.instances.filter((_, index) => excluded[index] !== true)
    leftOut.instances += study.instances.length - kept.length
    if (kept.length === 0) {
      leftOut.wholeStudies.add(study.studyId, {studyInstanceUid: study.studyInstanceUid, instances: study.instances.length})
      continue
    }

    const farSide = study.instances.length - kept.length
    studies[study.studyId] = {
      studyInstanceUid: study.studyInstanceUid, expectedInstances: kept.length, instancesOnSource: study.instancesOnSource,
      // Without filters the far side's are the study's others (instancesOnSource says how many).
      ...(farSide > 0 && hasFilters(options.filters) ? {farSideInstances: farSide} : {}),
    }
    options.onStudy?.({...study, instances: kept})
    yield* kept
  }
}

/**
 * The studies an export leaves out whole, as the far side's already: nothing of them is in its
 * volumes, so an import of those volumes alone could not tell that the export they add to never
 * arrived. A sample names some, with the instances each must have there: the lowest study IDs
 * (hashes, so spread over the server), at most FAR_SIDE_SAMPLE, whatever the number of studies.
 */
export class FarSideSample {
  private readonly sample = new Map<string, FarSideStudy>()
  private highest: string | undefined

  add(studyId: string, study: FarSideStudy): void {
    if (this.sample.size >= FAR_SIDE_SAMPLE && studyId >= this.highest!) return
    this.sample.set(studyId, study)
    if (this.sample.size > FAR_SIDE_SAMPLE) this.sample.delete(this.highest!)
    this.highest = [...this.sample.keys()].reduce((a, b) => (a > b ? a : b))
  }

  /** Undefined when there are none: the volumes then say nothing of it. */
  studies(): Record<string, FarSideStudy> | undefined {
    if (this.sample.size === 0) return undefined
    return Object.fromEntries([...this.sample].sort(([a], [b]) => (a < b ? -1 : 1)))
  }
}

/** What one instance adds to a volume: its tar entries, and its lines in the tag files. */
function recordFootprint(record: InstanceRecord, resources: ResourceRecord[], jsonBytes: number): number {
  const files = [record, ...record.attachments, ...resources.flatMap((resource) => resource.attachments)]
  const entries = files.reduce((sum, file) => sum + tarEntryBytes(file.size, file.path.length + 80), 0)
  // The records appear in contents.json and manifest.json (with hashes), plus a manifest line per file.
  const tagBytes = 2 * (jsonBytes + 200) + 200 * files.length
  return entries + tagBytes
}

/** An instance that cannot fit in any volume; instances are never split. */
export class InstanceTooLargeError extends Error {
  readonly problemKind = 'too-large' as const

  /** `bytes`: with the volume's own files; `limit`: what a volume's plaintext may hold (less, when encrypted, than --max-volume-size). */
  constructor(readonly instanceId: string, readonly bytes: number, readonly limit: number) {
    super(`instance ${instanceId} needs a volume of ${bytes} bytes, more than the ${limit} a volume may hold within --max-volume-size (less what encryption adds): raise --max-volume-size`)
    this.name = 'InstanceTooLargeError'
  }
}

export async function loadPlan(stateDir: string): Promise<ExportPlan | undefined> {
  let text: string
  try {
    text = await readFile(join(stateDir, PLAN_FILE), 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }

  const plan = parseStateJson<ExportPlan>(text, join(stateDir, PLAN_FILE))
  if (typeof plan !== 'object' || plan === null || !Array.isArray(plan.volumes) || typeof plan.group !== 'string') throw damagedState(join(stateDir, PLAN_FILE), 'it is not an export\'s plan')
  // A plan an earlier version wrote kept the filters' values: its volumes still record only counts.
  return {...plan, filters: recordedFilters(plan.filters)}
}

/**
 * A file of an export's state, parsed. The state is written whole or not at all (written aside,
 * then renamed), so a file that does not parse was damaged since, on its drive: said as such, never
 * as a bug.
 */
export function parseStateJson<T>(text: string, file: string): T {
  try {
    return JSON.parse(text) as T
  } catch {
    throw damagedState(file, 'it does not parse as JSON')
  }
}

export function damagedState(file: string, why: string): UserFacingError {
  return new UserFacingError(`the export's state is damaged: ${file}: ${why}`, 'Export into a new, empty folder: this state cannot be resumed.', 'bad-input', 'damaged-state')
}

export function planVolumePath(stateDir: string, volume: number): string {
  return join(stateDir, `volume-${String(volume).padStart(4, '0')}.jsonl`)
}

/** One line of a planned volume: an instance, and the resources whose side data goes in with it. */
export interface PlannedEntry {
  record: InstanceRecord
  resources?: ResourceRecord[]
}

export async function* readPlannedVolume(stateDir: string, volume: number): AsyncGenerator<PlannedEntry> {
  const lines = createInterface({input: createReadStream(planVolumePath(stateDir, volume)), crlfDelay: Number.POSITIVE_INFINITY})
  for await (const line of lines) {
    if (!line) continue
    const parsed = parseStateJson<PlannedEntry | InstanceRecord>(line, planVolumePath(stateDir, volume))
    // Plans written before resources were carried hold bare instance records.
    yield 'record' in parsed ? parsed : {record: parsed}
  }
}

function sumSizes(attachments: Array<{size: number}>): number {
  return attachments.reduce((sum, attachment) => sum + attachment.size, 0)
}
