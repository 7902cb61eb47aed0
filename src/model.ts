/**
 * The data model every job shares: what an instance is, what travels with it, and which
 * instances a job selects. Sources produce it, sinks consume it, the archive format records it.
 */

/** The four levels of Orthanc's resources. */
export type ResourceLevel = 'patient' | 'study' | 'series' | 'instance'

/** A user attachment of a resource (content type 1024 and above). */
export interface AttachmentRecord {
  /** The name the source lists it under: a declared UserContentType name, or its number. */
  name: string
  contentType: number
  size: number
  md5: string
  /** Path of its payload file, relative to the bag root. */
  path: string
}

/** Which instance: its Orthanc IDs and DICOM UIDs. */
export interface InstanceIdentity {
  id: string
  studyId: string
  seriesId: string
  studyInstanceUid: string
  seriesInstanceUid: string
  sopInstanceUid: string
}

/** What Orthanc keeps beside a resource: metadata, user attachments, labels. */
export interface SideData {
  /** Metadata a target can take back: index >= 1024 or names declared in UserMetadata. */
  userMetadata: Record<string, string>
  /** Orthanc's own metadata (ReceptionDate, RemoteAET, LastUpdate...): recorded, not restorable. */
  systemMetadata: Record<string, string>
  attachments: AttachmentRecord[]
  /** Orthanc 1.12 and later; empty otherwise. */
  labels: string[]
  /** A patient protected from recycling on its server (PUT /patients/{id}/protected): patients only. */
  protected?: true
}

/** One instance as an archive describes it. Nothing in it names or identifies the patient. */
export interface InstanceRecord extends InstanceIdentity, SideData {
  /** Size and MD5 of the DICOM file as the source stores it. */
  size: number
  md5: string
  /** Path of the .dcm payload file, relative to the bag root. */
  path: string
}

/**
 * The side data of a patient, study or series that instances belong to. A patient is named
 * through one of its studies: its own Orthanc ID is a hash of the PatientID alone, which can
 * be guessed back, so it is written nowhere.
 */
export interface ResourceRecord extends SideData {
  level: 'patient' | 'study' | 'series'
  /** The study: the resource itself, the series' study, or a study of the patient. */
  study: string
  /** The series' Orthanc ID, for a series. */
  series?: string
}

/** What identifies a resource record within a run: its level and the IDs that name it. */
export function resourceKey(record: Pick<ResourceRecord, 'level' | 'study' | 'series'>): string {
  return record.level === 'series' ? `series:${record.series}` : `${record.level}:${record.study}`
}

export function hasUserSideData(data: SideData): boolean {
  return Object.keys(data.userMetadata).length > 0 || data.attachments.length > 0 || data.labels.length > 0 || data.protected === true
}

/**
 * A server as every summary names it (`source`, `target`, `server`): its URL, never with
 * credentials, and its name and version as it answered them.
 */
export interface Endpoint {
  url: string
  name?: string
  version?: string
}

export interface SourceIdentity {
  server: string
  name: string
  version: string
  databaseBackend: string
  storageBackend: string
}

/** One earlier step the data went through, oldest first. */
export interface Hop {
  group: string
  source: SourceIdentity
  exportedAt: string
}

export interface StudyExpectation {
  studyInstanceUid: string
  /** Instances of this study the export selected, across all volumes. */
  expectedInstances: number
  /** Instances of this study on the source at planning time (more when filters left some out). */
  instancesOnSource: number
  /**
   * Instances of this study the filters selected and the export left out as the far side's
   * already (--since, --exclude-receipt), when the export has filters (format 5): there
   * instancesOnSource cannot tell them from those the filters left out.
   */
  farSideInstances?: number
}

/** Which instances a job takes: kinds narrow together, several values of one kind widen. */
export interface InstanceFilters {
  patientIds?: string[]
  studyInstanceUids?: string[]
  orthancIds?: string[]
  studyDateFrom?: string
  studyDateTo?: string
  modalities?: string[]
  labels?: string[]
  /** One deterministic part of the studies, for splitting a job across machines: part `index` of `count` (1-based). */
  shard?: {index: number; count: number}
}


/**
 * One instance on its way to a target, whatever it came from: an archive entry, a file of a
 * DICOM folder, a file of an Orthanc storage folder, another server. Its bytes are already read
 * and checked against what the source promised.
 */
export interface InstanceInTransit {
  /** Names where the instance comes from in reports: an archive entry, a file path. */
  label: string
  /** The Orthanc ID the target will give it, as far as the source can tell before the upload. */
  instanceId: string
  /** The Orthanc ID of its study, so a target can be asked about a whole study at once. */
  studyId?: string
  /** From an archive: the export (its volumes' group) it came in. */
  group?: string
  dicom: Buffer
  /** MD5 of `dicom`: the manifest's for archives (already checked), computed for folders. */
  md5: string
  /** The Orthanc-side data (user metadata, attachments, labels) to restore, when the source has it. */
  record?: InstanceRecord
  /** User attachment bytes by content type, checked against the record. */
  attachments?: Map<number, Buffer>
  /**
   * User attachments the record lists that the source could not deliver, by content type, with
   * why: the instance is stored without them and counted as failed (AttachmentsNotRestoredError).
   */
  missingAttachments?: Map<number, string>
  /**
   * Side data of the instance's patient, study and series, when the source has it: restored once
   * per resource and run, after the first of its instances is on the target. A server source may
   * still be reading it while the instance is uploaded.
   */
  resources?: ResourceInTransit[] | Promise<ResourceInTransit[]>
  /**
   * Another copy of this instance met earlier in the same job (two exports holding it, a folder
   * given twice): that copy's MD5. The run counts the instance once, and a dry run predicts this
   * copy against what the earlier one would have left on the target.
   */
  earlierCopy?: string
}

/** Whether the unit brings the bytes of every user attachment its record lists (a refused one does not come). */
export function hasEveryAttachment(unit: Pick<InstanceInTransit, 'record' | 'attachments'>): boolean {
  return (unit.record?.attachments ?? []).every((attachment) => unit.attachments?.has(attachment.contentType))
}

export interface ResourceInTransit {
  record: ResourceRecord
  /** Its user attachments' bytes by content type, checked against the record (or read from the source when needed). */
  attachments: AttachmentBytes
}

/** Attachment bytes by content type: at hand (an archive), or read from a source and checked when a target needs them. */
export type AttachmentBytes = Map<number, Buffer> | ((contentType: number) => Promise<Buffer | undefined>)
