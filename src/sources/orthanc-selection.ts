import type {InstanceFilters, InstanceIdentity, ResourceLevel} from '../model.js'
import type {OrthancClient} from '../orthanc/client.js'
import {OrthancHttpError} from '../orthanc/errors.js'
import type {OrthancResource} from '../orthanc/types.js'
import {isOrthancId} from '../orthanc/answer-shapes.js'
import {UserFacingError} from '../errors.js'
import {mapOrdered} from '../util/concurrency.js'
import {isCount} from '../util/count.js'

/** One study chosen for a job, with the instances the filters kept, in a stable order. */
export interface SelectedStudy {
  studyId: string
  studyInstanceUid: string
  /** All instances of the study on the source, whatever the filters kept. */
  instancesOnSource: number
  instances: SelectedInstance[]
  /** Patient-identifying fields, kept only for the optional human-readable index. */
  patient: {patientId: string; patientName: string; patientBirthDate: string; accessionNumber: string; studyDate: string; studyDescription: string}
}

export interface SelectedInstance extends InstanceIdentity {
  size: number
}

/** Studies whose instances are listed at once while selecting: twice the comparison's, as each costs the source three requests. */
const STUDIES_READ_AT_ONCE = 16

/**
 * Studies and instances matching the filters, study by study in Orthanc-ID order, so that two
 * runs over the same data plan the same volumes. Filters of different kinds narrow together;
 * several values of one kind widen. Memory holds the matching study IDs, never all instances.
 */
export async function* selectInstances<Beside = never>(
  client: OrthancClient, filters: InstanceFilters, signal?: AbortSignal, options: SelectionOptions<Beside> = {},
): AsyncGenerator<SelectedStudy & {beside?: Promise<Beside>}> {
  // A server without labels would match none, and "the filters matched nothing" would send the user looking for a typo.
  if (filters.labels?.length && !(await client.features(signal)).labels) {
    if (options.noLabelsSelectsNothing) return
    const {Version} = await client.system(signal)
    throw new UserFacingError(`--label selects by label, and ${client.display} (Orthanc ${Version}) has no labels: they came with Orthanc 1.12`, 'Select with the other filters (patient, study, date, modality), or upgrade that server.', 'usage', 'no-labels')
  }

  // A list given empty selects nothing, never everything: an ID list that came out empty must not become the whole server.
  const explicit = filters.orthancIds ? await resolveOrthancIds(client, filters.orthancIds, options.unknownIdsSelectNothing === true, signal) : undefined
  // Only these instances, and only those of them the filters keep: a mirror's new arrivals.
  const only = options.onlyInstances ? await resolveOrthancIds(client, options.onlyInstances, true, signal) : undefined
  const listing = only || explicit ? undefined : await matchingStudies(client, filters, signal)
  const studyIds = only ? [...only.keys()].filter((id) => !explicit || explicit.has(id)) : explicit ? [...explicit.keys()] : listing!.ids
  studyIds.sort()
  // Several studies are read at once, and come out in order: across a network each study's
  // reads cost round trips that would otherwise add up, one study after another.
  const selections = mapOrdered(studyIds, STUDIES_READ_AT_ONCE, async (studyId) => {
    const study = listing?.studies?.get(studyId) ?? await client.study(studyId, signal)
    listing?.studies?.delete(studyId)
    if (!study || !studyMatches(study, filters)) return undefined
    const beside = options.beside?.(studyId)
    // Taken with the study below; a study left out (no instance kept) leaves it unread.
    beside?.catch(() => {})
    const selected = await selectInStudy(client, study, filters, narrower(explicit?.get(studyId), only?.get(studyId)), signal)
    return selected && beside ? {...selected, beside} : selected
  })
  for await (const selected of selections) if (selected && selected.instances.length > 0) yield selected
}

export interface SelectionOptions<Beside = never> {
  /**
   * Consider only these instances (Orthanc IDs), which may have been deleted since: the filters
   * still apply to them. Used to follow new arrivals without listing the whole server.
   */
  onlyInstances?: string[]
  /**
   * Started for each matching study as its instances are listed, and handed on with it: what the
   * caller would otherwise ask only once the study came out (the comparison's look-up of the
   * study on the target), without a round trip of its own.
   */
  beside?: (studyId: string) => Promise<Beside>
  /**
   * A server without labels holds nothing a label filter selects: with this, it selects nothing
   * there (the target of a comparison), instead of refusing the filter (the source's mistake).
   */
  noLabelsSelectsNothing?: boolean
  /**
   * An Orthanc ID the server does not know selects nothing there (the target of a comparison,
   * which may lack what the source's ID names), instead of being refused as a mistyped ID.
   */
  unknownIdsSelectNothing?: boolean
}

/** Both limits on a study's instances at once ('all' or undefined: no limit). */
function narrower(a: Set<string> | 'all' | undefined, b: Set<string> | 'all' | undefined): Set<string> | 'all' | undefined {
  if (a === undefined || a === 'all') return b
  if (b === undefined || b === 'all') return a
  return new Set([...a].filter((id) => b.has(id)))
}

/**
 * Studies listed whose answers are kept for the selection, which otherwise reads each study
 * again: a round trip before a study's instances are listed, and one request per study (for
 * archives of one instance per study, one per instance). A server with more matching studies
 * keeps IDs only, so that memory stays bounded: about 2 kB per study kept.
 */
const LISTED_STUDIES_KEPT = 2000

/** The IDs of the studies that match, and their listed answers while there are few enough. */
async function matchingStudies(client: OrthancClient, filters: InstanceFilters, signal?: AbortSignal): Promise<{ids: string[]; studies?: Map<string, OrthancResource>}> {
  const ids: string[] = []
  let studies: Map<string, OrthancResource> | undefined = new Map()
  for await (const study of client.listStudies(signal)) {
    if (!studyMatches(study, filters)) continue
    ids.push(study.ID)
    studies?.set(study.ID, study)
    if (studies && studies.size > LISTED_STUDIES_KEPT) studies = undefined
  }

  return {ids, studies}
}

function studyMatches(study: OrthancResource, filters: InstanceFilters): boolean {
  const tags = study.MainDicomTags
  const patientId = study.PatientMainDicomTags?.PatientID ?? ''
  if (filters.patientIds && !filters.patientIds.includes(patientId)) return false
  if (filters.studyInstanceUids && !filters.studyInstanceUids.includes(tags.StudyInstanceUID ?? '')) return false
  const date = tags.StudyDate ?? ''
  if (filters.studyDateFrom && !(date && date >= filters.studyDateFrom)) return false
  if (filters.studyDateTo && !(date && date <= filters.studyDateTo)) return false
  if (filters.labels && !filters.labels.some((label) => study.Labels?.includes(label))) return false
  if (filters.shard && shardOfStudy(study.ID, filters.shard.count) !== filters.shard.index) return false
  return true
}

/**
 * Which of `count` shards a study belongs to (1-based). Orthanc study IDs are SHA-1 digests,
 * so their first 32 bits spread studies evenly, and every machine computes the same answer.
 */
export function shardOfStudy(studyId: string, count: number): number {
  return (Number.parseInt(studyId.replace(/-/g, '').slice(0, 8), 16) % count) + 1
}

async function selectInStudy(
  client: OrthancClient, study: OrthancResource, filters: InstanceFilters, onlyInstances: Set<string> | 'all' | undefined, signal?: AbortSignal,
): Promise<SelectedStudy | undefined> {
  let series: OrthancResource[]
  let instances: OrthancResource[]
  try {
    [series, instances] = await Promise.all([client.seriesOfStudy(study.ID, signal), client.studyInstances(study.ID, signal)])
  } catch (error) {
    // Deleted since it was listed: no longer there to select. A 404 for a study that is still
    // there (a proxy refusing the route) stays an error: skipping it would lose its instances.
    if (error instanceof OrthancHttpError && error.status === 404 && !(await client.study(study.ID, signal))) return undefined
    throw error
  }

  const modalities = filters.modalities?.map((modality) => modality.toUpperCase())
  const seriesById = new Map(series.map((entry) => [entry.ID, entry]))
  // The two listings are asked at once: a series stored between them has instances and no entry
  // in the series listing. Read on its own, so that its instances are not passed over; one
  // deleted since took its instances with it.
  const unlisted = [...new Set(instances.map((instance) => instance.ParentSeries ?? '').filter((id) => id !== '' && !seriesById.has(id)))]
  for (const id of unlisted) {
    const found = await client.series(id, signal)
    if (found) seriesById.set(id, found)
  }
  if (unlisted.length > 0) instances = instances.filter((instance) => seriesById.has(instance.ParentSeries ?? ''))
  const keep = (instance: OrthancResource) => {
    const parent = seriesById.get(instance.ParentSeries ?? '')
    if (!parent) return false
    if (modalities && !modalities.includes((parent.MainDicomTags.Modality ?? '').toUpperCase())) return false
    return onlyInstances === undefined || onlyInstances === 'all' || onlyInstances.has(instance.ID)
  }

  const selected = instances
    .filter(keep)
    .map((instance) => ({
      id: instance.ID,
      studyId: study.ID,
      seriesId: instance.ParentSeries!,
      studyInstanceUid: study.MainDicomTags.StudyInstanceUID ?? '',
      seriesInstanceUid: seriesById.get(instance.ParentSeries!)?.MainDicomTags.SeriesInstanceUID ?? '',
      sopInstanceUid: instance.MainDicomTags.SOPInstanceUID ?? '',
      // A size is a count of bytes: anything else a server answers is taken as unknown.
      size: isCount(instance.FileSize) ? instance.FileSize : 0,
      order: Number((instance as {IndexInSeries?: number}).IndexInSeries ?? 0),
    }))
    .sort((a, b) => a.seriesId.localeCompare(b.seriesId) || a.order - b.order || a.id.localeCompare(b.id))
    .map(({order: _order, ...instance}) => instance)

  return {
    studyId: study.ID,
    studyInstanceUid: study.MainDicomTags.StudyInstanceUID ?? '',
    instancesOnSource: instances.length,
    instances: selected,
    patient: patientFieldsOf(study),
  }
}

/** The fields of a study the patient index shows: read from the source, written nowhere else. */
export function patientFieldsOf(study: OrthancResource): SelectedStudy['patient'] {
  const patient = study.PatientMainDicomTags ?? {}
  return {
    patientId: patient.PatientID ?? '',
    patientName: patient.PatientName ?? '',
    patientBirthDate: patient.PatientBirthDate ?? '',
    accessionNumber: study.MainDicomTags.AccessionNumber ?? '',
    studyDate: study.MainDicomTags.StudyDate ?? '',
    studyDescription: study.MainDicomTags.StudyDescription ?? '',
  }
}

/**
 * Orthanc IDs of any level, mapped to the studies they fall in: a patient or study selects
 * whole studies, a series or instance selects only its instances.
 */
async function resolveOrthancIds(client: OrthancClient, ids: string[], ignoreUnknown: boolean, signal?: AbortSignal): Promise<Map<string, Set<string> | 'all'>> {
  const result = new Map<string, Set<string> | 'all'>()
  const addInstances = (studyId: string, instanceIds: string[]) => {
    const current = result.get(studyId)
    if (current === 'all') return
    const set = current ?? new Set<string>()
    for (const id of instanceIds) set.add(id)
    result.set(studyId, set)
  }

  for (const id of ids) {
    const found = isOrthancId(id) ? await findResource(client, id, signal) : undefined
    if (!found) {
      if (ignoreUnknown) continue
      throw new UnknownOrthancIdError(id)
    }

    const [level, resource] = found
    if (level === 'patient') for (const studyId of resource.Studies ?? []) result.set(studyId, 'all')
    else if (level === 'study') result.set(resource.ID, 'all')
    else if (level === 'series') addInstances(resource.ParentStudy!, resource.Instances ?? [])
    else {
      const series = await client.series(resource.ParentSeries!, signal)
      // Deleted since: its instance went with it.
      if (series) addInstances(series.ParentStudy!, [resource.ID])
    }
  }

  return result
}

async function findResource(client: OrthancClient, id: string, signal?: AbortSignal): Promise<[ResourceLevel, OrthancResource] | undefined> {
  for (const level of ['instance', 'series', 'study', 'patient'] as const) {
    const found = await client.resource(level, id, signal)
    if (found) return [level, found]
  }

  return undefined
}

export class UnknownOrthancIdError extends Error {
  constructor(readonly id: string) {
    super(`no patient, study, series or instance has the Orthanc ID ${id}`)
    this.name = 'UnknownOrthancIdError'
  }
}
