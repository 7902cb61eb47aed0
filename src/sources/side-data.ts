import {createHash} from 'node:crypto'

import {attachmentPayloadPath, resourceAttachmentPath} from '../archive/format.js'
import {type AttachmentRecord, hasUserSideData, type ResourceInTransit, type ResourceLevel, type ResourceRecord, type SideData} from '../model.js'
import type {BulkSideData, FoundSideData, OrthancClient} from '../orthanc/client.js'
import {FIRST_USER_CONTENT_TYPE, resourcePath} from '../orthanc/client.js'
import {ChecksumMismatchError, OrthancHttpError} from '../orthanc/errors.js'
import {splitMetadata} from '../orthanc/metadata.js'
import {StudySideData} from './study-side-data.js'

/** Attachments Orthanc manages itself; everything else on a resource belongs to users. */
const ORTHANC_ATTACHMENTS = new Set(['dicom', 'dicom-until-pixel-data', 'dicom-as-json'])

/** Instances whose metadata one bulk request reads: about 600 bytes of answer each. */
const SIDE_DATA_BATCH = 100

/** Studies whose patient, study and series side data is kept, for the instances that follow. */
const REMEMBERED_STUDIES = 16

/** Studies (and series) whose metadata read ahead waits for their first instance: a few batches' worth. */
const RESOURCES_READ_AHEAD = 4 * SIDE_DATA_BATCH

/**
 * Reads what Orthanc keeps beside its resources: metadata, user attachments, labels, for
 * instances and for the patients, studies and series they belong to. The metadata (and on 1.12
 * the labels) of a whole batch of instances comes in one request when the producer announces
 * the batch with `prefetch` before handing its instances out.
 */
export class SideDataReader {
  /**
   * Side data read ahead, by instance ID, until `read` takes it: all of it from a whole study's
   * answer (`found`), or the metadata (and on 1.12 the labels) of a batch (`bulk`).
   */
  private readonly prefetched = new Map<string, Promise<{found?: FoundSideData; bulk?: BulkSideData}>>()
  private readonly studies = new Map<string, StudyResources>()
  /** The metadata of a batch's studies and of their patients, read in bulk, until the study's first instance takes it. */
  private readonly studiesAhead = new Map<string, StudyAhead>()
  /** The same for a batch's series. */
  private readonly seriesAhead = new Map<string, Promise<BulkSideData | undefined>>()
  /** Series read ahead lately, taken or not: a series of several batches is asked for once. */
  private readonly seriesAsked = new Set<string>()
  private readonly wholeStudies: StudySideData

  constructor(private readonly client: OrthancClient) {
    this.wholeStudies = new StudySideData(client)
  }

  /**
   * Starts reading the side data of these instances of one study: all of it for the whole study
   * in one request where the server can (Orthanc 1.12.5+, see OrthancClient.studySideData), else
   * their metadata in one request; `read` picks each one up.
   */
  prefetch(instanceIds: string[], signal?: AbortSignal, study?: {id: string; uid: string}): void {
    if (instanceIds.length < 2 && !study) return
    const batch = (async () => {
      const found = study ? await this.wholeStudies.of(study.id, study.uid, signal) : undefined
      if (found && instanceIds.every((id) => found.has(id))) return {found}
      return {found, bulk: instanceIds.length < 2 ? undefined : await this.client.instancesSideData(instanceIds, signal)}
    })()
    // A failed batch is not this reader's failure: each instance asks again on its own in `read`.
    const settled = batch.catch(() => undefined)
    for (const id of instanceIds) this.prefetched.set(id, settled.then((ahead) => ({found: ahead?.found?.get(id), bulk: ahead?.bulk?.get(id)})))
  }

  /**
   * Starts reading the metadata of these studies, of their patients and of these series, three
   * requests for all of them: what each study's first instance would otherwise ask (the study, to
   * find its patient, then each resource's metadata) one study at a time, which for studies of one
   * instance (CR, DX) is four requests per instance. The attachment lists are still asked per
   * resource: no bulk route gives them.
   */
  prefetchResources(studyIds: string[], seriesIds: string[], signal?: AbortSignal): void {
    const studies = [...new Set(studyIds)].filter((id) => !this.studies.has(id) && !this.studiesAhead.has(id))
    if (studies.length > 0) {
      // A failed read ahead is not this reader's failure: each study asks again on its own.
      const studyAnswers = this.client.resourcesSideData('study', studies, signal).catch(() => undefined)
      // The studies' answers name their patients: those are asked for next, by their own IDs.
      const patientAnswers = studyAnswers.then((answers) => {
        const patientIds = [...new Set([...(answers?.values() ?? [])].flatMap((study) => study.parentPatient ?? []))]
        return this.client.resourcesSideData('patient', patientIds, signal)
      }).catch(() => undefined)
      for (const studyId of studies) {
        this.studiesAhead.set(studyId, {
          study: studyAnswers.then((answers) => answers?.get(studyId)),
          patient: (patientId) => patientAnswers.then((answers) => answers?.get(patientId)),
        })
      }
    }

    const series = [...new Set(seriesIds)].filter((id) => !this.seriesAsked.has(id))
    if (series.length > 0) {
      const answer = this.client.resourcesSideData('series', series, signal).catch(() => undefined)
      for (const seriesId of series) {
        this.seriesAhead.set(seriesId, answer.then((found) => found?.get(seriesId)))
        this.seriesAsked.add(seriesId)
      }
    }

    for (const ahead of [this.studiesAhead, this.seriesAhead, this.seriesAsked]) {
      while (ahead.size > RESOURCES_READ_AHEAD) ahead.delete(ahead.keys().next().value!)
    }
  }

  /**
   * Whether a batch may hold instances of several studies: once the server is known to have no
   * study-wide answer, a batch is only for bulk metadata, and studies of one or two instances
   * (CR, DX) then share one request instead of asking per instance.
   */
  get batchesSpanStudies(): boolean {
    return this.client.answersStudySideData === false
  }

  /** An instance's side data. */
  async read(instanceId: string, signal?: AbortSignal): Promise<SideData> {
    const pending = this.prefetched.get(instanceId)
    this.prefetched.delete(instanceId)
    // Where no study-wide answer can come, the batch holds metadata only: the attachment list is
    // asked beside it rather than after it. Across a link, the first instances otherwise wait a
    // round trip for their batch before their list is even asked for.
    const attachmentsNow = pending && this.batchesSpanStudies ? this.userAttachments('instance', instanceId, signal) : undefined
    // Its failure is seen below; until then it must not count as unhandled.
    attachmentsNow?.catch(() => {})
    const ahead = await pending
    if (ahead?.found) return this.fromFound(instanceId, ahead.found, signal)
    const [all, attachments, labels] = await Promise.all([
      ahead?.bulk?.metadata ?? this.client.instanceMetadata(instanceId, signal),
      attachmentsNow ?? this.userAttachments('instance', instanceId, signal),
      ahead?.bulk?.labels ?? this.client.instanceLabels(instanceId, signal),
    ])
    const {user, system} = splitMetadata(all)
    return {userMetadata: user, systemMetadata: system, attachments, labels: [...labels].sort()}
  }

  /** From a study's answer: the attachments' names are not in it, so an instance with user attachments is listed on its own. */
  private async fromFound(instanceId: string, found: FoundSideData, signal?: AbortSignal): Promise<SideData> {
    const hasUserAttachments = found.attachments.some((attachment) => (attachment.ContentType ?? 0) >= FIRST_USER_CONTENT_TYPE)
    const {user, system} = splitMetadata(found.metadata)
    const attachments = hasUserAttachments ? await this.userAttachments('instance', instanceId, signal) : []
    return {userMetadata: user, systemMetadata: system, attachments, labels: [...found.labels].sort()}
  }

  /**
   * The side data of an instance's patient, study and series, those that have any user data:
   * read once per study (and series) and kept for the next instances of that study.
   */
  async resourcesOf(instance: {studyId: string; seriesId: string}, signal?: AbortSignal): Promise<ResourceRecord[]> {
    const study = this.studyResources(instance.studyId, signal)
    let series = study.series.get(instance.seriesId)
    if (!series) {
      const readAhead = this.seriesAhead.get(instance.seriesId)
      this.seriesAhead.delete(instance.seriesId)
      series = this.readResource({level: 'series', study: instance.studyId, series: instance.seriesId}, instance.seriesId, signal, readAhead)
      series.catch(() => study.series.delete(instance.seriesId))
      study.series.set(instance.seriesId, series)
    }
    // The study's and the series' reads go side by side: across a link, each is a round trip
    // that a study's first instance waits for before its upload.
    const records = await Promise.all([...study.own, series])
    return records.filter((record): record is ResourceRecord => record !== undefined)
  }

  /**
   * The same, ready for a sink: each attachment's bytes are read from the source only when a
   * target lacks it, and checked against the MD5 the source recorded.
   */
  async resourcesInTransit(instance: {studyId: string; seriesId: string}, signal?: AbortSignal): Promise<ResourceInTransit[]> {
    return (await this.resourcesOf(instance, signal)).map((record) => ({record, attachments: (contentType) => this.attachmentBytes(record, contentType, signal)}))
  }

  /** One attachment of a resource, read from the source and checked. */
  async attachmentBytes(record: ResourceRecord, contentType: number, signal?: AbortSignal): Promise<Buffer | undefined> {
    const attachment = record.attachments.find((candidate) => candidate.contentType === contentType)
    if (!attachment) return undefined
    const {level, id} = sourceResource(record)
    const data = await this.client.resourceAttachmentData(level, await id(this.client, signal), attachment.name, signal, attachment.size)
    const md5 = createHash('md5').update(data).digest('hex')
    if (md5 !== attachment.md5) throw new ChecksumMismatchError(this.client.display, `${level} of study ${record.study} attachment ${attachment.name}`, attachment.md5, md5)
    return data
  }

  /** An instance's attachment, read from the source and checked; for instances already on a target. */
  async instanceAttachmentBytes(instanceId: string, attachments: AttachmentRecord[], contentType: number, signal?: AbortSignal): Promise<Buffer | undefined> {
    const attachment = attachments.find((candidate) => candidate.contentType === contentType)
    return attachment && this.checkedAttachment('instance', instanceId, attachment, signal)
  }

  /** Any resource's side data, read now and on its own (nothing read ahead, nothing kept). */
  async sideDataOf(level: ResourceLevel, orthancId: string, signal?: AbortSignal): Promise<SideData> {
    const [all, attachments, labels, isProtected] = await Promise.all([
      this.client.resourceMetadata(level, orthancId, signal),
      this.userAttachments(level, orthancId, signal),
      this.client.resourceLabels(level, orthancId, signal),
      level === 'patient' && this.client.patientProtected(orthancId, signal),
    ])
    const {user, system} = splitMetadata(all)
    return {userMetadata: user, systemMetadata: system, attachments, labels: [...labels].sort(), ...(isProtected ? {protected: true} : {})}
  }

  /** One attachment's bytes, checked against the MD5 it was listed with. */
  async checkedAttachment(level: ResourceLevel, orthancId: string, attachment: AttachmentRecord, signal?: AbortSignal): Promise<Buffer> {
    const data = await this.client.resourceAttachmentData(level, orthancId, attachment.name, signal, attachment.size)
    const md5 = createHash('md5').update(data).digest('hex')
    if (md5 !== attachment.md5) throw new ChecksumMismatchError(this.client.display, `${level === 'instance' ? orthancId : `${level} ${orthancId}`} attachment ${attachment.name}`, attachment.md5, md5)
    return data
  }

  private studyResources(studyId: string, signal?: AbortSignal): StudyResources {
    let entry = this.studies.get(studyId)
    if (!entry) {
      const readAhead = this.studiesAhead.get(studyId)
      this.studiesAhead.delete(studyId)
      const patient = (async () => {
        // The study's answer read ahead names its patient; the patient's own answer comes a round trip later.
        const patientId = (await readAhead?.study)?.parentPatient ?? (await this.client.patientOfStudy(studyId, signal))
        return patientId ? this.readResource({level: 'patient', study: studyId}, patientId, signal, readAhead?.patient(patientId)) : undefined
      })()
      const own = [patient, this.readResource({level: 'study', study: studyId}, studyId, signal, readAhead?.study)]
      const created: StudyResources = {own, series: new Map()}
      for (const record of own) record.catch(() => this.studies.get(studyId) === created && this.studies.delete(studyId))
      entry = created
      this.studies.set(studyId, entry)
      if (this.studies.size > REMEMBERED_STUDIES) this.studies.delete(this.studies.keys().next().value!)
    }

    return entry
  }

  /**
   * A resource's side data as a record, or undefined when it has no user data to carry. `ahead`:
   * its metadata (and labels) being read in bulk; its attachment list, which no bulk route gives,
   * is asked meanwhile rather than a round trip later.
   */
  private async readResource(key: Pick<ResourceRecord, 'level' | 'study' | 'series'>, orthancId: string, signal?: AbortSignal, ahead?: Promise<BulkSideData | undefined>): Promise<ResourceRecord | undefined> {
    const level = key.level as ResourceLevel
    // Without a bulk answer (none asked, or it lacked this resource) the metadata is asked on its own.
    const metadataAndLabels = (async () => {
      const bulk = await ahead
      return Promise.all([bulk?.metadata ?? this.client.resourceMetadata(level, orthancId, signal), bulk?.labels ?? this.client.resourceLabels(level, orthancId, signal)])
    })()
    const [[all, labels], attachments, isProtected] = await Promise.all([
      metadataAndLabels, this.userAttachments(level, orthancId, signal, key), level === 'patient' && this.client.patientProtected(orthancId, signal),
    ])
    const {user, system} = splitMetadata(all)
    const record: ResourceRecord = {...key, userMetadata: user, systemMetadata: system, attachments, labels: [...labels].sort(), ...(isProtected ? {protected: true} : {})}
    return hasUserSideData(record) ? record : undefined
  }

  /** Listed for every resource: a user attachment may be empty, so no size total can rule them out. */
  private async userAttachments(level: ResourceLevel, orthancId: string, signal?: AbortSignal, resource?: Pick<ResourceRecord, 'level' | 'study' | 'series'>): Promise<AttachmentRecord[]> {
    const attachments: AttachmentRecord[] = []
    for (const name of await this.client.resourceAttachments(level, orthancId, signal)) {
      if (ORTHANC_ATTACHMENTS.has(name)) continue
      const described = await this.describeAttachment(level, orthancId, name, signal)
      if (!described || described.contentType < FIRST_USER_CONTENT_TYPE) continue
      const path = resource ? resourceAttachmentPath(resource, described.contentType) : attachmentPayloadPath(orthancId, described.contentType)
      attachments.push({name, ...described, path})
    }

    return attachments.sort((a, b) => a.contentType - b.contentType)
  }

  private async describeAttachment(level: ResourceLevel, orthancId: string, name: string, signal?: AbortSignal): Promise<Omit<AttachmentRecord, 'name' | 'path'> | undefined> {
    const info = await this.client.resourceAttachmentInfo(level, orthancId, name, signal)
    if (info) return {contentType: info.ContentType ?? Number(name), size: info.UncompressedSize, md5: info.UncompressedMD5}
    // Before 1.10 there is no /info: numbered attachments carry their type in the name.
    if (!/^\d+$/.test(name)) return undefined
    const known = await this.client.attachmentSizeAndMd5(level, orthancId, name, signal)
    // Listed a moment ago: gone since, its data cannot be read either.
    if (!known) throw new OrthancHttpError(this.client.display, 'GET', `${resourcePath(level, orthancId)}/attachments/${name}/size`, 404, 'attachment removed while it was being read')
    return {contentType: Number(name), ...known}
  }
}

interface StudyResources {
  /** The patient's and the study's records (undefined: no user data). */
  own: Array<Promise<ResourceRecord | undefined>>
  series: Map<string, Promise<ResourceRecord | undefined>>
}

/** A study's and its patient's metadata being read ahead in bulk (each undefined where the answer lacks it). */
interface StudyAhead {
  study: Promise<BulkSideData | undefined>
  patient: (patientId: string) => Promise<BulkSideData | undefined>
}

/** Where a resource record's resource is on a server: its level, and its Orthanc ID (a patient's looked up through its study). */
export function sourceResource(record: Pick<ResourceRecord, 'level' | 'study' | 'series'>): {level: ResourceLevel; id: (client: OrthancClient, signal?: AbortSignal) => Promise<string>} {
  if (record.level === 'patient') {
    return {
      level: 'patient',
      async id(client, signal) {
        const patient = await client.patientOfStudy(record.study, signal)
        if (!patient) throw new Error(`study ${record.study} is not on ${client.display}`)
        return patient
      },
    }
  }

  const id = record.level === 'series' ? record.series! : record.study
  return {level: record.level, id: async () => id}
}

/**
 * Hands `items` on in order, first announcing each batch (one study, at most SIDE_DATA_BATCH
 * instances; several studies where the reader allows it) to `reader`. Pulls one item past a batch before handing it on, to see where it ends.
 */
export async function* prefetchingSideData<Item extends {id: string; studyId?: string; studyInstanceUid?: string; seriesId?: string; source?: {seriesId?: string}}>(
  items: AsyncIterable<Item>, reader: SideDataReader, signal?: AbortSignal,
): AsyncGenerator<Item> {
  let batch: Item[] = []
  const handOn = function* () {
    const [first] = batch
    const oneStudy = batch.every((item) => item.studyId === first?.studyId)
    const study = oneStudy && first?.studyId && first.studyInstanceUid ? {id: first.studyId, uid: first.studyInstanceUid} : undefined
    reader.prefetch(batch.map((item) => item.id), signal, study)
    // Sync's items carry the series under `source`, export's at the top.
    const seriesIds = batch.flatMap((item) => item.seriesId ?? item.source?.seriesId ?? [])
    reader.prefetchResources(batch.flatMap((item) => item.studyId ?? []), seriesIds, signal)
    yield* batch
    batch = []
  }

  for await (const item of items) {
    const full = batch.length >= SIDE_DATA_BATCH || (batch.length > 0 && batch[0]!.studyId !== item.studyId && !reader.batchesSpanStudies)
    if (full) yield* handOn()
    batch.push(item)
  }

  if (batch.length > 0) yield* handOn()
}
