import {printable} from './entry-rules.js'
import {
  BLOCK, EXTENDED_TYPES, firstNonZero, type HeaderBlock, isPlausible, isZeroBlock, MAX_EXTENDED_HEADER_BYTES, paddedSize, parseHeaderBlock,
  parsePaxRecords,
} from './tar-header.js'
import type {TarSource} from './tar-source.js'
import type {Problem} from '../problems.js'

/** One entry's header, with the extended headers before it applied. */
export interface TarEntryHeader {
  /** Full name: pax path, GNU long name, or ustar prefix and name. */
  name: string
  type: string
  size: number
  linkname: string
  /** Where the entry starts: its first header block (an extended header, if it has one). */
  offset: number
  /** Where its data starts. */
  dataOffset: number
  /** Why the entry cannot be trusted, when its extended header was refused. */
  damaged?: string
  /** GNU sparse keys in its pax header: its data is not the file's bytes. */
  sparse?: boolean
}

/** A problem the tar layer found, with where it is in the archive. It is a Problem: id, kind, reason. */
export interface ArchiveProblem extends Problem {
  /** Byte offset of the entry's header, of the damage, or where the input ended. */
  offset: number
  /** End of a damaged region (exclusive), when it is known. */
  end?: number
  /** The last entry whose header was read whole before the problem. */
  lastEntry?: string
}

/** How much of the tail after the end-of-archive marker is read at a time when checking it is empty. */
const TAIL_CHUNK = 64 * 1024
/**
 * How far zeros after the marker are read from a stream. A stream may never end (a pipe from
 * /dev/zero, a raw device): past this, reading stops and the archive is what came before the
 * marker. It is far past the padding of any tar blocking factor (GNU tar's record is 10 KiB).
 * A file is read to its end.
 */
const STREAM_TAIL_LIMIT = 16 * 1024 ** 2
/** How much is read at a time while looking for the next valid header after damage. */
const RESYNC_CHUNK = 64 * 1024

/**
 * Walks a tar archive header by header, from a stream or a file. It never gives up early:
 *
 * - a header whose checksum or fields are wrong is damage: the scanner looks for the next valid
 *   header block by block, reports the region it skipped (with the last good entry and the byte
 *   offsets), and goes on from there, so a flipped byte costs only the entries it touches;
 * - extended headers (pax, GNU long names) are bounded (MAX_EXTENDED_HEADER_BYTES): a larger one
 *   is skipped unread and the entry it describes is marked damaged;
 * - the input ending inside a header, inside an entry's data or before the end-of-archive marker
 *   is reported as truncated, naming the entry and the real byte position;
 * - the end-of-archive marker (two zero blocks) ends the archive; zeros may follow, anything else
 *   after it is reported as damage and never read (a second archive hidden there stays hidden).
 *
 * It keeps nothing per entry: memory does not grow with the number of entries. The caller reads
 * or skips each entry's data; whatever it leaves is skipped by the next call to `next()`.
 */
export class TarScanner {
  /** The end-of-archive marker was found. */
  endMarker = false
  /** Non-zero bytes follow the end-of-archive marker. */
  afterEndMarker = false
  /** Headers read whole (extended headers included). */
  headers = 0
  private lastEntry: string | undefined
  private finished = false
  /** The entry whose data the caller may read now. */
  private current: TarEntryHeader | undefined
  /** Where the current entry's data, padding included, ends. */
  private resumeAt = 0
  private foundAnyHeader = false

  /** `signal` stops the scan between reads (a long resynchronisation, a long tail): it throws its reason. */
  constructor(private readonly source: TarSource, private readonly onProblem: (problem: ArchiveProblem) => void, private readonly signal?: AbortSignal) {}

  /** The next entry, positioned at its data; undefined at the end of the archive (or of what can be read of it). */
  async next(): Promise<TarEntryHeader | undefined> {
    this.signal?.throwIfAborted()
    if (this.finished) return undefined
    if (this.current && !(await this.skipRest())) return this.finish()
    this.current = undefined
    let entryStart = this.source.position
    let pending: {path?: string; linkpath?: string; size?: number; damaged?: string; sparse?: boolean} = {}
    for (;;) {
      const blockOffset = this.source.position
      const block = await this.source.read(BLOCK)
      if (block.length < BLOCK) return this.endOfInput(block.length, blockOffset, Object.keys(pending).length > 0)
      if (isZeroBlock(block)) {
        const second = await this.source.read(BLOCK)
        if (second.length === BLOCK && isZeroBlock(second)) return this.endOfArchive(blockOffset)
        if (second.length < BLOCK) {
          this.report({id: this.where(blockOffset), kind: 'truncated', offset: blockOffset, lastEntry: this.lastEntry, reason: `the archive ends at byte ${this.source.position}, inside its end-of-archive marker (one zero block at byte ${blockOffset}, the second one missing)${this.after()}`})
          return this.finish()
        }

        // A lone zero block followed by data: a header that was zeroed out.
        this.source.unread(second)
      }

      const parsed = isZeroBlock(block) ? {ok: false as const, reason: 'a zero block where a header should be'} : parseHeaderBlock(block)
      let header: HeaderBlock
      let headerOffset = blockOffset
      if (parsed.ok) {
        header = parsed.header
      } else {
        const damageStart = Object.keys(pending).length > 0 ? entryStart : blockOffset
        const found = await this.resynchronise(damageStart, parsed.reason)
        if (!found) return this.finish()
        entryStart = found.offset
        headerOffset = found.offset
        pending = {}
        header = found.header
      }

      this.foundAnyHeader = true
      this.headers++
      const dataOffset = this.source.position
      if (EXTENDED_TYPES.has(header.type)) {
        if (header.size > MAX_EXTENDED_HEADER_BYTES) {
          const reason = `extended header of ${header.size} bytes at byte ${headerOffset} is over the limit of ${MAX_EXTENDED_HEADER_BYTES} bytes: skipped unread`
          this.report({id: this.where(headerOffset), kind: 'damaged', offset: headerOffset, lastEntry: this.lastEntry, reason: `${reason}; the entry it describes is refused${this.after()}`})
          pending.damaged = reason
          if (!(await this.skipExactly(paddedSize(header.size), `the extended header at byte ${headerOffset}`, headerOffset))) return this.finish()
          continue
        }

        const data = await this.source.read(header.size)
        if (data.length < header.size || (await this.source.skip(paddedSize(header.size) - header.size)) < paddedSize(header.size) - header.size) {
          this.reportTruncated(`the extended header at byte ${headerOffset}`, this.where(headerOffset), headerOffset)
          return this.finish()
        }

        if (header.type === 'pax-header') {
          const pax = parsePaxRecords(data)
          if (pax.ok) {
            pending = {...pending, ...pax.values}
          } else {
            const reason = `its pax header at byte ${headerOffset} is malformed: ${pax.reason}`
            this.report({id: this.where(headerOffset), kind: 'damaged', offset: headerOffset, lastEntry: this.lastEntry, reason: `${reason}; the entry it describes is refused${this.after()}`})
            pending.damaged = reason
          }
        } else if (header.type === 'gnu-long-path') {
          pending.path = longName(data)
        } else if (header.type === 'gnu-long-link-path') {
          pending.linkpath = longName(data)
        }

        // A global pax header changes nothing this reader uses: ignored.
        continue
      }

      const entry: TarEntryHeader = {
        name: pending.path ?? header.name,
        type: header.type,
        size: pending.size ?? header.size,
        linkname: pending.linkpath ?? header.linkname,
        offset: entryStart,
        dataOffset,
      }
      if (pending.damaged) entry.damaged = pending.damaged
      if (pending.sparse) entry.sparse = true
      this.current = entry
      this.lastEntry = entry.name
      this.resumeAt = dataOffset + paddedSize(entry.size)
      return entry
    }
  }

  /** Reads the current entry's data whole; undefined (and reported) when the input ends first. */
  async readData(entry: TarEntryHeader): Promise<Buffer | undefined> {
    if (entry !== this.current || this.source.position !== entry.dataOffset) throw new Error('readData: not at the data of this entry')
    const data = await this.source.read(entry.size)
    if (data.length < entry.size) {
      this.reportEntryTruncated(entry)
      this.finish()
      return undefined
    }

    return data
  }

  /** Ends the scan, releasing the input. */
  async close(): Promise<void> {
    this.finished = true
    await this.source.close()
  }

  private async skipRest(): Promise<boolean> {
    const entry = this.current!
    const dataEnd = entry.dataOffset + entry.size
    if (this.source.position < dataEnd) {
      const wanted = dataEnd - this.source.position
      if ((await this.source.skip(wanted)) < wanted) {
        this.reportEntryTruncated(entry)
        return false
      }
    }

    const padding = this.resumeAt - this.source.position
    if ((await this.source.skip(padding)) < padding) {
      this.report({id: this.where(this.source.position), kind: 'truncated', offset: this.source.position, lastEntry: entry.name, reason: `the archive ends at byte ${this.source.position}, in the padding after "${printable(entry.name)}" (its data is whole), without its end-of-archive marker`})
      return false
    }

    return true
  }

  private reportEntryTruncated(entry: TarEntryHeader): void {
    this.report({
      id: printable(entry.name), kind: 'truncated', offset: entry.offset, lastEntry: entry.name,
      reason: `the archive ends at byte ${this.source.position}, inside "${printable(entry.name)}" (header at byte ${entry.offset}, ${entry.size} bytes of data from byte ${entry.dataOffset}): the entry is lost`,
    })
  }

  private reportTruncated(what: string, id: string, offset: number): void {
    this.report({id, kind: 'truncated', offset, lastEntry: this.lastEntry, reason: `the archive ends at byte ${this.source.position}, inside ${what}${this.after()}`})
  }

  private endOfInput(partial: number, blockOffset: number, insideEntry: boolean): undefined {
    const end = this.source.position
    if (end === 0) {
      this.report({id: '(empty)', kind: 'not-archive', offset: 0, reason: 'the input is empty: 0 bytes, not a tar archive'})
    } else if (partial > 0) {
      this.reportTruncated(`a tar header (at byte ${blockOffset})`, this.where(blockOffset), blockOffset)
    } else if (insideEntry) {
      this.reportTruncated(`an entry: after its extended header, before its header`, this.where(blockOffset), blockOffset)
    } else {
      this.report({id: this.where(end), kind: 'truncated', offset: end, lastEntry: this.lastEntry, reason: `the archive ends at byte ${end} without its end-of-archive marker${this.after()}: entries may be missing after it`})
    }

    return this.finish()
  }

  /** After the two zero blocks: zeros only, to the end (of a stream, up to STREAM_TAIL_LIMIT). The first non-zero byte is damage, and reading stops there. */
  private async endOfArchive(markerOffset: number): Promise<undefined> {
    this.endMarker = true
    const readUpTo = this.source.size === undefined ? this.source.position + STREAM_TAIL_LIMIT : Number.POSITIVE_INFINITY
    while (this.source.position < readUpTo) {
      this.signal?.throwIfAborted()
      const offset = this.source.position
      const chunk = await this.source.read(TAIL_CHUNK)
      if (chunk.length === 0) break
      const nonZero = firstNonZero(chunk)
      if (nonZero !== -1) {
        this.afterEndMarker = true
        this.report({
          id: `after the end of the archive (byte ${offset + nonZero})`, kind: 'damaged', offset: offset + nonZero, lastEntry: this.lastEntry,
          reason: `data after the end-of-archive marker (at byte ${markerOffset}): a non-zero byte at byte ${offset + nonZero}; nothing after the marker is read`,
        })
        break
      }
    }

    return this.finish()
  }

  /**
   * After a damaged header: the next block, on a 512-byte boundary, whose checksum matches and
   * whose fields are plausible. Zero blocks are passed over (an entry's data may hold zeros);
   * zeros that run to the end of the input are the end-of-archive marker after all.
   */
  private async resynchronise(damageStart: number, why: string): Promise<{header: HeaderBlock; offset: number} | undefined> {
    const lastEntry = this.lastEntry
    const describe = (end: number, found: boolean) =>
      `damaged tar header at byte ${damageStart} (${why})${lastEntry ? `; the last good entry before it is "${printable(lastEntry)}"` : ''}; `
      + (found
        ? `reading resumed at the next valid header, at byte ${end}: bytes ${damageStart} to ${end} are lost`
        : `no valid header follows: bytes ${damageStart} to ${end}, the rest of the archive, are lost`)
    let zerosFrom: number | undefined
    for (;;) {
      this.signal?.throwIfAborted()
      const chunkOffset = this.source.position
      const chunk = await this.source.read(RESYNC_CHUNK)
      const blocks = Math.floor(chunk.length / BLOCK)
      for (let index = 0; index < blocks; index++) {
        const offset = chunkOffset + index * BLOCK
        const block = chunk.subarray(index * BLOCK, (index + 1) * BLOCK)
        if (isZeroBlock(block)) {
          zerosFrom ??= offset
          continue
        }

        zerosFrom = undefined
        // Cheap test first: most blocks of data are not headers.
        if (block[257] !== 0x75 || block[258] !== 0x73) continue
        const parsed = parseHeaderBlock(block)
        if (!parsed.ok || !isPlausible(parsed.header)) continue
        this.source.unread(chunk.subarray((index + 1) * BLOCK))
        this.report({id: this.regionId(damageStart, offset), kind: 'damaged', offset: damageStart, end: offset, lastEntry, reason: describe(offset, true)})
        return {header: parsed.header, offset}
      }

      if (chunk.length < RESYNC_CHUNK) {
        const end = chunkOffset + chunk.length
        const markerAtEnd = zerosFrom !== undefined && end - zerosFrom >= 2 * BLOCK && chunk.length % BLOCK === 0
        const lost = markerAtEnd ? zerosFrom! : end
        if (!this.foundAnyHeader && damageStart === 0) {
          this.report({id: '(start of input)', kind: 'not-archive', offset: 0, end, reason: `not a tar archive: no valid tar header in its ${end} bytes (${why} at byte 0)`})
        } else {
          this.report({id: this.regionId(damageStart, lost), kind: 'damaged', offset: damageStart, end: lost, lastEntry, reason: describe(lost, false)})
          if (markerAtEnd) this.endMarker = true
          else this.report({id: this.where(end), kind: 'truncated', offset: end, lastEntry, reason: `the archive ends at byte ${end} without its end-of-archive marker`})
        }

        return undefined
      }
    }
  }

  private regionId(start: number, end: number): string {
    return `tar bytes ${start}-${end}`
  }

  private where(offset: number): string {
    return this.lastEntry ? `after "${printable(this.lastEntry)}" (byte ${offset})` : `byte ${offset}`
  }

  private after(): string {
    return this.lastEntry ? ` (the last entry read: "${printable(this.lastEntry)}")` : ''
  }

  private async skipExactly(length: number, what: string, offset: number): Promise<boolean> {
    if ((await this.source.skip(length)) === length) return true
    this.reportTruncated(what, this.where(offset), offset)
    return false
  }

  private report(problem: ArchiveProblem): void {
    this.onProblem(problem)
  }

  private finish(): undefined {
    this.finished = true
    this.current = undefined
    return undefined
  }
}

/** A GNU long name: NUL-terminated UTF-8. */
function longName(data: Buffer): string {
  const end = data.indexOf(0)
  return data.subarray(0, end === -1 ? data.length : end).toString('utf8')
}
