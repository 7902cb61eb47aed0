import type {InstanceFilters} from '../model.js'
import type {OrthancClient} from '../orthanc/client.js'
import {type NotCarried, OrthancSink} from '../sinks/orthanc-sink.js'
import {readInstanceUnit} from '../sources/orthanc-instance.js'
import {prefetchingSideData, SideDataReader} from '../sources/side-data.js'
import {jobConcurrency} from '../transfer/adaptive-concurrency.js'
import {inFlightPerUpload, runTransfer} from '../transfer/engine.js'
import type {ProgressListener} from '../transfer/progress.js'
import type {TransferStats} from '../transfer/stats.js'
import {readAhead} from '../util/concurrency.js'
import {type ComparedInstance, compareServers} from './compare.js'

/** Instances compared ahead of the transfers: a few hundred bytes each. */
const READ_AHEAD = 1000

export interface SyncOptions {
  source: OrthancClient
  target: OrthancClient
  filters: InstanceFilters
  /** Also compare MD5s of instances on both sides, and send again those that differ. */
  checksum: boolean
  dryRun: boolean
  /** Uploads at once; undefined: adaptive, from 8 up to what the link and the target reward. */
  concurrency?: number
  /** Small instances waiting for an upload go together in one ZIP (see UploadBatcher). */
  zipUploads?: boolean
  /** Only these source instances (a mirror's new arrivals), the filters still applying; see CompareOptions. */
  onlyInstances?: string[]
  signal?: AbortSignal
  onProgress?: ProgressListener
}

export interface SyncPlan {
  /** Instances the target lacks. */
  missing: number
  /** Instances on both sides with different MD5s (only with --checksum). */
  different: number
  /** Instances already on the target. */
  present: number
  bytesToTransfer: number
  /** Only on the target (an unfiltered comparison): what --delete would remove. */
  onlyOnTarget: number
  studies: {complete: number; partial: number; missing: number}
}

export interface SyncSummary extends TransferStats {
  dryRun: boolean
  source: string
  target: string
  plan: SyncPlan
  /** Side data that could not be carried to the target, by level, kind and name, with counts. */
  notCarried: NotCarried[]
  /** Uploads at once: fixed by --concurrency, or where the adaptive concurrency settled. */
  concurrency: number
  concurrencyAdaptive: boolean
}

/**
 * Copies what the target lacks straight from the source, with no temporary files: instances
 * are downloaded, checked against the source's MD5, uploaded, their Orthanc-side data restored
 * and the target's MD5 confirmed, `concurrency` at a time.
 */
export async function syncServers(options: SyncOptions): Promise<SyncSummary> {
  const started = Date.now()
  const plan: SyncPlan = {missing: 0, different: 0, present: 0, bytesToTransfer: 0, onlyOnTarget: 0, studies: {complete: 0, partial: 0, missing: 0}}
  const studies = new Map<string, {present: number; total: number}>()
  const concurrency = jobConcurrency(options.concurrency, {
    itemsPerUnit: inFlightPerUpload(options.zipUploads),
    congestion: () => options.source.http.stats.congestion + options.target.http.stats.congestion,
  })
  const sink = new OrthancSink(options.target, {dryRun: options.dryRun, uploads: concurrency.initial, zip: options.zipUploads})
  concurrency.onChange((uploads) => sink.setUploads(uploads))

  const count = (item: ComparedInstance) => {
    if (item.state === 'only-target') {
      plan.onlyOnTarget++
      return
    }

    const study = studies.get(item.studyId!) ?? {present: 0, total: 0}
    study.total++
    if (item.state === 'identical' || item.state === 'present') {
      plan.present++
      study.present++
    } else {
      if (item.state === 'different') plan.different++
      else plan.missing++
      plan.bytesToTransfer += item.size ?? 0
    }

    studies.set(item.studyId!, study)
  }

  // Instances on both sides go through too (not in a dry run): their side data is compared.
  async function* toTransfer(): AsyncGenerator<ComparedInstance> {
    for await (const item of compareServers(options.source, options.target, options)) {
      count(item)
      if (item.state === 'only-source' || item.state === 'different' || (!options.dryRun && (item.state === 'present' || item.state === 'identical'))) yield item
    }
  }

  const sideData = new SideDataReader(options.source)
  // Read ahead, so that the next study's listing and side data arrive while this one's instances move.
  const items = readAhead(options.dryRun ? toTransfer() : prefetchingSideData(toTransfer(), sideData, options.signal), READ_AHEAD)

  const stats = await runTransfer({
    items,
    concurrency: concurrency.inFlight,
    control: concurrency.control,
    signal: options.signal,
    phase: options.dryRun ? 'sync (dry run)' : 'sync',
    onProgress: options.onProgress,
    describe: (item) => ({id: item.id}),
    // Instances already on the target move no DICOM bytes: only their side data is compared.
    sizeOf: (item) => (item.state === 'present' || item.state === 'identical' ? 0 : item.size ?? 0),
    async work(item, signal) {
      if (options.dryRun) return {kind: 'transferred', bytes: item.size ?? 0}
      if (item.state === 'present' || item.state === 'identical') {
        // Already there: what Orthanc keeps beside it is compared, and what is missing restored.
        const [side, resources] = await Promise.all([sideData.read(item.id, signal), sideData.resourcesInTransit(item.source!, signal)])
        await sink.reconcile({instanceId: item.id, sideData: side, resources, attachments: (contentType) => sideData.instanceAttachmentBytes(item.id, side.attachments, contentType, signal)}, signal)
        return {kind: 'skipped'}
      }

      const unit = await readInstanceUnit(options.source, item.source!, sideData, signal)
      // A differing copy is replaced: without OverwriteInstances the target would keep its own.
      if (item.state === 'different') await options.target.deleteInstance(item.id, signal)
      return sink.store(unit, signal, {knownAbsent: true})
    },
  })

  for (const {present, total} of studies.values()) {
    if (present === total) plan.studies.complete++
    else if (present === 0) plan.studies.missing++
    else plan.studies.partial++
  }

  return {
    ...stats,
    // Dry runs count what they would transfer in `plan`, and transfer nothing.
    transferred: options.dryRun ? 0 : stats.transferred,
    bytes: options.dryRun ? 0 : stats.bytes,
    skipped: plan.present,
    retries: stats.retries + options.source.http.stats.retries + options.target.http.stats.retries,
    durationMs: Date.now() - started,
    dryRun: options.dryRun,
    source: options.source.display,
    target: options.target.display,
    plan,
    notCarried: sink.notCarried.list(),
    ...concurrency.settled(),
  }
}
