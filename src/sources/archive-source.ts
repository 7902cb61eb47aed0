import {createHash} from 'node:crypto'
import {createReadStream} from 'node:fs'
import {tmpdir} from 'node:os'
import {basename} from 'node:path'
import type {Readable} from 'node:stream'

import {type ArchiveEntry, type ArchiveProblem, readArchiveEntries} from '../archive/archive-stream.js'
import {BagSpool} from '../archive/bag-spool.js'
import {checkEntryHeader, DEFAULT_ENTRY_LIMITS, type EntryLimits, type EntryLocation, EntryRefusedError, printable} from '../archive/entry-rules.js'
import {CONTENTS_FILE, type VolumeManifest} from '../archive/format.js'
import {parseContents} from '../archive/manifest-schema.js'
import {InstanceAssembler, ProvenPayload} from '../archive/proven-payload.js'
import {type IndexedEntry, indexTarFile, readIndexedEntry} from '../archive/tar-index.js'
import {type BagProof, proveBag} from '../archive/trust-chain.js'
import {AgeFileError} from '../crypto/age.js'
import type {InstanceInTransit, StudyExpectation} from '../model.js'
import {isFileSystemError} from './dicom-folder.js'
import type {ProblemKind} from '../problems.js'
import type {SourceEvents} from './source-events.js'

/** An archive to read: a volume file, or a stream (stdin). */
export interface ArchiveInput {
  label: string
  /** Set for files: their tag files are read first, by seeking, and prove the volume before its payload is read. */
  path?: string
  open(): Readable
}

export function archiveFile(path: string): ArchiveInput {
  return {label: path, path, open: () => createReadStream(path)}
}

export function archiveStream(label: string, stream: Readable): ArchiveInput {
  return {label, open: () => stream}
}

export interface ArchiveReadOptions {
  limits?: EntryLimits
  /** Where a stream's payload waits until its bag is proven. Default: the system's temporary folder. */
  spoolDir?: string
  signal?: AbortSignal
}

/** What became of one bag (volume). */
export interface BagReport {
  bag: string
  /** Where it was read from: the volume file, or stdin. */
  input: string
  /** Read from a stream (stdin, a pipe), not a volume file: what to do again is another thing. */
  fromStream: boolean
  group?: string
  volume?: number
  volumeCount?: number
  /** Its tag files all agree: its payload could be used. */
  proven: boolean
  /** Proven, and every payload file it lists arrived and matched. */
  complete: boolean
  entriesAccepted: number
  /** Instances its contents plan; for an unproven bag, none of them was used. */
  instancesPlanned: number
  /** Per-study expectations, from a proven bag only. */
  studies: Record<string, StudyExpectation>
  /** The proven manifest: the chain of hops, the source, the filters. */
  manifest?: VolumeManifest
}

export interface ArchiveReadReport {
  bags: BagReport[]
  /** Volumes of a group that were not among the inputs, as ranges: volumes `from`..`to` of `volumeCount`. */
  missingVolumes: Array<{group: string; from: number; to: number; volumeCount: number}>
}

/** What a run found of the volumes it read, as import and verify summaries report it. */
export interface VolumeCounts {
  read: number
  /** Volumes whose tag files all agree; only their payload was used. */
  proven: number
  complete: number
  /** Volumes whose chain could not be proven: none of their instances was used. */
  unproven: Array<{volume: string; input: string; instances: number; fromStream: boolean}>
  incomplete: string[]
  missing: ArchiveReadReport['missingVolumes']
}

/**
 * Reads archive volumes and yields each instance, with its user attachments, only once the
 * bag it belongs to is proven (trust-chain.ts) and each of its files matches the proven
 * manifests. A volume file's tag files are read first (they sit at its end); a stream's payload
 * waits on disk until its tag manifest arrives. Everything refused, unproven or missing is
 * reported through `events.onProblem`, naming the volume and entry; the rest is still yielded.
 */
export async function* readArchives(inputs: ArchiveInput[], events: SourceEvents, report: ArchiveReadReport, options: ArchiveReadOptions = {}): AsyncGenerator<InstanceInTransit> {
  const context: ReadContext = {failedInputs: new Set(), events, report, limits: options.limits ?? DEFAULT_ENTRY_LIMITS, spoolDir: options.spoolDir ?? tmpdir(), signal: options.signal}
  for (const input of inputs) {
    if (input.path) yield* readVolumeFile(input, input.path, context)
    else yield* readArchiveStream(input, context)
  }

  checkGroups(report, events)
}

interface ReadContext {
  /** Inputs that could not be read to their end (not opened, damaged encryption, I/O): already named. */
  failedInputs: Set<string>
  events: SourceEvents
  report: ArchiveReadReport
  limits: EntryLimits
  spoolDir: string
  signal?: AbortSignal
}

// --- Volume files ---------------------------------------------------------------------------

async function* readVolumeFile(input: ArchiveInput, path: string, context: ReadContext): AsyncGenerator<InstanceInTransit> {
  const {events} = context
  const problem = (id: string, kind: ProblemKind, reason: string) => events.onProblem({id, path: input.label, kind, reason})
  const index = await indexTarFile(path)
  if (index.fileSize === 0) return problem(input.label, 'not-archive', 'is empty (0 bytes): not an archive volume')
  // What the tar level found wrong (damage, truncation, data after the end): said here when the stream is not read.
  const reportDamage = () => {
    for (const damage of index.damage) problem(damage.id, damage.kind, damage.reason)
  }
  const bags = index.bags.map((indexed) => indexed.name)
  if (bags.length === 0) {
    if (index.damage.length > 0) reportDamage()
    else problem(input.label, 'not-archive', 'holds no entry: not an archive volume')
    return
  }

  // A volume file holds one bag, named after it; anything else in it is not part of the export.
  const bag = bags.find((name) => `${name}.tar` === basename(path)) ?? bags[0]!
  for (const other of bags) if (other !== bag) problem(printable(other), 'unlisted', `a second bag inside the volume of ${bag}: not read`)

  // The tag files, as the index finds them: the same rules as for reading the stream, first copy
  // only. What breaks a rule is reported when the stream is read, or below if it never is.
  const tagFiles = new Map<string, Buffer>()
  for (const entry of index.entries) {
    const location = acceptableEntry(entry, context.limits)
    if (location?.bag !== bag || location.path.startsWith('data/') || entry.truncated || tagFiles.has(location.path)) continue
    tagFiles.set(location.path, await readIndexedEntry(path, entry))
  }

  const proof = proveBag(bag, tagFiles)
  if (!proof.proven) {
    reportDamage()
    const dicomSeen = index.bags.find((indexed) => indexed.name === bag)?.dicomEntries ?? 0
    recordUnprovenBag(bag, input, proof, tagFiles, context, dicomSeen)
    return
  }

  for (const stray of proof.problems) problem(printable(stray.id), stray.kind, stray.reason)
  yield* streamProvenPayload(input, proof.proven, context)
}

/** Where an indexed entry belongs, when it is one this format may hold at all. */
function acceptableEntry(entry: IndexedEntry, limits: EntryLimits): EntryLocation | undefined {
  try {
    return checkEntryHeader({name: entry.name, type: entry.type, size: entry.size, linkname: entry.linkname}, limits)
  } catch (error) {
    if (error instanceof EntryRefusedError) return undefined
    throw error
  }
}

/** Reads a proven volume file from its start: payload checked and assembled, tag files read again and compared. */
async function* streamProvenPayload(input: ArchiveInput, proven: NonNullable<BagProof['proven']>, context: ReadContext): AsyncGenerator<InstanceInTransit> {
  const {events} = context
  const problem = (id: string, kind: ProblemKind, reason: string) => events.onProblem({id, path: input.label, kind, reason})
  const payload = new ProvenPayload(proven)
  const assembler = new InstanceAssembler(proven.manifest.resources, proven.manifest.group)
  const otherBags = new Set<string>()
  const seenTags = new Set<string>()
  for await (const entry of entriesOf(input, context)) {
    if (entry.bag !== proven.bag) {
      // Already reported from the index; each other bag once.
      otherBags.add(entry.bag)
      continue
    }
    if (!entry.path.startsWith('data/')) {
      const expected = proven.tagSha256.get(entry.path)
      if (seenTags.has(entry.path)) problem(printable(entry.name), 'duplicate', 'a second entry with the same name: the first one is used')
      else if (expected !== undefined && expected !== sha256(entry.data)) problem(`${proven.bag}/${entry.path}`, 'contradiction', 'changed between two readings of the volume')
      seenTags.add(entry.path)
      continue
    }

    yield* acceptPayload(input, entry, payload, assembler, context)
  }

  yield* assembler.flush()
  finishProvenBag(input, payload, context)
}

// --- Streams --------------------------------------------------------------------------------

/** One bag of a stream as it goes by: tag files kept, payload checked against its contents and spooled. */
interface StreamedBag {
  bag: string
  tagFiles: Map<string, Buffer>
  /** The contents as they claim, for refusing junk early: the proof comes at the end. */
  planned?: Map<string, {size: number; md5: string; arrived?: boolean}>
  spool?: BagSpool
  /** Payload files refused on arrival: they count as arrived, not missing. */
  refused: string[]
  /** Its contents.json came but cannot be read: its payload is passed over without a word each, the proof says why. */
  contentsUnreadable: boolean
  /** DICOM files seen, to say how many instances an unproven bag held when its contents cannot tell. */
  dicomSeen: number
}

async function* readArchiveStream(input: ArchiveInput, context: ReadContext): AsyncGenerator<InstanceInTransit> {
  const {events} = context
  const finished = new Set<string>()
  let current: StreamedBag | undefined
  let entries = 0
  try {
    for await (const entry of entriesOf(input, context)) {
      entries++
      if (current?.bag !== entry.bag) {
        if (current) yield* finishStreamedBag(input, current, context)
        current = undefined
        if (finished.has(entry.bag)) {
          events.onProblem({id: printable(entry.name), path: input.label, kind: 'contradiction', reason: 'its bag already ended earlier in the stream'})
          continue
        }
        finished.add(entry.bag)
        current = {bag: entry.bag, tagFiles: new Map(), refused: [], contentsUnreadable: false, dicomSeen: 0}
      }

      await takeStreamedEntry(input, current, entry, context)
    }

    if (current) yield* finishStreamedBag(input, current, context)
    current = undefined
  } finally {
    await current?.spool?.dispose()
  }

  // An input that failed as it was read (a key that does not open it) has been named already.
  if (entries === 0 && !context.failedInputs.has(input.label)) events.onProblem({id: input.label, kind: 'not-archive', reason: 'holds no archive entry: the input is empty or not a tar archive'})
}

async function takeStreamedEntry(input: ArchiveInput, bag: StreamedBag, entry: ArchiveEntry, context: ReadContext): Promise<void> {
  const refuse = (kind: ProblemKind, reason: string) => {
    context.events.onProblem({id: printable(entry.name), path: input.label, kind, reason})
    bag.refused.push(entry.path)
  }

  if (!entry.path.startsWith('data/')) {
    if (bag.tagFiles.has(entry.path)) return refuse('duplicate', 'a second entry with the same name: the first one is used')
    bag.tagFiles.set(entry.path, entry.data)
    if (entry.path === CONTENTS_FILE) await planFromContents(bag, entry.data, context)
    return
  }

  if (entry.path.startsWith('data/dicom/')) bag.dicomSeen++
  if (bag.contentsUnreadable) return
  if (!bag.planned) return refuse('unlisted', `payload before ${CONTENTS_FILE}: not an archive of this format, or its start is missing`)
  const planned = bag.planned.get(entry.path)
  if (!planned) return refuse('unlisted', 'not in the volume\'s contents')
  // The tar reader keeps no list of names: a second copy is caught here. The first one stands, so this one is not noted as refused.
  if (planned.arrived) return context.events.onProblem({id: printable(entry.name), path: input.label, kind: 'duplicate', reason: 'a second entry with the same name: the first one is used'})
  planned.arrived = true
  if (entry.data.length !== planned.size) return refuse('checksum', `is ${entry.data.length} bytes long, the contents say ${planned.size}`)
  const md5 = createHash('md5').update(entry.data).digest('hex')
  if (md5 !== planned.md5) return refuse('checksum', `checksum mismatch: MD5 ${md5}, the contents say ${planned.md5}`)
  bag.spool ??= await BagSpool.open(context.spoolDir)
  await bag.spool.add(entry.path, entry.data)
}

/** Reads the (unproven) contents to know what payload to expect, and makes sure it fits in the spool. */
async function planFromContents(bag: StreamedBag, bytes: Buffer, context: ReadContext): Promise<void> {
  const parsed = parseContents(bytes)
  // Unreadable contents leave the bag with no plan: its payload is passed over, and the proof says why.
  if (!('value' in parsed)) {
    bag.contentsUnreadable = true
    return
  }
  bag.planned = new Map()
  let bytesPlanned = 0
  const files = [...parsed.value.instances.flatMap((record) => [record, ...record.attachments]), ...(parsed.value.resources ?? []).flatMap((resource) => resource.attachments)]
  for (const file of files) {
    bag.planned.set(file.path, {size: file.size, md5: file.md5})
    bytesPlanned += file.size
  }

  await BagSpool.ensureRoom(context.spoolDir, bytesPlanned, `volume ${bag.bag}`)
}

async function* finishStreamedBag(input: ArchiveInput, bag: StreamedBag, context: ReadContext): AsyncGenerator<InstanceInTransit> {
  try {
    const proof = proveBag(bag.bag, bag.tagFiles)
    if (!proof.proven) {
      recordUnprovenBag(bag.bag, input, proof, bag.tagFiles, context, bag.dicomSeen)
      return
    }

    for (const stray of proof.problems) context.events.onProblem({...stray, id: printable(stray.id), path: input.label})
    const payload = new ProvenPayload(proof.proven)
    const assembler = new InstanceAssembler(proof.proven.manifest.resources, proof.proven.manifest.group)
    for (const path of bag.refused) {
      payload.noteRefused(path)
      assembler.passed(path)
    }
    for await (const {path, data} of bag.spool?.readBack() ?? []) {
      yield* acceptPayload(input, {bag: bag.bag, path, name: `${bag.bag}/${path}`, data}, payload, assembler, context)
    }

    yield* assembler.flush()
    finishProvenBag(input, payload, context)
  } finally {
    await bag.spool?.dispose()
    bag.spool = undefined
  }
}

// --- Shared ---------------------------------------------------------------------------------

function* acceptPayload(input: ArchiveInput, entry: Pick<ArchiveEntry, 'bag' | 'path' | 'name' | 'data'>, payload: ProvenPayload, assembler: InstanceAssembler, context: ReadContext): Generator<InstanceInTransit> {
  const verdict = payload.check(entry.path, entry.data)
  if ('refused' in verdict) {
    context.events.onProblem({id: printable(entry.name), path: input.label, kind: verdict.refused, reason: verdict.reason})
    yield* assembler.passed(entry.path)
    return
  }

  const {units, unusable} = assembler.add(`${input.label}: ${entry.name}`, verdict.accepted, entry.data)
  if (unusable && !(verdict.accepted.record && payload.refusedInstances.has(verdict.accepted.record.id))) {
    context.events.onProblem({id: printable(entry.name), path: input.label, kind: 'contradiction', reason: unusable})
  }
  yield* units
}

function finishProvenBag(input: ArchiveInput, payload: ProvenPayload, context: ReadContext): void {
  const {proven} = payload
  const missing = payload.missing()
  for (const path of missing) {
    context.events.onProblem({id: `${proven.bag}/${path}`, path: input.label, kind: 'missing', reason: 'listed in the manifests but not in the volume (cut short or damaged)'})
  }

  const {manifest} = proven
  // What the export could not write into this volume: part of the export, and not in the archive.
  for (const failure of manifest.failed) {
    context.events.onProblem({id: failure.id, path: input.label, kind: 'missing', reason: `not in the archive: its export failed it (${failure.reason}); ${input.path ? 'export again into the same folder to retry it' : 'run the export to the stream again to retry it'}`})
  }

  context.report.bags.push({
    bag: proven.bag,
    input: input.label,
    fromStream: !input.path,
    group: manifest.group,
    volume: manifest.volume,
    volumeCount: manifest.volumeCount,
    proven: true,
    complete: missing.length === 0 && payload.accepted === proven.payload.size && manifest.failed.length === 0,
    entriesAccepted: payload.accepted,
    instancesPlanned: proven.contents.instances.length,
    studies: manifest.studies,
    manifest,
  })
}

function recordUnprovenBag(bag: string, input: ArchiveInput, proof: BagProof, tagFiles: Map<string, Buffer>, context: ReadContext, dicomSeen: number): void {
  for (const problem of proof.problems) context.events.onProblem({...problem, id: printable(problem.id), path: input.label})
  const {claimed} = proof
  const contents = tagFiles.get(CONTENTS_FILE)
  const parsed = contents ? parseContents(contents) : undefined
  context.report.bags.push({
    bag,
    input: input.label,
    fromStream: !input.path,
    group: claimed?.group,
    volume: claimed?.volume,
    volumeCount: claimed?.volumeCount,
    proven: false,
    complete: false,
    entriesAccepted: 0,
    instancesPlanned: parsed && 'value' in parsed ? parsed.value.instances.length : dicomSeen,
    studies: {},
  })
}

/** The entries of an input as the tar reader gives them, its refusals, damage and truncation reported as problems. */
async function* entriesOf(input: ArchiveInput, context: ReadContext): AsyncGenerator<ArchiveEntry> {
  const report = ({id, kind, reason}: ArchiveProblem) => {
    // The reader has said why this input is no archive: it needs no second word.
    if (kind === 'not-archive') context.failedInputs.add(input.label)
    context.events.onProblem({id, path: input.label, kind, reason})
  }
  // A volume file is read by path: refused entries' data is skipped by seeking, not read.
  const stream = input.path === undefined ? input.open() : undefined
  // A stream that never ends (a stalled pipe) must still stop on Ctrl-C.
  const stop = () => stream?.destroy(context.signal?.reason instanceof Error ? context.signal.reason : new DOMException('interrupted', 'AbortError'))
  context.signal?.addEventListener('abort', stop, {once: true})
  try {
    context.signal?.throwIfAborted()
    yield* readArchiveEntries(stream ?? input.path!, context.limits, report, {signal: context.signal})
  } catch (error) {
    if (context.signal?.aborted) throw context.signal.reason
    // An encrypted volume that does not open or is damaged, a file that cannot be read on: this
    // input ends here (its unproven bag contributes nothing), and the others are read.
    if (error instanceof AgeFileError || isFileSystemError(error)) {
      context.failedInputs.add(input.label)
      const reason = error instanceof AgeFileError ? error.message : `cannot be read on: ${error.message}`
      return context.events.onProblem({id: input.label, kind: error instanceof AgeFileError ? error.problemKind : 'unreadable', reason})
    }
    throw error
  } finally {
    context.signal?.removeEventListener('abort', stop)
  }
}

/** Across the volumes of each group: all present, and all telling the same story. */
function checkGroups(report: ArchiveReadReport, events: SourceEvents): void {
  const groups = new Map<string, {volumeCount: number; seen: Map<number, string>; header?: string}>()
  for (const bag of report.bags) {
    if (!bag.group || !bag.volume || !bag.volumeCount) continue
    const group = groups.get(bag.group) ?? {volumeCount: bag.volumeCount, seen: new Map<number, string>()}
    groups.set(bag.group, group)
    if (bag.volumeCount !== group.volumeCount) {
      events.onProblem({id: bag.bag, path: bag.input, kind: 'contradiction', reason: `says its export has ${bag.volumeCount} volumes, another volume says ${group.volumeCount}`})
      continue
    }
    const before = group.seen.get(bag.volume)
    if (before !== undefined) events.onProblem({id: bag.bag, path: bag.input, kind: 'duplicate', reason: `volume ${bag.volume} of ${bag.volumeCount} was given twice (also ${before})`})
    group.seen.set(bag.volume, bag.input)

    if (bag.manifest) {
      // What every volume of one export shares: the source, the time, the filters, the cursor, the hops.
      const {source, exportedAt, filters, changeCursor, hops, incrementalBase, farSideStudies} = bag.manifest
      const header = JSON.stringify({source, exportedAt, filters, changeCursor, hops, incrementalBase, farSideStudies})
      if (group.header === undefined) group.header = header
      else if (group.header !== header) events.onProblem({id: bag.bag, path: bag.input, kind: 'contradiction', reason: 'its source, filters, cursor, hops or studies left out differ from another volume of the same export'})
    }
  }

  for (const [group, {volumeCount, seen}] of groups) {
    // Missing volumes as ranges: a volume count from a damaged file must not cost a problem per volume.
    const present = [...seen.keys()].sort((a, b) => a - b)
    let next = 1
    for (const volume of [...present, volumeCount + 1]) {
      if (volume > next) {
        const missing = {group, from: next, to: volume - 1, volumeCount}
        report.missingVolumes.push(missing)
        const which = missing.from === missing.to ? `volume ${missing.from}` : `volumes ${missing.from} to ${missing.to}`
        events.onProblem({id: `${which} of ${volumeCount}`, kind: 'missing', reason: `missing from export ${group}: give all volumes of an export`})
      }
      next = volume + 1
    }
  }
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}
