import {createHash} from 'node:crypto'
import {constants as bufferConstants} from 'node:buffer'

import streamArray from 'stream-json/streamers/stream-array.js'

import * as shapes from './answer-shapes.js'
import type {ServerEndpoint} from './endpoint.js'
import {filesNotKept, NotOrthancError, OrthancError, OrthancHttpError, UploadRejectedError} from './errors.js'
import {type HttpOptions, OrthancHttp, type ReplayableBody, type RequestOptions} from './http.js'
import type {
  OrthancAttachmentInfo,
  OrthancChange,
  OrthancChangesPage,
  OrthancResource,
  OrthancStatistics,
  OrthancSystem,
  OrthancUploadAnswer,
} from './types.js'
import type {ResourceLevel} from '../model.js'
import {versionAtLeast} from './version.js'
import {printable} from '../util/printable.js'
import {isCount} from '../util/count.js'

/** Orthanc's OrthancStatus for a resource it does not hold, in the body of its 404 (HttpDescribeErrors, on by default). */
const UNKNOWN_RESOURCE = 17

export interface InstanceDownload {
  bytes: Buffer
  /** MD5 of the DICOM file as the server announces it (ETag of attachments/dicom/data), if it does. */
  announcedMd5?: string
}

export interface StoredFileInfo {
  size: number
  md5: string
  /** Whether this copy sits compressed in the server's storage area. */
  compressed: boolean
}

/** What /tools/find tells of one instance when asked for its side data (Orthanc 1.12.5 and later). */
export interface FoundSideData {
  /** By name, as metadata?expand gives them. */
  metadata: Record<string, string>
  /** Every attachment's info, the DICOM file's (content type 1) among them; no names. */
  attachments: OrthancAttachmentInfo[]
  labels: string[]
}

export interface Features {
  /** Labels on resources: Orthanc 1.12.0 and later. */
  labels: boolean
  /** GET .../attachments/{name}/info: Orthanc 1.10.0 and later. */
  attachmentInfo: boolean
  /** ETag with the MD5 on attachment downloads: Orthanc 1.9.3 and later. */
  md5ETag: boolean
  /** POST /instances takes a ZIP and answers one entry per file: Orthanc 1.8.2 and later. */
  zipUpload: boolean
}

const LEVEL_PATHS: Record<ResourceLevel, string> = {patient: 'patients', study: 'studies', series: 'series', instance: 'instances'}

const BULK_LEVELS: Record<ResourceLevel, string> = {patient: 'Patient', study: 'Study', series: 'Series', instance: 'Instance'}

/** A resource's metadata as /tools/bulk-content answers it: labels where the server gives them (1.12), a study's patient. */
export interface BulkSideData {
  metadata: Record<string, string>
  labels?: string[]
  parentPatient?: string
}

export function resourcePath(level: ResourceLevel, id: string): string {
  return `/${LEVEL_PATHS[level]}/${id}`
}

/** The first attachment type Orthanc leaves to users; lower numbers are Orthanc's own. */
export const FIRST_USER_CONTENT_TYPE = 1024

const CHANGES_PAGE = 1000

/**
 * Orthanc's REST API, as replication uses it. One instance per server; call close() when done.
 */
export class OrthancClient {
  readonly http: OrthancHttp
  private systemAnswer?: Promise<OrthancSystem>
  private knownFeatures?: {of: OrthancSystem; features: Features}
  /** Set once POST /tools/bulk-content turned out not to report metadata. */
  private noBulkMetadata = false
  /** Set once POST /tools/find turned out not to answer ResponseContent. */
  private noFindSideData = false
  /**
   * The largest ZIP upload to send this server: lowered when one was refused as too large (HTTP
   * 413, a proxy's limit), and kept here so that each job with it (every pass of a sync --follow)
   * starts where the last one learned. See UploadBatcher.
   */
  zipBytesAllowed = Number.POSITIVE_INFINITY

  constructor(endpoint: ServerEndpoint, options: HttpOptions = {}) {
    this.http = new OrthancHttp(endpoint, options)
  }

  get display(): string {
    return this.http.endpoint.display
  }

  /** False once the server is known not to answer a study's side data in one request (see studySideData); undefined until then. */
  get answersStudySideData(): false | undefined {
    return this.noFindSideData ? false : undefined
  }

  /**
   * About how far the server is: its quickest answer (TransportStats.fastestAnswerMs) after
   * `probes` more of its cheapest request, one at a time on a connection already open. Answers
   * measured while the server was busy say little; these are asked for when it is not.
   */
  async quickestAnswerMs(probes: number, signal?: AbortSignal): Promise<number | undefined> {
    for (let probe = 0; probe < probes; probe++) await this.http.bytes('GET', '/system', {signal})
    return this.http.stats.fastestAnswerMs
  }

  /**
   * GET /system, checked to come from Orthanc. Anything else answering at that address (a web
   * server, a proxy's error page) is reported as NotOrthancError rather than as a parse error.
   */
  async system(signal?: AbortSignal): Promise<OrthancSystem> {
    // Callers that start together share one request; a failure is not remembered.
    this.systemAnswer ??= this.fetchSystem(signal).catch((error: unknown) => {
      this.systemAnswer = undefined
      throw error
    })
    return this.systemAnswer
  }

  private async fetchSystem(signal?: AbortSignal): Promise<OrthancSystem> {
    let answer: unknown
    try {
      answer = await this.http.json<unknown>('GET', '/system', {signal})
    } catch (error) {
      if (error instanceof OrthancHttpError && (error.status === 404 || error.detail === 'answer is not JSON')) {
        throw new NotOrthancError(this.display, error.status === 404 ? 'GET /system answered 404' : 'GET /system did not answer JSON')
      }

      throw error
    }

    const system = answer as Partial<OrthancSystem>
    if (typeof system !== 'object' || system === null || typeof system.Version !== 'string' || typeof system.ApiVersion !== 'number') {
      throw new NotOrthancError(this.display, 'GET /system has no Version and ApiVersion')
    }

    const nameProblem = system.Name === undefined ? undefined : shapes.text(system.Name)
    if (nameProblem) throw this.unexpectedAnswer('GET', '/system', `Name: ${nameProblem}`)
    // Its plugins are recorded in an export's manifest, which holds text there: another kind of value
    // was written into an archive that no import then read.
    for (const field of ['DatabaseBackendPlugin', 'StorageAreaPlugin'] as const) {
      const problem = system[field] === undefined || system[field] === null ? undefined : shapes.text(system[field])
      if (problem) throw this.unexpectedAnswer('GET', '/system', `${field}: ${problem}`)
    }

    // Its name, version and plugins are shown and recorded: as text, without control characters.
    return {
      ...system,
      Version: printable(system.Version),
      ...(typeof system.Name === 'string' ? {Name: printable(system.Name)} : {}),
      ...(typeof system.DatabaseBackendPlugin === 'string' ? {DatabaseBackendPlugin: printable(system.DatabaseBackendPlugin)} : {}),
      ...(typeof system.StorageAreaPlugin === 'string' ? {StorageAreaPlugin: printable(system.StorageAreaPlugin)} : {}),
    } as OrthancSystem
  }

  /** What the server's version offers; asked on every instance, so worked out once per answer of GET /system. */
  async features(signal?: AbortSignal): Promise<Features> {
    const system = await this.system(signal)
    if (this.knownFeatures?.of !== system) {
      const {Version} = system
      this.knownFeatures = {
        of: system,
        features: {
          labels: versionAtLeast(Version, '1.12.0'), attachmentInfo: versionAtLeast(Version, '1.10.0'), md5ETag: versionAtLeast(Version, '1.9.3'),
          zipUpload: versionAtLeast(Version, '1.8.2'),
        },
      }
    }

    return this.knownFeatures.features
  }

  async statistics(signal?: AbortSignal): Promise<OrthancStatistics> {
    return this.answer<OrthancStatistics>('GET', '/statistics', shapes.statistics, {signal})
  }

  /**
   * Every instance ID, streamed: the answer of GET /instances is parsed as it arrives, so
   * millions of IDs never sit in memory at once. (Paging with since/limit is by offset and
   * shifts while the server is written to, so one streamed answer is the consistent choice.)
   */
  async *listInstanceIds(signal?: AbortSignal): AsyncGenerator<string> {
    yield* this.streamJsonArray<string>('/instances', shapes.orthancId, 'CountInstances', signal)
  }

  async *listStudies(signal?: AbortSignal): AsyncGenerator<OrthancResource> {
    yield* this.streamJsonArray<OrthancResource>('/studies?expand', shapes.resourceOf.study, 'CountStudies', signal)
  }

  /** A resource of this level; undefined when the server has none with this ID. */
  async resource(level: ResourceLevel, id: string, signal?: AbortSignal): Promise<OrthancResource | undefined> {
    return this.getOptional<OrthancResource>(resourcePath(level, id), shapes.resourceOf[level], signal)
  }

  async series(id: string, signal?: AbortSignal): Promise<OrthancResource | undefined> {
    return this.resource('series', id, signal)
  }

  async study(id: string, signal?: AbortSignal): Promise<OrthancResource | undefined> {
    return this.resource('study', id, signal)
  }

  /** The instances of one study, expanded (Orthanc always expands this route). */
  async studyInstances(studyId: string, signal?: AbortSignal): Promise<OrthancResource[]> {
    return this.answer<OrthancResource[]>('GET', `/studies/${studyId}/instances`, shapes.resourcesOf.instance, {signal})
  }

  /** Instances of a study on this server; 0 when the study is not there. */
  async studyInstanceCount(studyId: string, signal?: AbortSignal): Promise<number> {
    try {
      return (await this.answer<{CountInstances: number}>('GET', `/studies/${studyId}/statistics`, shapes.instanceCount, {signal})).CountInstances
    } catch (error) {
      if (!(error instanceof OrthancHttpError && error.status === 404)) throw error
      await this.confirmAbsent(error, 'study', studyId, signal)
      return 0
    }
  }

  /** IDs of a study's instances on this server; none when the study is not there. */
  async studyInstanceIds(studyId: string, signal?: AbortSignal): Promise<string[]> {
    try {
      return (await this.studyInstances(studyId, signal)).map((instance) => instance.ID)
    } catch (error) {
      if (!(error instanceof OrthancHttpError && error.status === 404)) throw error
      await this.confirmAbsent(error, 'study', studyId, signal)
      return []
    }
  }

  /**
   * A 404 taken for "not there": Orthanc's own says so (OrthancStatus 17, "unknown resource");
   * any other (a proxy before the server refusing one route, or a server that does not describe
   * its errors) is checked on the resource itself, as "missing" or "only on the source" must never
   * come from a route refused.
   */
  private async confirmAbsent(answered: OrthancHttpError, level: ResourceLevel, id: string, signal?: AbortSignal): Promise<void> {
    if (answered.orthancStatus === UNKNOWN_RESOURCE) return
    if (await this.resource(level, id, signal)) throw new OrthancHttpError(this.display, answered.method, answered.path, 404, `yet ${resourcePath(level, id)} is there: something before the server refuses this route; not taken as missing`)
  }

  async seriesOfStudy(studyId: string, signal?: AbortSignal): Promise<OrthancResource[]> {
    return this.answer<OrthancResource[]>('GET', `/studies/${studyId}/series`, shapes.resourcesOf.series, {signal})
  }

  async instance(id: string, signal?: AbortSignal): Promise<OrthancResource | undefined> {
    return this.resource('instance', id, signal)
  }

  /** One page of the change log after `since`, checked for the shape Orthanc gives it. */
  async changes(since: number, limit = CHANGES_PAGE, signal?: AbortSignal): Promise<OrthancChangesPage> {
    const path = `/changes?since=${since}&limit=${limit}`
    return this.answer<OrthancChangesPage>('GET', path, shapes.changesPage, {signal})
  }

  /**
   * Every change after `since`, page by page; the generator returns the last sequence number. A
   * page that says more follow must move past the cursor: a log that does not would be asked
   * for the same page forever.
   */
  async *changesSince(since: number, signal?: AbortSignal): AsyncGenerator<OrthancChange, number> {
    let cursor = since
    for (;;) {
      const page = await this.changes(cursor, CHANGES_PAGE, signal)
      yield* page.Changes
      if (page.Done || page.Changes.length === 0) return Math.max(cursor, page.Last)
      if (page.Last <= cursor) throw this.unexpectedAnswer('GET', `/changes?since=${cursor}&limit=${CHANGES_PAGE}`, `the change log says more follow, but does not move past ${cursor}`)
      cursor = page.Last
    }
  }

  /**
   * Where the change log stands: its newest change, or past it the counter Orthanc numbers changes
   * from, which it answers as Last when nothing follows `cursor` (SQLite and the PostgreSQL plugins
   * alike). Deleting a resource takes its changes out of the log (the newest one too) but never the
   * counter back: only a log begun again (another server, one restored from a backup, one moved
   * onto a new database) stands before a cursor it gave.
   */
  async logHead(cursor: number, signal?: AbortSignal): Promise<number> {
    const [newest, after] = await Promise.all([this.lastChange(signal), cursor > 0 ? this.changes(cursor, 1, signal) : undefined])
    return Math.max(newest, after?.Last ?? 0)
  }

  /** The newest change sequence number: where an incremental run will start next time. */
  async lastChange(signal?: AbortSignal): Promise<number> {
    return (await this.answer<OrthancChangesPage>('GET', '/changes?last', shapes.lastChange, {signal})).Last
  }

  /** An answer Orthanc does not give: the server, or something before it, is broken. */
  private unexpectedAnswer(method: string, path: string, why: string): OrthancHttpError {
    return new OrthancHttpError(this.display, method, path, 200, `${why}: not an answer Orthanc gives`)
  }

  /** A JSON answer, checked to have the shape Orthanc gives it (see answer-shapes.ts). */
  private async answer<T>(method: string, path: string, shape: shapes.Shape, options: RequestOptions): Promise<T> {
    const value = await this.http.json<unknown>(method, path, options)
    const problem = shape(value)
    if (problem) throw this.unexpectedAnswer(method, path, problem)
    return value as T
  }

  /**
   * Size and MD5 of an instance's stored DICOM file, without downloading it. Uses
   * attachments/dicom/info (1.10.0+) and falls back to the older per-field routes.
   */
  async storedFileInfo(id: string, signal?: AbortSignal): Promise<StoredFileInfo | undefined> {
    const base = `/instances/${id}/attachments/dicom`
    if ((await this.features(signal)).attachmentInfo) {
      let info: OrthancAttachmentInfo
      try {
        info = await this.answer<OrthancAttachmentInfo>('GET', `${base}/info`, shapes.attachmentInfo, {signal})
      } catch (error) {
        if (!(error instanceof OrthancHttpError && error.status === 404)) throw error
        await this.confirmAbsent(error, 'instance', id, signal)
        return undefined
      }

      return {size: info.UncompressedSize, md5: info.UncompressedMD5, compressed: info.CompressedSize !== info.UncompressedSize || info.CompressedMD5 !== info.UncompressedMD5}
    }

    const [known, compressed] = await Promise.all([this.attachmentSizeAndMd5('instance', id, 'dicom', signal), this.getOptionalText(`${base}/is-compressed`, signal)])
    return known && {...known, compressed: compressed?.trim() === '1'}
  }

  /**
   * The MD5 of an instance's file on this server: the one it recorded, or, on a server that
   * records none (StoreMD5ForAttachments off), that of its bytes read back. Undefined when the
   * instance is not there.
   */
  async fileMd5(id: string, signal?: AbortSignal): Promise<string | undefined> {
    const info = await this.storedFileInfo(id, signal)
    if (!info || info.md5 !== '') return info?.md5
    const handedBack = await this.handBack(id, signal, info.size)
    if (handedBack === 'gone') return undefined
    // Listed, and its file not handed back: the target keeps no files, which no MD5 says here.
    if (handedBack === 'missing') throw filesNotKept(this.display, id)
    return createHash('md5').update(handedBack).digest('hex')
  }

  /** Size and MD5 of an attachment from the routes every version has (/info came with 1.10.0); undefined when it is not there. */
  async attachmentSizeAndMd5(level: ResourceLevel, id: string, name: string, signal?: AbortSignal): Promise<{size: number; md5: string} | undefined> {
    const base = `${resourcePath(level, id)}/attachments/${encodeURIComponent(name)}`
    const [md5, size] = await Promise.all([this.getOptionalText(`${base}/md5`, signal), this.getOptionalText(`${base}/size`, signal)])
    if (md5 === undefined || size === undefined) return undefined
    const known = {size: /^\d+$/.test(size.trim()) ? Number(size.trim()) : Number.NaN, md5: md5.trim()}
    const sizeProblem = shapes.count(known.size)
    if (sizeProblem) throw this.unexpectedAnswer('GET', `${base}/size`, sizeProblem)
    const md5Problem = shapes.md5OrNone(known.md5)
    if (md5Problem) throw this.unexpectedAnswer('GET', `${base}/md5`, md5Problem)
    return known
  }

  /**
   * The exact stored DICOM bytes. No Accept-Encoding is sent: Orthanc would otherwise gzip
   * every file in memory on the fly.
   */
  async downloadInstance(id: string, signal?: AbortSignal, expectedBytes?: number): Promise<InstanceDownload> {
    const response = await this.http.bytes('GET', `/instances/${id}/attachments/dicom/data`, {signal, paced: true, maxBytes: downloadLimit(expectedBytes)})
    const etag = response.headers.etag
    const announcedMd5 = typeof etag === 'string' ? /"?\d+-([0-9a-f]{32})"?/i.exec(etag)?.[1]?.toLowerCase() : undefined
    return {bytes: response.body, announcedMd5}
  }

  /**
   * Whether the server hands back the stored file of an instance it lists, with the MD5 it
   * recorded for it: one with StoreDicom false (or whose storage lost its files) records the MD5
   * of every file it is sent and keeps none. 'gone': the instance itself is no longer there
   * (deleted meanwhile, or recycled), which says nothing of the files.
   */
  async fileKept(id: string, md5: string, signal?: AbortSignal): Promise<'kept' | 'missing' | 'other-bytes' | 'gone'> {
    const handedBack = await this.handBack(id, signal)
    if (typeof handedBack === 'string') return handedBack
    // '': the target records no MD5 (StoreMD5ForAttachments off): only whether it hands the file back is asked.
    return md5 === '' || createHash('md5').update(handedBack).digest('hex') === md5 ? 'kept' : 'other-bytes'
  }

  /** The instance's stored file; 'missing' when the instance is listed and its file is not handed back, 'gone' when the instance is not there. */
  private async handBack(id: string, signal?: AbortSignal, expectedBytes?: number): Promise<Buffer | 'missing' | 'gone'> {
    try {
      return (await this.downloadInstance(id, signal, expectedBytes)).bytes
    } catch (error) {
      // Orthanc's own "unknown resource" only: a proxy before it refusing the route says nothing of the files.
      if (!(error instanceof OrthancHttpError && error.status === 404 && error.orthancStatus === UNKNOWN_RESOURCE)) throw error
      return (await this.resource('instance', id, signal)) === undefined ? 'gone' : 'missing'
    }
  }

  /**
   * POST /instances. Storing the same file twice is harmless in Orthanc, so the upload is
   * retried like an idempotent request, from a body that can be produced again.
   */
  async uploadInstance(body: ReplayableBody, signal?: AbortSignal): Promise<OrthancUploadAnswer> {
    const answer = await this.answer<OrthancUploadAnswer>('POST', '/instances', shapes.uploadAnswer, {
      body,
      headers: {'content-type': 'application/dicom'},
      idempotent: true,
      paced: true,
      signal,
    })
    if (answer.Status !== 'Success' && answer.Status !== 'AlreadyStored') throw new UploadRejectedError(this.display, answer.Status)
    return answer
  }

  /**
   * POST /instances with a ZIP of DICOM files (Orthanc 1.8.2+): one answer per file it stored,
   * in the ZIP's order (what it cannot read it passes over: count the answers). Sent again on a
   * retry like a single upload, which is as harmless.
   */
  async uploadZip(zip: Buffer, signal?: AbortSignal): Promise<OrthancUploadAnswer[]> {
    const answer = await this.answer<OrthancUploadAnswer[] | OrthancUploadAnswer>('POST', '/instances', (value) => (Array.isArray(value) ? shapes.uploadAnswers : shapes.uploadAnswer)(value), {
      body: zip,
      headers: {'content-type': 'application/zip'},
      idempotent: true,
      paced: true,
      signal,
    })
    return Array.isArray(answer) ? answer : [answer]
  }

  /**
   * Deletes an instance; answers the nearest parent still standing ('series', 'study', 'patient'),
   * or undefined when Orthanc deleted them all with it (it deletes a parent with its last child).
   */
  async deleteInstance(id: string, signal?: AbortSignal): Promise<ResourceLevel | undefined> {
    const answer = await this.answer<{RemainingAncestor: {Type: 'Series' | 'Study' | 'Patient'} | null}>('DELETE', `/instances/${id}`, shapes.deletionAnswer, {signal})
    const type = answer.RemainingAncestor?.Type
    return type === undefined ? undefined : type === 'Series' ? 'series' : type === 'Study' ? 'study' : 'patient'
  }

  /** All metadata of a resource, system and user, by name (unnamed user metadata by number). */
  async resourceMetadata(level: ResourceLevel, id: string, signal?: AbortSignal): Promise<Record<string, string>> {
    return this.answer<Record<string, string>>('GET', `${resourcePath(level, id)}/metadata?expand`, shapes.metadata, {signal})
  }

  async instanceMetadata(id: string, signal?: AbortSignal): Promise<Record<string, string>> {
    return this.resourceMetadata('instance', id, signal)
  }

  /**
   * Metadata (and, on 1.12, labels) of many instances in one request: POST /tools/bulk-content
   * only reads, so it is retried like a GET. IDs the server does not know are left out of the
   * map. Undefined when the server cannot answer that way (no such route, or no metadata in its
   * answer): ask per instance instead.
   */
  instancesSideData(ids: string[], signal?: AbortSignal): Promise<Map<string, BulkSideData> | undefined> {
    return this.resourcesSideData('instance', ids, signal)
  }

  /** The same for resources of any level (`ids` of that level); a study's answer names its patient. */
  async resourcesSideData(level: ResourceLevel, ids: string[], signal?: AbortSignal): Promise<Map<string, BulkSideData> | undefined> {
    if (this.noBulkMetadata || ids.length === 0) return undefined
    let answer: Array<{ID: string; Metadata?: Record<string, string>; Labels?: string[]; ParentPatient?: string}>
    try {
      answer = await this.answer('POST', '/tools/bulk-content', shapes.bulkEntries, {
        body: JSON.stringify({Resources: ids, Level: BULK_LEVELS[level], Metadata: true}),
        headers: {'content-type': 'application/json'},
        idempotent: true,
        signal,
      })
    } catch (error) {
      if (!(error instanceof OrthancHttpError && [400, 404, 405].includes(error.status))) throw error
      this.noBulkMetadata = true
      return undefined
    }

    const found = new Map<string, BulkSideData>()
    for (const entry of answer) {
      if (!entry.Metadata) {
        this.noBulkMetadata = true
        return undefined
      }

      found.set(entry.ID, {
        metadata: entry.Metadata,
        ...(entry.Labels ? {labels: entry.Labels} : {}),
        ...(entry.ParentPatient ? {parentPatient: entry.ParentPatient} : {}),
      })
    }

    return found
  }

  /** The metadata alone of many instances in one request; see instancesSideData. */
  async instancesMetadata(ids: string[], signal?: AbortSignal): Promise<Map<string, Record<string, string>> | undefined> {
    const found = await this.instancesSideData(ids, signal)
    return found && new Map([...found].map(([id, entry]) => [id, entry.metadata]))
  }

  async setResourceMetadata(level: ResourceLevel, id: string, name: string, value: string, signal?: AbortSignal): Promise<void> {
    await this.http.send('PUT', `${resourcePath(level, id)}/metadata/${encodeURIComponent(name)}`, {body: value, signal})
  }

  /**
   * The metadata, attachments and labels of every instance of a study in one request, where the
   * server can: Orthanc 1.12.5 and later answer /tools/find's ResponseContent. Older servers
   * ignore ResponseContent and ParentStudy without a word (1.10.1 answers bare IDs), so the
   * query also names the StudyInstanceUID, which they do honour, and the answer's shape decides:
   * undefined (ask per instance) when it is not what was asked for, and never again. Instances
   * not in the map (a server that limits its answers) are asked about one by one too.
   */
  async studySideData(studyId: string, studyInstanceUid: string, signal?: AbortSignal): Promise<Map<string, FoundSideData> | undefined> {
    if (this.noFindSideData) return undefined
    if (!versionAtLeast((await this.system(signal)).Version, '1.12.0')) {
      this.noFindSideData = true
      return undefined
    }

    let answer: unknown
    try {
      answer = await this.http.json('POST', '/tools/find', {
        body: JSON.stringify({Level: 'Instance', ParentStudy: studyId, Query: {StudyInstanceUID: studyInstanceUid}, ResponseContent: ['Attachments', 'Metadata', 'Labels']}),
        headers: {'content-type': 'application/json'},
        idempotent: true,
        signal,
      })
    } catch (error) {
      if (!(error instanceof OrthancHttpError && [400, 404, 405].includes(error.status))) throw error
      this.noFindSideData = true
      return undefined
    }

    const found = new Map<string, FoundSideData>()
    for (const entry of Array.isArray(answer) ? answer as unknown[] : [undefined]) {
      if (foundSideDataShape(entry) !== undefined) {
        this.noFindSideData = true
        return undefined
      }

      const {ID, Metadata, Attachments, Labels} = entry as {ID: string; Metadata: Record<string, string>; Attachments: OrthancAttachmentInfo[]; Labels: string[]}
      found.set(ID, {metadata: Metadata, attachments: Attachments, labels: Labels})
    }

    return found
  }

  async setInstanceMetadata(id: string, name: string, value: string, signal?: AbortSignal): Promise<void> {
    await this.setResourceMetadata('instance', id, name, value, signal)
  }

  /** Attachment names of a resource: 'dicom' (instances), Orthanc's own, and user ones (by name or number). */
  async resourceAttachments(level: ResourceLevel, id: string, signal?: AbortSignal): Promise<string[]> {
    return this.answer<string[]>('GET', `${resourcePath(level, id)}/attachments`, shapes.texts, {signal})
  }

  async listAttachments(id: string, signal?: AbortSignal): Promise<string[]> {
    return this.resourceAttachments('instance', id, signal)
  }

  /** Size, MD5 and content type number of one attachment (1.10.0+; undefined before, or when absent). */
  async resourceAttachmentInfo(level: ResourceLevel, id: string, name: string, signal?: AbortSignal): Promise<OrthancAttachmentInfo | undefined> {
    if (!(await this.features(signal)).attachmentInfo) return undefined
    return this.getOptional<OrthancAttachmentInfo>(`${resourcePath(level, id)}/attachments/${encodeURIComponent(name)}/info`, shapes.attachmentInfo, signal)
  }

  async attachmentInfo(id: string, name: string, signal?: AbortSignal): Promise<OrthancAttachmentInfo | undefined> {
    return this.resourceAttachmentInfo('instance', id, name, signal)
  }

  async resourceAttachmentData(level: ResourceLevel, id: string, name: string, signal?: AbortSignal, expectedBytes?: number): Promise<Buffer> {
    return (await this.http.bytes('GET', `${resourcePath(level, id)}/attachments/${encodeURIComponent(name)}/data`, {signal, paced: true, maxBytes: downloadLimit(expectedBytes)})).body
  }

  async attachmentData(id: string, name: string, signal?: AbortSignal, expectedBytes?: number): Promise<Buffer> {
    return this.resourceAttachmentData('instance', id, name, signal, expectedBytes)
  }

  async putResourceAttachment(level: ResourceLevel, id: string, name: string, data: Buffer, signal?: AbortSignal): Promise<void> {
    await this.http.send('PUT', `${resourcePath(level, id)}/attachments/${encodeURIComponent(name)}`, {
      body: data,
      headers: {'content-type': 'application/octet-stream'},
      paced: true,
      signal,
    })
  }

  async putAttachment(id: string, name: string, data: Buffer, signal?: AbortSignal): Promise<void> {
    await this.putResourceAttachment('instance', id, name, data, signal)
  }

  /** Labels of a resource; none on a server older than 1.12, which has no labels. */
  /**
   * Whether a patient is protected from recycling (MaximumPatientCount, MaximumStorageSize): a
   * patient that loses it on a new server may be the next one that server deletes to make room.
   * No answer about a patient names it (1.10.1, 1.12.7): one request each.
   */
  async patientProtected(id: string, signal?: AbortSignal): Promise<boolean> {
    const path = `/patients/${id}/protected`
    const answer = (await this.http.text('GET', path, {signal})).trim()
    if (answer !== '0' && answer !== '1') throw this.unexpectedAnswer('GET', path, `${JSON.stringify(answer.slice(0, 20))} is neither 0 nor 1`)
    return answer === '1'
  }

  async protectPatient(id: string, signal?: AbortSignal): Promise<void> {
    await this.http.send('PUT', `/patients/${id}/protected`, {body: '1', signal})
  }

  async resourceLabels(level: ResourceLevel, id: string, signal?: AbortSignal): Promise<string[]> {
    if (!(await this.features(signal)).labels) return []
    return this.answer<string[]>('GET', `${resourcePath(level, id)}/labels`, shapes.texts, {signal})
  }

  async instanceLabels(id: string, signal?: AbortSignal): Promise<string[]> {
    return this.resourceLabels('instance', id, signal)
  }

  async addResourceLabel(level: ResourceLevel, id: string, label: string, signal?: AbortSignal): Promise<void> {
    await this.http.send('PUT', `${resourcePath(level, id)}/labels/${encodeURIComponent(label)}`, {body: '', signal})
  }

  async addInstanceLabel(id: string, label: string, signal?: AbortSignal): Promise<void> {
    await this.addResourceLabel('instance', id, label, signal)
  }

  /** The patient a study belongs to on this server; undefined when the study is not there. */
  async patientOfStudy(studyId: string, signal?: AbortSignal): Promise<string | undefined> {
    return (await this.study(studyId, signal))?.ParentPatient
  }

  /** Whether the server stores files compressed, read from the first instance (none: unknown). */
  async storageCompression(signal?: AbortSignal): Promise<boolean | undefined> {
    const stats = await this.statistics(signal)
    if (stats.CountInstances === 0) return undefined
    for await (const id of this.listInstanceIds(signal)) {
      const info = await this.storedFileInfo(id, signal)
      if (info) return info.compressed
    }

    return undefined
  }

  async close(): Promise<void> {
    await this.http.close()
  }

  private async getOptional<T>(path: string, shape: shapes.Shape, signal?: AbortSignal): Promise<T | undefined> {
    try {
      return await this.answer<T>('GET', path, shape, {signal})
    } catch (error) {
      if (error instanceof OrthancHttpError && error.status === 404) return undefined
      throw error
    }
  }

  private async getOptionalText(path: string, signal?: AbortSignal): Promise<string | undefined> {
    try {
      return await this.http.text('GET', path, {signal})
    } catch (error) {
      if (error instanceof OrthancHttpError && error.status === 404) return undefined
      throw error
    }
  }

  /**
   * The entries of a streamed JSON list, each checked for its shape. Memory stays bounded on any
   * answer: an entry may not take more than LISTED_ENTRY_BYTES, and a long list is held to the
   * server's own count of what it lists (`counted`), asked once the list is long.
   */
  private async *streamJsonArray<T>(path: string, shape: shapes.Shape, counted: 'CountInstances' | 'CountStudies', signal?: AbortSignal): AsyncGenerator<T> {
    const response = await this.http.stream('GET', path, {signal})
    let sinceLastEntry = 0
    const items = response.body.pipe(streamArray.withParserAsStream())
    response.body.on('data', (chunk: Buffer) => {
      sinceLastEntry += chunk.length
      if (sinceLastEntry > LISTED_ENTRY_BYTES) items.destroy(this.unexpectedAnswer('GET', path, `an entry larger than ${LISTED_ENTRY_BYTES} bytes`))
    })
    response.body.on('error', (error) => items.destroy(error))
    let count = 0
    let most = LISTED_BEFORE_COUNTING
    let countAsked = false
    try {
      for await (const item of items as AsyncIterable<{value: unknown}>) {
        sinceLastEntry = 0
        const problem = shape(item.value)
        if (problem) throw this.unexpectedAnswer('GET', path, `[${count}]: ${problem}`)
        if (++count > most && !countAsked) {
          countAsked = true
          most = Math.max(most, listedAtMost((await this.statistics(signal))[counted]))
        }

        if (count > most) throw this.unexpectedAnswer('GET', path, `more than ${most} entries, far more than the server's own count`)
        yield item.value as T
      }
    } catch (error) {
      if (error instanceof OrthancError) throw error
      throw new OrthancHttpError(this.display, 'GET', path, response.statusCode, `listing broke off: ${(error as Error).message}`)
    } finally {
      response.body.destroy()
      items.destroy()
    }
  }
}

/** The largest entry a streamed list may hold: a study's expanded answer is a few kB. */
const LISTED_ENTRY_BYTES = 8 * 1024 * 1024

/** Entries of a streamed list read before the server's count is asked: most lists end sooner, and need no request more. */
const LISTED_BEFORE_COUNTING = 100_000

/**
 * How many entries a streamed list may hold, from the server's count: twice that and 10,000
 * more, for what is stored while it is listed.
 */
function listedAtMost(counted: number): number {
  return counted * 2 + 10_000
}

/** A /tools/find entry that answers ResponseContent: anything else means the server does not (see studySideData). */
const foundSideDataShape = shapes.objectWith({ID: shapes.orthancId, Metadata: shapes.metadata, Attachments: shapes.listOf(shapes.attachmentInfo), Labels: shapes.texts})

/**
 * How much a download may bring: twice the size the server gave for it, and a MiB (it may have
 * been stored again since it was listed), or, when no size is known, the largest buffer Node
 * holds. A server that sends more fails the request instead of filling the memory.
 */
function downloadLimit(expectedBytes: number | undefined): number {
  const largest = bufferConstants.MAX_LENGTH
  return isCount(expectedBytes) && expectedBytes > 0 ? Math.min(largest, expectedBytes * 2 + 1024 * 1024) : largest
}
