import {createHash} from 'node:crypto'

import type {ArchiveEntry} from './archive-stream.js'
import {parseBagInfo, parseChecksumManifest} from './bagit.js'
import type {AttachmentRecord, InstanceRecord, StudyExpectation} from '../model.js'
import type {Problem, ProblemKind} from '../problems.js'
import {
  ARCHIVE_FORMAT, ARCHIVE_FORMAT_VERSION, BAG_INFO_FILE, BAGIT_FILE, CONTENTS_FILE, MANIFEST_FILE,
  PAYLOAD_MANIFEST_FILE, TAG_MANIFEST_FILE, type VolumeContents, type VolumeManifest,
} from './format.js'

export type EntryVerdict =
  | {kind: 'dicom'; record: InstanceRecord; data: Buffer}
  | {kind: 'attachment'; record: InstanceRecord; attachment: AttachmentRecord; data: Buffer}
  | {kind: 'tag'}
  | {kind: 'refused'; reason: string}

export interface BagReport {
  bag: string
  group?: string
  volume?: number
  volumeCount?: number
  /** Every tag file checked against the tag manifest, which came last. */
  complete: boolean
  /** Payload entries accepted (checksums matched). */
  entriesAccepted: number
  /** Payload entries the bag's contents list but that never arrived (truncation). */
  missing: string[]
  /** Ids are entry names (bag/path); the caller adds where the bag was read from. */
  problems: Problem[]
  studies: Record<string, StudyExpectation>
  /** The whole manifest, when it arrived: the chain of hops, the source, the filters. */
  manifest?: VolumeManifest
}

interface Expectation {
  record: InstanceRecord
  attachment?: AttachmentRecord
}

/**
 * Checks one bag as its entries stream by. A payload entry is accepted only if the bag's
 * contents list it with the same size and MD5 and, when the payload manifest is known ahead
 * (volumes read from files), the same SHA-256; the tag files are checked against the tag
 * manifest, whose arrival marks the bag complete.
 */
export class BagValidator {
  private contents?: VolumeContents
  private manifest?: VolumeManifest
  private bagInfo?: Map<string, string>
  private readonly expected = new Map<string, Expectation>()
  private readonly arrived = new Set<string>()
  private readonly payloadSha256 = new Map<string, string>()
  private readonly tagSha256 = new Map<string, string>()
  private readonly problems: BagReport['problems'] = []
  private complete = false
  /** Why the contents file was refused (a newer format, say): every payload entry is refused for the same reason. */
  private contentsRefusal?: string
  private accepted = 0

  /** `knownSha256`: manifest-sha256.txt read ahead from a volume file, so SHA-256 is checked before upload too. */
  constructor(readonly bag: string, private readonly knownSha256?: Map<string, string>) {}

  accept(entry: ArchiveEntry): EntryVerdict {
    const {path, data} = entry
    if (path.startsWith('data/')) return this.acceptPayload(path, data)
    if (this.tagSha256.has(path)) return this.refuse(path, 'duplicate', 'a tag file appears twice')
    const isTag = [BAGIT_FILE, CONTENTS_FILE, MANIFEST_FILE, BAG_INFO_FILE, PAYLOAD_MANIFEST_FILE, TAG_MANIFEST_FILE].includes(path)
    if (!isTag) return this.refuse(path, 'unlisted', 'not part of this archive format (not in the manifest)')
    try {
      if (path === TAG_MANIFEST_FILE) {
        this.checkTagManifest(data)
        return {kind: 'tag'}
      }

      this.tagSha256.set(path, sha256(data))
      if (path === CONTENTS_FILE) this.readContents(data)
      else if (path === MANIFEST_FILE) this.manifest = JSON.parse(data.toString('utf8')) as VolumeManifest
      else if (path === BAG_INFO_FILE) this.bagInfo = parseBagInfo(data.toString('utf8'))
      else if (path === PAYLOAD_MANIFEST_FILE) this.checkPayloadManifest(data)
      return {kind: 'tag'}
    } catch (error) {
      if (path === CONTENTS_FILE) this.contentsRefusal = `${CONTENTS_FILE} refused: ${(error as Error).message}`
      return this.refuse(path, /newer than this program/.test((error as Error).message) ? 'unsupported' : 'damaged', (error as Error).message)
    }
  }

  finish(): BagReport {
    if (!this.complete) this.problems.push({id: `${this.bag}/${TAG_MANIFEST_FILE}`, kind: 'missing', reason: 'missing: the volume is incomplete (cut short, or still being written)'})
    const missing = [...this.expected.keys()].filter((path) => !this.arrived.has(path)).map((path) => `${this.bag}/${path}`)
    const header = this.contents ?? this.manifest
    const count = /^(\d+) of (\d+)$/.exec(this.bagInfo?.get('Bag-Count') ?? '')
    return {
      bag: this.bag,
      group: header?.group ?? this.bagInfo?.get('Bag-Group-Identifier'),
      volume: header?.volume ?? (count ? Number(count[1]) : undefined),
      volumeCount: header?.volumeCount ?? (count ? Number(count[2]) : undefined),
      complete: this.complete && missing.length === 0,
      entriesAccepted: this.accepted,
      missing,
      problems: this.problems,
      studies: header?.studies ?? {},
      manifest: this.manifest,
    }
  }

  private acceptPayload(path: string, data: Buffer): EntryVerdict {
    if (this.contentsRefusal) return this.refuse(path, 'damaged', this.contentsRefusal)
    if (!this.contents) return this.refuse(path, 'unlisted', `payload before ${CONTENTS_FILE}: not an archive of this format`)
    const expectation = this.expected.get(path)
    if (!expectation) return this.refuse(path, 'unlisted', 'not in the manifest')
    this.arrived.add(path)
    const expectedSize = expectation.attachment?.size ?? expectation.record.size
    const expectedMd5 = expectation.attachment?.md5 ?? expectation.record.md5
    const digest = sha256(data)
    if (data.length !== expectedSize) return this.refuse(path, 'checksum', `size ${data.length} differs from the manifest's ${expectedSize}`)
    const md5 = createHash('md5').update(data).digest('hex')
    if (md5 !== expectedMd5) return this.refuse(path, 'checksum', `checksum mismatch: MD5 ${md5}, the manifest says ${expectedMd5}`)
    if (this.knownSha256) {
      const known = this.knownSha256.get(path)
      if (known === undefined) return this.refuse(path, 'unlisted', `not listed in ${PAYLOAD_MANIFEST_FILE}`)
      if (known !== digest) return this.refuse(path, 'checksum', `checksum mismatch: SHA-256 ${digest}, ${PAYLOAD_MANIFEST_FILE} says ${known}`)
    }

    // Only accepted entries are compared with the payload manifest later: a refused one is reported once.
    this.payloadSha256.set(path, digest)
    this.accepted++
    return expectation.attachment
      ? {kind: 'attachment', record: expectation.record, attachment: expectation.attachment, data}
      : {kind: 'dicom', record: expectation.record, data}
  }

  private readContents(data: Buffer): void {
    const contents = JSON.parse(data.toString('utf8')) as VolumeContents
    if (contents.format !== ARCHIVE_FORMAT) throw new Error(`not an ${ARCHIVE_FORMAT} archive`)
    if (!(contents.formatVersion <= ARCHIVE_FORMAT_VERSION)) {
      throw new Error(`archive format version ${contents.formatVersion} is newer than this program reads (${ARCHIVE_FORMAT_VERSION}); upgrade orthanc-replicate`)
    }

    this.contents = contents
    for (const record of contents.instances) {
      this.expected.set(record.path, {record})
      for (const attachment of record.attachments) this.expected.set(attachment.path, {record, attachment})
    }
  }

  /** Compares the payload manifest with the SHA-256 of every payload entry that arrived. */
  private checkPayloadManifest(data: Buffer): void {
    const listed = parseChecksumManifest(data.toString('utf8'), PAYLOAD_MANIFEST_FILE)
    for (const [path, digest] of this.payloadSha256) {
      const expected = listed.get(path)
      if (expected === undefined) this.problems.push({id: `${this.bag}/${path}`, kind: 'unlisted', reason: `not listed in ${PAYLOAD_MANIFEST_FILE}`})
      else if (expected !== digest) this.problems.push({id: `${this.bag}/${path}`, kind: 'checksum', reason: `SHA-256 ${digest} differs from ${PAYLOAD_MANIFEST_FILE}`})
    }

    // An instance that failed on the source is in the contents but not in the payload manifest: not missing, just never there.
    for (const path of this.expected.keys()) if (!listed.has(path)) this.expected.delete(path)
  }

  private checkTagManifest(data: Buffer): void {
    const listed = parseChecksumManifest(data.toString('utf8'), TAG_MANIFEST_FILE)
    let allGood = true
    for (const [path, digest] of listed) {
      const actual = this.tagSha256.get(path)
      if (actual === undefined) {
        this.problems.push({id: `${this.bag}/${path}`, kind: 'missing', reason: 'listed in the tag manifest but missing'})
        allGood = false
      } else if (actual !== digest) {
        this.problems.push({id: `${this.bag}/${path}`, kind: 'checksum', reason: `SHA-256 differs from ${TAG_MANIFEST_FILE}`})
        allGood = false
      }
    }

    this.complete = allGood && this.contents !== undefined
  }

  private refuse(path: string, kind: ProblemKind, reason: string): EntryVerdict {
    this.problems.push({id: `${this.bag}/${path}`, kind, reason})
    return {kind: 'refused', reason}
  }
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}
