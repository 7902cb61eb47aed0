/** The parts of Orthanc's JSON answers this tool reads. Field names are Orthanc's. */

export interface OrthancSystem {
  Name: string
  Version: string
  ApiVersion: number
  DatabaseVersion?: number
  DatabaseBackendPlugin?: string | null
  StorageAreaPlugin?: string | null
  PluginsEnabled?: boolean
  IsHttpServerSecure?: boolean
  CheckRevisions?: boolean
  OverwriteInstances?: boolean
  /** Orthanc 1.12 and later: the declared user metadata, by name and by number, with their numbers. */
  UserMetadata?: Record<string, number>
  /** Orthanc 1.12 and later: whether the server refuses every change. */
  ReadOnly?: boolean
  /** Orthanc 1.12 and later: its recycling limits (0: none), and what it does at them ('Recycle' or 'Reject'). */
  MaximumPatientCount?: number
  MaximumStorageSize?: number
  MaximumStorageMode?: string
  /** Orthanc 1.12 and later: the transfer syntax it converts what it stores to ('' for none). */
  IngestTranscoding?: string
}

export interface OrthancStatistics {
  CountPatients: number
  CountStudies: number
  CountSeries: number
  CountInstances: number
  TotalDiskSize: string
  TotalUncompressedSize: string
}

export interface OrthancChange {
  ChangeType: string
  ID: string
  ResourceType: string
  Seq: number
  Date: string
  Path: string
}

export interface OrthancChangesPage {
  Changes: OrthancChange[]
  Done: boolean
  Last: number
}

export interface OrthancAttachmentInfo {
  Uuid?: string
  ContentType?: number
  UncompressedSize: number
  CompressedSize: number
  UncompressedMD5: string
  CompressedMD5: string
}

export interface OrthancUploadAnswer {
  ID: string
  Path: string
  ParentPatient: string
  ParentStudy: string
  ParentSeries: string
  Status: 'Success' | 'AlreadyStored' | 'Failure' | 'FilteredOut'
}

export interface OrthancResource {
  ID: string
  Type: string
  MainDicomTags: Record<string, string>
  PatientMainDicomTags?: Record<string, string>
  ParentPatient?: string
  ParentStudy?: string
  ParentSeries?: string
  Studies?: string[]
  Series?: string[]
  Instances?: string[]
  FileSize?: number
  FileUuid?: string
  Labels?: string[]
}
