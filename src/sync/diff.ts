import {type Endpoint, type InstanceFilters, type ResourceLevel, resourceKey, type ResourceRecord, type SideData} from '../model.js'
import {endpointOf} from '../orthanc/endpoint-of.js'
import type {ProgressListener} from '../transfer/progress.js'
import {SideDataReader} from '../sources/side-data.js'
import type {OrthancClient} from '../orthanc/client.js'
import {besideFirst} from '../util/concurrency.js'
import {compareServers, type InstanceState} from './compare.js'
import {FilesKeptCheck} from '../sinks/files-kept.js'

export interface StudyDifference {
  studyId: string
  studyInstanceUid: string
  onlySource: number
  onlyTarget: number
  different: number
  identical: number
  notCompared: number
}

export interface DiffSummary {
  source: Endpoint
  target: Endpoint
  onlySource: number
  onlyTarget: number
  different: number
  identical: number
  /** On both, and not compared: a server records no MD5 for it (StoreMD5ForAttachments off). */
  notCompared: number
  /** Instance IDs per category, the first LISTED of each. */
  instances: {onlySource: string[]; onlyTarget: string[]; different: string[]; notCompared: string[]}
  /** Per study on either server, when asked for. */
  studies?: StudyDifference[]
  /** With --side-data: differences in user metadata, attachments and labels at every level, for what is on both sides. */
  sideData?: {differences: number; items: SideDataDifference[]; notCompared: number}
}

/** One difference in what Orthanc keeps beside a resource that both servers hold. */
export interface SideDataDifference {
  /** The resource: "study <id>", "instance <id>", "patient of study <id>"... */
  id: string
  level: ResourceLevel
  kind: 'user-metadata' | 'attachments' | 'labels' | 'protection'
  reason: string
  /** Listed, but not counted among the differences: a server records no MD5 for it. */
  notCompared?: true
}

const LISTED = 1000

/**
 * Compares two servers the way `rclone check` compares two remotes: by instance ID, then by the
 * MD5 each server recorded for instances on both sides. Nothing is downloaded.
 */
export interface DiffOptions {
  filters: InstanceFilters
  /** Also count the differences per study. */
  perStudy: boolean
  /** Also compare user metadata, attachments and labels at every level. */
  sideData?: boolean
  signal?: AbortSignal
  onProgress?: ProgressListener
}

export async function diffServers(source: OrthancClient, target: OrthancClient, options: DiffOptions): Promise<DiffSummary> {
  // The comparison starts beside the servers' GET /system, not after it: across a link, a round
  // trip sooner. Their answers still decide first (see besideFirst).
  const {first: [sourceEndpoint, targetEndpoint], work: comparing} = await besideFirst(
    () => Promise.all([endpointOf(source, options.signal), endpointOf(target, options.signal)]),
    (signal) => compareBoth(source, target, {...options, signal}),
    options.signal,
  )
  return {source: sourceEndpoint, target: targetEndpoint, ...await comparing}
}

async function compareBoth(source: OrthancClient, target: OrthancClient, options: DiffOptions): Promise<Omit<DiffSummary, 'source' | 'target'>> {
  const summary: Omit<DiffSummary, 'source' | 'target'> = {onlySource: 0, onlyTarget: 0, different: 0, identical: 0, notCompared: 0, instances: {onlySource: [], onlyTarget: [], different: [], notCompared: []}}
  // Unfiltered, the source's own count is the total to compare: asked beside the comparison, shown once known.
  let total: number | undefined
  const counting = Object.keys(options.filters).length === 0 ? source.statistics(options.signal).then((statistics) => {
    total = statistics.CountInstances
  }) : undefined
  // Its failure is seen after the comparison.
  counting?.catch(() => {})
  let compared = 0
  let lastReport = 0
  const report = (force = false) => {
    if (!options.onProgress || (!force && Date.now() - lastReport < 100)) return
    lastReport = Date.now()
    options.onProgress({phase: 'comparing', done: compared, total})
  }
  const studies = new Map<string, StudyDifference>()
  const list = (state: InstanceState, id: string) => {
    const key = state === 'only-source' ? 'onlySource' : state === 'only-target' ? 'onlyTarget' : state === 'unrecorded' ? 'notCompared' : 'different'
    if (summary.instances[key].length < LISTED) summary.instances[key].push(id)
  }

  const sideData = options.sideData ? new SideDataComparison(source, target, options.signal) : undefined
  // The MD5s the target records are no proof it keeps the files (StoreDicom false): one is read back.
  const filesKept = new FilesKeptCheck(target)
  for await (const item of compareServers(source, target, {filters: options.filters, checksum: true, targetSelection: true, signal: options.signal})) {
    if (sideData && (item.state === 'identical' || item.state === 'different' || item.state === 'unrecorded')) await sideData.compare(item.source!)
    if (item.state !== 'only-target') compared++
    report()
    const study = studies.get(item.studyId!) ?? {studyId: item.studyId!, studyInstanceUid: item.studyInstanceUid!, onlySource: 0, onlyTarget: 0, different: 0, identical: 0, notCompared: 0}
    if (item.state === 'only-target') {
      summary.onlyTarget++
      study.onlyTarget++
      list(item.state, item.id)
    } else if (item.state === 'only-source') {
      summary.onlySource++
      study.onlySource++
      list(item.state, item.id)
    } else if (item.state === 'different') {
      summary.different++
      study.different++
      list(item.state, item.id)
    } else if (item.state === 'unrecorded') {
      summary.notCompared++
      study.notCompared++
      list(item.state, item.id)
    } else {
      const info = filesKept.wanted ? await target.storedFileInfo(item.id, options.signal) : undefined
      if (info) await filesKept.check(item.id, info.md5, options.signal)
      summary.identical++
      study.identical++
    }

    if (options.perStudy) studies.set(study.studyId, study)
  }

  await counting
  report(true)
  if (options.perStudy) summary.studies = [...studies.values()]
  if (sideData) summary.sideData = {differences: sideData.count, items: sideData.items, notCompared: sideData.notCompared}
  return summary
}

export function serversDiffer(summary: DiffSummary): boolean {
  return summary.onlySource + summary.onlyTarget + summary.different + (summary.sideData?.differences ?? 0) > 0
}

/** What could not be compared by MD5, instances and side data: never "the same". */
export function notAllCompared(summary: DiffSummary): number {
  return summary.notCompared + (summary.sideData?.notCompared ?? 0)
}

/** Compares side data of instances and of their patients, studies and series on both servers; each resource once. */
class SideDataComparison {
  count = 0
  notCompared = 0
  readonly items: SideDataDifference[] = []
  private readonly sourceReader: SideDataReader
  private readonly targetReader: SideDataReader
  private readonly resourcesSeen = new Set<string>()
  /** Each study's patient, by study: a patient's record is named by a study of its, and the patient of several studies is one resource. */
  private readonly patients = new Map<string, Promise<string | undefined>>()

  constructor(private readonly source: OrthancClient, private readonly target: OrthancClient, private readonly signal?: AbortSignal) {
    this.sourceReader = new SideDataReader(source)
    this.targetReader = new SideDataReader(target)
  }

  /** What a resource is compared as: a patient by its own ID (asked once per study), the others by their key. */
  private async identity(record: ResourceRecord): Promise<string> {
    if (record.level !== 'patient') return resourceKey(record)
    let patient = this.patients.get(record.study)
    if (!patient) {
      patient = (async () => (await this.source.patientOfStudy(record.study, this.signal)) ?? this.target.patientOfStudy(record.study, this.signal))()
      this.patients.set(record.study, patient)
    }

    return `patient:${(await patient) ?? record.study}`
  }

  async compare(instance: {id: string; studyId: string; seriesId: string}): Promise<void> {
    const [sourceSide, targetSide, sourceResources, targetResources] = await Promise.all([
      this.sourceReader.read(instance.id, this.signal),
      this.targetReader.read(instance.id, this.signal),
      this.sourceReader.resourcesOf(instance, this.signal),
      this.targetReader.resourcesOf(instance, this.signal),
    ])
    this.report('instance', `instance ${instance.id}`, sourceSide, targetSide)
    const empty: SideData = {userMetadata: {}, systemMetadata: {}, attachments: [], labels: []}
    const onTarget = new Map(targetResources.map((resource) => [resourceKey(resource), resource]))
    const keys = new Set([...sourceResources.map(resourceKey), ...onTarget.keys()])
    const onSource = new Map(sourceResources.map((resource) => [resourceKey(resource), resource]))
    for (const key of keys) {
      const either = (onSource.get(key) ?? onTarget.get(key))!
      const identity = await this.identity(either)
      if (this.resourcesSeen.has(identity)) continue
      this.resourcesSeen.add(identity)
      const name = either.level === 'patient' ? `patient of study ${either.study}` : either.level === 'study' ? `study ${either.study}` : `series ${either.series}`
      this.report(either.level, name, onSource.get(key) ?? empty, onTarget.get(key) ?? empty)
    }
  }

  private report(level: ResourceLevel, id: string, source: SideData, target: SideData): void {
    const add = (kind: SideDataDifference['kind'], reason: string) => {
      this.count++
      if (this.items.length < LISTED) this.items.push({id, level, kind, reason})
    }

    for (const name of new Set([...Object.keys(source.userMetadata), ...Object.keys(target.userMetadata)])) {
      const a = source.userMetadata[name]
      const b = target.userMetadata[name]
      if (a === b) continue
      add('user-metadata', a === undefined ? `metadata "${name}" only on the target` : b === undefined ? `metadata "${name}" only on the source` : `metadata "${name}" differs`)
    }

    const sourceAttachments = new Map(source.attachments.map((attachment) => [attachment.contentType, attachment]))
    const targetAttachments = new Map(target.attachments.map((attachment) => [attachment.contentType, attachment]))
    for (const contentType of new Set([...sourceAttachments.keys(), ...targetAttachments.keys()])) {
      const a = sourceAttachments.get(contentType)
      const b = targetAttachments.get(contentType)
      const name = (a ?? b)!.name
      // '' is no MD5 (StoreMD5ForAttachments off): two of them are not the same bytes, nor known to differ.
      if (a && b && (a.md5 === '' || b.md5 === '')) {
        this.notCompared++
        if (this.items.length < LISTED) this.items.push({id, level, kind: 'attachments', reason: `attachment "${name}" not compared: the ${a.md5 === '' ? 'source' : 'target'} records no MD5 for it (StoreMD5ForAttachments off)`, notCompared: true})
        continue
      }
      if (a?.md5 === b?.md5) continue
      add('attachments', !a ? `attachment "${name}" only on the target` : !b ? `attachment "${name}" only on the source` : `attachment "${name}" has another MD5`)
    }

    const targetLabels = new Set(target.labels)
    const sourceLabels = new Set(source.labels)
    for (const label of source.labels) if (!targetLabels.has(label)) add('labels', `label "${label}" only on the source`)
    for (const label of target.labels) if (!sourceLabels.has(label)) add('labels', `label "${label}" only on the target`)
    // A patient that lost its protection may be the next one a recycling server deletes.
    if (source.protected !== target.protected) add('protection', `protected from recycling only on the ${source.protected ? 'source' : 'target'}`)
  }
}
