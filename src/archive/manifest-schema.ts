import {ARCHIVE_FORMAT, FAR_SIDE_SAMPLE, type VolumeContents, type VolumeManifest} from './format.js'
import type {InstanceRecord, ResourceRecord} from '../model.js'
import {type Check, exactly, integer, list, object, parseStrictJson, record, text, violationsOf} from './strict-json.js'

/**
 * What orthanc/contents.json and orthanc/manifest.json may hold, field by field. IDs become
 * path segments and URL segments on the target, so they are held to Orthanc's exact shape;
 * numbers are held to what an export can write.
 */

/** Largest volume count, volume number and instance count a reader accepts: far above any real export. */
export const MAX_VOLUMES = 999_999
export const MAX_INSTANCES_PER_VOLUME = 1_000_000
/** Earlier exports a volume names as its data's way here. */
export const MAX_HOPS = 1000
/** The most parts `--shard K/N` may cut a job into: what an archive's filters record. */
export const MAX_SHARDS = 1_000_000
/** An entry's size can be no larger than the payload limit (entry-rules.ts). */
const MAX_FILE_BYTES = 8 * 1024 ** 3
const FIRST_USER_CONTENT_TYPE = 1024
const LAST_CONTENT_TYPE = 65_535

export const orthancId = text({pattern: /^[0-9a-f]{8}(-[0-9a-f]{8}){4}$/, what: 'an Orthanc ID (five groups of 8 hex digits)'})
export const uuid = text({pattern: /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, what: 'a UUID'})
export const md5 = text({pattern: /^[0-9a-f]{32}$/, what: 'an MD5 in hex'})
const sha256 = text({pattern: /^[0-9a-f]{64}$/, what: 'a SHA-256 in hex'})
export const isoTime = text({pattern: /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/, what: 'an ISO 8601 UTC time'})
const uid = text({maxLength: 256})
/** Orthanc's own rule for labels (ServerToolbox::CheckValidLabel): letters, digits, '_' and '-'. */
const label = text({pattern: /^[A-Za-z0-9_-]{1,64}$/, what: 'a label (letters, digits, _ and -)'})
/** Metadata and attachment names: a declared name or a number; never a path. */
// eslint-disable-next-line no-control-regex -- control characters are exactly what this refuses
const resourceKey = text({pattern: /^[^/\\\u0000-\u001f\u007f]{1,128}$/, what: 'a name without slashes or control characters'})
const payloadPath = text({pattern: /^data\/[A-Za-z0-9/._-]{1,300}$/, what: 'a payload path under data/'})
export const shortText = text({maxLength: 1024})
const dicomDate = text({pattern: /^\d{8}$/, what: 'a date as YYYYMMDD'})

const sourceIdentity = object({server: shortText, name: shortText, version: shortText, databaseBackend: shortText, storageBackend: shortText})

/** Version 1 recorded the filters' values; version 2 counts the lists of identifiers. */
const filterValues = {
  studyDateFrom: dicomDate,
  studyDateTo: dicomDate,
  modalities: list(shortText, 1000),
  labels: list(label, 1000),
  shard: object({index: integer(1, MAX_SHARDS), count: integer(1, MAX_SHARDS)}),
}
const filtersV1 = object({
  patientIds: list(shortText, 100_000),
  studyInstanceUids: list(uid, 100_000),
  orthancIds: list(orthancId, 100_000),
  ...filterValues,
}, ['patientIds', 'studyInstanceUids', 'orthancIds', 'studyDateFrom', 'studyDateTo', 'modalities', 'labels', 'shard'])
const filtersV2 = object({
  patientIds: integer(1, 100_000),
  studyInstanceUids: integer(1, 100_000),
  orthancIds: integer(1, 100_000),
  ...filterValues,
}, ['patientIds', 'studyInstanceUids', 'orthancIds', 'studyDateFrom', 'studyDateTo', 'modalities', 'labels', 'shard'])

export const hop = object({group: uuid, source: sourceIdentity, exportedAt: isoTime})

function study(version: FormatVersion): Check {
  return object({
    studyInstanceUid: uid,
    expectedInstances: integer(1, 100_000_000),
    instancesOnSource: integer(0, 100_000_000),
    ...(version >= 5 ? {farSideInstances: integer(1, 100_000_000)} : {}),
  }, ['farSideInstances'])
}

const farSideStudy = object({studyInstanceUid: uid, instances: integer(1, 100_000_000)})

function headerFields(version: FormatVersion): Record<string, Check> {
  return {
    format: exactly(ARCHIVE_FORMAT),
    formatVersion: exactly(version),
    group: uuid,
    volume: integer(1, MAX_VOLUMES),
    volumeCount: integer(1, MAX_VOLUMES),
    source: sourceIdentity,
    exportedAt: isoTime,
    filters: version === 1 ? filtersV1 : filtersV2,
    changeCursor: integer(0, Number.MAX_SAFE_INTEGER),
    hops: list(hop, MAX_HOPS),
    incrementalBase: object({group: uuid, changeCursor: integer(0, Number.MAX_SAFE_INTEGER)}),
    studies: record(orthancId, study(version), MAX_INSTANCES_PER_VOLUME),
    ...(version >= 3 ? {farSideStudies: record(orthancId, farSideStudy, FAR_SIDE_SAMPLE)} : {}),
  }
}
const optionalHeaderFields = ['incrementalBase', 'farSideStudies']

function attachmentFields(withSha256: boolean): Record<string, Check> {
  return {
    name: resourceKey,
    contentType: integer(FIRST_USER_CONTENT_TYPE, LAST_CONTENT_TYPE),
    size: integer(0, MAX_FILE_BYTES),
    md5,
    path: payloadPath,
    ...(withSha256 ? {sha256} : {}),
  }
}

function sideDataFields(withSha256: boolean): Record<string, Check> {
  return {
    userMetadata: record(resourceKey, text({maxLength: 1024 * 1024, controls: true}), 1000),
    systemMetadata: record(resourceKey, text({maxLength: 1024 * 1024, controls: true}), 1000),
    attachments: list(object(attachmentFields(withSha256)), 1000),
    labels: list(label, 1000),
  }
}

function instanceFields(withSha256: boolean): Record<string, Check> {
  return {
    id: orthancId,
    studyId: orthancId,
    seriesId: orthancId,
    studyInstanceUid: uid,
    seriesInstanceUid: uid,
    sopInstanceUid: uid,
    size: integer(0, MAX_FILE_BYTES),
    md5,
    path: payloadPath,
    ...sideDataFields(withSha256),
    ...(withSha256 ? {sha256} : {}),
  }
}

/**
 * A patient's, study's or series' side data (version 2); in manifest.json an attachment that
 * failed on the source has no SHA-256. Version 4: a patient protected from recycling says so.
 */
function resource(withSha256: boolean, version: FormatVersion): Check {
  const attachment = object(attachmentFields(withSha256), withSha256 ? ['sha256'] : [])
  return object({
    level: text({pattern: /^(patient|study|series)$/, what: '"patient", "study" or "series"'}),
    study: orthancId,
    series: orthancId,
    ...sideDataFields(false),
    attachments: list(attachment, 1000),
    ...(version >= 4 ? {protected: exactly(true)} : {}),
  }, ['series', 'protected'])
}

function contentsSchema(version: FormatVersion): Check {
  return object({
    ...headerFields(version),
    instances: list(object(instanceFields(false)), MAX_INSTANCES_PER_VOLUME),
    ...(version >= 2 ? {resources: list(resource(false, version), MAX_INSTANCES_PER_VOLUME)} : {}),
  }, optionalHeaderFields)
}

function manifestSchema(version: FormatVersion): Check {
  return object({
    ...headerFields(version),
    instances: list(object(instanceFields(true)), MAX_INSTANCES_PER_VOLUME),
    ...(version >= 2 ? {resources: list(resource(true, version), MAX_INSTANCES_PER_VOLUME)} : {}),
    failed: list(object({id: orthancId, reason: text({maxLength: 4096})}), MAX_INSTANCES_PER_VOLUME),
  }, optionalHeaderFields)
}

/** Version 2 added the resources' side data; version 3 the studies left out whole (farSideStudies); version 4 patients' protection; version 5 a filtered export's far side's instances of a study. */
type FormatVersion = 1 | 2 | 3 | 4 | 5
const SCHEMAS = Object.fromEntries(([1, 2, 3, 4, 5] as const).map((version) => [version, {contents: contentsSchema(version), manifest: manifestSchema(version)}])) as Record<FormatVersion, {contents: Check; manifest: Check}>

export type Parsed<T> = {value: T} | {violations: string[]}

/** The values a source's server holds beside an instance or resource, as the format takes them. */
const SIDE_DATA_VALUES = (() => {
  const {userMetadata, systemMetadata, labels} = sideDataFields(false)
  return object({userMetadata: userMetadata!, systemMetadata: systemMetadata!, labels: labels!})
})()

/**
 * What a reader of this format would refuse among the values a record carries from its server (a
 * metadata value over 1 MiB, more than 1,000 of them, a name it cannot take): none for a record
 * that reads back whole. The export writes no such record: one refused would make its whole
 * volume unproven. (Sizes, MD5s and paths are the export's own, checked where they are made.)
 */
export function unarchivable(record: InstanceRecord | ResourceRecord): string[] {
  const {userMetadata, systemMetadata, labels} = record
  return violationsOf({userMetadata, systemMetadata, labels}, SIDE_DATA_VALUES)
}

/** The format version a file declares, read before anything else: a newer one is refused as such, not as damage. */
export function declaredFormatVersion(bytes: Buffer): number | undefined {
  try {
    const version = (JSON.parse(bytes.toString('utf8')) as {formatVersion?: unknown}).formatVersion
    return typeof version === 'number' ? version : undefined
  } catch {
    return undefined
  }
}

function schemaFor(bytes: Buffer, file: 'contents' | 'manifest'): Check {
  const version = declaredFormatVersion(bytes)
  // An unknown version is checked against the newest schema, which names the field that is wrong.
  return SCHEMAS[version === 1 || version === 2 || version === 3 || version === 4 ? version : 5][file]
}

export function parseContents(bytes: Buffer): Parsed<VolumeContents> {
  return parseStrictJson<VolumeContents>(bytes, schemaFor(bytes, 'contents'))
}

export function parseManifest(bytes: Buffer): Parsed<VolumeManifest> {
  return parseStrictJson<VolumeManifest>(bytes, schemaFor(bytes, 'manifest'))
}
