/**
 * What the index of a stopped Orthanc says about its content, whatever database held it
 * (its own SQLite file, or PostgreSQL through the plugin). Names follow Orthanc's tables.
 */

export type ResourceLevel = 'patient' | 'study' | 'series' | 'instance'

/** Orthanc's own attachment types (FileContentType); user types start at 1024. */
export const DICOM_CONTENT_TYPE = 1
export const FIRST_USER_CONTENT_TYPE = 1024
/** Metadata types below this one are Orthanc's own (MetadataType); user types start here. */
export const FIRST_USER_METADATA_TYPE = 1024

/** How Orthanc stored a file (CompressionType): 1 as it is, 2 as an 8-byte little-endian size then a zlib stream. */
export const COMPRESSION_NONE = 1
export const COMPRESSION_ZLIB_WITH_SIZE = 2

/** One row of AttachedFiles. */
export interface IndexedAttachment {
  contentType: number
  uuid: string
  compression: number
  /** Size and MD5 of the bytes in the storage area. */
  compressedSize: number
  compressedMd5: string
  /** Size and MD5 of the content once inflated (equal to the above when stored as it is). */
  uncompressedSize: number
  /** '' when the server ran with StoreMD5ForAttachments off, for both MD5s. */
  uncompressedMd5: string
}

/** One instance with everything the index keeps beside it. */
export interface IndexedInstance {
  id: string
  seriesId: string
  studyId: string
  patientId: string
  attachments: IndexedAttachment[]
  /** Metadata by type number, system and user alike. */
  metadata: Map<number, string>
  /** Empty on schemas without labels (before Orthanc 1.12). */
  labels: string[]
}

/**
 * What a patient, study or series carries beside its instances. Restoring it on a target is
 * another job (resource-level side data); the recovery reads it so that nothing goes unseen.
 */
export interface ResourceSideData {
  level: Exclude<ResourceLevel, 'instance'>
  id: string
  /** User metadata (types 1024 and above) by type number. */
  userMetadata: Record<string, string>
  labels: string[]
  /** User attachments (types 1024 and above). */
  attachments: IndexedAttachment[]
  /** A patient protected from recycling. */
  protected?: true
}

export interface IndexDescription {
  /** Where the index was read: a file path, or a PostgreSQL URL without its password. */
  source: string
  /** What was found, for a person: "Orthanc database schema 6, with labels, revisions". */
  schema: string
  instances: number
  /**
   * When the index was last written, as its files say (ms since the epoch; SQLite: the index or
   * its WAL, whichever is newer). Absent where no such time exists (PostgreSQL).
   */
  lastWrittenAt?: number
}

export interface OrthancIndex {
  readonly description: IndexDescription
  /** Every instance, a series at a time, with its attachments, metadata and labels. */
  instanceBatches(signal?: AbortSignal): AsyncGenerator<IndexedInstance[]>
  /** User metadata, user attachments and labels of patients, studies and series that have any. */
  resourceSideData(signal?: AbortSignal): AsyncGenerator<ResourceSideData>
  /** Every attachment UUID the index knows, of every resource and type, in no particular order. */
  attachmentUuids(signal?: AbortSignal): AsyncGenerator<string>
  /** Whether the index lists an instance of this Orthanc ID. */
  hasInstance(id: string): Promise<boolean>
  close(): Promise<void>
}
