import type {InstanceFilters} from '../model.js'
import type {OrthancClient} from '../orthanc/client.js'
import type {OrthancResource} from '../orthanc/types.js'
import {selectInstances, type SelectedInstance, UnknownOrthancIdError} from '../sources/orthanc-selection.js'
import {mapConcurrent, mapOrdered} from '../util/concurrency.js'

const LOOKUP_CONCURRENCY = 8
/**
 * Studies compared at once (each a look-up on the target, started beside the source's reads). With
 * one instance per study, as in CR or DX archives, the comparison is a round trip per instance: 400
 * such studies at 10 ms took 2.2-2.4 s to plan at 4 at once (and 8 source reads), 1.6-1.8 s at 8
 * (and 16), with the look-up after the source's reads.
 */
const STUDIES_COMPARED_AT_ONCE = 8

/**
 * Where an instance stands between two servers; 'present' is on both, MD5s not compared;
 * 'unrecorded' is on both, its MD5s asked for, and a server records none (it runs with
 * StoreMD5ForAttachments off): not compared either, and never taken for identical.
 */
export type InstanceState = 'only-source' | 'only-target' | 'different' | 'identical' | 'present' | 'unrecorded'

export interface ComparedInstance {
  id: string
  studyId?: string
  studyInstanceUid?: string
  state: InstanceState
  size?: number
  source?: SelectedInstance
}

export interface CompareOptions {
  filters: InstanceFilters
  /** Compare the MD5s both servers recorded for instances on both sides. */
  checksum: boolean
  /** Without `checksum`, compare the MD5s of these instances only (a mirror's arrivals since its cursor). */
  checksumOf?: ReadonlySet<string>
  signal?: AbortSignal
  /**
   * Compare only these source instances (a mirror's new arrivals; some may be gone again), the
   * filters still applying to them; the target is asked about each one, not each study.
   */
  onlyInstances?: string[]
  /**
   * With filters, also select on the target with the same filters, and report what it holds
   * that the source's selection does not (diff). A sync leaves it out: it sends, and never
   * deletes with filters. `orthancIds` select there too: Orthanc IDs are hashes of the DICOM
   * UIDs, so an ID names the same patient, study, series or instance on both servers.
   */
  targetSelection?: boolean
}

/**
 * Walks the source's selected instances study by study and says where each one stands on the
 * target: present or not (one request per study on the target), and, when asked, whether the
 * MD5s both servers recorded agree (no file is downloaded). Memory holds one study's instances
 * and the list of study IDs, never every instance ID: a server with millions of instances is
 * compared in the memory its studies take. Instances only on the target are reported for an
 * unfiltered comparison, and with filters when `targetSelection` asks (diff): the same filters
 * select on the target too. Otherwise (sync) the rest of the target is out of scope.
 */
export async function* compareServers(source: OrthancClient, target: OrthancClient, options: CompareOptions): AsyncGenerator<ComparedInstance> {
  const unfiltered = Object.keys(options.filters).length === 0
  const sourceStudies = new Set<string>()
  const selectTarget = !unfiltered && options.targetSelection === true && options.onlyInstances === undefined
  const lookupEachOnTarget = options.onlyInstances !== undefined
  const findOnlyOnTarget = unfiltered && !lookupEachOnTarget
  // The target's studies are listed beside the comparison rather than after it, which across a
  // link is a round trip (and the listing's time) less before the plan and the first upload.
  const targetStudies = findOnlyOnTarget ? studiesUpTo(target, TARGET_STUDIES_LISTED_AHEAD, options.signal) : undefined
  // A failure is seen below, where the listing is used.
  targetStudies?.catch(() => {})
  // Once that listing has arrived, a study it does not name is not looked up: a request less per
  // study new to the target, which with studies of one instance is one per instance. Not waited
  // for: a study that comes before it is looked up as before. A study stored on the target after
  // the listing is then planned as missing, and its upload finds it (AlreadyStored: skipped, its
  // MD5 compared as for any upload), as for one stored after the look-up.
  let studiesOnTarget: Set<string> | undefined
  targetStudies?.then((studies) => {
    if (studies) studiesOnTarget = new Set(studies.map((study) => study.ID))
  }, () => {})
  // Each study is looked up on the target while the source lists its instances, not after:
  // across a link, a round trip less per study (and per instance for studies of one instance).
  const selected = selectInstances(source, options.filters, options.signal, {
    onlyInstances: options.onlyInstances,
    beside: lookupEachOnTarget ? undefined : (studyId) => (studiesOnTarget && !studiesOnTarget.has(studyId) ? Promise.resolve([]) : target.studyInstanceIds(studyId, options.signal)),
  })
  // Several studies are compared at once, in order.
  const compared = mapOrdered(selected, STUDIES_COMPARED_AT_ONCE, async (study) => {
    const onTarget = lookupEachOnTarget
      ? await presentOneByOne(target, study.instances, options.signal)
      : new Set(await (study.beside ?? target.studyInstanceIds(study.studyId, options.signal)))
    const present = study.instances.map((instance) => onTarget.delete(instance.id))
    // MD5s of one study are compared in parallel: two metadata reads per instance, no download.
    // null: not compared (not asked for this one).
    const compares = (id: string) => options.checksum || options.checksumOf?.has(id) === true
    const same = options.checksum || study.instances.some((instance) => compares(instance.id))
      ? await mapConcurrent([...study.instances.keys()], LOOKUP_CONCURRENCY, async (index) => {
        const {id} = study.instances[index]!
        return !present[index] || (compares(id) ? sameMd5(source, target, id, options.signal) : null)
      })
      : undefined
    return {study, onTarget, present, same}
  })
  for await (const {study, onTarget, present, same} of compared) {
    sourceStudies.add(study.studyId)
    for (const [index, instance] of study.instances.entries()) {
      const base = {id: instance.id, studyId: study.studyId, studyInstanceUid: study.studyInstanceUid, size: instance.size, source: instance}
      if (!present[index]) yield {...base, state: 'only-source'}
      else if (!same || same[index] === null) yield {...base, state: 'present'}
      else yield {...base, state: same[index] === undefined ? 'unrecorded' : same[index] ? 'identical' : 'different'}
    }

    if (findOnlyOnTarget) {
      for (const id of onTarget) yield {id, studyId: study.studyId, studyInstanceUid: study.studyInstanceUid, state: 'only-target'}
    }
  }

  if (selectTarget) {
    // The same filters, on the target: what they select there that they do not on the source. A
    // study both selected is selected on the source again, alone: memory holds one study, as above.
    for await (const study of selectInstances(target, options.filters, options.signal, {noLabelsSelectsNothing: true, unknownIdsSelectNothing: true})) {
      const onSource = sourceStudies.has(study.studyId) ? await selectedInStudy(source, options.filters, study.studyId, options.signal) : new Set<string>()
      for (const instance of study.instances) {
        if (!onSource.has(instance.id)) yield {id: instance.id, studyId: study.studyId, studyInstanceUid: study.studyInstanceUid, state: 'only-target'}
      }
    }
  }

  if (!findOnlyOnTarget) return
  // A target with more studies than were kept is listed again, study by study.
  for await (const study of (await targetStudies) ?? target.listStudies(options.signal)) {
    if (sourceStudies.has(study.ID)) continue
    for (const id of await target.studyInstanceIds(study.ID, options.signal)) {
      yield {id, studyId: study.ID, studyInstanceUid: study.MainDicomTags.StudyInstanceUID, state: 'only-target'}
    }
  }
}

/** The instances `filters` select in one study of `client` (none when the study is gone). */
async function selectedInStudy(client: OrthancClient, filters: InstanceFilters, studyId: string, signal?: AbortSignal): Promise<Set<string>> {
  const ids = new Set<string>()
  try {
    for await (const study of selectInstances(client, {...filters, orthancIds: [studyId]}, signal)) for (const instance of study.instances) ids.add(instance.id)
  } catch (error) {
    if (!(error instanceof UnknownOrthancIdError)) throw error
  }

  return ids
}

/** Target studies listed beside the comparison and kept (ID and UID, about 200 bytes each); a target with more is listed again after it. */
const TARGET_STUDIES_LISTED_AHEAD = 10_000

/** The server's studies (ID and Study Instance UID), or undefined once there are more than `limit`. */
async function studiesUpTo(client: OrthancClient, limit: number, signal?: AbortSignal): Promise<OrthancResource[] | undefined> {
  const studies: OrthancResource[] = []
  for await (const study of client.listStudies(signal)) {
    // Leaving the loop drops the rest of the answer.
    if (studies.length >= limit) return undefined
    const uid = study.MainDicomTags.StudyInstanceUID
    studies.push({ID: study.ID, Type: study.Type, MainDicomTags: uid === undefined ? {} : {StudyInstanceUID: uid}})
  }

  return studies
}

async function presentOneByOne(target: OrthancClient, instances: SelectedInstance[], signal?: AbortSignal): Promise<Set<string>> {
  const found = await mapConcurrent(instances, LOOKUP_CONCURRENCY, async (instance) => ((await target.instance(instance.id, signal)) ? instance.id : undefined))
  return new Set(found.filter((id): id is string => id !== undefined))
}

/** Whether both servers record the same MD5 for the instance; undefined when either records none (StoreMD5ForAttachments off). */
export async function sameMd5(source: OrthancClient, target: OrthancClient, id: string, signal?: AbortSignal): Promise<boolean | undefined> {
  const [a, b] = await Promise.all([source.storedFileInfo(id, signal), target.storedFileInfo(id, signal)])
  if (a === undefined || b === undefined) return false
  return a.md5 === '' || b.md5 === '' ? undefined : a.md5 === b.md5
}
