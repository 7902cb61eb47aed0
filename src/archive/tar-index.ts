import {open} from 'node:fs/promises'

import {BAG_INFO_FILE, BAGIT_FILE, CONTENTS_FILE, MANIFEST_FILE, PAYLOAD_MANIFEST_FILE, TAG_MANIFEST_FILE} from './format.js'
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
   * The tag files: entries whose path in their bag is not under data/, in file order. The
   * format's own tag files (bagit.txt, bag-info.txt, the manifests, orthanc/*.json) are listed
   * up to two copies each per bag; anything else outside data/ (and entries outside any bag) up
   * to MAX_INDEXED_ENTRIES. Payload entries are only counted.
   */
  entries: IndexedEntry[]
  /** Entry headers read, payload included (extended headers not counted). */
  entryCount: number
  /** Of which under a bag's data/. */
  payloadCount: number
  /** Tag entries beyond MAX_INDEXED_ENTRIES, counted and not listed. */
  unlistedTagEntries: number
  /**
   * Each top-level directory entries are under (a bag, when the archive is sound), in order of
   * appearance: the first MAX_INDEXED_BAGS, and up to as many more that hold one of the format's
   * tag files (so that junk directories cannot hide a real bag).
   */
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

/**
 * Entries under one top-level directory: what the index counts of a bag without listing its
 * payload, from the first entry of it that was listed (a volume's bagit.txt comes first).
 */
export interface IndexedBag {
  name: string
  entries: number
  /** Entries under its data/dicom/. */
  dicomEntries: number
}

/**
 * Bounds on what the index lists: whatever an archive holds, the index stays small. The tag files
 * this format has (first two copies of each, per bag) are listed however much else comes before
 * them, so junk entries cannot push a volume's real tag files out of the index.
 */
export const MAX_INDEXED_ENTRIES = 10_000
export const MAX_LISTED_DAMAGE = 100
export const MAX_INDEXED_BAGS = 1000
const COPIES_OF_A_TAG_FILE = 2
const FORMAT_TAG_FILES = new Set([BAGIT_FILE, BAG_INFO_FILE, CONTENTS_FILE, MANIFEST_FILE, PAYLOAD_MANIFEST_FILE, TAG_MANIFEST_FILE])

/**
 * Indexes a tar file by reading its headers only and seeking over data, so that the tag files at
 * the end of a volume can be read before its payload is streamed. The same scanner as the stream
 * reader: damage is resynchronised over and reported, never a reason to stop. Memory does not
 * grow with the number of entries (see the bounds above).
 */
export async function indexTarFile(path: string): Promise<TarIndex> {
  const damage: ArchiveProblem[] = []
  const index: TarIndex = {entries: [], entryCount: 0, payloadCount: 0, unlistedTagEntries: 0, bags: [], entriesInUnlistedBags: 0, damage, endMarker: false, afterEndMarker: false, fileSize: 0}
  const bags = new Map<string, IndexedBag & {tagCopies: Map<string, number>}>()
  /** Bags listed because they hold one of the format's tag files, beyond the first MAX_INDEXED_BAGS. */
  let bagsWithTagFiles = 0
  let otherTagEntries = 0
  const scanner = await fileScanner(path, (problem) => {
    if (damage.length < MAX_LISTED_DAMAGE) damage.push(problem)
  }, (size) => {
    index.fileSize = size
  })
  try {
    for (let entry = await scanner.next(); entry; entry = await scanner.next()) {
      index.entryCount++
      // Only a name with a directory part can be in a bag; the others are refused when read.
      const slash = entry.name.indexOf('/')
      const top = slash > 0 ? entry.name.slice(0, slash) : undefined
      const inBag = top === undefined ? '' : entry.name.slice(slash + 1)
      const formatTagFile = top !== undefined && FORMAT_TAG_FILES.has(inBag) && !entry.damaged
      let bag = top === undefined ? undefined : bags.get(top)
      if (!bag && top !== undefined && (bags.size < MAX_INDEXED_BAGS || (formatTagFile && bagsWithTagFiles < MAX_INDEXED_BAGS))) {
        if (bags.size >= MAX_INDEXED_BAGS) bagsWithTagFiles++
        bag = {name: top, entries: 0, dicomEntries: 0, tagCopies: new Map()}
        bags.set(top, bag)
        index.bags.push(bag)
      } else if (!bag && top !== undefined) {
        index.entriesInUnlistedBags++
      }

      if (bag) {
        bag.entries++
        if (inBag.startsWith('data/dicom/')) bag.dicomEntries++
      }

      if (isPayload(entry.name)) {
        index.payloadCount++
      } else if (entry.damaged) {
        // Its extended header was refused: its name and size cannot be trusted to find a tag file by.
      } else if (formatTagFile && bag && (bag.tagCopies.get(inBag) ?? 0) < COPIES_OF_A_TAG_FILE) {
        bag.tagCopies.set(inBag, (bag.tagCopies.get(inBag) ?? 0) + 1)
        index.entries.push(indexed(entry, index.fileSize))
      } else if (!formatTagFile && otherTagEntries < MAX_INDEXED_ENTRIES) {
        otherTagEntries++
        index.entries.push(indexed(entry, index.fileSize))
      } else {
        index.unlistedTagEntries++
      }
    }
  } finally {
    await scanner.close()
  }

  // The bookkeeping of copies stays here.
  index.bags = index.bags.map(({name, entries, dicomEntries}) => ({name, entries, dicomEntries}))
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
