import {createHash} from 'node:crypto'
import {isDeepStrictEqual} from 'node:util'

import {type AttachmentRecord, type InstanceRecord, resourceKey, type ResourceRecord} from '../model.js'
import type {Problem, ProblemKind} from '../problems.js'
import {BAGIT_TXT, type BagFormatError, parseBagInfo, parseChecksumManifest} from './bagit.js'
import {
  ARCHIVE_FORMAT_VERSION, attachmentPayloadPath, BAG_INFO_FILE, BAGIT_FILE, CONTENTS_FILE, dicomPayloadPath, MANIFEST_FILE,
  PAYLOAD_MANIFEST_FILE, resourceAttachmentPath, TAG_MANIFEST_FILE, type VolumeContents, type VolumeHeader, type VolumeManifest,
} from './format.js'
import {declaredFormatVersion, parseContents, parseManifest} from './manifest-schema.js'

/** The tag files every bag of this format holds, besides the tag manifest that lists them. */
export const TAG_FILES = [BAGIT_FILE, BAG_INFO_FILE, CONTENTS_FILE, MANIFEST_FILE, PAYLOAD_MANIFEST_FILE] as const

/** One payload file a proven bag holds: what its bytes must be, and whose it is. */
export type ExpectedPayload = {size: number; md5: string; sha256: string} & (
  /** An instance's DICOM file. */
  | {record: InstanceRecord; attachment?: undefined; resource?: undefined}
  /** A user attachment of an instance. */
  | {record: InstanceRecord; attachment: AttachmentRecord; resource?: undefined}
  /** A user attachment of a patient, study or series (version 2). */
  | {resource: ResourceRecord; attachment: AttachmentRecord; record?: undefined}
)

/**
 * A bag whose tag files all agree: the tag manifest vouches for every tag file, the two JSON
 * manifests agree with each other and with the payload manifest and bag-info. Only then may any
 * of its payload reach a target, each file checked against `payload`.
 */
export interface ProvenBag {
  bag: string
  contents: VolumeContents
  manifest: VolumeManifest
  payload: Map<string, ExpectedPayload>
  /** SHA-256 of every tag file, to check a second reading of them against. */
  tagSha256: Map<string, string>
}

/**
 * `proven` unset: nothing of the bag may be used, and `problems` say why. `problems` may be set
 * for a proven bag too: files the chain does not need (a stray tag file) are refused by name
 * without costing the rest. `claimed` is what the contents say, for naming an unproven bag only.
 */
export interface BagProof {
  proven?: ProvenBag
  problems: Problem[]
  claimed?: VolumeHeader
}

/**
 * Checks the chain of a bag's tag files, before any byte of its payload is used:
 * tag manifest → every tag file → contents.json, manifest.json, the payload manifest and
 * bag-info, which must all say the same. `tagFiles` holds the bag's tag files as read (paths
 * relative to the bag root); problems name them as `bag/path`.
 */
export function proveBag(bag: string, tagFiles: Map<string, Buffer>): BagProof {
  const problems: Problem[] = []
  const problem = (path: string, kind: ProblemKind, reason: string) => problems.push({id: `${bag}/${path}`, kind, reason})

  const tagSha256 = new Map([...tagFiles].map(([path, bytes]) => [path, sha256(bytes)]))
  const claimed = claimedHeader(tagFiles.get(CONTENTS_FILE))
  const tagManifest = tagFiles.get(TAG_MANIFEST_FILE)
  if (tagManifest === undefined) {
    problem(TAG_MANIFEST_FILE, 'missing', 'missing: the volume was cut short or is still being written, so none of it can be proven')
    return {problems, claimed}
  }

  const listed = readChecksumManifest(tagManifest, TAG_MANIFEST_FILE, problem)
  if (listed === undefined) return {problems, claimed}
  for (const path of TAG_FILES) {
    const bytes = tagFiles.get(path)
    const expected = listed.get(path)
    if (bytes === undefined) problem(path, 'missing', expected === undefined ? 'missing, and not listed in the tag manifest' : 'listed in the tag manifest but missing')
    else if (expected === undefined) problem(path, 'unlisted', `not listed in ${TAG_MANIFEST_FILE}`)
    else if (expected !== tagSha256.get(path)) problem(path, 'checksum', `SHA-256 ${tagSha256.get(path)} differs from ${TAG_MANIFEST_FILE}'s ${expected}`)
  }

  for (const path of listed.keys()) if (!(TAG_FILES as readonly string[]).includes(path)) problem(path, 'contradiction', `listed in ${TAG_MANIFEST_FILE}, but this format has no such tag file`)
  if (problems.length > 0) return {problems, claimed}

  // A stray file the tag manifest does not vouch for is refused; the chain does not rest on it.
  const strays: Problem[] = []
  for (const path of tagFiles.keys()) {
    if (path !== TAG_MANIFEST_FILE && !(TAG_FILES as readonly string[]).includes(path)) strays.push({id: `${bag}/${path}`, kind: 'unlisted', reason: 'not part of this archive format'})
  }

  // Every tag file is what the tag manifest says. Now do they agree with one another?
  if (!tagFiles.get(BAGIT_FILE)!.equals(Buffer.from(BAGIT_TXT))) problem(BAGIT_FILE, 'damaged', 'does not declare BagIt 1.0 in UTF-8 as this format writes it')
  const contents = parseJsonManifest(tagFiles.get(CONTENTS_FILE)!, CONTENTS_FILE, parseContents, problem)
  const manifest = parseJsonManifest(tagFiles.get(MANIFEST_FILE)!, MANIFEST_FILE, parseManifest, problem)
  // Empty when the volume holds no payload: every instance planned into it failed (named in
  // manifest.json). What it should list is checked against the manifests below all the same.
  const payloadListing = readChecksumManifest(tagFiles.get(PAYLOAD_MANIFEST_FILE)!, PAYLOAD_MANIFEST_FILE, problem, true)
  if (!contents || !manifest || !payloadListing || problems.length > 0) return {problems: [...problems, ...strays], claimed}

  const payload = checkAgreement(bag, contents, manifest, payloadListing, parseBagInfo(tagFiles.get(BAG_INFO_FILE)!.toString('utf8')), problem)
  if (problems.length > 0) return {problems: [...problems, ...strays], claimed}
  return {proven: {bag, contents, manifest, payload, tagSha256}, problems: strays}
}

type Report = (path: string, kind: ProblemKind, reason: string) => void

function checkAgreement(
  bag: string, contents: VolumeContents, manifest: VolumeManifest, payloadListing: Map<string, string>, bagInfo: Map<string, string>, problem: Report,
): Map<string, ExpectedPayload> {
  const {instances: _planned, resources: _plannedResources, ...contentsHeader} = contents
  const {instances: _written, resources: _writtenResources, failed: _failed, ...manifestHeader} = manifest
  for (const field of new Set([...Object.keys(contentsHeader), ...Object.keys(manifestHeader)])) {
    const a = (contentsHeader as Record<string, unknown>)[field]
    const b = (manifestHeader as Record<string, unknown>)[field]
    if (!isDeepStrictEqual(a, b)) problem(MANIFEST_FILE, 'contradiction', `field ${field} differs from ${CONTENTS_FILE}'s`)
  }

  if (contents.volume > contents.volumeCount) problem(CONTENTS_FILE, 'contradiction', `field volume ${contents.volume} is beyond volumeCount ${contents.volumeCount}`)
  const nameMatch = /-(\d+)-of-(\d+)$/.exec(bag)
  if (!nameMatch || Number(nameMatch[1]) !== contents.volume || Number(nameMatch[2]) !== contents.volumeCount) {
    problem(CONTENTS_FILE, 'contradiction', `says volume ${contents.volume} of ${contents.volumeCount}, but the bag is named "${bag}"`)
  }

  // Planned instances: each written (in manifest.json) or failed, never both, never twice.
  const planned = new Map<string, InstanceRecord>()
  const paths = new Set<string>()
  for (const [index, record] of contents.instances.entries()) {
    if (planned.has(record.id)) problem(CONTENTS_FILE, 'contradiction', `field instances[${index}] lists instance ${record.id} a second time`)
    planned.set(record.id, record)
    if (!(record.studyId in contents.studies)) problem(CONTENTS_FILE, 'contradiction', `field instances[${index}].studyId ${record.studyId} is not among the studies`)
    if (record.path !== dicomPayloadPath(record)) problem(CONTENTS_FILE, 'contradiction', `field instances[${index}].path is "${record.path}", not where this format puts it (${dicomPayloadPath(record)})`)
    for (const [position, attachment] of record.attachments.entries()) {
      if (attachment.path !== attachmentPayloadPath(record.id, attachment.contentType)) {
        problem(CONTENTS_FILE, 'contradiction', `field instances[${index}].attachments[${position}].path is "${attachment.path}", not where this format puts it`)
      }
    }
    for (const path of [record.path, ...record.attachments.map((attachment) => attachment.path)]) {
      if (paths.has(path)) problem(CONTENTS_FILE, 'contradiction', `payload path ${path} appears twice`)
      paths.add(path)
    }
  }

  const perStudy = new Map<string, number>()
  for (const record of contents.instances) perStudy.set(record.studyId, (perStudy.get(record.studyId) ?? 0) + 1)
  for (const [studyId, study] of Object.entries(contents.studies)) {
    const here = perStudy.get(studyId) ?? 0
    if (here === 0) problem(CONTENTS_FILE, 'contradiction', `field studies["${studyId}"] names a study with no instance in this volume`)
    if (here > study.expectedInstances) problem(CONTENTS_FILE, 'contradiction', `field studies["${studyId}"].expectedInstances is ${study.expectedInstances}, but this volume alone holds ${here}`)
    // Both are instances the study had on the source: the selected ones, and those left out of them.
    if (study.farSideInstances !== undefined && study.expectedInstances + study.farSideInstances > study.instancesOnSource) {
      problem(CONTENTS_FILE, 'contradiction', `field studies["${studyId}"] has ${study.expectedInstances} instance(s) expected and ${study.farSideInstances} left out as the far side's, more than the ${study.instancesOnSource} on the source`)
    }
  }

  const accounted = new Set<string>()
  const payload = new Map<string, ExpectedPayload>()
  for (const [index, written] of manifest.instances.entries()) {
    const plannedRecord = planned.get(written.id)
    const {sha256: dicomSha256, attachments: writtenAttachments, ...writtenRecord} = written
    if (!plannedRecord) {
      problem(MANIFEST_FILE, 'contradiction', `field instances[${index}] is instance ${written.id}, which ${CONTENTS_FILE} does not list`)
      continue
    }
    if (accounted.has(written.id)) problem(MANIFEST_FILE, 'contradiction', `field instances[${index}] lists instance ${written.id} a second time`)
    accounted.add(written.id)
    const plainAttachments = writtenAttachments.map(({sha256: _sha256, ...attachment}) => attachment)
    if (!isDeepStrictEqual({...writtenRecord, attachments: plainAttachments}, plannedRecord)) {
      problem(MANIFEST_FILE, 'contradiction', `field instances[${index}] (instance ${written.id}) differs from its record in ${CONTENTS_FILE}`)
      continue
    }

    payload.set(written.path, {record: plannedRecord, size: written.size, md5: written.md5, sha256: dicomSha256})
    for (const [position, attachment] of writtenAttachments.entries()) {
      payload.set(attachment.path, {record: plannedRecord, attachment: plannedRecord.attachments[position], size: attachment.size, md5: attachment.md5, sha256: attachment.sha256})
    }
  }

  for (const [index, failure] of manifest.failed.entries()) {
    if (!planned.has(failure.id)) problem(MANIFEST_FILE, 'contradiction', `field failed[${index}] is instance ${failure.id}, which ${CONTENTS_FILE} does not list`)
    else if (accounted.has(failure.id)) problem(MANIFEST_FILE, 'contradiction', `field failed[${index}] is instance ${failure.id}, listed as written too`)
    accounted.add(failure.id)
  }

  for (const id of planned.keys()) if (!accounted.has(id)) problem(MANIFEST_FILE, 'contradiction', `says nothing of instance ${id}, which ${CONTENTS_FILE} plans: neither written nor failed`)
  checkResources(contents, manifest, paths, payload, problem)

  // The payload manifest lists exactly the files manifest.json says were written, with the same SHA-256.
  for (const [path, expected] of payload) {
    const listedSha256 = payloadListing.get(path)
    if (listedSha256 === undefined) problem(PAYLOAD_MANIFEST_FILE, 'contradiction', `does not list ${path}, which ${MANIFEST_FILE} says was written`)
    else if (listedSha256 !== expected.sha256) problem(PAYLOAD_MANIFEST_FILE, 'contradiction', `gives ${path} another SHA-256 than ${MANIFEST_FILE}`)
  }
  for (const path of payloadListing.keys()) if (!payload.has(path)) problem(PAYLOAD_MANIFEST_FILE, 'contradiction', `lists ${path}, which ${MANIFEST_FILE} does not hold`)

  const payloadBytes = [...payload.values()].reduce((sum, entry) => sum + entry.size, 0)
  const expectedInfo: Array<[string, string]> = [
    ['Payload-Oxum', `${payloadBytes}.${payload.size}`],
    ['Bag-Group-Identifier', contents.group],
    ['Bag-Count', `${contents.volume} of ${contents.volumeCount}`],
  ]
  for (const [field, value] of expectedInfo) {
    const actual = bagInfo.get(field)
    if (actual !== value) problem(BAG_INFO_FILE, 'contradiction', `field ${field} is ${actual === undefined ? 'missing' : `"${actual}"`}, expected "${value}" from the manifests`)
  }

  return payload
}

/**
 * Version 2's side data of patients, studies and series: each planned once, about a study (and
 * series) of this volume, its attachments where this format puts them; manifest.json lists the
 * same records, with a SHA-256 for each attachment written (one that failed on the source has none).
 */
function checkResources(contents: VolumeContents, manifest: VolumeManifest, paths: Set<string>, payload: Map<string, ExpectedPayload>, problem: Report): void {
  if ((contents.resources === undefined) !== (manifest.resources === undefined)) {
    problem(MANIFEST_FILE, 'contradiction', `lists resources where ${CONTENTS_FILE} does not, or the reverse`)
    return
  }

  const planned = new Map<string, ResourceRecord>()
  const seriesOfStudy = new Set(contents.instances.map((record) => `${record.studyId}/${record.seriesId}`))
  for (const [index, resource] of (contents.resources ?? []).entries()) {
    const at = `field resources[${index}]`
    const key = resourceKey(resource)
    if (planned.has(key)) problem(CONTENTS_FILE, 'contradiction', `${at} describes the ${resource.level} of ${resource.series ?? resource.study} a second time`)
    planned.set(key, resource)
    if (!(resource.study in contents.studies)) problem(CONTENTS_FILE, 'contradiction', `${at}.study ${resource.study} is not among the studies`)
    if ((resource.level === 'series') !== (resource.series !== undefined)) problem(CONTENTS_FILE, 'contradiction', `${at} gives a series ID ${resource.level === 'series' ? 'nowhere' : 'to a ' + resource.level}`)
    if (resource.level === 'series' && !seriesOfStudy.has(`${resource.study}/${resource.series}`)) problem(CONTENTS_FILE, 'contradiction', `${at}.series ${resource.series} has no instance of study ${resource.study} in this volume`)
    for (const [position, attachment] of resource.attachments.entries()) {
      if (attachment.path !== resourceAttachmentPath(resource, attachment.contentType)) problem(CONTENTS_FILE, 'contradiction', `${at}.attachments[${position}].path is "${attachment.path}", not where this format puts it`)
      if (paths.has(attachment.path)) problem(CONTENTS_FILE, 'contradiction', `payload path ${attachment.path} appears twice`)
      paths.add(attachment.path)
    }
  }

  const written = manifest.resources ?? []
  if (written.length !== planned.size) problem(MANIFEST_FILE, 'contradiction', `lists ${written.length} resources, ${CONTENTS_FILE} ${planned.size}`)
  for (const [index, resource] of written.entries()) {
    const plannedResource = planned.get(resourceKey(resource))
    const plain = {...resource, attachments: resource.attachments.map(({sha256: _sha256, ...attachment}) => attachment)}
    if (!plannedResource || !isDeepStrictEqual(plain, plannedResource)) {
      problem(MANIFEST_FILE, 'contradiction', `field resources[${index}] differs from its record in ${CONTENTS_FILE}`)
      continue
    }
    for (const [position, attachment] of resource.attachments.entries()) {
      if (attachment.sha256 !== undefined) payload.set(attachment.path, {resource: plannedResource, attachment: plannedResource.attachments[position]!, size: attachment.size, md5: attachment.md5, sha256: attachment.sha256})
    }
  }
}

function parseJsonManifest<T>(bytes: Buffer, path: string, parse: (bytes: Buffer) => {value: T} | {violations: string[]}, problem: Report): T | undefined {
  const version = declaredFormatVersion(bytes)
  if (version !== undefined && version > ARCHIVE_FORMAT_VERSION) {
    problem(path, 'unsupported', `archive format version ${version} is newer than this program reads (${ARCHIVE_FORMAT_VERSION}); upgrade orthanc-replicate`)
    return undefined
  }

  const parsed = parse(bytes)
  if ('value' in parsed) return parsed.value
  for (const violation of parsed.violations) problem(path, 'damaged', violation)
  return undefined
}

function readChecksumManifest(bytes: Buffer, path: string, problem: Report, mayBeEmpty = false): Map<string, string> | undefined {
  if (bytes.length === 0 && mayBeEmpty) return new Map()
  if (bytes.length === 0) {
    problem(path, 'damaged', 'is empty')
    return undefined
  }

  try {
    return parseChecksumManifest(bytes.toString('utf8'), path)
  } catch (error) {
    problem(path, 'damaged', (error as BagFormatError).message)
    return undefined
  }
}

/** What a bag's contents claim about it, when they parse: used to name an unproven bag, never to trust it. */
function claimedHeader(bytes: Buffer | undefined): VolumeHeader | undefined {
  if (!bytes) return undefined
  const parsed = parseContents(bytes)
  if (!('value' in parsed)) return undefined
  const {instances: _instances, ...header} = parsed.value
  return header
}

export function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex')
}
