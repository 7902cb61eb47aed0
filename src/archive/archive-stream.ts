import type {Readable} from 'node:stream'

import tar from 'tar-stream'

import {checkEntryHeader, type EntryLimits, type EntryLocation, EntryRefusedError} from './entry-rules.js'

export interface ArchiveEntry extends EntryLocation {
  /** The entry's full name in the tar. */
  name: string
  data: Buffer
}

/** The tar stream ended in the middle of an entry or a header. */
export class TruncatedArchiveError extends Error {
  constructor(readonly lastEntry: string | undefined) {
    super(lastEntry ? `the archive ends in the middle of "${lastEntry}"` : 'the archive ends in the middle of a header')
    this.name = 'TruncatedArchiveError'
  }
}

/** The tar stream cannot be read on: a damaged or oversized header (over 4 MiB of pax or long-name data). */
export class DamagedArchiveError extends Error {
  constructor(readonly lastEntry: string | undefined, readonly reason: string) {
    super(`the archive cannot be read past ${lastEntry ? `"${lastEntry}"` : 'its start'}: ${reason}`)
    this.name = 'DamagedArchiveError'
  }
}

/**
 * Reads a tar stream entry by entry, refusing what the format never contains (links, devices,
 * paths that leave the bag, duplicates, oversized entries) before reading the entry's data.
 * A refused entry's data is drained unread and reported through `onRefused`; the rest of the
 * archive is still read. Nothing is ever written to disk.
 */
export async function* readArchiveEntries(input: Readable, limits: EntryLimits, onRefused: (error: EntryRefusedError) => void): AsyncGenerator<ArchiveEntry> {
  const extract = tar.extract()
  input.on('error', (error) => extract.destroy(error))
  input.pipe(extract)
  const seen = new Set<string>()
  let current: string | undefined
  try {
    for await (const entry of extract) {
      const {header} = entry
      current = header.name
      let location: EntryLocation | undefined
      try {
        location = checkEntryHeader({name: header.name, type: header.type ?? 'file', size: header.size ?? 0, linkname: header.linkname}, limits)
        if (location && seen.has(header.name)) throw new EntryRefusedError(header.name, 'a second entry with the same name', 'duplicate')
      } catch (error) {
        if (!(error instanceof EntryRefusedError)) throw error
        onRefused(error)
        await drain(entry)
        current = undefined
        continue
      }

      if (!location) {
        await drain(entry)
        current = undefined
        continue
      }

      seen.add(header.name)
      const data = await collect(entry, header.size ?? 0)
      current = undefined
      yield {...location, name: header.name, data}
    }
  } catch (error) {
    const message = (error as Error).message ?? ''
    if (/unexpected end/i.test(message)) throw new TruncatedArchiveError(current)
    // tar-stream's own refusals: a header too large to hold, or one that is not a tar header at all.
    if (/header|checksum|invalid tar|unknown format/i.test(message)) throw new DamagedArchiveError(current, message)
    throw error
  } finally {
    input.unpipe(extract)
    extract.destroy()
  }
}

async function drain(entry: AsyncIterable<unknown>): Promise<void> {
  for await (const _chunk of entry) {
    // discarded
  }
}

async function collect(entry: AsyncIterable<unknown>, size: number): Promise<Buffer> {
  const data = Buffer.allocUnsafe(size)
  let offset = 0
  for await (const chunk of entry as AsyncIterable<Buffer>) {
    chunk.copy(data, offset)
    offset += chunk.length
  }

  return offset === size ? data : data.subarray(0, offset)
}
