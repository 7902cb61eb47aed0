import {readDicomIdentifiers} from '../dicom/parse.js'
import type {AttachmentRecord, InstanceInTransit, InstanceRecord, ResourceInTransit, ResourceRecord} from '../model.js'
import type {ProblemKind} from '../problems.js'
import {type SourceEvents, reportFailure} from '../sources/source-events.js'
import {studyIdOf} from '../sources/dicom-folder.js'
import {decodeStoredBytes, ORPHAN_HEADER_REASON} from '../sources/storage-folder.js'
import type {AttachmentStore} from './attachment-store.js'
import {DICOM_CONTENT_TYPE, FIRST_USER_CONTENT_TYPE, FIRST_USER_METADATA_TYPE, type IndexedAttachment, type IndexedInstance, type OrthancIndex, type ResourceSideData} from './index-model.js'
import {md5Hex, type OpenedAttachment, openStoredAttachment} from './stored-attachment.js'

/** What the recovery of one stopped server found and did; the import summary carries one per server. */
export interface RecoveryReport {
  /** How instances were found: from the server's SQLite index, from its PostgreSQL database, or file by file without an index. */
  route: 'sqlite-index' | 'postgresql' | 'storage-folder-without-index'
  /** The storage folder, or the database (URL without its password). */
  source: string
  /** The index read, when there was one. */
  index?: {source: string; schema: string}
  /** Instances the index lists (and the unindexed ones --include-unindexed imports); without an index, the instances found among the storage files. */
  candidates: number
  /** Of those, now on the target, transferred or already there (in a dry run: that would be). */
  recovered: number
  /** Of those, not recovered: stored file missing or damaged, or refused by the target (each listed in failures). */
  failed: number
  /** User attachments of recovered instances that are missing or damaged in storage (each listed in failures). */
  attachmentsFailed: number
  /** Stored files (or large objects) the index does not know: listed as ignored, kind not-in-index. */
  notInIndex: number
  /**
   * Of those, whole DICOM instances the index does not list at all (not another copy of one it
   * lists): an instance deleted whose file outlived it, or one the index never saw because it is
   * older than the storage (a lost index-wal, a backup). Not recovered without --include-unindexed.
   */
  unindexedInstances: number
  /**
   * Of those, the ones stored after every instance the index lists and after the index itself was
   * last written (by the files' modification times): the index is older than the storage, so they
   * are failed, not passed over, unless --include-unindexed imports them. A deleted instance's
   * leftover is older than the index that recorded its deletion.
   */
  unindexedAfterIndex: number
  /**
   * Of them, those whose time says nothing: the stored files' times were not kept (most files of
   * the instances the index lists were written days after their reception), so a deleted one's
   * leftover and one the index never saw look alike. Failed, as those stored after the index are.
   */
  unindexedUndated: number
  /** Set when the stored files' times were judged not kept. */
  fileTimesNotKept?: true
  /**
   * Other copies, with other bytes, of an instance already taken (from this server or another input
   * of the import): left out and named in the failures (kind contradiction). Without an index they
   * are files, not counted among the candidates; from an index, instances it lists, counted failed.
   */
  contradictions: number
  /** Files checked by size only: the server ran with StoreMD5ForAttachments off, so the index has no MD5s. */
  checkedBySizeOnly: number
  /**
   * User metadata, user attachments and labels of patients, studies and series, read from the
   * index and restored on the target with the first of their instances (what a target cannot
   * take is in the import summary's notCarried).
   */
  resourceSideData: {resources: number; userMetadata: number; attachments: number; labels: number; protectedPatients: number}
}

export function emptyRecoveryReport(route: RecoveryReport['route'], source: string): RecoveryReport {
  return {route, source, candidates: 0, recovered: 0, failed: 0, attachmentsFailed: 0, notInIndex: 0, unindexedInstances: 0, unindexedAfterIndex: 0, unindexedUndated: 0, contradictions: 0, checkedBySizeOnly: 0, resourceSideData: {resources: 0, userMetadata: 0, attachments: 0, labels: 0, protectedPatients: 0}}
}

export interface IndexRecoveryOptions {
  /** Also import stored files the index does not know, when they are DICOM. */
  includeUnindexed: boolean
  signal?: AbortSignal
}

/** A stored file or large object the index does not know. */
export interface UnindexedEntry {
  location: string
  read(): Promise<Buffer | undefined>
  /** Its size in bytes, where the storage says it without reading it. */
  size?(): Promise<number | undefined>
  /** When it was last written (ms since the epoch), where the storage keeps such times (files do; large objects do not). */
  modifiedAt?(): Promise<number | undefined>
}

/** A storage area that can also list what it holds beyond the index. */
export interface RecoveryStore extends AttachmentStore {
  unindexed(index: OrthancIndex, events: SourceEvents, signal?: AbortSignal): AsyncGenerator<UnindexedEntry>
}

/** The most read of a file the index does not list, without --include-unindexed, to say what it is. */
const CLASSIFIED_BYTES = 64 * 1024 * 1024
const TOO_LARGE_TO_CLASSIFY = `larger than ${CLASSIFIED_BYTES} bytes,`

export const NOT_IN_INDEX_REASON = 'stored file the index does not know (an instance deleted or overwritten, or a stranger): not imported without --include-unindexed'
const NOT_IN_INDEX_INSTANCE_REASON = 'a whole instance the index does not list (deleted, or stored after the index was last written: a lost index-wal, a backup): not imported without --include-unindexed'
const AFTER_INDEX_REASON = 'a whole instance the index does not list, stored after every instance it lists and after the index was last written: the index is older than the storage (a lost index-wal, an index from a backup), so this instance would be lost; --include-unindexed imports it'
const UNDATED = 'the stored files\' times do not tell when it was stored (most of them were written days after Orthanc received their instance: a copy that did not keep times, such as cp without -a, or files rewritten since, such as compressed later)'
const UNDATED_REASON = `a whole instance the index does not list, and ${UNDATED}: it may be a deleted instance's leftover, or one the index never saw, which would be lost; if the disk was copied, copy it again keeping times (cp -a, rsync -a), or --include-unindexed imports it`
/** A stored file written this long after Orthanc received its instance was not written by Orthanc then: its time was not kept. */
const TIME_NOT_KEPT_MS = 2 * 86_400_000
/** What a stored file read only to be counted says of itself: nothing. */
const QUIET: SourceEvents = {onSkip() {}, onProblem() {}, onFailed() {}}

/**
 * Recovers exactly the instances the index of a stopped server lists, each from its stored DICOM
 * file (found by attachment UUID) after checking that file against the size and MD5 the index
 * recorded, with its user metadata, user attachments (checked the same way) and labels. An
 * instance whose file is missing or damaged is named as failed; a user attachment that is, too,
 * while its instance goes on. Then every stored file the index does not know is named and counted
 * (imported only when asked), and the side data of patients, studies and series is counted.
 */
export async function* recoverFromIndex(
  index: OrthancIndex, store: RecoveryStore, events: SourceEvents, report: RecoveryReport, options: IndexRecoveryOptions,
): AsyncGenerator<InstanceInTransit> {
  report.index = {source: index.description.source, schema: index.description.schema}
  report.candidates += index.description.instances
  // Patients, studies and series with side data: few, read first, and restored with their first instance.
  const resources = new Map<string, ResourceSideData>()
  for await (const resource of index.resourceSideData(options.signal)) {
    const counts = report.resourceSideData
    counts.resources++
    counts.userMetadata += Object.keys(resource.userMetadata).length
    counts.attachments += resource.attachments.length
    counts.labels += resource.labels.length
    if (resource.protected) counts.protectedPatients++
    resources.set(resource.id, resource)
  }

  // The newest stored DICOM file among the instances the index lists: a whole instance it does not
  // list, written after that, is one it never saw, not the leftover of one it deleted. And how
  // many of those files were written when Orthanc received their instance: a copy that did not
  // keep times (cp without -a) makes every time its own, and then times tell nothing.
  const newest: FileTimes = {indexedFile: 0, dated: 0, late: 0}
  // A patient's, study's or series' damaged attachment is read again by each instance that carries
  // it (the next one tries again): named and counted once.
  const failedResourceFiles = new Set<string>()
  for await (const batch of index.instanceBatches(options.signal)) {
    for (const instance of batch) {
      const unit = await recoverInstance(instance, store, events, report, newest)
      if (unit === undefined) continue
      unit.resources = resourcesOf(instance, resources, store, events, report, failedResourceFiles)
      yield unit
    }
  }

  for await (const entry of store.unindexed(index, events, options.signal)) {
    report.notInIndex++
    // Without --include-unindexed a file is read only to say what it is: one too large for that
    // (a junk file of gigabytes would fill the memory) is named, and judged by its time alone.
    const size = options.includeUnindexed ? undefined : await entry.size?.()
    const timesKept = newest.late * 2 <= newest.dated
    if (!timesKept) report.fileTimesNotKept = true
    const storedAfterIndex = async () => {
      const modifiedAt = (await entry.modifiedAt?.()) ?? Number.NEGATIVE_INFINITY
      return modifiedAt > newest.indexedFile && modifiedAt > (index.description.lastWrittenAt ?? Number.NEGATIVE_INFINITY)
    }
    if (size !== undefined && size > CLASSIFIED_BYTES) {
      const after = timesKept && await storedAfterIndex()
      if (after || !timesKept) {
        report.failed++
        const when = after ? 'stored after every instance the index lists and after the index itself' : `and ${UNDATED}`
        reportFailure(events, {id: entry.location, kind: 'missing', reason: `${TOO_LARGE_TO_CLASSIFY} ${when}: it may be an instance the index never saw; --include-unindexed reads it and imports it if it is one`})
      } else events.onSkip({id: entry.location, kind: 'not-in-index', reason: `${NOT_IN_INDEX_REASON} (${TOO_LARGE_TO_CLASSIFY} not read)`})
      continue
    }

    // Read either way: without --include-unindexed, to say how many of them are whole instances.
    const bytes = await entry.read()
    const decoded = bytes === undefined ? undefined : decodeStoredBytes(entry.location, bytes, options.includeUnindexed ? events : QUIET)
    const whole = decoded !== undefined && (decoded.identifiers.hasPixelData || !decoded.identifiers.describesImage)
    // An older copy of an instance the index lists (left when it was overwritten): the index's is
    // the instance, and this one must not replace it on a target that overwrites.
    const copy = whole && await index.hasInstance(decoded.instanceId)
    if (whole && !copy) report.unindexedInstances++
    // Newer than every file the index lists and than the index itself: written after the index
    // last was (a lost WAL, an index from a backup). A leftover of the last instance deleted
    // before the server stopped is newer than the other files, but older than the index, which
    // recorded the deletion after it. Where the times were not kept, nothing tells the two apart.
    const undated = whole && !copy && !timesKept
    const afterIndex = whole && !copy && timesKept && await storedAfterIndex()
    if (afterIndex) report.unindexedAfterIndex++
    if (undated) report.unindexedUndated++
    if ((afterIndex || undated) && !options.includeUnindexed) {
      report.failed++
      reportFailure(events, {id: decoded.instanceId, path: entry.location, kind: 'missing', reason: afterIndex ? AFTER_INDEX_REASON : UNDATED_REASON})
      continue
    }
    if (!options.includeUnindexed) {
      events.onSkip({id: entry.location, kind: 'not-in-index', reason: whole && !copy ? NOT_IN_INDEX_INSTANCE_REASON : NOT_IN_INDEX_REASON})
      continue
    }
    if (decoded === undefined) continue
    if (!whole) {
      events.onSkip({id: entry.location, kind: 'header-only', reason: ORPHAN_HEADER_REASON})
      continue
    }
    if (copy) {
      events.onSkip({id: entry.location, kind: 'copy', reason: `another copy of instance ${decoded.instanceId}, which the index lists with its own file: not imported`})
      continue
    }
    // Imported: one more instance to recover, as those the index lists.
    report.candidates++
    yield {label: entry.location, instanceId: decoded.instanceId, studyId: studyIdOf(decoded.identifiers), dicom: decoded.dicom, md5: md5Hex(decoded.dicom)}
  }
}

/** What the stored files of the instances the index lists say of their times (see recoverFromIndex). */
interface FileTimes {
  indexedFile: number
  /** Files whose instance has a reception date. */
  dated: number
  /** Of those, files written long after it (TIME_NOT_KEPT_MS). */
  late: number
}

async function recoverInstance(instance: IndexedInstance, store: RecoveryStore, events: SourceEvents, report: RecoveryReport, newest: FileTimes): Promise<InstanceInTransit | undefined> {
  const fail = (kind: ProblemKind, reason: string, path?: string) => {
    report.failed++
    reportFailure(events, {id: instance.id, ...(path === undefined ? {} : {path}), kind, reason})
  }
  const dicomFile = instance.attachments.find((attachment) => attachment.contentType === DICOM_CONTENT_TYPE)
  if (dicomFile === undefined) {
    fail('missing', 'the index lists no DICOM file for this instance')
    return undefined
  }

  const dicom = await readChecked(store, dicomFile, report)
  if (!dicom.ok) {
    fail(dicom.kind, dicom.reason, store.locate(dicomFile.uuid))
    return undefined
  }
  newest.indexedFile = Math.max(newest.indexedFile, dicom.modifiedAt ?? 0)
  const received = receptionTime(instance.metadata.get(RECEPTION_DATE))
  if (dicom.modifiedAt !== undefined && received !== undefined) {
    newest.dated++
    if (dicom.modifiedAt - received > TIME_NOT_KEPT_MS) newest.late++
  }

  const attachments: AttachmentRecord[] = []
  const attachmentBytes = new Map<number, Buffer>()
  // An attachment whose stored file is missing or damaged stays in the record without bytes: the
  // instance is restored without it and counted as failed with this reason (one count, not two).
  const missingAttachments = new Map<number, string>()
  for (const attachment of instance.attachments.filter((candidate) => candidate.contentType >= FIRST_USER_CONTENT_TYPE)) {
    const content = await readChecked(store, attachment, report)
    // By number: the index knows no names, and a target that declares the type shows it under its own.
    const name = String(attachment.contentType)
    if (!content.ok) {
      report.attachmentsFailed++
      missingAttachments.set(attachment.contentType, `${content.reason}, ${store.locate(attachment.uuid)}`)
      attachments.push({name, contentType: attachment.contentType, size: attachment.uncompressedSize, md5: attachment.uncompressedMd5, path: ''})
      continue
    }
    attachments.push({name, contentType: attachment.contentType, size: content.bytes.length, md5: content.md5, path: ''})
    attachmentBytes.set(attachment.contentType, content.bytes)
  }

  const {userMetadata, systemMetadata} = splitIndexMetadata(instance.metadata)
  const uids = dicomUids(dicom.bytes)
  const record: InstanceRecord = {
    id: instance.id,
    studyId: instance.studyId,
    seriesId: instance.seriesId,
    ...uids,
    size: dicom.bytes.length,
    md5: dicom.md5,
    path: '',
    userMetadata,
    systemMetadata,
    attachments,
    labels: instance.labels,
  }
  return {
    label: store.locate(dicomFile.uuid), instanceId: instance.id, studyId: instance.studyId || undefined, dicom: dicom.bytes, md5: dicom.md5, record, attachments: attachmentBytes,
    ...(missingAttachments.size > 0 ? {missingAttachments} : {}),
  }
}

/** The side data of an instance's patient, study and series, as a sink restores it: attachments read from storage when needed, and checked. */
function resourcesOf(
  instance: IndexedInstance, resources: Map<string, ResourceSideData>, store: RecoveryStore, events: SourceEvents, report: RecoveryReport, failedFiles: Set<string>,
): ResourceInTransit[] {
  const found: ResourceInTransit[] = []
  for (const [id, key] of [[instance.patientId, {level: 'patient', study: instance.studyId}], [instance.studyId, {level: 'study', study: instance.studyId}], [instance.seriesId, {level: 'series', study: instance.studyId, series: instance.seriesId}]] as const) {
    const resource = resources.get(id)
    if (!resource) continue
    const record: ResourceRecord = {
      ...key,
      userMetadata: resource.userMetadata,
      systemMetadata: {},
      labels: resource.labels,
      // By number: the index knows no names.
      attachments: resource.attachments.map((attachment) => ({name: String(attachment.contentType), contentType: attachment.contentType, size: attachment.uncompressedSize, md5: attachment.uncompressedMd5, path: ''})),
      ...(resource.protected ? {protected: true as const} : {}),
    }
    found.push({
      record,
      async attachments(contentType) {
        const attachment = resource.attachments.find((candidate) => candidate.contentType === contentType)
        if (!attachment) return undefined
        const content = await readChecked(store, attachment, report)
        if (content.ok) return content.bytes
        if (failedFiles.has(attachment.uuid)) return undefined
        failedFiles.add(attachment.uuid)
        report.attachmentsFailed++
        // The patient by its study: a patient's Orthanc ID is a hash of the PatientID alone, written nowhere.
        const named = resource.level === 'patient' ? `patient of study ${instance.studyId}` : `${resource.level} ${resource.id}`
        reportFailure(events, {id: `${named} attachment ${contentType}`, path: store.locate(attachment.uuid), kind: content.kind, reason: `user attachment ${contentType} of the ${resource.level} not restored: ${content.reason}`})
        return undefined
      },
    })
  }

  return found
}

async function readChecked(store: AttachmentStore, attachment: IndexedAttachment, report: RecoveryReport): Promise<OpenedAttachment & {modifiedAt?: number}> {
  const read = await store.read(attachment.uuid, attachment.compressedSize)
  const opened = openStoredAttachment(read, attachment)
  if (opened.ok && !opened.checked) report.checkedBySizeOnly++
  return read.state === 'bytes' && read.modifiedAt !== undefined ? {...opened, modifiedAt: read.modifiedAt} : opened
}

// The index holds what Orthanc accepted, so the UIDs read back; a file Orthanc read but this
// reader cannot still goes to the target, which reads it the way it did before.
function dicomUids(bytes: Buffer): Pick<InstanceRecord, 'studyInstanceUid' | 'seriesInstanceUid' | 'sopInstanceUid'> {
  try {
    const identifiers = readDicomIdentifiers(bytes)
    return {studyInstanceUid: identifiers.studyInstanceUid, seriesInstanceUid: identifiers.seriesInstanceUid, sopInstanceUid: identifiers.sopInstanceUid}
  } catch {
    return {studyInstanceUid: '', seriesInstanceUid: '', sopInstanceUid: ''}
  }
}

/** Orthanc's own metadata types (MetadataType in ServerEnumerations.h), by the names its REST API shows. */
const SYSTEM_METADATA_NAMES = new Map<number, string>([
  [1, 'IndexInSeries'], [2, 'ReceptionDate'], [3, 'RemoteAET'], [4, 'ExpectedNumberOfInstances'], [5, 'ModifiedFrom'],
  [6, 'AnonymizedFrom'], [7, 'LastUpdate'], [8, 'Origin'], [9, 'TransferSyntax'], [10, 'SopClassUid'], [11, 'RemoteIP'],
  [12, 'CalledAET'], [13, 'HttpUsername'], [14, 'PixelDataOffset'], [15, 'MainDicomTagsSignature'], [16, 'MainDicomSequences'],
  [17, 'PixelDataVR'],
])

/** User metadata (types 1024 and above) by number, as a target takes them back; Orthanc's own by name, recorded only. */
export function splitIndexMetadata(metadata: Map<number, string>): Pick<InstanceRecord, 'userMetadata' | 'systemMetadata'> {
  const userMetadata: Record<string, string> = {}
  const systemMetadata: Record<string, string> = {}
  for (const [type, value] of metadata) {
    if (type >= FIRST_USER_METADATA_TYPE) userMetadata[String(type)] = value
    else systemMetadata[SYSTEM_METADATA_NAMES.get(type) ?? String(type)] = value
  }
  return {userMetadata, systemMetadata}
}

const RECEPTION_DATE = 2

/** Orthanc's ReceptionDate (`20240131T235959`, UTC) in ms since the epoch, if it reads as one. */
function receptionTime(value: string | undefined): number | undefined {
  const parts = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})/.exec(value ?? '')
  if (!parts) return undefined
  const [year, month, day, hour, minute, second] = parts.slice(1).map(Number) as [number, number, number, number, number, number]
  const time = Date.UTC(year, month - 1, day, hour, minute, second)
  return Number.isFinite(time) ? time : undefined
}
