/**
 * What each Orthanc answer the tool reads must look like, checked where the answer arrives. A
 * server that answers something else (broken, hostile, or a proxy mixing things up) then fails
 * the request with its name and route, instead of the tool failing later on a field that is not
 * there (an "unexpected error" naming no one), or building a request from an ID that is a path.
 *
 * Only what the tool reads is checked: Orthanc adds fields from version to version.
 */
import type {ResourceLevel} from '../model.js'
import {isCount} from '../util/count.js'
import {isSideDataChange} from './side-data-changes.js'

/** Says what is wrong with an answer, or undefined when it has the shape. */
export type Shape = (value: unknown) => string | undefined

/**
 * Orthanc names every resource with a SHA-1 digest written as five groups of 8 hex digits. The
 * tool puts IDs into request paths: what it takes for one is letters, digits and dashes (no
 * slash, dot, percent or query), so that no answer can make it ask for another route.
 */
const ORTHANC_ID = /^[0-9A-Za-z-]{1,64}$/
/** Orthanc writes an MD5 in lowercase hex, or '' when it runs with StoreMD5ForAttachments off. */
const MD5_OR_NONE = /^(?:[0-9a-f]{32})?$/

export function isOrthancId(value: unknown): value is string {
  return typeof value === 'string' && ORTHANC_ID.test(value)
}

/**
 * A value as a message shows it: its kind, never its text. What a server answers in place of an
 * ID or an MD5 may be anything, a patient's name included, and messages reach logs, summaries
 * and an export's manifest (its failures).
 */
function shown(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'a list'
  if (typeof value === 'object') return 'an object'
  if (typeof value === 'string') return `a text of ${value.length} character(s)`
  return typeof value === 'number' || typeof value === 'boolean' ? String(value) : typeof value
}

export const orthancId: Shape = (value) => (isOrthancId(value) ? undefined : `${shown(value)} is not an Orthanc ID`)
export const text: Shape = (value) => (typeof value === 'string' ? undefined : `${shown(value)} is not text`)
export const count: Shape = (value) => (isCount(value) ? undefined : `${shown(value)} is not a count`)
export const truth: Shape = (value) => (typeof value === 'boolean' ? undefined : `${shown(value)} is not true or false`)
export const md5OrNone: Shape = (value) => (typeof value === 'string' && MD5_OR_NONE.test(value) ? undefined : `${shown(value)} is not an MD5`)

/** One of a few words Orthanc uses (statuses); another word is shown by its kind, like any text. */
export function oneOf(...words: string[]): Shape {
  return (value) => (typeof value === 'string' && words.includes(value) ? undefined : `${shown(value)} is not one of ${words.join(', ')}`)
}

export function listOf(item: Shape): Shape {
  return (value) => {
    if (!Array.isArray(value)) return `${shown(value)} is not a list`
    for (const [index, entry] of value.entries()) {
      const problem = item(entry)
      if (problem) return `[${index}]: ${problem}`
    }

    return undefined
  }
}

/** An object whose every value has one shape (metadata by name, a resource's main tags). */
export function mapOf(item: Shape): Shape {
  return (value) => {
    if (!isObject(value)) return `${shown(value)} is not an object`
    for (const [key, entry] of Object.entries(value)) {
      const problem = item(entry)
      if (problem) return `${printableKey(key)}: ${problem}`
    }

    return undefined
  }
}

/** An object with these fields, and these others when present (null counts as absent). */
export function objectWith(fields: Record<string, Shape>, optional: Record<string, Shape> = {}): Shape {
  return (value) => {
    if (!isObject(value)) return `${shown(value)} is not an object`
    for (const [key, shape] of Object.entries(fields)) {
      const problem = key in value ? shape(value[key]) : 'missing'
      if (problem) return `${key}: ${problem}`
    }

    for (const [key, shape] of Object.entries(optional)) {
      if (value[key] === undefined || value[key] === null) continue
      const problem = shape(value[key])
      if (problem) return `${key}: ${problem}`
    }

    return undefined
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function printableKey(key: string): string {
  return /^[\w-]{1,40}$/.test(key) ? key : 'a field'
}

const tags = mapOf(text)
const labels = listOf(text)

const resourceFields = {
  Type: text,
  PatientMainDicomTags: tags,
  ParentPatient: orthancId,
  ParentStudy: orthancId,
  ParentSeries: orthancId,
  Studies: listOf(orthancId),
  Series: listOf(orthancId),
  Instances: listOf(orthancId),
  Labels: labels,
}

/** The field naming the level above, which Orthanc gives every resource but a patient. */
const PARENT_FIELD: Record<ResourceLevel, string | undefined> = {patient: undefined, study: 'ParentPatient', series: 'ParentStudy', instance: 'ParentSeries'}

/** A patient, study, series or instance as Orthanc describes it, by level. */
export const resourceOf = Object.fromEntries((['patient', 'study', 'series', 'instance'] as const).map((level) => {
  const parent = PARENT_FIELD[level]
  return [level, objectWith({ID: orthancId, MainDicomTags: tags, ...(parent ? {[parent]: orthancId} : {})}, resourceFields)]
})) as Record<ResourceLevel, Shape>

export const resourcesOf = Object.fromEntries(Object.entries(resourceOf).map(([level, shape]) => [level, listOf(shape)])) as Record<ResourceLevel, Shape>
export const orthancIds = listOf(orthancId)
export const texts = listOf(text)
export const metadata = mapOf(text)

/** A byte count as Orthanc writes the totals of /statistics: digits in a string (a number is taken too). */
const byteTotal: Shape = (value) => ((typeof value === 'string' && /^\d{1,20}$/.test(value)) || isCount(value) ? undefined : `${shown(value)} is not a byte count`)

export const statistics = objectWith({CountPatients: count, CountStudies: count, CountSeries: count, CountInstances: count}, {TotalDiskSize: byteTotal, TotalUncompressedSize: byteTotal})
export const instanceCount = objectWith({CountInstances: count})

export const attachmentInfo = objectWith({UncompressedSize: count, CompressedSize: count, UncompressedMD5: md5OrNone, CompressedMD5: md5OrNone}, {ContentType: count})

/** A deleted instance's answer: the nearest parent still standing (Series, Study, Patient), or null when none is. */
export const deletionAnswer = objectWith({RemainingAncestor: (ancestor) => (ancestor === null ? undefined : objectWith({Type: oneOf('Series', 'Study', 'Patient')})(ancestor))})

export const uploadAnswer = objectWith({ID: orthancId, Status: oneOf('Success', 'AlreadyStored', 'Failure', 'FilteredOut')}, {ParentPatient: orthancId, ParentStudy: orthancId, ParentSeries: orthancId})
export const uploadAnswers = listOf(uploadAnswer)

/** A change of the log; a new instance's change, or a side data change, names the resource the tool then reads. */
const change: Shape = (value) => {
  const problem = objectWith({ChangeType: text, ID: text})(value)
  if (problem) return problem
  const {ChangeType, ID} = value as {ChangeType: string; ID: string}
  const level = isSideDataChange({ChangeType}) ? objectWith({ResourceType: oneOf('Patient', 'Study', 'Series', 'Instance')})(value) : undefined
  return level ?? (ChangeType === 'NewInstance' || isSideDataChange({ChangeType}) ? orthancId(ID) && `ID: ${orthancId(ID)}` : undefined)
}

export const changesPage = objectWith({Changes: listOf(change), Last: count}, {Done: truth})
export const lastChange = objectWith({Last: count})

/** One entry of /tools/bulk-content; its Metadata decides whether the server answers that way at all. */
export const bulkEntry = objectWith({ID: orthancId}, {Metadata: metadata, Labels: labels, ParentPatient: orthancId})
export const bulkEntries = listOf(bulkEntry)
