import type {ArchiveReadReport, VolumeCounts} from '../sources/archive-source.js'
import {type ArchiveInput, readArchives} from '../sources/archive-source.js'
import type {AgeDecryptionKeys} from '../crypto/age.js'
import {archiveInputs} from '../sources/archive-inputs.js'
import {readDicomFolder, sampleFolderFiles} from '../sources/dicom-folder.js'
import {FirstCopies, takeFirstCopy} from '../sources/first-copies.js'
import type {Endpoint, InstanceInTransit} from '../model.js'
import {endpointOf} from '../orthanc/endpoint-of.js'
import {archiveTotals, type ExportOfVolume} from '../sources/archive-totals.js'
import type {SourceEvents} from '../sources/source-events.js'
import {type Problem, ProblemList} from '../problems.js'
import {recoverStoppedServer, type RecoveryInput} from '../recovery/recover-server.js'
import type {RecoveryReport} from '../recovery/recover.js'
import {type NotCarried, OrthancSink} from '../sinks/orthanc-sink.js'
import {InstanceReplacer} from '../sync/replace.js'
import {defaultJournalFolder, ReplacementJournal} from '../sync/replacement-journal.js'
import {DISTANCE_PROBES, ZIP_BY_DEFAULT_MIN_INSTANCES, type ZipUploads, zipUploadsFor} from '../sinks/upload-batcher.js'
import type {OrthancClient} from '../orthanc/client.js'
import {jobConcurrency} from '../transfer/adaptive-concurrency.js'
import {inFlightPerUpload, runTransfer} from '../transfer/engine.js'
import type {JobEventListener, ProgressListener} from '../transfer/progress.js'
import {type PlannedCounts, recordFailure, type TransferStats} from '../transfer/stats.js'
import type {ImportInput} from './inputs.js'
import {ReceiptWriter, refuseReceiptOverInput} from './receipt.js'
import {type StudyCompleteness, studyCompleteness} from './study-completeness.js'

export interface ImportOptions {
  client: OrthancClient
  /** Where replacements are journaled (see ReplacementJournal); default: a folder per target in the user's state folder, shared with sync. */
  replacementJournal?: string
  inputs: ImportInput[]
  /** Uploads at once; undefined: adaptive, from 8 up to what the link and the target reward. */
  concurrency?: number
  /** Small instances waiting for an upload go together in one ZIP (see UploadBatcher); undefined: when the volume files, or a DICOM folder's first files, say the job is many small instances (zipUploadsFor). */
  zipUploads?: boolean
  dryRun: boolean
  /** Where an archive read from a stream waits until each volume is proven (default: the system's temporary folder). */
  spoolDir?: string
  /** What opens encrypted volumes (.tar.age, or an encrypted stream). */
  decryption?: AgeDecryptionKeys
  /** Where to write the receipt; none when undefined or in a dry run. */
  receiptPath?: string
  /** For a stopped server's storage: also import stored files its index does not know. */
  includeUnindexed?: boolean
  signal?: AbortSignal
  onProgress?: ProgressListener
  /** The plan (when volume files say what they hold), each failure and each retry. */
  onEvent?: JobEventListener
}

export interface ImportSummary extends TransferStats {
  dryRun: boolean
  target: Endpoint
  /** A dry run's work: what it would upload (its `transferred` and `bytes` stay 0). */
  planned?: PlannedCounts
  /**
   * Copies of an instance stored (a dry run: that would be) over another copy of it this run
   * transferred: a newer export's, over an older one's. Not in `transferred`, which counts the
   * instance once; their bytes are in `bytes`. Present when not 0.
   */
  superseded?: number
  /** Replacements an earlier run was killed in (see InstanceReplacer): what they kept of the target's own, written back by this one. Present when not 0. */
  leftoversWrittenBack?: number
  /** Files that are not instances (not DICOM, header-only copies, index files): passed over and counted. */
  ignoredFiles: number
  /** The same files counted by kind: not-dicom, header-only, not-in-index, index-file... */
  ignoredByKind: Record<string, number>
  ignoredSamples: Problem[]
  /** Bad input: corrupt, refused, unproven, truncated or missing entries and volumes (the first MAX_LISTED_PROBLEMS). Any of them fails the run. */
  problems: Problem[]
  problemCount: number
  /** Instances refused as hostile as they were about to be sent (among `failed`): bad input too. */
  refusedAsHostile: number
  volumes: VolumeCounts
  studies: StudyCompleteness
  /** Side data that could not be carried to the target, by level, kind and name, with counts. */
  notCarried: NotCarried[]
  /** One per stopped server read (a storage folder or a PostgreSQL database): what was found, recovered, failed. */
  recovery: RecoveryReport[]
  receipt?: string
  /** Uploads at once: fixed by --concurrency, or where the adaptive concurrency settled. */
  concurrency: number
  concurrencyAdaptive: boolean
  /** Uploads that carried several small instances in one ZIP, and the instances they carried. */
  zipUploads: ZipUploads
}

const SAMPLES = 20

/** Imports archives, DICOM folders and storage folders into a target, checking everything on the way. */
export async function importInstances(options: ImportOptions): Promise<ImportSummary> {
  const {client} = options
  const system = await client.system(options.signal)
  const target = await endpointOf(client, options.signal)
  const problems = new ProblemList()
  const ignoredSamples: ImportSummary['ignoredSamples'] = []
  let ignoredFiles = 0
  const ignoredByKind: Record<string, number> = {}
  // Instances a source knew of but could not deliver: failed, like those the target refused.
  const sourceFailures: Problem[] = []
  const events: SourceEvents = {
    onSkip(notice) {
      ignoredFiles++
      ignoredByKind[notice.kind] = (ignoredByKind[notice.kind] ?? 0) + 1
      if (ignoredSamples.length < SAMPLES) ignoredSamples.push(notice)
    },
    onProblem(problem) {
      problems.add(problem)
    },
    onFailed(failure) {
      sourceFailures.push(failure)
    },
  }
  const recovery: RecoveryReport[] = []
  // Which recovery each instance came from, to count what became of it.
  const recoveredFrom = new WeakMap<InstanceInTransit, RecoveryReport>()
  const archiveReport: ArchiveReadReport = {bags: [], missingVolumes: []}
  // Encrypted inputs without a key are refused here, before the receipt or the target see anything.
  const archives = await archiveInputs(options.inputs.flatMap((input) => (input.kind === 'archive-file' || input.kind === 'archive-stream' ? [input] : [])), options.decryption)
  // What the volume files say they hold: the exports' order, when every archive is a volume file
  // that says it, and the total to show, when every input is one.
  const archiveFiles = options.inputs.flatMap((input) => (input.kind === 'archive-file' ? [input.path] : []))
  const ordered = archiveFiles.length === archives.length ? await archiveTotals(archiveFiles, {findRepeated: true}) : undefined
  const totals = archiveFiles.length === options.inputs.length ? ordered : undefined
  if (totals) options.onEvent?.({type: 'plan', instances: totals.instances, bytes: totals.bytes})
  const zip = await zipUploadsFor(options.zipUploads, totals ?? await folderSample(options), () => client.quickestAnswerMs(DISTANCE_PROBES, options.signal))
  const concurrency = jobConcurrency(options.concurrency, {itemsPerUnit: inFlightPerUpload(zip), congestion: () => client.http.stats.congestion})
  const sink = new OrthancSink(client, {dryRun: options.dryRun, uploads: concurrency.initial, zip})
  concurrency.onChange((uploads) => sink.setUploads(uploads))
  // An archive's copy of an instance the target holds other bytes of (a newer export, an instance
  // stored again on the source): a target with OverwriteInstances replaces it, and with it what
  // the target kept beside it. Kept, journaled and written back as a sync --checksum does.
  const replacer = options.dryRun ? undefined : new InstanceReplacer(client, sink, {journal: new ReplacementJournal(options.replacementJournal ?? defaultJournalFolder(target.url), target.url)})
  if (replacer) {
    sink.storeOverWith((id, copy, store, signal) => replacer.storeOver(id, copy, store, signal))
    await replacer.takeOverLeftovers()
  }
  // A dry run stores nothing: what it would transfer counts towards each study's completeness.
  const wouldTransfer = new Map<string, number>()
  // Of the instances several exports hold, what the run left (a dry run: would leave) on the
  // target, and whether it transferred it: a later copy stored over one this run transferred
  // supersedes it, and is no second transfer of the instance.
  const repeated = ordered?.repeated
  const leftByRun = new Map<string, {md5: string; transferred: boolean}>()
  // Instances a dry run failed: a copy met again is met against what the target holds, as in the
  // run. Only those another copy may follow are kept: a dry run failing every entry of a hostile
  // archive must not hold them all.
  const failedInDryRun = new Set<string>()
  const unordered = !ordered && archives.length > 1
  const copiesMet = metBesideOthers(options.inputs, archives.length, unordered)
  const mayMeetAgain = (id: string) => copiesMet || repeated?.has(id) === true
  let superseded = 0
  // The copies of one of those instances are met in turn, each against what the one before it left.
  const turns = new Map<string, Promise<void>>()
  // The turn a copy holds from its first attempt to its last (see afterAttempts).
  const heldTurns = new Map<InstanceInTransit, {previous: Promise<void> | undefined; mine: Promise<void>; release: () => void}>()
  // What an earlier copy of the unit's instance in this job left on the target, when it left one.
  const earlierOnTarget = (unit: InstanceInTransit) => {
    if (unit.earlierCopy === undefined) return undefined
    const left = leftByRun.get(unit.instanceId)
    if (left || repeated?.has(unit.instanceId) || failedInDryRun.has(unit.instanceId)) return left
    // The same bytes as a copy the sources took before: sent before this one, it is there by now.
    return {md5: unit.earlierCopy, transferred: false}
  }
  // Counted as they come: the failures list keeps only the first ones.
  let refusedAsHostile = 0
  // The receipt's lines for instances that failed, written as the engine reports them.
  const failedReceiptLines: Array<Promise<void> | undefined> = []
  const closeAfterJob: Array<() => Promise<void>> = []
  // Started last before the transfer (which closes it, whatever happens): nothing before it is left holding its lock.
  let receipt: ReceiptWriter | undefined
  if (options.receiptPath && !options.dryRun) {
    await refuseReceiptOverInput(options.receiptPath, options.inputs.flatMap((input) => ('path' in input ? [input.path] : [])))
    receipt = await ReceiptWriter.create(options.receiptPath, {format: 'orthanc-replicate-receipt', version: 1, target: {server: client.display, name: system.Name, version: system.Version}, createdAt: new Date().toISOString()})
  }
  // One copy stored, counted once, and written in the receipt (its last line for the instance).
  const storeInTurn = async (unit: InstanceInTransit, signal: AbortSignal) => {
    const earlier = earlierOnTarget(unit)
    const outcome = await sink.store(unit, signal, options.dryRun && earlier ? {wouldHold: earlier.md5} : {})
    const over = earlier?.transferred === true && outcome.kind === 'transferred'
    if (over) superseded++
    if (repeated?.has(unit.instanceId)) {
      leftByRun.set(unit.instanceId, {md5: unit.md5, transferred: outcome.kind === 'transferred' || (earlier?.transferred === true && earlier.md5 === unit.md5)})
    }
    if (options.dryRun && outcome.kind === 'transferred' && !over && unit.record) wouldTransfer.set(unit.record.studyId, (wouldTransfer.get(unit.record.studyId) ?? 0) + 1)
    await receipt?.write({id: outcome.instanceId, status: outcome.kind, md5: outcome.targetMd5}, {again: unit.earlierCopy !== undefined})
    const report = recoveredFrom.get(unit)
    if (report) report.recovered++
    return outcome
  }
  const stats = await runTransfer<InstanceInTransit, Awaited<ReturnType<OrthancSink['store']>>>({
    items: unitsFrom(options.inputs, events, archiveReport, {archives: ordered ? inExportOrder(archives, ordered.exports) : archives, unordered, repeated: ordered?.repeated, signal: options.signal, spoolDir: options.spoolDir, recovery, recoveredFrom, includeUnindexed: options.includeUnindexed ?? false, closeAfterJob}),
    concurrency: concurrency.inFlight,
    control: concurrency.control,
    signal: options.signal,
    phase: options.dryRun ? 'import (dry run)' : 'import',
    total: totals?.instances,
    totalBytes: totals?.bytes,
    onProgress: options.onProgress,
    // Once per instance, after its last attempt: an attempt that failed and was tried again is no failure.
    onFailure: (problem, unit) => {
      if (problem.kind === 'hostile') refusedAsHostile++
      if (options.dryRun && mayMeetAgain(unit.instanceId)) failedInDryRun.add(unit.instanceId)
      const report = recoveredFrom.get(unit)
      if (report) report.failed++
      const line = receipt?.write({id: unit.instanceId, status: 'failed', md5: '', reason: problem.reason}, {again: unit.earlierCopy !== undefined})
      // Awaited, and its error thrown, once the transfer ends; not an unhandled rejection meanwhile.
      line?.catch(() => {})
      failedReceiptLines.push(line)
      options.onEvent?.({type: 'failure', problem})
    },
    onRetry: (item, attempt, error) => options.onEvent?.({type: 'retry', id: item.id, attempt, reason: (error as Error).message}),
    describe: (unit) => ({id: unit.instanceId, path: unit.label}),
    sizeOf: (unit) => unit.dicom.length + [...(unit.attachments?.values() ?? [])].reduce((sum, data) => sum + data.length, 0),
    async work(unit, signal) {
      // A copy's turn lasts over all its attempts: released after one that failed and is tried
      // again, it let the next copy go first, and the retry then stored the older copy over it.
      let turn = heldTurns.get(unit)
      if (!turn && repeated?.has(unit.instanceId)) {
        let release!: () => void
        const mine = new Promise<void>((resolve) => (release = resolve))
        turn = {previous: turns.get(unit.instanceId), mine, release}
        turns.set(unit.instanceId, mine)
        heldTurns.set(unit, turn)
      }
      await turn?.previous
      return storeInTurn(unit, signal)
    },
    afterAttempts(unit) {
      const turn = heldTurns.get(unit)
      if (!turn) return
      heldTurns.delete(unit)
      turn.release()
      if (turns.get(unit.instanceId) === turn.mine) turns.delete(unit.instanceId)
    },
  }).finally(async () => {
    try {
      // Replacements not ended, and those runs killed mid-replacement left: written back now.
      await replacer?.finish()
      await Promise.all(failedReceiptLines)
    } finally {
      await Promise.all(closeAfterJob.map((close) => close().catch(() => {})))
      for (const bag of archiveReport.bags) {
        const header = bag.manifest
        if (bag.proven && bag.group) receipt?.addGroup(bag.group, header ? [...header.hops, {group: header.group, source: header.source, exportedAt: header.exportedAt}] : [])
      }
      await receipt?.close()
    }
  })

  for (const failure of sourceFailures) {
    recordFailure(stats, failure)
    options.onEvent?.({type: 'failure', problem: failure})
  }
  // Interrupted: no more questions to the target; the counts so far are the summary.
  const studies = stats.interrupted ? {complete: 0, incomplete: []} : await studyCompleteness(client, archiveReport.bags, wouldTransfer, options.signal)
  return {
    ...stats,
    // One instance is one transfer, however many of its copies were stored over each other.
    transferred: stats.transferred - superseded,
    ...(superseded > 0 ? {superseded} : {}),
    ...(replacer && replacer.leftoversWrittenBack > 0 ? {leftoversWrittenBack: replacer.leftoversWrittenBack} : {}),
    // A dry run uploads nothing: what it would upload is its plan.
    ...(options.dryRun ? {transferred: 0, bytes: 0, planned: {instances: stats.transferred - superseded, bytes: stats.bytes}} : {}),
    // Requests sent again after a reset or a 503 count too: each one is an upload that was not lost.
    retries: stats.retries + client.http.stats.retries,
    dryRun: options.dryRun === true,
    target,
    ignoredFiles,
    ignoredByKind,
    ignoredSamples,
    problems: problems.items,
    problemCount: problems.count,
    refusedAsHostile,
    volumes: {
      read: archiveReport.bags.length,
      proven: archiveReport.bags.filter((bag) => bag.proven).length,
      complete: archiveReport.bags.filter((bag) => bag.complete).length,
      unproven: archiveReport.bags.filter((bag) => !bag.proven).map((bag) => ({volume: bag.bag, input: bag.input, instances: bag.instancesPlanned, fromStream: bag.fromStream})),
      incomplete: archiveReport.bags.filter((bag) => bag.proven && !bag.complete).map((bag) => bag.bag),
      missing: archiveReport.missingVolumes,
    },
    studies,
    notCarried: sink.notCarried.list(),
    zipUploads: {...sink.zipped},
    recovery,
    receipt: receipt?.path,
    ...concurrency.settled(),
  }
}

/**
 * What DICOM folders say of the job before it starts: the sizes of their first files, enough to
 * tell whether it is many small instances. Other inputs without volume files (a stopped server's
 * storage or database, streams) say nothing, and go in ZIPs only when asked.
 */
async function folderSample(options: ImportOptions): Promise<{instances: number; bytes: number} | undefined> {
  if (options.zipUploads !== undefined || !options.inputs.every((input) => input.kind === 'dicom-folder')) return undefined
  return sampleFolderFiles(options.inputs.map((input) => (input as {path: string}).path), {files: ZIP_BY_DEFAULT_MIN_INSTANCES})
}

/**
 * Whether each input's instances are met against the other inputs' (FirstCopies): several inputs
 * of which one is not archives, or archives whose exports' order cannot be read beforehand.
 */
function metBesideOthers(inputs: ImportInput[], archives: number, unordered: boolean): boolean {
  return inputs.filter((input) => input.kind === 'dicom-folder' || input.kind === 'storage-folder' || input.kind === 'postgres').length + (archives > 0 ? 1 : 0) > 1 || unordered
}

interface UnitOptions {
  /** The archive inputs, ready to read (decrypting where needed). */
  archives: ArchiveInput[]
  /** Several archives whose exports cannot be put in order before they are read (encrypted, streams). */
  unordered: boolean
  /** Instances the volume files say more than one of them holds (see archiveTotals). */
  repeated?: Set<string>
  signal?: AbortSignal
  spoolDir?: string
  recovery: RecoveryReport[]
  /** Which recovery each instance came from, to count what became of it. */
  recoveredFrom: WeakMap<InstanceInTransit, RecoveryReport>
  includeUnindexed: boolean
  /** What the inputs hold open for the units they gave (a recovery's index): closed once the job is over. */
  closeAfterJob: Array<() => Promise<void>>
}

async function* unitsFrom(inputs: ImportInput[], events: SourceEvents, report: ArchiveReadReport, options: UnitOptions): AsyncGenerator<InstanceInTransit> {
  const {signal} = options
  const {archives} = options
  // Two inputs given together (folders, servers, archives) may hold two different copies of one
  // instance: only the first is sent. Archives alone need no such memory (some 200 bytes an
  // instance): an export holds each instance once, and a later export's other copy is the
  // source's newer one (see inExportOrder). Archives that cannot be put in that order (encrypted
  // volumes, streams) are met like other inputs: the first copy is sent, another is named.
  const copies = new FirstCopies()
  const others = metBesideOthers(inputs, archives.length, options.unordered)
  // All archives go through one reader, so that volumes of a group are counted together.
  // Of the instances several exports hold, the copy met last: the next one is sent over it.
  const lastCopies = new Map<string, string>()
  if (archives.length > 0) {
    for await (const unit of readArchives(archives, events, report, {signal, spoolDir: options.spoolDir})) {
      if (options.repeated?.has(unit.instanceId)) {
        unit.earlierCopy = lastCopies.get(unit.instanceId)
        lastCopies.set(unit.instanceId, unit.md5)
      }
      if (!others) yield unit
      // In export order, a later export's copy is the source's newer one: sent, and the one the
      // other inputs are met against.
      else if (!options.unordered) {
        copies.supersede(unit.instanceId, unit.md5, unit.label)
        yield unit
      } else if (takeFirstCopy(copies, unit, events)) yield unit
    }
  }
  for (const input of inputs) {
    if (input.kind === 'dicom-folder') yield* readDicomFolder(input.path, events, {signal, copies})
    else if (input.kind === 'storage-folder' || input.kind === 'postgres') yield* recover(input, events, others ? copies : undefined, options)
  }
}

/**
 * The volumes of several exports, oldest export first: an instance stored anew on the source
 * between two exports (same ID, other bytes) is then sent last in its newer form, as importing the
 * exports one after the other would (an overwriting target keeps it; another one fails it, naming
 * OverwriteInstances), whatever the order they were named in. Volumes of one export keep their order.
 */
function inExportOrder(archives: ArchiveInput[], exports: Map<string, ExportOfVolume>): ArchiveInput[] {
  const startOf = new Map<string, string>()
  for (const {group, exportedAt} of exports.values()) {
    const start = startOf.get(group)
    if (start === undefined || exportedAt < start) startOf.set(group, exportedAt)
  }

  const exportOf = (archive: ArchiveInput) => exports.get(archive.path ?? '')
  const start = (archive: ArchiveInput) => startOf.get(exportOf(archive)?.group ?? '') ?? ''
  return archives.map((archive, position) => ({archive, position})).sort((a, b) => compareText(start(a.archive), start(b.archive)) || a.position - b.position).map(({archive}) => archive)
}

// ISO times of one format, compared as they are written (no locale).
function compareText(a: string, b: string): number {
  return a < b ? -1 : (a > b ? 1 : 0)
}

/** `copies`: those the other inputs met, when there are others. */
async function* recover(input: RecoveryInput, events: SourceEvents, copies: FirstCopies | undefined, options: UnitOptions): AsyncGenerator<InstanceInTransit> {
  const {report, units, close} = recoverStoppedServer(input, events, {includeUnindexed: options.includeUnindexed, signal: options.signal, copies})
  options.closeAfterJob.push(close)
  options.recovery.push(report)
  // From an index each instance comes once: met against the other inputs only when there are others
  // (remembering a million instances costs some 200 MB). A walk without an index met them already.
  for await (const unit of units) {
    if (copies && !takeFirstCopy(copies, unit, events)) {
      // An instance the index lists, not recovered from here: another input's copy of it was taken.
      report.contradictions++
      report.failed++
      continue
    }
    options.recoveredFrom.set(unit, report)
    yield unit
  }
}

/** What an import amounts to, read by the CLI for its exit code and by people in the summary. */
export function importOutcome(summary: ImportSummary): 'ok' | 'bad-input' | 'partial-failure' | 'interrupted' {
  if (summary.interrupted) return 'interrupted'
  // Bytes refused as hostile when they were about to be sent are bad input too, not a failure of the target.
  if (summary.problemCount > 0 || summary.refusedAsHostile > 0) return 'bad-input'
  if (summary.failed > 0 || summary.studies.incomplete.length > 0) return 'partial-failure'
  return 'ok'
}
