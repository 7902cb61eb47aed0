import {open} from 'node:fs/promises'
import type {Readable} from 'node:stream'

import {checkEntryHeader, type EntryLimits, type EntryLocation, EntryRefusedError, printable} from './entry-rules.js'
import {type ArchiveProblem, TarScanner} from './tar-scanner.js'
import {FileSource, StreamSource, type TarSource} from './tar-source.js'

export type {ArchiveProblem} from './tar-scanner.js'

export interface ArchiveEntry extends EntryLocation {
  /** The entry's full name in the tar. */
  name: string
  data: Buffer
  /** Byte offset of the entry's first header block in the archive. */
  offset: number
}

/**
 * Reads a tar archive entry by entry, from a stream (stdin, a pipe) or a file path (which skips
 * refused entries' data by seeking). Each header is checked against the entry rules before any
 * byte of its data is read: links, devices, directories that carry data, paths that leave the
 * bag, oversized or sparse entries are refused. Every refusal, every damaged region and every
 * truncation is reported through `onProblem`, naming the entry and the byte offsets; the reader
 * then goes on (see TarScanner), and never throws for bad input.
 *
 * Nothing is kept from one entry to the next, and an entry's data is gathered from the bytes
 * that arrive: memory is bounded by the largest entry accepted, whatever the number of entries
 * or what a header claims. Duplicate names are the caller's to refuse (it knows the bag's paths).
 * `signal` stops reading between entries and during long scans; a stalled stream is the caller's
 * to destroy.
 */
export async function* readArchiveEntries(
  input: Readable | string, limits: EntryLimits, onProblem: (problem: ArchiveProblem) => void, options: {signal?: AbortSignal} = {},
): AsyncGenerator<ArchiveEntry> {
  const source: TarSource = typeof input === 'string' ? await openFileSource(input) : new StreamSource(input)
  const scanner = new TarScanner(source, onProblem, options.signal)
  try {
    for (let entry = await scanner.next(); entry; entry = await scanner.next()) {
      if (entry.damaged) {
        onProblem({id: printable(entry.name), kind: 'damaged', offset: entry.offset, reason: `refused: ${entry.damaged}`})
        continue
      }

      let location: EntryLocation | undefined
      try {
        location = checkEntryHeader({name: entry.name, type: entry.type, size: entry.size, linkname: entry.linkname, sparse: entry.sparse}, limits)
      } catch (error) {
        if (!(error instanceof EntryRefusedError)) throw error
        onProblem({id: printable(error.entry), kind: error.kind, offset: entry.offset, reason: error.reason})
        continue
      }

      // A directory without data: nothing to read, nothing to refuse.
      if (!location) continue
      const data = await scanner.readData(entry)
      if (!data) break
      yield {...location, name: entry.name, data, offset: entry.offset}
    }
  } finally {
    await scanner.close()
  }
}

async function openFileSource(path: string): Promise<FileSource> {
  const file = await open(path, 'r')
  try {
    return new FileSource(file, (await file.stat()).size)
  } catch (error) {
    await file.close()
    throw error
  }
}
