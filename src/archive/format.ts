/**
 * The archive format, version 1. docs/archive-format.md is the description for people; this
 * file is the one for code. Each volume is a tar (ustar, pax where needed) that is also a
 * complete BagIt 1.0 bag whose root directory is named after the volume.
 */

import type {AttachmentRecord, Hop, InstanceFilters, InstanceRecord, ResourceRecord, SourceIdentity, StudyExpectation} from '../model.js'
import {startsLikeAgeFile} from '../crypto/age.js'


export const ARCHIVE_FORMAT = 'orthanc-replicate-archive'
/**
 * Version 2 adds the side data of patients, studies and series (`resources`) and records the
 * filters without the identifiers they named; version 3 the studies left out whole; version 4 a
 * patient's protection from recycling; version 5 what a filtered export left out of a study as
 * the far side's (`farSideInstances`). Readers take versions up to this one and refuse newer ones.
 */
export const ARCHIVE_FORMAT_VERSION = 5
/** What a volume declares when it needs version 5, or else 4 (see FORMAT_VERSION_WITHOUT_PROTECTION). */
export const FORMAT_VERSION_WITH_PROTECTION = 4
/**
 * What a volume with no protected patient declares: the version that reads it, so that an older
 * reader on the far side of an air gap still takes what it can read whole.
 */
export const FORMAT_VERSION_WITHOUT_PROTECTION = 3

/** Tag files of the Orthanc manifest, relative to the bag root. */
export const CONTENTS_FILE = 'orthanc/contents.json'
export const MANIFEST_FILE = 'orthanc/manifest.json'
export const BAGIT_FILE = 'bagit.txt'
export const BAG_INFO_FILE = 'bag-info.txt'
export const PAYLOAD_MANIFEST_FILE = 'manifest-sha256.txt'
export const TAG_MANIFEST_FILE = 'tagmanifest-sha256.txt'

/** Volumes stay below FAT32's 4 GiB file limit, with room for tar headers and tag files. */
export const DEFAULT_MAX_VOLUME_BYTES = 4 * 1024 ** 3 - 64 * 1024 ** 2

export function volumeName(prefix: string, index: number, count: number): string {
  const width = Math.max(4, String(count).length)
  return `${prefix}-${String(index).padStart(width, '0')}-of-${String(count).padStart(width, '0')}`
}

/** A volume's file name: PREFIX-0001-of-0003.tar, or .tar.age when encrypted. */
export const VOLUME_NAME_PATTERN = /^(?<prefix>.+)-(?<index>\d{4,})-of-(?<count>\d{4,})\.tar(?<encrypted>\.age)?$/

const TAR_MAGIC_OFFSET = 257
/** How many bytes from its start tell an archive volume (looksLikeArchive). */
export const ARCHIVE_MAGIC_BYTES = 262

/** What the first bytes of a tar volume (the ustar magic of its first header) or an age file say. */
export function looksLikeArchive(start: Buffer): boolean {
  return startsLikeAgeFile(start) || start.subarray(TAR_MAGIC_OFFSET, ARCHIVE_MAGIC_BYTES).toString('latin1') === 'ustar'
}

export function dicomPayloadPath(record: {studyId: string; id: string}): string {
  return `data/dicom/${record.studyId}/${record.id}.dcm`
}

export function attachmentPayloadPath(instanceId: string, contentType: number): string {
  return `data/attachments/${instanceId}/${contentType}.bin`
}

/** A patient's, study's or series' user attachment (format version 2): a patient is filed under a study of it. */
export function resourceAttachmentPath(resource: Pick<ResourceRecord, 'level' | 'study' | 'series'>, contentType: number): string {
  const id = resource.level === 'series' ? resource.series : resource.study
  return `data/resources/${resource.level}/${id}/${contentType}.bin`
}

/** An instance once written: the record plus the SHA-256 of the bytes in the volume. */
export interface WrittenInstanceRecord extends InstanceRecord {
  sha256: string
  attachments: Array<AttachmentRecord & {sha256: string}>
}

/** A resource's side data once written: each attachment with the SHA-256 of its bytes (none: it failed on the source and is not in the volume). */
export interface WrittenResourceRecord extends ResourceRecord {
  attachments: Array<AttachmentRecord & {sha256?: string}>
}

/**
 * The filters as a volume records them (version 2): values that name no one (dates, modalities,
 * labels, a shard) as given; lists of identifiers only counted. Version 1 recorded the lists.
 */
export interface RecordedFilters {
  patientIds?: number
  studyInstanceUids?: number
  orthancIds?: number
  studyDateFrom?: string
  studyDateTo?: string
  modalities?: string[]
  labels?: string[]
  shard?: {index: number; count: number}
}

/** Filters as recorded; already recorded ones (an export's plan) come back the same. */
export function recordedFilters(filters: InstanceFilters | RecordedFilters): RecordedFilters {
  const {patientIds, studyInstanceUids, orthancIds, ...plain} = filters
  const counted = (list: string[] | number | undefined) => (list === undefined ? undefined : typeof list === 'number' ? list : list.length)
  return {
    ...plain,
    ...(patientIds ? {patientIds: counted(patientIds)} : {}),
    ...(studyInstanceUids ? {studyInstanceUids: counted(studyInstanceUids)} : {}),
    ...(orthancIds ? {orthancIds: counted(orthancIds)} : {}),
  }
}

/** Where an export's data comes from and how it was chosen: shared by its plan and every volume. */
export interface ExportProvenance {
  /** Bag-Group-Identifier: the same for all volumes of one export. */
  group: string
  source: SourceIdentity
  /** As the manifests record them: identifier filters as counts, never their values. */
  filters: RecordedFilters
  /** Source's /changes sequence number when planning began: where the next incremental export starts. */
  changeCursor: number
  /** Earlier exports this data went through before reaching the source. */
  hops: Hop[]
  /** For an incremental export: the export it adds to. */
  incrementalBase?: {group: string; changeCursor: number}
  /**
   * Studies the export left out whole as the far side's already (--since, --exclude-receipt), so
   * that an import can tell when what it adds to never arrived: a sample of at most
   * FAR_SIDE_SAMPLE of them (the lowest study IDs, in every volume), each with the instances the
   * far side must hold (version 3).
   */
  farSideStudies?: Record<string, FarSideStudy>
}

export interface FarSideStudy {
  studyInstanceUid: string
  instances: number
}

/** Studies left out whole that an export names, at most. */
export const FAR_SIDE_SAMPLE = 64

/** What every volume's contents and manifest files start with. */
export interface VolumeHeader extends Omit<ExportProvenance, 'filters'> {
  filters: RecordedFilters
  format: typeof ARCHIVE_FORMAT
  formatVersion: number
  volume: number
  volumeCount: number
  exportedAt: string
  /** Studies with instances in this volume, keyed by Orthanc study ID, with group-wide counts. */
  studies: Record<string, StudyExpectation>
}

/** orthanc/contents.json: written first, before any payload, so a streaming reader can check entries as they come. */
export interface VolumeContents extends VolumeHeader {
  instances: InstanceRecord[]
  /** Side data of the patients, studies and series of this volume's instances that have any (version 2). */
  resources?: ResourceRecord[]
}

/** orthanc/manifest.json: written after the payload, with what actually went in. */
export interface VolumeManifest extends VolumeHeader {
  instances: WrittenInstanceRecord[]
  resources?: WrittenResourceRecord[]
  /** Planned instances that could not be exported, with the reason. */
  failed: Array<{id: string; reason: string}>
}
