import {createReadStream} from 'node:fs'
import type {Readable} from 'node:stream'

import {DamagedArchiveError, readArchiveEntries, TruncatedArchiveError} from '../archive/archive-stream.js'
import {parseChecksumManifest} from '../archive/bagit.js'
import {type BagReport, BagValidator} from '../archive/bag-validator.js'
import {DEFAULT_ENTRY_LIMITS, type EntryLimits, printable} from '../archive/entry-rules.js'
import {PAYLOAD_MANIFEST_FILE, TAG_MANIFEST_FILE} from '../archive/format.js'
import {indexTarFile, readIndexedEntry} from '../archive/tar-index.js'
import type {InstanceInTransit} from '../model.js'
import type {SourceEvents} from './source-events.js'

/** An archive to read: a volume file, or a stream (stdin). */
export interface ArchiveInput {
  label: string
  /** Set for files: their tag files are read ahead, so SHA-256 is checked before upload. */
  path?: string
  open(): Readable
}

export function archiveFile(path: string): ArchiveInput {
  return {label: path, path, open: () => createReadStream(path)}
}

export function archiveStream(label: string, stream: Readable): ArchiveInput {
  return {label, open: () => stream}
}

export interface ArchiveReadReport {
  bags: BagReport[]
  /** Volumes of a group that were not among the inputs: "2 of 5". */
  missingVolumes: Array<{group: string; volume: number; volumeCount: number}>
}

/**
 * Reads archive volumes and yields each instance, with its user attachments, once every byte
 * of it has been checked against the manifest. Everything refused or missing is reported
 * through `events.onProblem`, naming the volume and entry; the rest is still yielded.
 */
export async function* readArchives(
  inputs: ArchiveInput[], events: SourceEvents, report: ArchiveReadReport, limits: EntryLimits = DEFAULT_ENTRY_LIMITS,
): AsyncGenerator<InstanceInTransit> {
  for (const input of inputs) yield* readOneInput(input, events, report, limits)
  report.missingVolumes.push(...findMissingVolumes(report.bags))
  for (const missing of report.missingVolumes) {
    events.onProblem({id: `volume ${missing.volume} of ${missing.volumeCount}`, kind: 'missing', reason: `missing from group ${missing.group}: give all volumes of an export`})
  }
}

async function* readOneInput(input: ArchiveInput, events: SourceEvents, report: ArchiveReadReport, limits: EntryLimits): AsyncGenerator<InstanceInTransit> {
  const knownSha256 = input.path ? await readAheadPayloadManifests(input.path, limits) : new Map<string, Map<string, string>>()
  const validators = new Map<string, BagValidator>()
  let pending: InstanceInTransit | undefined
  const finishBag = (validator: BagValidator) => {
    const bagReport = validator.finish()
    report.bags.push(bagReport)
    for (const problem of bagReport.problems) events.onProblem({...problem, id: printable(problem.id), path: input.label})
    for (const entry of bagReport.missing) events.onProblem({id: entry, path: input.label, kind: 'missing', reason: 'listed in the manifest but not in the volume (truncated?)'})
  }

  const pendingComplete = () => pending !== undefined && pending.attachments!.size === pending.record!.attachments.length
  try {
    const entries = readArchiveEntries(input.open(), limits, (refused) => events.onProblem({id: printable(refused.entry), path: input.label, kind: refused.kind, reason: refused.reason}))
    for await (const entry of entries) {
      let validator = validators.get(entry.bag)
      if (!validator) {
        // Bags follow one another in a stream: a new one means the previous one has ended.
        for (const previous of validators.values()) finishBag(previous)
        validators.clear()
        validator = new BagValidator(entry.bag, knownSha256.get(entry.bag))
        validators.set(entry.bag, validator)
      }

      const verdict = validator.accept(entry)
      if (verdict.kind === 'dicom') {
        if (pending) yield pending
        pending = {label: `${input.label}: ${entry.name}`, instanceId: verdict.record.id, studyId: verdict.record.studyId, dicom: verdict.data, md5: verdict.record.md5, record: verdict.record, attachments: new Map()}
      } else if (verdict.kind === 'attachment') {
        if (pending?.record?.id === verdict.record.id) pending.attachments!.set(verdict.attachment.contentType, verdict.data)
        else events.onProblem({id: entry.name, path: input.label, kind: 'unlisted', reason: 'attachment without its instance before it'})
      }

      if (pendingComplete()) {
        yield pending!
        pending = undefined
      }
    }
  } catch (error) {
    if (error instanceof TruncatedArchiveError) events.onProblem({id: input.label, kind: 'truncated', reason: `truncated: ${error.message}`})
    else if (error instanceof DamagedArchiveError) events.onProblem({id: input.label, kind: 'damaged', reason: `refused: ${error.message}`})
    else throw error
  }

  // An instance whose attachments did not all arrive is still stored; the missing ones are reported by the bag.
  if (pending) yield pending
  for (const validator of validators.values()) finishBag(validator)
}

/**
 * For a volume file, the payload manifest sits near its end: find it by reading headers only
 * and load it, so every entry's SHA-256 is checked before the entry is used.
 */
async function readAheadPayloadManifests(path: string, limits: EntryLimits): Promise<Map<string, Map<string, string>>> {
  const byBag = new Map<string, Map<string, string>>()
  const index = await indexTarFile(path)
  for (const entry of index.entries) {
    const [bag, ...rest] = entry.name.split('/')
    if (rest.join('/') !== PAYLOAD_MANIFEST_FILE || entry.truncated || entry.size > limits.maxTagFileBytes || !bag) continue
    // Only a bag whose tag manifest also made it to the disk is complete enough to trust ahead.
    if (!index.entries.some((other) => other.name === `${bag}/${TAG_MANIFEST_FILE}` && !other.truncated)) continue
    try {
      byBag.set(bag, parseChecksumManifest((await readIndexedEntry(path, entry)).toString('utf8'), PAYLOAD_MANIFEST_FILE))
    } catch {
      // A damaged payload manifest is reported when the stream reaches it.
    }
  }

  return byBag
}

function findMissingVolumes(bags: BagReport[]): ArchiveReadReport['missingVolumes'] {
  const groups = new Map<string, {count: number; seen: Set<number>}>()
  for (const bag of bags) {
    if (!bag.group || !bag.volume || !bag.volumeCount) continue
    const group = groups.get(bag.group) ?? {count: bag.volumeCount, seen: new Set<number>()}
    group.seen.add(bag.volume)
    groups.set(bag.group, group)
  }

  const missing: ArchiveReadReport['missingVolumes'] = []
  for (const [group, {count, seen}] of groups) {
    for (let volume = 1; volume <= count; volume++) if (!seen.has(volume)) missing.push({group, volume, volumeCount: count})
  }

  return missing
}
