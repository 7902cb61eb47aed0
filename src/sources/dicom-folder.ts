import {constants as bufferConstants} from 'node:buffer'
import {createHash} from 'node:crypto'
import {closeSync, constants as fsConstants, type Dirent, fstatSync, openSync, read, readSync, type Stats} from 'node:fs'
import {lstat, opendir, stat} from 'node:fs/promises'
import {basename, join} from 'node:path'
import {promisify} from 'node:util'

import {readElementHeader, skipElementValue} from '../dicom/element-reader.js'
import {locateDataSet} from '../dicom/file-meta.js'
import {NotDicomError} from '../dicom/not-dicom-error.js'
import {orthancInstanceId, orthancStudyId} from '../dicom/orthanc-id.js'
import {type DicomIdentifiers, readDicomIdentifiers} from '../dicom/parse.js'
import {EXPLICIT_LITTLE_ENDIAN_ENCODING} from '../dicom/transfer-syntax.js'
import {trimDicomPadding} from '../dicom/values.js'
import type {InstanceInTransit} from '../model.js'
import {FirstCopies, takeFirstCopy} from './first-copies.js'
import type {SourceEvents} from './source-events.js'
import {looksLikeArchive} from '../archive/format.js'

export interface DicomFolderOptions {
  /** Larger files are reported as problems without being read. Default 4 GiB. */
  maxFileBytes?: number
  /** The copies met so far, shared by the folders of one import; default: this folder's own. */
  copies?: FirstCopies
  signal?: AbortSignal
}

// A whole file goes into one Buffer, and no Buffer can be larger than this (4 GiB on 64-bit Node 20).
const LARGEST_BUFFER = bufferConstants.MAX_LENGTH
const DEFAULT_MAX_FILE_BYTES = Math.min(4 * 1024 ** 3, LARGEST_BUFFER)

/**
 * Reads a folder of DICOM files recursively, as Orthanc's ImportDicomFiles.py does, or a single
 * file. Entries are visited in name order, one directory listing at a time, and only the file
 * being yielded is held in memory, beside what FirstCopies keeps of each instance met. Symbolic
 * links are never followed (a link to a folder could loop or leave the tree); they, special files
 * and non-DICOM files are skipped with a reason. Of two different files of one instance, the
 * first is sent and the other named (see FirstCopies).
 */
export async function* readDicomFolder(root: string, events: SourceEvents, options: DicomFolderOptions = {}): AsyncGenerator<InstanceInTransit> {
  const maxFileBytes = Math.min(options.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES, LARGEST_BUFFER)
  const copies = options.copies ?? new FirstCopies()
  // The root itself was named by the user, so a link there is followed like any path argument.
  let rootKind: EntryKind
  try {
    const info = await stat(root)
    rootKind = info.isDirectory() ? 'directory' : info.isFile() ? 'file' : 'other'
  } catch (error) {
    if (!isFileSystemError(error)) throw error
    events.onProblem({id: root, kind: 'unreadable', reason: error.message})
    return
  }

  // Entries still to visit, next one last: a directory's sorted listing replaces it in place,
  // which gives a depth-first walk in name order without holding more than the current path's listings.
  const pending: FolderEntry[] = [{name: basename(root), path: root, kind: rootKind}]
  while (pending.length > 0) {
    options.signal?.throwIfAborted()
    const entry = pending.pop()!
    switch (entry.kind) {
      case 'directory': {
        const listing = await listDirectoryOrReport(entry.path, events)
        for (let index = listing.length - 1; index >= 0; index--) pending.push(listing[index]!)
        break
      }
      case 'file': {
        const unit = await readDicomFile(entry.path, events, maxFileBytes, entry.path === root)
        if (unit && takeFirstCopy(copies, unit, events)) yield unit
        break
      }
      case 'symlink':
        events.onSkip({id: entry.path, kind: 'link', reason: 'symbolic link (not followed)'})
        break
      case 'other':
        events.onSkip({id: entry.path, kind: 'special-file', reason: 'not a regular file (device, socket or pipe)'})
        break
      // A file or a folder, which may hold instances: never passed over without a word.
      case 'unnamable':
        events.onProblem({id: entry.path, kind: 'unreadable', reason: UNNAMABLE_REASON})
        break
    }
  }
}

/**
 * The sizes of the first `files` regular files under `roots`, walked as readDicomFolder walks them
 * (depth first, in name order, links not followed), reading at most `maxListings` directories and
 * `maxEntries` entries in all (of a larger directory, whichever the filesystem gives first), so
 * that time and memory stay bounded however wide or deep the tree: what a folder import can know
 * of its job before it starts, at the cost of a few directory listings. Whatever cannot be read
 * is passed over: the walk itself reports it.
 */
export async function sampleFolderFiles(roots: string[], limits: {files: number; maxListings?: number; maxEntries?: number}): Promise<{instances: number; bytes: number}> {
  const sample = {instances: 0, bytes: 0}
  let listings = limits.maxListings ?? 1024
  let entries = limits.maxEntries ?? 16_384
  const pending = [...roots].reverse()
  while (pending.length > 0 && sample.instances < limits.files) {
    const path = pending.pop()!
    // A root was named by the user and is followed; below it, links are not, as in the walk.
    const info = await (roots.includes(path) ? stat(path) : lstat(path)).catch(() => undefined)
    if (info?.isFile()) {
      sample.instances++
      sample.bytes += info.size
    } else if (info?.isDirectory() && listings > 0 && entries > 0) {
      listings--
      const listing = await listDirectory(path, entries).catch((): FolderEntry[] => [])
      entries -= listing.length
      for (let index = listing.length - 1; index >= 0; index--) if (listing[index]!.kind === 'file' || listing[index]!.kind === 'directory') pending.push(listing[index]!.path)
    }
  }

  return sample
}

async function readDicomFile(path: string, events: SourceEvents, maxFileBytes: number, followLink: boolean): Promise<InstanceInTransit | undefined> {
  const bytes = await readWholeFileOrReport(path, maxFileBytes, events, {followLink, mayHold: mayBeginDicom})
  if (bytes === undefined) return undefined
  const identifiers = identifyOrReport(path, bytes, events)
  if (identifiers === undefined) return undefined
  return {label: path, instanceId: instanceIdOf(identifiers), studyId: studyIdOf(identifiers), dicom: bytes, md5: md5Hex(bytes)}
}

/** `unnamable`: a name that is not UTF-8, which a path given as text cannot reach (see listDirectory). */
export type EntryKind = 'file' | 'directory' | 'symlink' | 'other' | 'unnamable'

export interface FolderEntry {
  name: string
  path: string
  kind: EntryKind
}

/**
 * One directory's entries, sorted by name (UTF-16 code units, so the order is the same in every
 * locale). Only this directory is listed: callers descend themselves, one listing at a time.
 * With `limit`, only that many entries are read, in whatever order the filesystem gives them.
 */
export async function listDirectory(dir: string, limit = Number.POSITIVE_INFINITY): Promise<FolderEntry[]> {
  const entries: FolderEntry[] = []
  // Names as bytes: decoded as UTF-8 by Node, a name that is not UTF-8 would turn into another
  // one (U+FFFD for each bad byte), and open a sibling of that name, or nothing, in its place.
  for await (const dirent of await opendir(dir, {encoding: 'buffer' as BufferEncoding})) {
    if (entries.length >= limit) break
    const raw = dirent.name as unknown as Buffer
    const name = raw.toString('utf8')
    if (!Buffer.from(name, 'utf8').equals(raw)) {
      entries.push({name: escapedName(raw), path: join(dir, escapedName(raw)), kind: 'unnamable'})
      continue
    }
    const path = join(dir, name)
    entries.push({name, path, kind: await kindOf(dirent as unknown as Dirent, path)})
  }

  return entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
}

/** A name that is not UTF-8, for reports: its bytes past ASCII as \\xNN. */
function escapedName(raw: Buffer): string {
  return [...raw].map((byte) => (byte < 0x80 && byte >= 0x20 ? String.fromCharCode(byte) : `\\x${byte.toString(16).padStart(2, '0')}`)).join('')
}

/** Why an entry with a name that is not UTF-8 is not read, with the way out. */
export const UNNAMABLE_REASON = 'its name is not valid UTF-8 (shown with \\x escapes), so it cannot be opened by name here: rename it (convmv -f latin1 -t utf8, say) and run again'

/** Lists a directory, or reports it as a problem (unreadable, vanished) and gives nothing. */
export async function listDirectoryOrReport(dir: string, events: SourceEvents): Promise<FolderEntry[]> {
  try {
    return await listDirectory(dir)
  } catch (error) {
    if (!isFileSystemError(error)) throw error
    events.onProblem({id: dir, kind: 'unreadable', reason: `cannot list the folder: ${error.message}`})
    return []
  }
}

async function kindOf(dirent: Dirent, path: string): Promise<EntryKind> {
  const known = entryKind(dirent)
  if (known !== undefined) return known
  // Some filesystems do not say what an entry is while listing; ask without following links.
  // An entry that cannot even be examined is treated as a file, so reading it reports the real error.
  try {
    return entryKind(await lstat(path)) ?? 'other'
  } catch (error) {
    if (!isFileSystemError(error)) throw error
    return 'file'
  }
}

function entryKind(entry: Dirent | Stats): EntryKind | undefined {
  if (entry.isSymbolicLink()) return 'symlink'
  if (entry.isFile()) return 'file'
  if (entry.isDirectory()) return 'directory'
  if (entry.isFIFO() || entry.isSocket() || entry.isBlockDevice() || entry.isCharacterDevice()) return 'other'
  return undefined
}

export class FileTooLargeError extends Error {
  constructor(readonly size: number, readonly maxBytes: number) {
    super(`${size} bytes, more than the ${maxBytes} bytes a file may have`)
    this.name = 'FileTooLargeError'
  }
}

/** A large file whose first bytes show it is not what is looked for: not read whole only to say so. */
export class NotWorthReadingError extends Error {
  constructor(readonly size: number) {
    super(`not read whole (${size} bytes): its first bytes begin no DICOM file`)
    this.name = 'NotWorthReadingError'
  }
}

export interface WholeFileOptions {
  /** Follow a symbolic link (only where the user named the path). */
  followLink?: boolean
  /**
   * For a file over PEEK_FIRST_BYTES: whether its first PEEKED_BYTES may begin what is looked for
   * (`readAt` gives as many at another offset); if not, NotWorthReadingError.
   */
  mayHold?: (head: Buffer, readAt: (offset: number) => Buffer, size: number) => boolean
}

/** Past this size a file is looked at before it is read whole: a 3 GiB video took 3 GB of memory only to be skipped. */
const PEEK_FIRST_BYTES = 64 * 1024 * 1024
const PEEKED_BYTES = 512

/** Whether a file's first bytes may begin DICOM in a framing Orthanc accepts (see locateDataSet), a Part 10 file with a damaged marker included. */
export function mayBeginDicom(head: Buffer): boolean {
  if (hasDamagedPart10Marker(head)) return true
  try {
    locateDataSet(head)
    return true
  } catch (error) {
    // Cut short by the peek, not refused: it may still be one.
    return !(error instanceof NotDicomError && error.reason === 'no-dicm-magic')
  }
}

// fs.readFile stops at 2 GiB, so larger files are read into one buffer piece by piece.
const READ_CHUNK_BYTES = 64 * 1024 * 1024

/**
 * Files up to this size are read with blocking calls. Opening, examining and closing a file
 * are always blocking calls: asynchronously each is a trip through the thread pool, and for a
 * file of a few kilobytes those trips cost more CPU than the read itself, CPU that a folder
 * import shares with the server. Larger files are read asynchronously, so a slow disk does not
 * stall the uploads in flight.
 */
const BLOCKING_READ_MAX_BYTES = 256 * 1024

const readAsync = promisify(read)

/**
 * Reads a whole file into one buffer, refusing one over `maxBytes` before allocating anything. A
 * symbolic link is not followed (ELOOP) unless `followLink`: a walk that listed a regular file
 * must not read what a link swapped in since leads to. Only paths the user named follow links.
 * Anything but a regular file is refused (ENOTREGULAR) without blocking.
 */
export async function readWholeFile(path: string, maxBytes: number, options: WholeFileOptions = {}): Promise<Buffer> {
  // Not blocking: a pipe put in the file's place since the listing would hold the open, Ctrl-C and all.
  const fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | (options.followLink ? 0 : fsConstants.O_NOFOLLOW))
  try {
    const info = fstatSync(fd)
    if (!info.isFile()) throw Object.assign(new Error(`${path} is not a regular file (a device, socket or pipe, there since the folder was listed)`), {code: 'ENOTREGULAR'})
    const {size} = info
    if (options.mayHold && size > PEEK_FIRST_BYTES) {
      const readAt = (offset: number) => {
        const block = Buffer.alloc(PEEKED_BYTES)
        return block.subarray(0, readSync(fd, block, 0, PEEKED_BYTES, offset))
      }
      if (!options.mayHold(readAt(0), readAt, size)) throw new NotWorthReadingError(size)
    }
    if (size > maxBytes) throw new FileTooLargeError(size, maxBytes)
    const bytes = Buffer.allocUnsafe(size)
    let filled = 0
    while (filled < size) {
      const length = Math.min(size - filled, READ_CHUNK_BYTES)
      const bytesRead = size <= BLOCKING_READ_MAX_BYTES ? readSync(fd, bytes, filled, length, filled) : (await readAsync(fd, bytes, filled, length, filled)).bytesRead
      if (bytesRead === 0) break
      filled += bytesRead
    }

    // A file that shrank while being read gives what it still had; the parser then calls it truncated.
    return filled === size ? bytes : bytes.subarray(0, filled)
  } finally {
    closeSync(fd)
  }
}

/** Reads a whole file, or reports why it could not be read (too large, unreadable) and gives nothing. */
export async function readWholeFileOrReport(path: string, maxBytes: number, events: SourceEvents, options: WholeFileOptions = {}): Promise<Buffer | undefined> {
  try {
    return await readWholeFile(path, maxBytes, options)
  } catch (error) {
    if (error instanceof NotWorthReadingError) {
      events.onSkip({id: path, kind: 'not-dicom', reason: error.message})
      return undefined
    }
    if (error instanceof FileTooLargeError || isFileSystemError(error)) {
      events.onProblem({id: path, kind: error instanceof FileTooLargeError ? 'too-large' : 'unreadable', reason: error.message})
      return undefined
    }
    throw error
  }
}

/**
 * Reads the identifiers of a DICOM file, or reports why it is not an instance and gives nothing.
 * Files that are not DICOM at all, and DICOMDIRs, are skipped; files that say they are DICOM but
 * are cut short, malformed or without an instance's identifiers are damaged input, a problem, and
 * files built to harm a reader or a server (nested too deep, a deflate bomb) are hostile, a problem.
 */
export function identifyOrReport(label: string, bytes: Buffer, events: SourceEvents): DicomIdentifiers | undefined {
  try {
    return readDicomIdentifiers(bytes)
  } catch (error) {
    if (!(error instanceof NotDicomError)) throw error
    if (error.reason === 'hostile') events.onProblem({id: label, kind: 'hostile', reason: error.message})
    // A DICOMDIR, a colour palette, a hanging protocol are DICOM without a patient's instance UIDs: told apart before "damaged" is concluded.
    else if (nonPatientObject(label, bytes) !== undefined) events.onSkip({id: label, kind: 'not-dicom', reason: nonPatientObject(label, bytes)!})
    else if (error.reason === 'truncated' || error.reason === 'malformed') events.onProblem({id: label, kind: error.reason === 'truncated' ? 'truncated' : 'damaged', reason: error.message})
    // An archive volume under a name export does not give, in a folder read as DICOM: what it holds would go unread.
    else if (looksLikeArchive(bytes)) events.onProblem({id: label, kind: 'unreadable', reason: 'an archive volume, in a folder read as DICOM files: give the volume itself as an argument'})
    // Skipped as not DICOM, an instance with one damaged byte would be lost without a word.
    else if (hasDamagedPart10Marker(bytes)) events.onProblem({id: label, kind: 'damaged', reason: 'a Part 10 file whose "DICM" marker (bytes 128-131) is damaged: its file meta group follows at byte 132'})
    else events.onSkip({id: label, kind: 'not-dicom', reason: error.message})
    return undefined
  }
}

const MEDIA_STORAGE_DIRECTORY_SOP_CLASS = '1.2.840.10008.1.3.10'
/**
 * DICOM objects that belong to no patient (PS3.4, Non-Patient Object Storage), which Orthanc
 * does not store: a viewer's CD may carry them beside the images.
 */
const NON_PATIENT_SOP_CLASSES = new Map([
  ['1.2.840.10008.5.1.4.38.1', 'Hanging Protocol'],
  ['1.2.840.10008.5.1.4.39.1', 'Color Palette'],
  ['1.2.840.10008.5.1.4.43.1', 'Generic Implant Template'],
  ['1.2.840.10008.5.1.4.44.1', 'Implant Assembly Template'],
  ['1.2.840.10008.5.1.4.45.1', 'Implant Template Group'],
  ['1.2.840.10008.5.1.4.1.1.200.1', 'Defined Procedure Protocol'],
  ['1.2.840.10008.5.1.4.1.1.200.3', 'Protocol Approval'],
  ['1.2.840.10008.5.1.4.1.1.201.1', 'Inventory'],
])
const MEDIA_STORAGE_SOP_CLASS_UID = 0x0002_0002
const FILE_META_START = 132

/**
 * Why a file is DICOM but no patient's instance, when it is one of those: a DICOMDIR (by name or
 * by its SOP class: it indexes a medium), or a non-patient object. Told by the SOP class its file
 * meta group names; undefined for anything else, a meta group too damaged to read included.
 */
function nonPatientObject(label: string, bytes: Buffer): string | undefined {
  if (basename(label).toUpperCase() === 'DICOMDIR') return 'DICOMDIR'
  const sopClass = mediaStorageSopClass(bytes)
  if (sopClass === MEDIA_STORAGE_DIRECTORY_SOP_CLASS) return 'DICOMDIR'
  const name = sopClass === undefined ? undefined : NON_PATIENT_SOP_CLASSES.get(sopClass)
  return name === undefined ? undefined : `a ${name} object: DICOM that belongs to no patient, which Orthanc does not store`
}

function mediaStorageSopClass(bytes: Buffer): string | undefined {
  try {
    let position = FILE_META_START
    while (position + 2 <= bytes.length && bytes.readUInt16LE(position) === 0x0002) {
      const header = readElementHeader(bytes, position, EXPLICIT_LITTLE_ENDIAN_ENCODING)
      const end = skipElementValue(bytes, header, EXPLICIT_LITTLE_ENDIAN_ENCODING)
      if (header.tag === MEDIA_STORAGE_SOP_CLASS_UID) return trimDicomPadding(bytes.toString('latin1', header.valueOffset, end))
      position = end
    }
  } catch {
    // A meta group too damaged to read names no class.
  }
  return undefined
}

/**
 * A file meta group element at 132 (group 0002, little endian, an explicit VR of two capitals)
 * behind something other than "DICM": a Part 10 file whose marker is damaged.
 */
function hasDamagedPart10Marker(bytes: Buffer): boolean {
  if (bytes.length < FILE_META_START + 8 || bytes.toString('latin1', 128, FILE_META_START) === 'DICM') return false
  return bytes.readUInt16LE(FILE_META_START) === 0x0002 && isCapital(bytes[FILE_META_START + 4]!) && isCapital(bytes[FILE_META_START + 5]!)
}

function isCapital(byte: number): boolean {
  return byte >= 0x41 && byte <= 0x5a
}

export function instanceIdOf(identifiers: DicomIdentifiers): string {
  return orthancInstanceId(identifiers.patientId, identifiers.studyInstanceUid, identifiers.seriesInstanceUid, identifiers.sopInstanceUid)
}

export function studyIdOf(identifiers: DicomIdentifiers): string {
  return orthancStudyId(identifiers.patientId, identifiers.studyInstanceUid)
}

export function md5Hex(bytes: Buffer): string {
  return createHash('md5').update(bytes).digest('hex')
}

/** An I/O failure (EACCES, EIO, ENOENT...) as opposed to a bug: it names one file, and the walk goes on. */
export function isFileSystemError(error: unknown): error is NodeJS.ErrnoException {
  return error instanceof Error && typeof (error as NodeJS.ErrnoException).code === 'string'
}
