import {createReadStream} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {createInterface} from 'node:readline'

import type {OrthancClient} from '../orthanc/client.js'
import {declaredUserMetadata} from '../orthanc/metadata.js'
import type {ProgressListener} from '../transfer/progress.js'
import {BatchedLineWriter} from '../util/batched-line-writer.js'
import {type CompareOptions, type ComparedInstance, compareServers} from './compare.js'
import {makeScratchFolder, removeScratchFolder} from '../util/scratch-folder.js'

export interface SyncPlan {
  /** Instances the target lacks. */
  missing: number
  /** Instances on both sides with different MD5s (only with --checksum). */
  different: number
  /** Instances already on the target: with their MD5s compared, the same; without, the same ID. */
  present: number
  /** Whether the MD5s of the instances on both sides were compared (--checksum): without, `different` is 0 unlooked. */
  md5Compared: boolean
  /** Of `present`, with MD5s compared: those a server records no MD5 for (StoreMD5ForAttachments off), so not compared. */
  md5Unrecorded?: number
  bytesToTransfer: number
  /** Only on the target (an unfiltered comparison): what --delete would remove. */
  onlyOnTarget: number
  studies: {complete: number; partial: number; missing: number}
  /**
   * User metadata names the source declares and the target does not: values under them will not
   * be carried. Known when both servers list their UserMetadata (Orthanc 1.12 and later).
   */
  undeclaredUserMetadata?: string[]
}

/** Names the source declares in its UserMetadata and the target does not; undefined when either does not say. */
export async function undeclaredUserMetadata(source: OrthancClient, target: OrthancClient, signal?: AbortSignal): Promise<string[] | undefined> {
  const [onSource, onTarget] = await Promise.all([source.system(signal), target.system(signal)]).then((systems) => systems.map(declaredUserMetadata))
  if (!onSource || !onTarget) return undefined
  const taken = new Set(onTarget)
  return onSource.filter((name) => !taken.has(name))
}

/** What the target held when the plan compared the servers, before the sync added anything. */
export function heldByTarget(plan: SyncPlan): number {
  return plan.present + plan.different + plan.onlyOnTarget
}

export function emptySyncPlan(md5Compared = false): SyncPlan {
  return {missing: 0, different: 0, present: 0, md5Compared, bytesToTransfer: 0, onlyOnTarget: 0, studies: {complete: 0, partial: 0, missing: 0}}
}

/** Whether the transfer takes an instance: to send it, or (not in a dry run) to compare its side data. */
export function isToTransfer(item: ComparedInstance, dryRun: boolean): boolean {
  return item.state === 'only-source' || item.state === 'different' || (!dryRun && (item.state === 'present' || item.state === 'identical' || item.state === 'unrecorded'))
}

/**
 * Compares the servers and counts the plan before anything moves, so that it can be shown first
 * (and stands when the run is interrupted). What the transfer will take goes to `spool` as it is
 * found, so that memory holds one study at a time however many instances the plan names.
 * `plan` is filled as the comparison goes: interrupted, it holds what was compared so far.
 */
export async function planSync(source: OrthancClient, target: OrthancClient, options: CompareOptions & {dryRun: boolean; onProgress?: ProgressListener}, plan: SyncPlan, spool?: ComparisonSpool): Promise<void> {
  const studies = new Map<string, {present: number; total: number}>()
  // Unfiltered, the source's own count is the total to compare. It is asked for beside the
  // comparison, not before it: across a link, a round trip less before the first instance moves.
  let total = options.onlyInstances?.length
  const counted = Object.keys(options.filters).length === 0 && options.onlyInstances === undefined
    ? source.statistics(options.signal).then((statistics) => {
      total = statistics.CountInstances
    })
    : Promise.resolve()
  // A failure is seen below, after the comparison (which asks the same server) had its say.
  counted.catch(() => {})
  let compared = 0
  let lastReport = 0
  const report = (force = false) => {
    const now = Date.now()
    if (!force && now - lastReport < 100) return
    lastReport = now
    options.onProgress?.({phase: 'comparing', done: compared, total})
  }

  try {
    for await (const item of compareServers(source, target, options)) {
      if (item.state === 'only-target') {
        plan.onlyOnTarget++
        continue
      }

      compared++
      const study = studies.get(item.studyId!) ?? {present: 0, total: 0}
      study.total++
      if (item.state === 'identical' || item.state === 'present' || item.state === 'unrecorded') {
        plan.present++
        study.present++
        if (item.state === 'unrecorded') plan.md5Unrecorded = (plan.md5Unrecorded ?? 0) + 1
      } else {
        if (item.state === 'different') plan.different++
        else plan.missing++
        plan.bytesToTransfer += item.size ?? 0
      }

      studies.set(item.studyId!, study)
      if (spool && isToTransfer(item, options.dryRun)) await spool.write(item)
      report()
    }

    await counted
  } finally {
    for (const {present, total: instances} of studies.values()) {
      if (present === instances) plan.studies.complete++
      else if (present === 0) plan.studies.missing++
      else plan.studies.partial++
    }
  }

  report(true)
}

/** Lines (about 400 bytes an instance) the comparison spool holds in memory before it spills to its file. */
const SPOOL_IN_MEMORY_CHARS = 1024 * 1024

/**
 * The instances a sync will transfer, in the order they were compared, waiting between the
 * comparison and the transfer: in memory up to about 1 MiB of them (a few thousand instances),
 * beyond that in a private temporary file (0600, in a 0700 folder), so that memory stays bounded
 * however many instances the plan names. It holds Orthanc IDs, DICOM UIDs and sizes, never
 * DICOM data, and the file is removed when the sync ends. A job small enough to stay in memory
 * makes no file: across a link, the file's writes and read back were part of what a short sync
 * waited for before its first upload.
 */
export class ComparisonSpool {
  private count = 0
  /** Every line while they fit in memory; none once they went to the file. */
  private held: string[] = []
  private heldChars = 0
  private file?: Promise<{dir: string; writer: BatchedLineWriter}>
  private spilledTo?: string

  /** Instances written so far. */
  get size(): number {
    return this.count
  }

  /** The file the lines went to once they no longer fitted in memory; undefined while they do. */
  get spillPath(): string | undefined {
    return this.spilledTo
  }

  async write(item: ComparedInstance): Promise<void> {
    this.count++
    const line = `${JSON.stringify(item)}\n`
    if (!this.file && this.heldChars + line.length <= SPOOL_IN_MEMORY_CHARS) {
      this.held.push(line)
      this.heldChars += line.length
      return
    }

    this.file ??= this.spill()
    await (await this.file).writer.write(line)
  }

  /** Ends the file, if any, then yields what the spool holds, in order. */
  async *read(): AsyncGenerator<ComparedInstance> {
    if (!this.file) {
      for (const line of this.held) yield JSON.parse(line) as ComparedInstance
      return
    }

    const {dir, writer} = await this.file
    await writer.end()
    const lines = createInterface({input: createReadStream(join(dir, 'plan.jsonl')), crlfDelay: Number.POSITIVE_INFINITY})
    for await (const line of lines) if (line) yield JSON.parse(line) as ComparedInstance
  }

  async dispose(): Promise<void> {
    this.held = []
    const file = await this.file?.catch(() => undefined)
    if (!file) return
    await file.writer.abandon().catch(() => {})
    await removeScratchFolder(file.dir)
  }

  /** Creates the file and moves what memory held into it. */
  private async spill(): Promise<{dir: string; writer: BatchedLineWriter}> {
    const dir = await makeScratchFolder(tmpdir(), 'orthanc-replicate-sync-')
    try {
      const writer = await BatchedLineWriter.create(join(dir, 'plan.jsonl'))
      this.spilledTo = join(dir, 'plan.jsonl')
      for (const line of this.held) await writer.write(line)
      this.held = []
      this.heldChars = 0
      return {dir, writer}
    } catch (error) {
      await removeScratchFolder(dir)
      throw error
    }
  }
}
