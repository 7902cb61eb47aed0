import {checkSafeToSend} from '../dicom/safe-to-send.js'
import type {Endpoint, InstanceFilters} from '../model.js'
import type {OrthancClient} from '../orthanc/client.js'
import {endpointOf} from '../orthanc/endpoint-of.js'
import {type NotCarried, OrthancSink} from '../sinks/orthanc-sink.js'
import {DISTANCE_PROBES, type ZipUploads, zipUploadsFor} from '../sinks/upload-batcher.js'
import {readInstanceUnit} from '../sources/orthanc-instance.js'
import {prefetchingSideData, SideDataReader} from '../sources/side-data.js'
import {type JobConcurrency, jobConcurrency} from '../transfer/adaptive-concurrency.js'
import {inFlightPerUpload, runTransfer} from '../transfer/engine.js'
import type {JobEventListener, ProgressListener} from '../transfer/progress.js'
import {emptyStats, type PlannedCounts, type TransferStats} from '../transfer/stats.js'
import type {ComparedInstance} from './compare.js'
import {InstanceReplacer} from './replace.js'
import {defaultJournalFolder, ReplacementJournal} from './replacement-journal.js'
import {ComparisonSpool, emptySyncPlan, planSync, type SyncPlan, undeclaredUserMetadata} from './plan.js'
import {besideFirst} from '../util/concurrency.js'

export type {SyncPlan} from './plan.js'

export interface SyncOptions {
  source: OrthancClient
  target: OrthancClient
  filters: InstanceFilters
  /** Also compare MD5s of instances on both sides, and send again those that differ. */
  checksum: boolean
  /** Without `checksum`, compare the MD5s of these instances only, and send again those that differ (a mirror's arrivals). */
  checksumOf?: ReadonlySet<string>
  dryRun: boolean
  /** Uploads at once; undefined: adaptive, from 8 up to what the link and the target reward. */
  concurrency?: number
  /** Small instances waiting for an upload go together in one ZIP (see UploadBatcher); undefined: when the plan is many small instances (zipUploadsFor). */
  zipUploads?: boolean
  /** Where replacements are journaled (see ReplacementJournal); default: a folder per target in the user's state folder. */
  replacementJournal?: string
  /** Only these source instances (a mirror's new arrivals), the filters still applying; see CompareOptions. */
  onlyInstances?: string[]
  signal?: AbortSignal
  onProgress?: ProgressListener
  /** The plan once the comparison is done (before anything moves), each failure and each retry. */
  onEvent?: JobEventListener
  /**
   * Asked once the plan is made: a reason to move nothing at all (sync --delete, when the deletion
   * would be refused: copying first would make the same run, repeated, find the deletion small).
   */
  holdBack?: (plan: SyncPlan) => string | undefined
}

export interface SyncSummary extends TransferStats {
  dryRun: boolean
  source: Endpoint
  target: Endpoint
  plan: SyncPlan
  /** What the plan says to send: what a dry run would have transferred. */
  planned: PlannedCounts
  /** Side data that could not be carried to the target, by level, kind and name, with counts. */
  notCarried: NotCarried[]
  /** Uploads at once: fixed by --concurrency, or where the adaptive concurrency settled. */
  concurrency: number
  concurrencyAdaptive: boolean
  /** Uploads that carried several small instances in one ZIP, and the instances they carried. */
  zipUploads: ZipUploads
  /** Why nothing was moved although the plan had something to send (see SyncOptions.holdBack). */
  heldBack?: string
  /** Replacements an earlier run was killed in whose kept data this run wrote back (see ReplacementJournal); absent when none. */
  leftoversWrittenBack?: number
}

/**
 * Copies what the target lacks straight from the source: first the comparison, which makes the
 * plan (shown before anything moves), then the transfer, in which instances are downloaded,
 * checked against the source's MD5, uploaded, their Orthanc-side data restored and the target's
 * MD5 confirmed, as many at a time as
 * `concurrency` fixes or the adaptive control settles on. No instance is stored on the way: the list the plan
 * names (IDs, UIDs and sizes) waits in a ComparisonSpool, in memory or a private temporary file.
 */
export async function syncServers(options: SyncOptions): Promise<SyncSummary> {
  const started = Date.now()
  // The clients' counts run on across the passes of a mirror, which uses the same clients: this job's are what it adds.
  const requestRetries = () => options.source.http.stats.retries + options.target.http.stats.retries
  const retriesBefore = requestRetries()
  const plan = emptySyncPlan(options.checksum)
  const spool = options.dryRun ? undefined : new ComparisonSpool()
  // The comparison starts beside the servers' GET /system, not after it: across a link, a round
  // trip less before the first instance moves. Their answers still decide first (see besideFirst).
  let servers: {source: Endpoint; target: Endpoint; undeclared?: string[]}
  let comparing: Promise<void>
  try {
    ({first: servers, work: comparing} = await besideFirst(async () => {
      const [source, target] = await Promise.all([endpointOf(options.source, options.signal), endpointOf(options.target, options.signal)])
      // GET /system's answers are kept by each client: this asks nothing more.
      return {source, target, undeclared: await undeclaredUserMetadata(options.source, options.target, options.signal)}
    }, (signal) => planSync(options.source, options.target, {...options, signal}, plan, spool), options.signal))
  } catch (error) {
    await spool?.dispose()
    throw error
  }

  const {source, target, undeclared} = servers
  if (undeclared) plan.undeclaredUserMetadata = undeclared
  // The uploads are set up once the plan says what is to be sent, which decides whether small instances go in ZIPs.
  let uploads: {concurrency: JobConcurrency; sink: OrthancSink} | undefined
  // Skipped, after a transfer: what it found on the target, the plan's present instances whose
  // side data it compared and those an upload found there (AlreadyStored: stored meanwhile by
  // another writer), never one that failed. A dry run: what the plan found there. Stopped before
  // the transfer: none, as nothing found there had its side data compared yet (the plan counts them).
  const summary = (stats: TransferStats, afterTransfer = false): SyncSummary => ({
    ...stats,
    skipped: afterTransfer ? stats.skipped : options.dryRun ? plan.present : 0,
    retries: stats.retries + requestRetries() - retriesBefore,
    durationMs: Date.now() - started,
    dryRun: options.dryRun === true,
    source,
    target,
    plan,
    planned: {instances: plan.missing + plan.different, bytes: plan.bytesToTransfer},
    notCarried: uploads?.sink.notCarried.list() ?? [],
    zipUploads: {...(uploads?.sink.zipped ?? {requests: 0, instances: 0, refusedAsTooLarge: 0})},
    // Before any transfer (a dry run, or interrupted while comparing): the concurrency it would have started with.
    ...(uploads?.concurrency ?? jobConcurrency(options.concurrency, {itemsPerUnit: 1})).settled(),
  })

  try {
    try {
      await comparing
    } catch (error) {
      // Interrupted while comparing: nothing moved, and the plan says how far the comparison got.
      if (interruptedBy(error, options.signal)) return summary({...emptyStats(), interrupted: true})
      throw error
    }

    options.onEvent?.({
      type: 'plan', instances: plan.missing + plan.different, bytes: plan.bytesToTransfer, present: plan.present, studies: plan.studies, onlyOnTarget: plan.onlyOnTarget,
      ...(undeclared?.length ? {undeclaredUserMetadata: undeclared} : {}),
    })
    // A dry run stops at the plan: it counts what would move, and moves nothing.
    if (!spool) return summary(emptyStats())
    const heldBack = options.holdBack?.(plan)
    if (heldBack !== undefined) return {...summary(emptyStats()), skipped: 0, heldBack}

    let zip: boolean
    try {
      zip = await zipUploadsFor(options.zipUploads, {instances: plan.missing + plan.different, bytes: plan.bytesToTransfer}, () => options.target.quickestAnswerMs(DISTANCE_PROBES, options.signal))
    } catch (error) {
      // Interrupted while measuring the target's distance: nothing moved, and the plan stands.
      if (interruptedBy(error, options.signal)) return summary({...emptyStats(), interrupted: true})
      throw error
    }

    const concurrency = jobConcurrency(options.concurrency, {
      itemsPerUnit: inFlightPerUpload(zip),
      congestion: () => options.source.http.stats.congestion + options.target.http.stats.congestion,
    })
    const sink = new OrthancSink(options.target, {dryRun: false, uploads: concurrency.initial, zip})
    concurrency.onChange((slots) => sink.setUploads(slots))
    uploads = {concurrency, sink}
    const sideData = new SideDataReader(options.source)
    const replacer = new InstanceReplacer(options.target, sink, {journal: new ReplacementJournal(options.replacementJournal ?? defaultJournalFolder(target.url), target.url)})
    // What runs killed mid-replacement left is written back once this run has stored what it sends.
    await replacer.takeOverLeftovers()
    const transfer = runTransfer({
      items: prefetchingSideData(spool.read(), sideData, options.signal),
      concurrency: concurrency.inFlight,
      control: concurrency.control,
      signal: options.signal,
      phase: 'sync',
      total: spool.size,
      totalBytes: plan.bytesToTransfer,
      onProgress: options.onProgress,
      onFailure: (problem) => options.onEvent?.({type: 'failure', problem}),
      onRetry: (item, attempt, error) => options.onEvent?.({type: 'retry', id: item.id, attempt, reason: (error as Error).message}),
      describe: (item) => ({id: item.id}),
      // Instances already on the target move no DICOM bytes: only their side data is compared.
      sizeOf: (item) => (onTarget(item) ? 0 : item.size ?? 0),
      async work(item, signal) {
        if (onTarget(item)) {
          // Already there: what Orthanc keeps beside it is compared, and what is missing restored.
          const [side, resources] = await Promise.all([sideData.read(item.id, signal), sideData.resourcesInTransit(item.source!, signal)])
          await sink.reconcile({instanceId: item.id, sideData: side, resources, attachments: (contentType) => sideData.instanceAttachmentBytes(item.id, side.attachments, contentType, signal)}, signal)
          await sink.checkFound(item.id, signal)
          return {kind: 'skipped'}
        }

        const unit = await readInstanceUnit(options.source, item.source!, sideData, signal)
        if (item.state === 'different') {
          // Checked before the target's copy goes: a copy the store would refuse must not cost the one there.
          checkSafeToSend(unit.dicom)
          return replacer.replace(item.id, () => sink.store(unit, signal, {knownAbsent: true}), signal)
        }

        return sink.store(unit, signal, {knownAbsent: true})
      },
    })
    let stats: TransferStats
    try {
      stats = await transfer
    } catch (error) {
      // A job stopped by a fatal error says what its replacements lost too, beside its counts.
      await replacer.finish()
      throw Object.assign(error as Error, {notCarried: sink.notCarried.list()})
    }

    await replacer.finish()
    const leftovers = replacer.leftoversWrittenBack
    return {...summary(stats, /* afterTransfer */ true), ...(leftovers > 0 ? {leftoversWrittenBack: leftovers} : {})}
  } finally {
    await spool?.dispose()
  }
}

/** Already on the target, as far as the comparison can tell: only its side data is compared. */
const onTarget = (item: ComparedInstance) => item.state === 'present' || item.state === 'identical' || item.state === 'unrecorded'

/** Whether `error` is the job's own interruption (Ctrl-C, SIGTERM) and not a failure. */
function interruptedBy(error: unknown, signal?: AbortSignal): boolean {
  return signal?.aborted === true && (error as Error | undefined)?.name === 'AbortError'
}
