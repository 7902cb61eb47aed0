/**
 * `--bwlimit`: how fast the tool may move instance data, in rclone's syntax, so that a
 * production PACS or a hospital WAN is never saturated.
 *
 * - `RATE`: bytes per second in each direction: what the tool downloads, and what it uploads.
 *   A number is KiB/s; suffixes B, K, M, G, T, or KB/KiB, MB/MiB, GB/GiB, TB/TiB (all binary:
 *   10M is 10 MiB/s), nothing else (10Mb would be bits); `off` (or 0) is no limit, and a limit is
 *   at least 4 KiB/s.
 * - `UP:DOWN`: uploads and downloads apart, e.g. `10M:off`. A time of day (`08:00`) is refused
 *   here, not read as 8 KiB/s up and no limit down: it is a timetable entry without its rate.
 * - a timetable: `HH:MM,RATE` entries separated by spaces or semicolons, e.g.
 *   `"08:00,20M 19:00,off"`; an entry holds from its time until the next one, and the last one
 *   of the day holds overnight. `Mon-08:00,RATE` names a day (Mon..Sun); entries without a day
 *   hold on every day. Two entries at the same minute of the same day are refused.
 *
 * Only instance and attachment bytes count, not the API calls around them, as in rclone.
 */

/** Bytes per second; undefined is no limit. */
export interface BandwidthPair {
  upload?: number
  download?: number
}

export interface BandwidthSlot extends BandwidthPair {
  /** 0 (Sunday) to 6, or undefined for every day. */
  day?: number
  /** Minutes after midnight. */
  minutes: number
}

/** A parsed --bwlimit: one slot for a plain rate, several for a timetable. */
export interface BandwidthSchedule {
  slots: BandwidthSlot[]
  /** As given, for messages. */
  text: string
}

export class BandwidthSyntaxError extends Error {
  constructor(readonly text: string, detail: string) {
    super(`--bwlimit "${text}": ${detail}`)
    this.name = 'BandwidthSyntaxError'
  }
}

const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat']
const DAY_NAMES = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday']
/** Bytes per unit; a bare number is KiB/s, as in rclone. */
const MULTIPLIERS: Record<string, number> = {k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4}
/** A number, then nothing, B (bytes), or K, M, G, T alone or spelt KB, KiB, MB, MiB...; the B is a capital. */
const RATE = /^(\d+(?:\.\d+)?)(?:([KMGTkmgt])(?:[iI]?B)?|(B))?$/
/** What someone meaning bits writes: 10Mb, 10Mib, 100b. */
const BITS = /^(\d+(?:\.\d+)?)(?:([kmgt])i?)?b$/i
/**
 * The least rate that is not "off": at 4 KiB/s an upload's 64 KiB chunk waits 16 s, well under
 * the minute a proxy before the target waits for more of a request body (nginx's
 * client_body_timeout) before it gives up; and a slip such as 0.0001 (a tenth of a byte per
 * second) would hold a job for days.
 */
const MIN_RATE_BYTES = 4 * 1024

function parseRate(text: string, whole: string): number | undefined {
  if (text.toLowerCase() === 'off') return undefined
  const match = RATE.exec(text)
  if (!match) throw new BandwidthSyntaxError(whole, notARate(text))
  const [, amount, prefix, bytesUnit] = match
  const bytes = Number(amount) * (prefix ? MULTIPLIERS[prefix.toLowerCase()]! : bytesUnit ? 1 : 1024)
  if (bytes === 0) return undefined
  if (bytes < MIN_RATE_BYTES) throw new BandwidthSyntaxError(whole, `"${text}" is below the least rate, 4K (4 KiB/s), and would stall the transfer: give 4K or more, or off for no limit`)
  return bytes
}

/** Why `text` is not a rate; a lowercase b is taken for bits, which are 8 times less than bytes. */
function notARate(text: string): string {
  const bits = text.endsWith('b') ? BITS.exec(text) : null
  if (bits) {
    const [, amount, prefix] = bits
    const asBytes = prefix ? `${amount}${prefix.toUpperCase()} (or ${amount}${prefix.toUpperCase()}iB) for ${amount} ${prefix.toUpperCase()}iB/s` : `${amount}B for ${amount} bytes/s`
    return `"${text}" has a lowercase b, which means bits: rates are in bytes, so write ${asBytes}, or divide a rate in bits by 8`
  }

  return `"${text}" is not a rate: write it like 512K, 10M, 1.5G or off (units B, K, M, G, T, or KiB, MiB, GiB, TiB, all binary)`
}

/** HH:MM: a timetable's time, which must never be read as UP:DOWN in KiB/s ("08:00" is not 8K:off). */
const CLOCK_TIME = /^\d{1,2}:\d{2}$/

function parsePair(text: string, whole: string): BandwidthPair {
  if (CLOCK_TIME.test(text)) {
    throw new BandwidthSyntaxError(whole, `"${text}" looks like a time of day without a rate: a timetable entry is HH:MM,RATE (such as 08:00,10M); uploads:downloads take units (such as 8K:off)`)
  }

  const parts = text.split(':')
  if (parts.length > 2 || parts.some((part) => part === '')) throw new BandwidthSyntaxError(whole, `"${text}" is not RATE or UP:DOWN`)
  const upload = parseRate(parts[0]!, whole)
  return {upload, download: parts.length === 2 ? parseRate(parts[1]!, whole) : upload}
}

export function parseBandwidthLimit(text: string): BandwidthSchedule {
  const entries = text.trim().split(/[\s;]+/).filter(Boolean)
  if (entries.length === 0) throw new BandwidthSyntaxError(text, 'empty')
  if (entries.length === 1 && !entries[0]!.includes(',')) return {text, slots: [{minutes: 0, ...parsePair(entries[0]!, text)}]}
  const slots = entries.map((entry): BandwidthSlot => {
    const match = /^(?:([a-z]{3})-)?(\d{1,2}):(\d{2}),(.+)$/i.exec(entry)
    if (!match) throw new BandwidthSyntaxError(text, `"${entry}" is not an entry of a timetable (HH:MM,RATE or Mon-HH:MM,RATE)`)
    const [, dayName, hours, minutes, rate] = match
    const day = dayName === undefined ? undefined : DAYS.indexOf(dayName.toLowerCase())
    if (day === -1) throw new BandwidthSyntaxError(text, `"${dayName}" is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)`)
    if (Number(hours) > 23 || Number(minutes) > 59) throw new BandwidthSyntaxError(text, `"${hours}:${minutes}" is not a time of day`)
    return {day, minutes: Number(hours) * 60 + Number(minutes), ...parsePair(rate!, text)}
  })
  refuseClashingEntries(text, entries, slots)
  return {text, slots}
}

/**
 * Two entries that set the rate at the same minute of the same day would be settled by their
 * order in the text, which nobody reads a timetable for: "off" could win unseen. An entry for
 * every day clashes with a day's own entry at the same time on that day.
 */
function refuseClashingEntries(whole: string, entries: string[], slots: BandwidthSlot[]): void {
  for (let later = 1; later < slots.length; later++) {
    for (let earlier = 0; earlier < later; earlier++) {
      const [first, second] = [slots[earlier]!, slots[later]!]
      const sameDay = first.day === undefined || second.day === undefined || first.day === second.day
      if (!sameDay || first.minutes !== second.minutes) continue
      const day = first.day ?? second.day
      const when = `${clockTime(first.minutes)} ${day === undefined ? 'every day' : `on ${DAY_NAMES[day]}`}`
      throw new BandwidthSyntaxError(whole, `"${entries[earlier]}" and "${entries[later]}" both set the rate at ${when}: keep one of them, or move one to another minute`)
    }
  }
}

function clockTime(minutes: number): string {
  const pad = (value: number) => String(value).padStart(2, '0')
  return `${pad(Math.floor(minutes / 60))}:${pad(minutes % 60)}`
}

/** The limits that hold at `date` (local time): the latest entry at or before it, the week wrapping round. */
export function bandwidthAt(schedule: BandwidthSchedule, date: Date): BandwidthPair {
  const weekMinute = (day: number, minutes: number) => day * 24 * 60 + minutes
  const now = weekMinute(date.getDay(), date.getHours() * 60 + date.getMinutes())
  // Entries without a day hold on each day of the week.
  const weekly = schedule.slots.flatMap((slot) => (slot.day === undefined ? DAYS.map((_, day) => ({...slot, at: weekMinute(day, slot.minutes)})) : [{...slot, at: weekMinute(slot.day, slot.minutes)}]))
  weekly.sort((a, b) => a.at - b.at)
  const current = weekly.filter((slot) => slot.at <= now).at(-1) ?? weekly.at(-1)!
  return {upload: current.upload, download: current.download}
}

/** Bursts the bucket allows: a tenth of a second at the rate, and at least one chunk. */
const BURST_SECONDS = 0.1
const MIN_BURST_BYTES = 64 * 1024

/**
 * A token bucket over bytes. `reserve(n)` takes n bytes now and answers how long to wait before
 * sending them so that the rate holds; callers that reserve at once queue up behind each other,
 * so the rate holds whatever the concurrency. The rate may change while it runs (a timetable).
 */
export class TokenBucket {
  private tokens = 0
  private last: number

  constructor(private readonly rate: () => number | undefined, private readonly now: () => number = () => performance.now()) {
    this.last = now()
  }

  /** Milliseconds to wait before sending `bytes`; 0 when there is no limit. */
  reserve(bytes: number): number {
    const now = this.now()
    const rate = this.rate()
    if (rate === undefined) {
      this.tokens = 0
      this.last = now
      return 0
    }

    const capacity = Math.max(MIN_BURST_BYTES, rate * BURST_SECONDS)
    this.tokens = Math.min(capacity, this.tokens + ((now - this.last) / 1000) * rate) - bytes
    this.last = now
    return this.tokens >= 0 ? 0 : (-this.tokens / rate) * 1000
  }
}

/** The two buckets of a --bwlimit: what the tool uploads, and what it downloads. */
export interface BandwidthBuckets {
  upload: TokenBucket
  download: TokenBucket
}

export function bandwidthBuckets(schedule: BandwidthSchedule, clock: () => Date = () => new Date()): BandwidthBuckets {
  // The timetable is looked up at most once a second: a bucket asks for every chunk.
  let cached: {second: number; pair: BandwidthPair} | undefined
  const pair = () => {
    const date = clock()
    const second = Math.floor(date.getTime() / 1000)
    if (cached?.second !== second) cached = {second, pair: bandwidthAt(schedule, date)}
    return cached.pair
  }

  return {upload: new TokenBucket(() => pair().upload), download: new TokenBucket(() => pair().download)}
}
