import {constants as bufferConstants} from 'node:buffer'
import {createReadStream} from 'node:fs'
import {type FileHandle, open, stat} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {dirname, join} from 'node:path'
import {createInterface} from 'node:readline'
import {gunzipSync, constants as zlibConstants, inflateRawSync, inflateSync} from 'node:zlib'

import {startsWithMetaGroup} from '../dicom/file-meta.js'
import {type DicomIdentifiers, readDicomIdentifiers} from '../dicom/parse.js'
import {
  type FolderEntry,
  identifyOrReport,
  instanceIdOf,
  studyIdOf,
  isFileSystemError,
  listDirectory,
  listDirectoryOrReport,
  mayBeginDicom,
  md5Hex,
  readWholeFileOrReport,
  UNNAMABLE_REASON,
} from './dicom-folder.js'
import type {InstanceInTransit} from '../model.js'
import type {ProblemKind} from '../problems.js'
import {CorruptCompressedDataError, inflateAnnounced, InflateLimitError} from '../util/bounded-inflate.js'
import {makeScratchFolder, removeScratchFolder} from '../util/scratch-folder.js'
import {differentCopyReason, FirstCopies} from './first-copies.js'
import {reportFailure, type SourceEvents} from './source-events.js'

export interface StorageFolderOptions {
  signal?: AbortSignal
  /** The copies met so far, shared by the inputs of one import; default: this folder's own. */
  copies?: FirstCopies
  /** Where the list of files without pixel data is kept during the walk. Default: the system temporary folder. */
  deferredDir?: string
}

export const HEADER_ONLY_COPY_REASON = 'dicom-until-pixel-data copy of an instance imported whole'
export const SMALLER_COPY_REASON = 'another header-only copy (dicom-until-pixel-data) of this image, the largest one is named'
export const IDENTICAL_COPY_REASON = 'identical copy of an instance already read'
export const ORPHAN_HEADER_REASON = 'header-only copy (dicom-until-pixel-data) of an image whose whole file is missing or damaged: not imported in its place'
const ORPHAN_HEADER_FAILURE = 'its whole file is missing or damaged, and the header alone would store an image without pixels'

/**
 * Reads the StorageDirectory of a stopped Orthanc without its index, recognising instances file
 * by file: `aa/bb/<attachment uuid>` files, each plain or compressed (`StorageCompression`). A file
 * is an instance when it reads as DICOM: a Part 10 file, or, as Orthanc 1.10.1 accepts and stores
 * them, a meta group without preamble or a bare data set (implicit or explicit VR, big endian too).
 * Everything else (the SQLite index, user attachments, other files) is skipped with a reason.
 * Files outside the `aa/bb/<uuid>` layout are read too (a misplaced instance, DICOM files kept
 * beside the storage), so that no instance is passed over unread. Files are visited in name
 * order, one listing at a time. With the index at hand, recover from it
 * instead (src/recovery): it says which files are instances, and what they should hold.
 *
 * Since 1.9.1 Orthanc also keeps a `dicom-until-pixel-data` attachment: the instance's header
 * alone, which must not be imported in place of the whole file. Files with pixel data are yielded
 * as they come; files without are set aside in a temporary file, and yielded after the walk only
 * if no whole copy of their instance turned up and they describe no image (a structured report,
 * say, has no pixel data), as whole copies are (below). A file that describes an image (it has
 * Rows) but has no pixel data is a header-only copy: when its whole file is not there it is never
 * imported in its place, and the instance is named as failed (with the largest such file).
 *
 * Memory: the current file, plus what FirstCopies keeps per instance yielded (some 200 bytes),
 * plus one entry per file without pixel data of an instance with no whole copy, usually few.
 *
 * Two whole copies of one instance (a file the server failed to delete after an overwrite): a
 * copy with the same MD5 as the first one is skipped. Without the index nothing tells which of two
 * different ones is the instance: the first in walk order is yielded, and the instance is named
 * as failed with both files, so that a person decides (an overwriting target would otherwise
 * keep whichever came last, without a word).
 */
export async function* readStorageFolder(root: string, events: SourceEvents, options: StorageFolderOptions = {}): AsyncGenerator<InstanceInTransit> {
  const deferred = new DeferredFiles(options.deferredDir ?? tmpdir())
  const wholeCopies = options.copies ?? new FirstCopies()
  try {
    // Files outside the layout are read too: a misplaced instance, or DICOM files beside it, must not be passed over unread.
    for await (const file of storageFiles(root, events, options.signal, {outsideLayout: true})) {
      const decoded = file.inLayout ? await decodeStorageFile(file.path, events) : await decodeOutsideLayout(file.path, events)
      if (decoded === undefined) continue
      if (!decoded.identifiers.hasPixelData) {
        await deferred.add({instanceId: decoded.instanceId, size: decoded.dicom.length, relative: file.relative, describesImage: decoded.identifiers.describesImage})
        continue
      }

      const md5 = md5Hex(decoded.dicom)
      if (meetCopy(wholeCopies, root, file.relative, decoded.instanceId, md5, events)) yield {label: file.path, instanceId: decoded.instanceId, studyId: studyIdOf(decoded.identifiers), dicom: decoded.dicom, md5}
    }

    yield* instancesWithoutPixelData(root, deferred, wholeCopies, events, options.signal)
  } finally {
    await deferred.dispose()
  }
}

/** Whether a whole copy is the first of its instance, to be yielded; a later one is skipped (the same bytes) or named (others). */
function meetCopy(copies: FirstCopies, root: string, relative: string, instanceId: string, md5: string, events: SourceEvents): boolean {
  const path = join(root, relative)
  // Labelled by the whole path: the copies may be shared with the other inputs of an import.
  const met = copies.meet(instanceId, md5, path)
  if (met.kind === 'identical') events.onSkip({id: path, kind: 'copy', reason: IDENTICAL_COPY_REASON})
  else if (met.kind === 'different') reportFailure(events, {id: instanceId, path, kind: 'contradiction', reason: differentCopyReason(met.firstLabel)})
  return met.kind === 'first'
}

/**
 * The instances without pixel data, once the walk is over: each file is set aside, and read now
 * only when no whole copy with pixel data turned up. Several files of an instance that describes
 * no image (a report) are each a whole copy: the first in walk order is taken, a different one
 * named. Of an image, such files are header-only copies (dicom-until-pixel-data), never imported
 * in its place: the largest is named with the instance, failed.
 */
async function* instancesWithoutPixelData(
  root: string, deferred: DeferredFiles, wholeCopies: FirstCopies, events: SourceEvents, signal?: AbortSignal,
): AsyncGenerator<InstanceInTransit> {
  const headersOnly = new Map<string, DeferredFile>()
  const wholeWithoutPixels = new Map<string, DeferredFile[]>()
  for await (const file of deferred.entries()) {
    // A report's file is a whole copy, met as any (another input may have given a different one).
    if (!file.describesImage) {
      wholeWithoutPixels.set(file.instanceId, [...(wholeWithoutPixels.get(file.instanceId) ?? []), file])
      continue
    }
    if (wholeCopies.has(file.instanceId)) {
      events.onSkip({id: join(root, file.relative), kind: 'header-only', reason: HEADER_ONLY_COPY_REASON})
      continue
    }

    const kept = headersOnly.get(file.instanceId)
    if (kept === undefined) {
      headersOnly.set(file.instanceId, file)
      continue
    }
    // Ties keep the first file in walk order.
    const [keep, drop] = file.size > kept.size ? [file, kept] : [kept, file]
    headersOnly.set(file.instanceId, keep)
    events.onSkip({id: join(root, drop.relative), kind: 'header-only', reason: SMALLER_COPY_REASON})
  }

  for (const file of headersOnly.values()) {
    const path = join(root, file.relative)
    events.onSkip({id: path, kind: 'header-only', reason: ORPHAN_HEADER_REASON})
    reportFailure(events, {id: file.instanceId, path, kind: 'missing', reason: `only a header-only copy (dicom-until-pixel-data) of this instance was found: ${ORPHAN_HEADER_FAILURE}`})
  }
  for (const files of wholeWithoutPixels.values()) {
    for (const file of files) {
      signal?.throwIfAborted()
      const decoded = await decodeStorageFile(join(root, file.relative), events)
      if (decoded === undefined) continue
      const md5 = md5Hex(decoded.dicom)
      if (meetCopy(wholeCopies, root, file.relative, decoded.instanceId, md5, events)) yield {label: join(root, file.relative), instanceId: decoded.instanceId, studyId: studyIdOf(decoded.identifiers), dicom: decoded.dicom, md5}
    }
  }
}

export interface StorageFile {
  path: string
  /** Relative to the storage folder: `aa/bb/<uuid>` in the layout; any path outside it. */
  relative: string
  /** Whether it is an attachment where Orthanc files one (`aa/bb/<uuid>`). */
  inLayout: boolean
}

/**
 * The `aa/bb/<uuid>` files of a storage folder, in name order (hence in UUID order). Descends only
 * into the two levels of hex-pair folders; anything else is reported as skipped and left alone,
 * unless `outsideLayout`: then the files outside the layout come too, in the same depth-first name
 * order, folders walked (links never followed), for a walk that must miss no instance.
 */
export async function* storageFiles(root: string, events: SourceEvents, signal?: AbortSignal, options: {outsideLayout?: boolean} = {}): AsyncGenerator<StorageFile> {
  // The layout first, then what lies outside it: Orthanc's own file of an instance is met before a
  // stray copy of it (an old export beside the storage), so that it is the one taken (FirstCopies).
  // Each is a stack of folders still to list, next one last; `depth` is how deep in the layout (none: outside it).
  const layout: Array<{path: string; relative: string; depth: number; digits: string}> = [{path: root, relative: '', depth: 0, digits: ''}]
  const outside: Array<{path: string; relative: string; isFile: boolean}> = []
  while (layout.length > 0) {
    signal?.throwIfAborted()
    const folder = layout.pop()!
    const later: typeof layout = []
    for (const entry of await listFolder(folder.path, folder.relative, events)) {
      const relative = folder.relative === '' ? entry.name : `${folder.relative}/${entry.name}`
      if (folder.depth < 2 && isHexPairFolder(entry)) later.push({path: entry.path, relative, depth: folder.depth + 1, digits: folder.digits + entry.name})
      else if (folder.depth === 2 && entry.kind === 'file' && isAttachmentName(entry.name, folder.digits)) yield {path: entry.path, relative, inLayout: true}
      else if (options.outsideLayout && !(folder.depth === 0 && entry.kind === 'file' && INDEX_FILES.has(entry.name))) passOutside(entry, relative, outside, events)
      else skipOutsideLayout(entry, events)
    }
    // Depth first, in name order: the first entry's folder is walked next.
    for (let index = later.length - 1; index >= 0; index--) layout.push(later[index]!)
  }

  // Outside the layout, in the order met; a folder's entries in name order, walked depth first.
  outside.reverse()
  while (outside.length > 0) {
    signal?.throwIfAborted()
    const next = outside.pop()!
    if (next.isFile) {
      yield {path: next.path, relative: next.relative, inLayout: false}
      continue
    }
    const entries: typeof outside = []
    for (const entry of await listFolder(next.path, next.relative, events)) passOutside(entry, `${next.relative}/${entry.name}`, entries, events)
    for (let index = entries.length - 1; index >= 0; index--) outside.push(entries[index]!)
  }
}

/** An entry outside the layout, kept for the walk after it: a file to read, a folder to list; a link or special file said now. */
function passOutside(entry: FolderEntry, relative: string, to: Array<{path: string; relative: string; isFile: boolean}>, events: SourceEvents): void {
  // Orthanc stores no link: one where instances are looked for hides what it points to, never passed over without a word.
  if (entry.kind === 'symlink') events.onProblem({id: entry.path, kind: 'unreadable', reason: LINK_NOT_FOLLOWED})
  else if (entry.kind === 'file' || entry.kind === 'directory') to.push({path: entry.path, relative, isFile: entry.kind === 'file'})
  else skipOutsideLayout(entry, events)
}

/**
 * A folder's entries, or a problem said and none. The one exception: a file system's own
 * `lost+found`, which only root may read and which holds nothing unless fsck put something there,
 * is set aside with the way out when it cannot be read, not failed: a healthy disk has one.
 */
async function listFolder(path: string, relative: string, events: SourceEvents): Promise<FolderEntry[]> {
  if (relative !== LOST_AND_FOUND) return listDirectoryOrReport(path, events)
  try {
    return await listDirectory(path)
  } catch (error) {
    if (!isFileSystemError(error) || (error.code !== 'EACCES' && error.code !== 'EPERM')) return listDirectoryOrReport(path, events)
    events.onSkip({id: path, kind: 'foreign-file', reason: 'the file system\'s lost+found, which this user cannot read: not looked in (run as root to recover what fsck may have put there)'})
    return []
  }
}

const LOST_AND_FOUND = 'lost+found'

const LINK_NOT_FOLLOWED = 'a symbolic link, not followed (Orthanc stores none; a link could lead anywhere on this machine): what it points to is not read; put a copy of it in its place (cp -rL) to recover it'

const HEX_PAIR = /^[0-9a-f]{2}$/i
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const INDEX_FILES = new Set(['index', 'index-wal', 'index-shm', 'index-journal'])

function isHexPairFolder(entry: FolderEntry): boolean {
  return entry.kind === 'directory' && HEX_PAIR.test(entry.name)
}

// Orthanc files an attachment under the first four hex digits of its UUID.
function isAttachmentName(name: string, folderDigits: string): boolean {
  return UUID.test(name) && name.slice(0, 4).toLowerCase() === folderDigits.toLowerCase()
}

function skipOutsideLayout(entry: FolderEntry, events: SourceEvents): void {
  if (entry.kind === 'unnamable') {
    events.onProblem({id: entry.path, kind: 'unreadable', reason: UNNAMABLE_REASON})
    return
  }
  const kind = entry.kind === 'symlink' ? 'link' : entry.kind === 'other' ? 'special-file' : INDEX_FILES.has(entry.name) ? 'index-file' : 'foreign-file'
  const reason = entry.kind === 'symlink'
    ? 'symbolic link (not followed)'
    : entry.kind === 'directory'
      ? 'folder outside the storage layout (aa/bb/uuid), not read'
      : entry.kind === 'other'
        ? 'not a regular file (device, socket or pipe)'
        : INDEX_FILES.has(entry.name) ? 'Orthanc index database (SQLite)' : 'not a storage file (outside the aa/bb/uuid layout)'
  events.onSkip({id: entry.path, kind, reason})
}

export interface DecodedInstance {
  dicom: Buffer
  identifiers: DicomIdentifiers
  instanceId: string
}

// A stored file can be no larger than the buffer it is read into, compressed or not.
const LARGEST_BUFFER = bufferConstants.MAX_LENGTH

const OUTSIDE_LAYOUT_REASON = 'not a storage file (outside the aa/bb/uuid layout)'

/** A file outside the layout (misplaced, or beside the storage): read like a stored file, so that an instance among them is imported; the rest is set aside as foreign. */
async function decodeOutsideLayout(path: string, events: SourceEvents): Promise<DecodedInstance | undefined> {
  return decodeStorageFile(path, {...events, onSkip: (notice) => events.onSkip({...notice, kind: 'foreign-file', reason: `${OUTSIDE_LAYOUT_REASON}, ${notice.reason}`})}, {outsideLayout: true})
}

/** Whether the first bytes of a file may begin an instance as Orthanc stores one: DICOM in any framing, or compressed. */
function mayBeginStoredInstance(head: Buffer, readAt: (offset: number) => Buffer, size: number): boolean {
  // A file of zeros is read on: a power loss's leftover is named as damaged (decodeStoredBytes);
  // zeros at the start only (a disk image has 32 KiB of them) are looked past, further in and at the end.
  if (isAllZeros(head)) return [ISO_VOLUME_DESCRIPTOR_OFFSET, size - head.length].every((offset) => isAllZeros(readAt(Math.max(0, offset))))
  // So is a compressed file whose framing is damaged, when the start of its data inflates to DICOM.
  return hasDicmMagic(head) || hasZlibHeader(head) || mayBeginDicom(head) || inflatedStartMayBeginDicom(head)
}

/** Where a disk image (ISO 9660) has its first volume descriptor, after 32 KiB of zeros. */
const ISO_VOLUME_DESCRIPTOR_OFFSET = 32 * 1024

function inflatedStartMayBeginDicom(head: Buffer): boolean {
  const inflatedFrom = (offset: number, inflate: typeof inflateSync) => {
    try {
      return inflate(head.subarray(offset), {finishFlush: zlibConstants.Z_SYNC_FLUSH, maxOutputLength: PROBED_OUTPUT_BYTES})
    } catch {
      return Buffer.alloc(0)
    }
  }
  return [inflatedFrom(COMPRESSED_DATA_OFFSET, inflateSync), inflatedFrom(COMPRESSED_DATA_OFFSET + ZLIB_HEADER_BYTES, inflateRawSync)]
    // Markers only: a bare data set that large behind damaged framing is not told apart anyway (inflatesToDicom reads 64 MiB at most).
    .some((start) => hasDicmMagic(start) || startsWithMetaGroup(start))
}

async function decodeStorageFile(path: string, events: SourceEvents, options: {outsideLayout?: boolean} = {}): Promise<DecodedInstance | undefined> {
  // A large user attachment (a video, say) is not read whole only to be set aside.
  const stored = await readWholeFileOrReport(path, LARGEST_BUFFER, events, {mayHold: mayBeginStoredInstance})
  return stored === undefined ? undefined : decodeStoredBytes(path, stored, events, options)
}

/**
 * The instance a stored file holds, or undefined when it holds none (reported as skipped or as a
 * problem). Undoes StorageCompression first; then any DICOM framing Orthanc stores is accepted.
 */
export function decodeStoredBytes(label: string, stored: Buffer, events: SourceEvents, options: {outsideLayout?: boolean} = {}): DecodedInstance | undefined {
  // Not passed over as "not DICOM": Orthanc writes no empty instance file, and a power loss leaves
  // them. Outside the layout it wrote no file at all: an empty one there is nobody's instance.
  if (stored.length === 0) {
    if (options.outsideLayout) events.onSkip({id: label, kind: 'not-dicom', reason: 'an empty file'})
    else events.onProblem({id: label, kind: 'truncated', reason: 'an empty stored file: most often an instance a power loss cut short (or, rarely, an empty user attachment)'})
    return undefined
  }

  const content = unwrapStorageFile(stored)
  if ('problem' in content) {
    events.onProblem({id: label, kind: content.kind ?? 'damaged', reason: content.problem})
    return undefined
  }

  const identifiers = identifyOrReport(label, content.dicom, {
    onProblem: (problem) => events.onProblem(problem),
    onSkip(notice) {
      // Zeros only: what a power loss leaves of a file whose size was written and its data not.
      // (Zeros at the start alone are no sign: a disk image kept as a user attachment has 32 KiB of them.)
      if (!options.outsideLayout && isAllZeros(stored)) events.onProblem({id: label, kind: 'damaged', reason: `a stored file of ${stored.length} bytes, all zeros: most often an instance a power loss left zeroed`})
      // Not DICOM in any framing: one of the user attachments Orthanc keeps beside the instances, or a stranger.
      else events.onSkip({...notice, reason: `${content.compressed ? 'compressed, ' : ''}not DICOM: a user attachment or another kind of file (${notice.reason})`})
    },
  })
  if (identifiers === undefined) return undefined
  return {dicom: content.dicom, identifiers, instanceId: instanceIdOf(identifiers)}
}

type StorageContent = {dicom: Buffer; compressed: boolean} | {problem: string; kind?: ProblemKind}

function isAllZeros(bytes: Buffer): boolean {
  // Compared a block at a time: a byte at a time costs a call per byte.
  const zeros = Buffer.alloc(Math.min(bytes.length, 64 * 1024))
  for (let offset = 0; offset < bytes.length; offset += zeros.length) {
    const block = bytes.subarray(offset, offset + zeros.length)
    if (!block.equals(zeros.subarray(0, block.length))) return false
  }
  return true
}

const COMPRESSED_DATA_OFFSET = 8
// Far beyond any DICOM file; a larger "size" means the first 8 bytes are something else.
const MAX_ANNOUNCED_BYTES = 8n * 1024n ** 3n

/**
 * Undoes `StorageCompression` when a file has it: an 8-byte little-endian uncompressed size, then
 * a zlib stream. A file that looks compressed that way but does not inflate to the announced
 * size is damaged, a problem. Nothing DICOM can look compressed: a Part 10 file has "DICM" at
 * 128, and the first 8 bytes of a bare data set (a tag, then a VR or a length) read as a size
 * far beyond 8 GiB.
 */
function unwrapStorageFile(stored: Buffer): StorageContent {
  if (hasDicmMagic(stored)) return {dicom: stored, compressed: false}
  const announced = announcedUncompressedSize(stored)
  if (announced === undefined) {
    // Part of its framing damaged, its deflate data whole: a compressed DICOM file, never "not DICOM", or it would be lost without a word.
    const damagedFraming = damagedCompressionFraming(stored)
    if (damagedFraming !== undefined) return {problem: `compressed storage file whose ${damagedFraming}: its data inflates to DICOM`, kind: 'damaged'}
    return {dicom: stored, compressed: false}
  }
  if (announced > LARGEST_BUFFER) return {problem: `announces ${announced} bytes once inflated, more than one buffer can hold`}

  try {
    // Capped by the announced size, and the announced size by the bounds: a few compressed
    // megabytes announcing gigabytes are refused before anything is inflated.
    return {dicom: inflateAnnounced(stored.subarray(COMPRESSED_DATA_OFFSET), announced, {format: 'zlib'}), compressed: true}
  } catch (error) {
    if (error instanceof InflateLimitError) return {problem: `compressed storage file ${error.message}`, kind: 'hostile'}
    if (error instanceof CorruptCompressedDataError) return {problem: `compressed storage file does not inflate to its announced ${announced} bytes: ${error.message}`}
    throw error
  }
}

function hasDicmMagic(bytes: Buffer): boolean {
  return bytes.length >= 132 && bytes.toString('latin1', 128, 132) === 'DICM'
}

function announcedUncompressedSize(stored: Buffer): number | undefined {
  if (!hasZlibHeader(stored) || !hasPlausibleSize(stored)) return undefined
  return Number(stored.readBigUInt64LE(0))
}

function hasPlausibleSize(stored: Buffer): boolean {
  return stored.length >= COMPRESSED_DATA_OFFSET && stored.readBigUInt64LE(0) <= MAX_ANNOUNCED_BYTES
}

/**
 * Which part of the compression framing (the 8-byte size, the 2-byte zlib header) is damaged,
 * when the deflate data behind it still inflates to DICOM; undefined when it does not. Random
 * bytes do not inflate to a DICOM marker or an instance, so no user attachment is taken for one.
 */
function damagedCompressionFraming(stored: Buffer): string | undefined {
  if (hasZlibHeader(stored)) {
    return inflatesToDicom(stored.subarray(COMPRESSED_DATA_OFFSET), 'zlib') ? 'first 8 bytes (its size once inflated) are damaged' : undefined
  }
  if (!inflatesToDicom(stored.subarray(COMPRESSED_DATA_OFFSET + ZLIB_HEADER_BYTES), 'raw')) return undefined
  // A gzip file's header is 10 bytes too: a gzipped DICOM file kept as a user attachment is whole, and not Orthanc's framing.
  if (isWholeGzip(stored)) return undefined
  return hasPlausibleSize(stored) ? 'zlib header (bytes 8-9) is damaged' : 'first 8 bytes (its size once inflated) and zlib header (bytes 8-9) are damaged'
}

const GZIP_MAGIC = Buffer.from([0x1f, 0x8b, 0x08])

/** A gzip file (RFC 1952) that inflates whole and matches its CRC, within the probe's bound. */
function isWholeGzip(stored: Buffer): boolean {
  if (!stored.subarray(0, GZIP_MAGIC.length).equals(GZIP_MAGIC)) return false
  try {
    gunzipSync(stored, {maxOutputLength: PROBED_WHOLE_BYTES})
    return true
  } catch {
    return false
  }
}

/** RFC 1950 after the 8-byte size: compression method 8 (deflate), window of at most 32 KiB, header checksum a multiple of 31. */
function hasZlibHeader(stored: Buffer): boolean {
  if (stored.length < COMPRESSED_DATA_OFFSET + 2) return false
  const cmf = stored[COMPRESSED_DATA_OFFSET]!
  const flg = stored[COMPRESSED_DATA_OFFSET + 1]!
  return (cmf & 0x0f) === 8 && cmf >> 4 <= 7 && (cmf * 256 + flg) % 31 === 0
}

/**
 * Whether a deflate stream holds DICOM. Its start is inflated first (a bomb stays small) and
 * looked at for a marker: "DICM" at 128, or a file meta group at 0. A bare data set has none: then
 * the whole stream is inflated, up to PROBED_WHOLE_BYTES, and must read as an instance.
 */
const PROBED_COMPRESSED_BYTES = 4096
const PROBED_OUTPUT_BYTES = 8 * 1024 * 1024
const PROBED_WHOLE_BYTES = 64 * 1024 * 1024
const ZLIB_HEADER_BYTES = 2

function inflatesToDicom(stream: Buffer, format: 'zlib' | 'raw'): boolean {
  const inflate = format === 'zlib' ? inflateSync : inflateRawSync
  try {
    const start = inflate(stream.subarray(0, PROBED_COMPRESSED_BYTES), {finishFlush: zlibConstants.Z_SYNC_FLUSH, maxOutputLength: PROBED_OUTPUT_BYTES})
    if (hasDicmMagic(start) || startsWithMetaGroup(start)) return true
    readDicomIdentifiers(inflate(stream, {maxOutputLength: PROBED_WHOLE_BYTES}))
    return true
  } catch {
    // Does not inflate, inflates beyond the probe, or is not DICOM: nothing says it was an instance.
    return false
  }
}

interface DeferredFile {
  instanceId: string
  size: number
  relative: string
  describesImage: boolean
}

// Lines are written in batches: one write per file would cost a system call each.
const DEFERRED_BATCH_LINES = 1000

/** Files without pixel data, set aside on disk (one `id\tsize\tpath\timage` line each) until the walk ends. */
class DeferredFiles {
  private path: string | undefined
  private handle: FileHandle | undefined
  private batch: string[] = []

  constructor(private readonly dir: string) {}

  async add(file: DeferredFile): Promise<void> {
    // A path outside the layout may hold tabs and line breaks: encoded.
    this.batch.push(`${file.instanceId}\t${file.size}\t${encodeURIComponent(file.relative)}\t${file.describesImage ? 1 : 0}\n`)
    if (this.batch.length >= DEFERRED_BATCH_LINES) await this.flush()
  }

  async *entries(): AsyncGenerator<DeferredFile> {
    await this.flush()
    if (this.handle === undefined || this.path === undefined) return
    await this.handle.close()
    this.handle = undefined
    const input = createReadStream(this.path)
    try {
      for await (const line of createInterface({input, crlfDelay: Number.POSITIVE_INFINITY})) {
        const [instanceId, size, relative, image] = line.split('\t')
        if (instanceId && size && relative) yield {instanceId, size: Number(size), relative: decodeURIComponent(relative), describesImage: image === '1'}
      }
    } finally {
      // Left early, the stream would keep the file open and, on Windows, undeletable.
      input.destroy()
    }
  }

  async dispose(): Promise<void> {
    this.batch = []
    await this.handle?.close()
    this.handle = undefined
    if (this.path !== undefined) await removeScratchFolder(dirname(this.path))
  }

  // The file is created on the first line: most folders read without needing one at all. It is in
  // a scratch folder, which the next run sweeps if this one is killed: it lists instance IDs.
  private async flush(): Promise<void> {
    if (this.batch.length === 0) return
    if (this.handle === undefined) {
      this.path = join(await makeScratchFolder(this.dir, 'orthanc-replicate-deferred-'), 'deferred.tsv')
      this.handle = await open(this.path, 'wx', 0o600)
    }
    await this.handle.appendFile(this.batch.join(''))
    this.batch = []
  }
}

// Entries read at each level when probing: a storage folder's top holds at most 256 hex-pair
// folders and the index files; deeper, a few entries are enough to see the pattern.
const PROBE_TOP_ENTRIES = 300
const PROBE_ENTRIES = 20
const PROBE_FOLDERS = 3
const SQLITE_HEADER = Buffer.from('SQLite format 3\0', 'latin1')

/**
 * Whether a folder is an Orthanc StorageDirectory: an `aa/bb/<uuid>` file among the first
 * entries of the first few hex-pair folders, or an SQLite `index` next to hex-pair folders (the
 * Debian default keeps both in one folder). Reads a few listings and at most 16 bytes.
 */
export async function looksLikeStorageFolder(path: string): Promise<boolean> {
  try {
    if (!(await stat(path)).isDirectory()) return false
    const top = await listDirectory(path, PROBE_TOP_ENTRIES)
    const firstLevel = top.filter(isHexPairFolder)
    if (firstLevel.length === 0) return false

    for (const first of firstLevel.slice(0, PROBE_FOLDERS)) {
      const secondLevel = (await listDirectory(first.path, PROBE_ENTRIES)).filter(isHexPairFolder)
      for (const second of secondLevel.slice(0, PROBE_FOLDERS)) {
        const files = await listDirectory(second.path, PROBE_ENTRIES)
        if (files.some((file) => file.kind === 'file' && isAttachmentName(file.name, first.name + second.name))) return true
      }
    }

    const index = top.find((entry) => entry.kind === 'file' && entry.name === 'index')
    return index !== undefined && (await startsWith(index.path, SQLITE_HEADER))
  } catch (error) {
    if (!isFileSystemError(error)) throw error
    return false
  }
}

async function startsWith(path: string, prefix: Buffer): Promise<boolean> {
  const handle = await open(path, 'r')
  try {
    const head = Buffer.alloc(prefix.length)
    const {bytesRead} = await handle.read(head, 0, prefix.length, 0)
    return bytesRead === prefix.length && head.equals(prefix)
  } finally {
    await handle.close()
  }
}
