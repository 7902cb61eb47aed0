import {randomUUID} from 'node:crypto'
import {mkdir, mkdtemp, open, rename, rm, stat, statfs} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import type {Writable} from 'node:stream'

import {ARCHIVE_FORMAT, ARCHIVE_FORMAT_VERSION, type VolumeHeader, volumeName, type WrittenInstanceRecord} from '../archive/format.js'
import type {Hop, InstanceFilters, InstanceRecord, SourceIdentity} from '../model.js'
import {TarOutput, VolumeWriter} from '../archive/volume-writer.js'
import {UserFacingError} from '../errors.js'
import type {OrthancClient} from '../orthanc/client.js'
import {fetchVerifiedAttachment, fetchVerifiedInstance} from '../sources/orthanc-instance.js'
import type {SelectedInstance, SelectedStudy} from '../sources/orthanc-selection.js'
import {runTransfer} from '../transfer/engine.js'
import type {ProgressListener} from '../transfer/progress.js'
import {emptyStats, type TransferStats} from '../transfer/stats.js'
import {formatBytes} from '../util/format.js'
import {type ExportPlan, loadPlan, planExport, planVolumePath, readPlannedVolume} from './plan.js'
import {PatientIndex} from './patient-index.js'

export type ExportOutput = {kind: 'directory'; path: string} | {kind: 'stream'; stream: Writable}

export interface ExportOptions {
  client: OrthancClient
  output: ExportOutput
  filters: InstanceFilters
  maxVolumeBytes: number
  maxVolumeInstances: number
  concurrency: number
  /** Volume file names: PREFIX-0001-of-0003.tar */
  namePrefix: string
  dryRun: boolean
  /** Also write index.csv with patient names and IDs beside the volumes (off by default: drives get lost). */
  patientIndex: boolean
  /** Leaves out instances the other side already has (incremental export, import receipts). */
  exclude?: (instance: SelectedInstance) => boolean | Promise<boolean>
  /** Where this data came from, when it arrived by an earlier archive. */
  hops?: Hop[]
  /** For an incremental export: the export it adds to, and what of it is gone from the source. */
  incrementalBase?: {group: string; changeCursor: number}
  /** Says what `exclude` leaves out (base group, receipts), so that a resumed run is the same run. */
  exclusions?: string
  signal?: AbortSignal
  onProgress?: ProgressListener
}

export interface ExportSummary extends TransferStats {
  dryRun: boolean
  output: string
  group: string
  /** Volumes of the export, and how many this run wrote (the others were already complete). */
  volumes: number
  volumesWritten: number
  instancesPlanned: number
  bytesPlanned: number
  changeCursor: number
}

const STATE_DIR = '.orthanc-replicate'

/**
 * How much a volume file's stream buffers before it asks the writer to wait. With the default
 * 16 KiB, each instance waited for its own disk write to finish before the next could be added
 * to the tar, and entries go in order: downloads waited on the disk one file at a time.
 */
const VOLUME_WRITE_BUFFER_BYTES = 8 * 1024 * 1024

/**
 * Exports a server's instances into archive volumes: plans (or resumes a plan), checks free
 * space, then writes each missing volume. Finished volumes are never rewritten.
 */
export async function exportArchive(options: ExportOptions): Promise<ExportSummary> {
  const started = Date.now()
  const source = await sourceIdentity(options.client, options.signal)
  // A stream is cut into bags of the volume size too: the far side holds one bag on disk until
  // its tag manifest, which comes last, proves it.
  const {maxVolumeBytes} = options
  const fingerprint = JSON.stringify({
    server: source.server, filters: options.filters, maxVolumeBytes: options.maxVolumeBytes, maxVolumeInstances: options.maxVolumeInstances,
    prefix: options.namePrefix, hops: options.hops ?? [], patientIndex: options.patientIndex, exclusions: options.exclusions ?? '',
  })
  const stateDir = options.output.kind === 'directory' && !options.dryRun
    ? join(options.output.path, STATE_DIR)
    : await mkdtemp(join(tmpdir(), 'orthanc-replicate-plan-'))
  const index = options.patientIndex ? new PatientIndex() : undefined

  try {
    let plan = options.output.kind === 'directory' && !options.dryRun ? await loadPlan(stateDir) : undefined
    if (plan && plan.fingerprint !== fingerprint) {
      throw new UserFacingError(
        `${options.output.kind === 'directory' ? options.output.path : 'the output'} holds another export (other source, filters or volume limits)`,
        'Export into an empty folder, or repeat the original command to resume that export.',
        'usage', 'other-export-in-folder')
    }

    const resumed = plan !== undefined
    if (!plan) {
      if (options.output.kind === 'directory' && !options.dryRun) await mkdir(options.output.path, {recursive: true})
      plan = await planExport(stateDir, {
        client: options.client,
        filters: options.filters,
        maxVolumeBytes,
        maxVolumeInstances: options.maxVolumeInstances,
        concurrency: options.concurrency,
        fingerprint,
        group: randomUUID(),
        source,
        hops: options.hops ?? [],
        incrementalBase: options.incrementalBase,
        exclude: options.exclude,
        onStudy: index ? (study: SelectedStudy) => index.add(study) : undefined,
        signal: options.signal,
        onProgress: options.onProgress,
      })
      // Written as soon as the plan says which volume holds which study.
      if (index && options.output.kind === 'directory' && !options.dryRun) await index.write(join(options.output.path, 'index.csv'), plan, options.namePrefix)
    }

    const planned = plan.volumes.reduce((sum, volume) => sum + volume.instances, 0)
    const summary: ExportSummary = {
      ...emptyStats(),
      dryRun: options.dryRun,
      output: options.output.kind === 'directory' ? options.output.path : '-',
      group: plan.group,
      volumes: plan.volumes.length,
      volumesWritten: 0,
      instancesPlanned: planned,
      bytesPlanned: plan.volumes.reduce((sum, volume) => sum + volume.payloadBytes, 0),
      changeCursor: plan.changeCursor,
    }
    for (const failure of plan.planningFailures) {
      summary.failed++
      summary.failures.push(failure)
    }

    if (planned === 0 && plan.planningFailures.length === 0 && !resumed && options.exclude) {
      // An incremental export with nothing new is a success with nothing to write.
      await rm(stateDir, {recursive: true, force: true})
      summary.durationMs = Date.now() - started
      return summary
    }

    if (planned === 0 && plan.planningFailures.length === 0 && !resumed) {
      // Nothing to resume either: leave the folder as it was found.
      await rm(stateDir, {recursive: true, force: true})
      throw new UserFacingError('no instance matches the filters', 'Check the filter values (IDs, dates as YYYYMMDD, modality codes) against `info` and the server.', 'nothing-matched', 'nothing-matched')
    }

    if (options.dryRun) {
      summary.durationMs = Date.now() - started
      return summary
    }

    if (options.output.kind === 'directory') await writeVolumeFiles(options.output.path, plan, stateDir, options, summary)
    else await writeVolumeStream(options.output.stream, plan, stateDir, options, summary)
    summary.durationMs = Date.now() - started
    summary.retries += options.client.http.stats.retries
    return summary
  } finally {
    if (options.output.kind !== 'directory' || options.dryRun) await rm(stateDir, {recursive: true, force: true})
  }
}

async function writeVolumeFiles(dir: string, plan: ExportPlan, stateDir: string, options: ExportOptions, summary: ExportSummary): Promise<void> {
  const count = plan.volumes.length
  const pending = []
  for (const [index, volume] of plan.volumes.entries()) {
    const file = join(dir, `${volumeName(options.namePrefix, index + 1, count)}.tar`)
    if (await exists(file)) {
      summary.skipped += volume.instances
    } else {
      pending.push({number: index + 1, file})
    }
  }

  await checkFreeSpace(dir, pending.reduce((sum, {number}) => sum + plan.volumes[number - 1]!.bytes, 0))
  for (const {number, file} of pending) {
    const partial = `${file}.partial`
    await rm(partial, {force: true})
    const handle = await open(partial, 'w')
    const output = new TarOutput(handle.createWriteStream({highWaterMark: VOLUME_WRITE_BUFFER_BYTES}))
    try {
      await writeVolume(output, plan, stateDir, number, options, summary)
      await output.close()
      // The volume only takes its final name once its bytes are on the disk.
      const sync = await open(partial, 'r+')
      await sync.sync()
      await sync.close()
      await rename(partial, file)
      summary.volumesWritten++
    } catch (error) {
      output.abort(error as Error)
      throw error
    }
  }

  await syncDirectory(dir)
}

async function writeVolumeStream(stream: Writable, plan: ExportPlan, stateDir: string, options: ExportOptions, summary: ExportSummary): Promise<void> {
  const output = new TarOutput(stream)
  try {
    for (let number = 1; number <= plan.volumes.length; number++) {
      await writeVolume(output, plan, stateDir, number, options, summary)
      summary.volumesWritten++
    }

    await output.close()
  } catch (error) {
    output.abort(error as Error)
    throw error
  }
}

async function writeVolume(output: TarOutput, plan: ExportPlan, stateDir: string, number: number, options: ExportOptions, summary: ExportSummary): Promise<void> {
  const count = plan.volumes.length
  const bagName = volumeName(options.namePrefix, number, count)
  const records: InstanceRecord[] = []
  for await (const record of readPlannedVolume(stateDir, number)) records.push(record)
  const header: VolumeHeader = {
    format: ARCHIVE_FORMAT,
    formatVersion: ARCHIVE_FORMAT_VERSION,
    group: plan.group,
    volume: number,
    volumeCount: count,
    source: plan.source,
    exportedAt: plan.createdAt,
    filters: plan.filters,
    changeCursor: plan.changeCursor,
    hops: plan.hops,
    incrementalBase: plan.incrementalBase,
    studies: Object.fromEntries(plan.volumes[number - 1]!.studyIds.map((id) => [id, plan.studies[id]!])),
  }
  const writer = new VolumeWriter(output, bagName, new Date(plan.createdAt))
  await writer.begin({...header, instances: records})

  const written: WrittenInstanceRecord[] = []
  const doneBefore = summary.transferred + summary.skipped + summary.failed
  const bytesBefore = summary.bytes
  const stats = await runTransfer({
    items: toAsync(records),
    concurrency: options.concurrency,
    signal: options.signal,
    phase: 'export',
    describe: (record) => ({id: record.id}),
    sizeOf: (record) => record.size + record.attachments.reduce((sum, attachment) => sum + attachment.size, 0),
    async work(record, signal) {
      const dicom = await fetchVerifiedInstance(options.client, record.id, record.md5, signal)
      const attachments = await Promise.all(record.attachments.map((attachment) => fetchVerifiedAttachment(options.client, record.id, attachment, signal)))
      return {dicom, attachments}
    },
    async commit(record, payload) {
      const sha256 = await writer.addPayload(record.path, payload.dicom)
      const attachments = []
      for (const [index, attachment] of record.attachments.entries()) {
        attachments.push({...attachment, sha256: await writer.addPayload(attachment.path, payload.attachments[index]!)})
      }

      written.push({...record, sha256, attachments})
      return {kind: 'transferred', bytes: payload.dicom.length}
    },
    onProgress: options.onProgress && ((event) => options.onProgress!({
      ...event,
      done: doneBefore + event.done,
      bytes: bytesBefore + event.bytes,
      total: summary.instancesPlanned,
      totalBytes: summary.bytesPlanned,
    })),
  })

  await writer.finish({...header, instances: written, failed: stats.failures.map(({id, reason}) => ({id, reason}))}, {
    group: plan.group,
    volume: number,
    volumeCount: count,
    baggingDate: plan.createdAt.slice(0, 10),
    software: 'orthanc-replicate',
    description: `DICOM instances exported from Orthanc "${plan.source.name}" (${plan.source.version}); archive format ${ARCHIVE_FORMAT} v${ARCHIVE_FORMAT_VERSION}`,
  })
  await rm(planVolumePath(stateDir, number), {force: true}).catch(() => {})
  summary.transferred += stats.transferred
  summary.failed += stats.failed
  summary.failures.push(...stats.failures)
  summary.bytes += stats.bytes
  summary.retries += stats.retries
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

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path)
    return true
  } catch {
    return false
  }
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

async function* toAsync<T>(items: Iterable<T>): AsyncGenerator<T> {
  yield* items
}
