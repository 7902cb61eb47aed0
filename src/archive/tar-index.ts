import {open} from 'node:fs/promises'

import {type ArchiveProblem, type TarEntryHeader, TarScanner} from './tar-scanner.js'
import {FileSource} from './tar-source.js'

/** One entry of a tar file, located without reading its data. */
export interface IndexedEntry {
  name: string
  type: string
  size: number
  linkname: string
  /** Where the entry's first header block starts in the file. */
  offset: number
  /** Where the entry's data starts in the file. */
  dataOffset: number
  /** The file ends before this entry's data does. */
  truncated: boolean
}

export interface TarIndex {
  /**
   * The tag files: every entry whose path in its bag is not under data/ (bagit.txt, the
   * manifests, orthanc/*.json, and anything else outside the payload), in file order, at most
   * MAX_INDEXED_ENTRIES. Payload entries are only counted.
   */
  entries: IndexedEntry[]
  /** Entry headers read, payload included (extended headers not counted). */
  entryCount: number
  /** Of which under a bag's data/. */
  payloadCount: number
  /** Tag entries beyond MAX_INDEXED_ENTRIES, counted and not listed. */
  unlistedTagEntries: number
  /** Each top-level directory entries are under (a bag, when the archive is sound), in order of appearance, at most MAX_INDEXED_BAGS. */
  bags: IndexedBag[]
  /** Entries under top-level directories beyond MAX_INDEXED_BAGS: counted, not listed. */
  entriesInUnlistedBags: number
  /** Everything wrong at the tar level: damaged regions, truncation, data after the end marker (at most MAX_LISTED_DAMAGE). */
  damage: ArchiveProblem[]
  /** The two zero blocks that close a tar were found. */
  endMarker: boolean
  /** Something other than zeros follows the end-of-archive marker. */
  afterEndMarker: boolean
  fileSize: number
}

/** Entries under one top-level directory: what the index counts of a bag without listing its payload. */
export interface IndexedBag {
  name: string
  entries: number
  /** Entries under its data/dicom/. */
  dicomEntries: number
}

/** A volume has seven tag files; a file holding a whole stream has seven per bag. More than this is not an archive of this format. */
export const MAX_INDEXED_ENTRIES = 10_000
export const MAX_LISTED_DAMAGE = 100
export const MAX_INDEXED_BAGS = 1000

/**
 * Indexes a tar file by reading its headers only and seeking over data, so that the tag files at
 * the end of a volume can be read before its payload is streamed. The same scanner as the stream
 * reader: damage is resynchronised over and reported, never a reason to stop. Memory does not
 * grow with the number of payload entries.
 */
export async function indexTarFile(path: string): Promise<TarIndex> {
  const damage: ArchiveProblem[] = []
  const index: TarIndex = {entries: [], entryCount: 0, payloadCount: 0, unlistedTagEntries: 0, bags: [], entriesInUnlistedBags: 0, damage, endMarker: false, afterEndMarker: false, fileSize: 0}
  const bags = new Map<string, IndexedBag>()
  const scanner = await fileScanner(path, (problem) => {
    if (damage.length < MAX_LISTED_DAMAGE) damage.push(problem)
  }, (size) => {
    index.fileSize = size
  })
  try {
    for (let entry = await scanner.next(); entry; entry = await scanner.next()) {
      index.entryCount++
      const top = entry.name.split('/', 1)[0]!
      let bag = bags.get(top)
      if (!bag && bags.size < MAX_INDEXED_BAGS) {
        bag = {name: top, entries: 0, dicomEntries: 0}
        bags.set(top, bag)
        index.bags.push(bag)
      } else if (!bag) {
        index.entriesInUnlistedBags++
      }

      if (bag) {
        bag.entries++
        if (entry.name.startsWith(`${top}/data/dicom/`)) bag.dicomEntries++
      }

      if (isPayload(entry.name)) {
        index.payloadCount++
      } else if (entry.damaged) {
        // Its extended header was refused: its name and size cannot be trusted to find a tag file by.
      } else if (index.entries.length < MAX_INDEXED_ENTRIES) {
        index.entries.push(indexed(entry, index.fileSize))
      } else {
        index.unlistedTagEntries++
      }
    }
  } finally {
    await scanner.close()
  }

  index.endMarker = scanner.endMarker
  index.afterEndMarker = scanner.afterEndMarker
  return index
}

/**
 * Every entry header of a tar file, in order, one at a time (nothing is kept): for tools and
 * tests that need payload entries' offsets too. Damage is reported through `onProblem`.
 */
export async function* scanTarFile(path: string, onProblem: (problem: ArchiveProblem) => void = () => {}): AsyncGenerator<IndexedEntry> {
  let fileSize = 0
  const scanner = await fileScanner(path, onProblem, (size) => {
    fileSize = size
  })
  try {
    for (let entry = await scanner.next(); entry; entry = await scanner.next()) yield indexed(entry, fileSize)
  } finally {
    await scanner.close()
  }
}

/** Reads one indexed entry's bytes (for tag files; the caller bounds the size). */
export async function readIndexedEntry(path: string, entry: IndexedEntry): Promise<Buffer> {
  const file = await open(path, 'r')
  try {
    const length = Math.max(0, Math.min(entry.size, (await file.stat()).size - entry.dataOffset))
    const buffer = Buffer.alloc(length)
    let filled = 0
    while (filled < length) {
      const {bytesRead} = await file.read(buffer, filled, length - filled, entry.dataOffset + filled)
      if (bytesRead === 0) break
      filled += bytesRead
    }

    return buffer.subarray(0, filled)
  } finally {
    await file.close()
  }
}

async function fileScanner(path: string, onProblem: (problem: ArchiveProblem) => void, onSize: (size: number) => void): Promise<TarScanner> {
  const file = await open(path, 'r')
  try {
    const {size} = await file.stat()
    onSize(size)
    return new TarScanner(new FileSource(file, size), onProblem)
  } catch (error) {
    await file.close()
    throw error
  }
}

function indexed(entry: TarEntryHeader, fileSize: number): IndexedEntry {
  return {
    name: entry.name, type: entry.type, size: entry.size, linkname: entry.linkname, offset: entry.offset, dataOffset: entry.dataOffset,
    truncated: entry.dataOffset + entry.size > fileSize,
  }
}

/** Whether an entry is payload: bag/data/... */
function isPayload(name: string): boolean {
  const slash = name.indexOf('/')
  return slash !== -1 && name.startsWith('data/', slash + 1)
}
