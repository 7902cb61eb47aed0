import {crc32} from 'node:zlib'

import type {OrthancClient} from '../orthanc/client.js'
import {OrthancHttpError, UploadRejectedError} from '../orthanc/errors.js'
import type {OrthancUploadAnswer} from '../orthanc/types.js'

/** Instances up to this size may travel in a ZIP with others: small ones, where the request costs as much as the bytes. */
export const SMALL_INSTANCE_BYTES = 64 * 1024
/** At most this many instances, and bytes, per ZIP: Orthanc holds a whole ZIP in memory. */
const ZIP_MAX_ENTRIES = 64
const ZIP_MAX_BYTES = 4 * 1024 * 1024
/**
 * Below this size a ZIP is not worth making: when a proxy before the target (nginx's
 * client_max_body_size, 1 MiB unless set) refuses ZIPs as too large (HTTP 413), they are made
 * smaller, down to this, then no longer made (see refusedAsTooLarge).
 */
const ZIP_MIN_BYTES = 16 * 1024
/**
 * Upload slots per request under way with small instances (see smallSlots). A job in ZIP mode
 * keeps 8 instances in flight per slot (inFlightPerUpload), so those in flight can fill each such
 * request up to ZIP_MAX_ENTRIES.
 */
const SLOTS_PER_SMALL_REQUEST = 8

/**
 * A job not told whether to use ZIPs uses them when it has at least this many instances whose
 * mean size is at most ZIP_BY_DEFAULT_MEAN_BYTES, and the target is at least
 * ZIP_BY_DEFAULT_MIN_ANSWER_MS away. Measured (scratch, 1,000 or 2,000 instances, 4 or 5
 * alternating runs each on the same servers, the same build with and without ZIPs):
 * - size, across 10 ms of round trip: at 4 and 16 kB, ZIPs took the same time as one upload per
 *   file with 8 to 18 % less client CPU and 6 to 7 % less Orthanc CPU; at 32 kB they took 11 %
 *   longer, also without a link delay: the 8 instances in flight per upload (inFlightPerUpload)
 *   cost more than the requests they save. With fewer instances than four full ZIPs there is
 *   little to share.
 * - distance, importing a folder of 2,000 instances of 4 kB: ZIPs 13 to 21 % slower with no link
 *   delay, 3 % slower at 2 ms, even at 5 ms, 16 % faster at 10 ms (a sync: 6 % slower with no
 *   delay, even at 10 ms). Near the target, one request per instance costs little, and a ZIP
 *   holds its instances until Orthanc has read them all.
 * The bench's zip-distance section (5 runs a row, BENCHMARKS.md) did not reproduce the distance
 * effect: ZIPs 0.91 to 1.11 times as fast at 0, 2, 5 and 10 ms, within its runs' spread, and
 * always 3 to 28 % less client CPU. The rule stands on the side that lost in the earlier runs.
 */
export const ZIP_BY_DEFAULT_MEAN_BYTES = 16 * 1024
export const ZIP_BY_DEFAULT_MIN_INSTANCES = 4 * ZIP_MAX_ENTRIES
export const ZIP_BY_DEFAULT_MIN_ANSWER_MS = 5

/** Requests to the target that measure how far it is, asked only when a job could use ZIPs (see zipUploadsFor). */
export const DISTANCE_PROBES = 3

/**
 * Whether a job's small instances go in ZIPs: as the user asked (`--zip-uploads`,
 * `--no-zip-uploads`), or else when what the job is to send is known beforehand and is many small
 * instances, and the target's quickest answer (`quickestAnswerMs`, asked only then) says it is far
 * enough for round trips to count. Whether the target takes ZIPs is learned at the first one
 * (UploadBatcher).
 */
export async function zipUploadsFor(asked: boolean | undefined, job: {instances: number; bytes: number} | undefined, quickestAnswerMs: () => Promise<number | undefined>): Promise<boolean> {
  if (asked !== undefined) return asked
  if (!job || job.instances < ZIP_BY_DEFAULT_MIN_INSTANCES || job.bytes / job.instances > ZIP_BY_DEFAULT_MEAN_BYTES) return false
  const answerMs = await quickestAnswerMs()
  return answerMs !== undefined && answerMs >= ZIP_BY_DEFAULT_MIN_ANSWER_MS
}

const isSmall = (entry: Pending) => entry.dicom.length <= SMALL_INSTANCE_BYTES

/** Uploads that carried several instances in one ZIP, and the instances they carried: for the summary. */
export interface ZipUploads {
  requests: number
  instances: number
  /** ZIPs refused as too large (HTTP 413, usually by a proxy before the target), their instances then sent one by one. */
  refusedAsTooLarge: number
}

interface Pending {
  dicom: Buffer
  /** The ID the target is expected to give the file (the source's, or computed from its UIDs). */
  expectedId?: string
  signal?: AbortSignal
  resolve(answer: OrthancUploadAnswer): void
  reject(error: unknown): void
}

/**
 * POST /instances, at most `slots` requests at once. With `zip`, small instances that are waiting
 * for a request when one frees go together in one stored ZIP (Orthanc 1.8.2 and later take them,
 * and answer one entry per file, in order), and fewer requests carry them (smallSlots): a batch
 * forms only while those are busy, so an idle target never waits for one. Each instance gets its
 * own answer, and a batch whose answer does not account for every file is sent again one file at
 * a time.
 */
export class UploadBatcher {
  private readonly queue: Pending[] = []
  private running = 0
  /** Requests under way that carry small instances (a ZIP, or one alone). */
  private runningSmall = 0
  /** Whether the target takes ZIPs, once asked: a target that does not gets every slot for small instances too. */
  private zipTaken?: boolean
  /** The largest small instance given so far: a ZIP must hold two of them to be worth waiting for. */
  private largestSmall = 0
  readonly zipped: ZipUploads = {requests: 0, instances: 0, refusedAsTooLarge: 0}

  constructor(private readonly client: OrthancClient, private slots: number, private readonly zip: boolean) {}

  setSlots(slots: number): void {
    this.slots = slots
    this.pump()
  }

  upload(dicom: Buffer, signal?: AbortSignal, expectedId?: string): Promise<OrthancUploadAnswer> {
    if (dicom.length <= SMALL_INSTANCE_BYTES) this.largestSmall = Math.max(this.largestSmall, dicom.length)
    return new Promise((resolve, reject) => {
      this.queue.push({dicom, expectedId, signal, resolve, reject})
      this.pump()
    })
  }

  /**
   * Requests at once that may carry small instances together: one per SLOTS_PER_SMALL_REQUEST
   * slots, so that they wait for each other. With every slot open to them, one was nearly always
   * free as soon as an instance was ready, and a ZIP carried two on average (983 requests for 2,000
   * instances of 4 kB, 10 ms away): the target's and the client's work per request was hardly shared.
   */
  private get smallSlots(): number {
    return Math.max(1, Math.ceil(this.slots / SLOTS_PER_SMALL_REQUEST))
  }

  private pump(): void {
    while (this.running < Math.max(1, this.slots) && this.queue.length > 0) {
      // While the small instances' requests are all under way, large instances still go.
      const grouping = this.zipping
      const at = grouping && this.runningSmall >= this.smallSlots ? this.queue.findIndex((entry) => !isSmall(entry)) : 0
      if (at < 0) return
      const batch = this.take(at)
      const small = grouping && isSmall(batch[0]!)
      this.running++
      if (small) this.runningSmall++
      // Whatever fails on the way fails each upload of the batch (a settled one stays settled): none is left waiting.
      void this.send(batch).catch((error: unknown) => {
        for (const entry of batch) entry.reject(error)
      }).finally(() => {
        this.running--
        if (small) this.runningSmall--
        this.pump()
      })
    }
  }

  /** The largest ZIP to make: lowered for this target when one is refused as too large (refusedAsTooLarge). */
  private get zipMaxBytes(): number {
    return Math.min(ZIP_MAX_BYTES, this.client.zipBytesAllowed)
  }

  /**
   * Whether small instances wait for each other to go in ZIPs: asked for, the target takes them,
   * and those a proxy before it lets through can still hold two of them (else each would wait for
   * a request of its own).
   */
  private get zipping(): boolean {
    return this.zip && this.zipTaken !== false && this.zipMaxBytes >= Math.max(ZIP_MIN_BYTES, 2 * this.largestSmall)
  }

  /** The entry at `at`, with the small instances waiting behind it when it is small too. */
  private take(at: number): Pending[] {
    const [head] = this.queue.splice(at, 1) as [Pending]
    if (!this.zipping || !isSmall(head)) return [head]
    const batch = [head]
    let bytes = head.dicom.length
    for (let index = 0; index < this.queue.length && batch.length < ZIP_MAX_ENTRIES;) {
      const next = this.queue[index]!
      if (isSmall(next) && bytes + next.dicom.length <= this.zipMaxBytes) {
        batch.push(next)
        bytes += next.dicom.length
        this.queue.splice(index, 1)
      } else {
        index++
      }
    }

    return batch
  }

  private async send(batch: Pending[]): Promise<void> {
    if (batch.length === 1 || !(await this.zipAccepted(batch[0]!.signal))) {
      await Promise.all(batch.map((entry) => this.single(entry)))
      return
    }

    let answers: OrthancUploadAnswer[] | undefined
    const zip = storedZip(batch.map((entry) => entry.dicom))
    try {
      answers = await this.client.uploadZip(zip, batch[0]!.signal)
    } catch (error) {
      // The link failed (retries spent): every instance of the batch failed alike.
      if (!(error instanceof OrthancHttpError)) {
        for (const entry of batch) entry.reject(error)
        return
      }
      if (error.status === 413) this.refusedAsTooLarge(zip.length)
      // A file the target refuses fails the whole ZIP: one at a time, each gets its own answer.
    }

    // Orthanc passes over what it cannot read in a ZIP without a word: an answer per file, or send
    // them one by one. So too when the answers are not in the files' order (a proxy or plugin
    // before the target that reorders them): each would name another file's instance, and what
    // comes with an instance (its metadata, attachments) would be written onto another one.
    if (!answers || answers.length !== batch.length || mixedUp(batch, answers)) {
      await Promise.all(batch.map((entry) => this.single(entry)))
      return
    }

    this.zipped.requests++
    this.zipped.instances += batch.length
    for (const [index, entry] of batch.entries()) {
      const answer = answers[index]!
      if (answer.Status === 'Success' || answer.Status === 'AlreadyStored') entry.resolve(answer)
      else entry.reject(new UploadRejectedError(this.client.display, answer.Status))
    }
  }

  /**
   * A ZIP of `bytes` was refused as too large (HTTP 413: Orthanc sets no such limit, a proxy
   * before it does, and does not say what it is). Later ZIPs are kept under half of it, so that a
   * limit costs a refusal per halving (against nginx's default 1 MiB: one for ZIPs of 64
   * instances of 16 KiB, up to three for the largest, of 4 MiB), not one per ZIP;
   * below ZIP_MIN_BYTES, or two of the largest small instances, none is made, and small instances
   * take every slot again. The target's client keeps what was learned for the next job with it.
   */
  private refusedAsTooLarge(bytes: number): void {
    this.zipped.refusedAsTooLarge++
    this.client.zipBytesAllowed = Math.min(this.client.zipBytesAllowed, Math.floor(bytes / 2))
    this.pump()
  }

  private async single(entry: Pending): Promise<void> {
    try {
      entry.resolve(await this.client.uploadInstance(entry.dicom, entry.signal))
    } catch (error) {
      entry.reject(error)
    }
  }

  private async zipAccepted(signal?: AbortSignal): Promise<boolean> {
    const taken = (await this.client.features(signal)).zipUpload
    const learned = this.zipTaken === undefined
    this.zipTaken = taken
    // The small instances waiting may take every slot now.
    if (learned && !taken) this.pump()
    return taken
  }
}

/** Answers that name one instance twice, or one file's expected instance at another file's place. */
function mixedUp(batch: Pending[], answers: OrthancUploadAnswer[]): boolean {
  const expected = new Set(batch.flatMap((entry) => (entry.expectedId ? [entry.expectedId] : [])))
  // A refused file's answer names no instance.
  const named = answers.map((answer) => answer.ID as string | undefined)
  const ids = named.filter((id) => id !== undefined)
  if (new Set(ids).size !== ids.length) return true
  return named.some((id, index) => id !== undefined && id !== batch[index]!.expectedId && expected.has(id))
}

/**
 * A stored (uncompressed) ZIP of `files`, entries named by number: the names mean nothing to
 * Orthanc, and compressing DICOM pixel data would cost more than it saves on the way.
 */
export function storedZip(files: Buffer[]): Buffer {
  const parts: Buffer[] = []
  const directory: Buffer[] = []
  let offset = 0
  for (const [index, data] of files.entries()) {
    const name = Buffer.from(`${index}.dcm`)
    const crc = crc32(data) >>> 0
    // The fields a local header and a central directory entry share: version 2.0, no flags,
    // stored, no time, CRC-32, both sizes, name length.
    const shared = (header: Buffer, at: number) => {
      header.writeUInt16LE(20, at)
      header.writeUInt32LE(crc, at + 10)
      header.writeUInt32LE(data.length, at + 14)
      header.writeUInt32LE(data.length, at + 18)
      header.writeUInt16LE(name.length, at + 22)
    }

    const local = Buffer.alloc(30)
    local.writeUInt32LE(0x04034b50, 0)
    shared(local, 4)
    const central = Buffer.alloc(46)
    central.writeUInt32LE(0x02014b50, 0)
    central.writeUInt16LE(20, 4)
    shared(central, 6)
    central.writeUInt32LE(offset, 42)
    parts.push(local, name, data)
    directory.push(central, name)
    offset += local.length + name.length + data.length
  }

  const centralBytes = Buffer.concat(directory)
  const end = Buffer.alloc(22)
  end.writeUInt32LE(0x06054b50, 0)
  end.writeUInt16LE(files.length, 8)
  end.writeUInt16LE(files.length, 10)
  end.writeUInt32LE(centralBytes.length, 12)
  end.writeUInt32LE(offset, 16)
  return Buffer.concat([...parts, centralBytes, end])
}
