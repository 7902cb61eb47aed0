import {crc32} from 'node:zlib'

import type {OrthancClient} from '../orthanc/client.js'
import {OrthancHttpError, UploadRejectedError} from '../orthanc/errors.js'
import type {OrthancUploadAnswer} from '../orthanc/types.js'

/** Instances up to this size may travel in a ZIP with others: small ones, where the request costs as much as the bytes. */
export const SMALL_INSTANCE_BYTES = 64 * 1024
/** At most this many instances, and bytes, per ZIP: Orthanc holds a whole ZIP in memory. */
const ZIP_MAX_ENTRIES = 64
const ZIP_MAX_BYTES = 4 * 1024 * 1024

interface Pending {
  dicom: Buffer
  signal?: AbortSignal
  resolve(answer: OrthancUploadAnswer): void
  reject(error: unknown): void
}

/**
 * POST /instances, at most `slots` requests at once. With `zip`, small instances that are waiting
 * for a request when one frees go together in one stored ZIP (Orthanc 1.8.2 and later take them,
 * and answer one entry per file, in order): a batch forms only while the target is busy, so an
 * idle target never waits for one. Each instance gets its own answer, and a batch whose answer
 * does not account for every file is sent again one file at a time.
 */
export class UploadBatcher {
  private readonly queue: Pending[] = []
  private running = 0
  /** Requests that carried a ZIP, and the instances in them: for the summary. */
  readonly zipped = {requests: 0, instances: 0}

  constructor(private readonly client: OrthancClient, private slots: number, private readonly zip: boolean) {}

  setSlots(slots: number): void {
    this.slots = slots
    this.pump()
  }

  upload(dicom: Buffer, signal?: AbortSignal): Promise<OrthancUploadAnswer> {
    return new Promise((resolve, reject) => {
      this.queue.push({dicom, signal, resolve, reject})
      this.pump()
    })
  }

  private pump(): void {
    while (this.running < Math.max(1, this.slots) && this.queue.length > 0) {
      const batch = this.take()
      this.running++
      // Whatever fails on the way fails each upload of the batch (a settled one stays settled): none is left waiting.
      void this.send(batch).catch((error: unknown) => {
        for (const entry of batch) entry.reject(error)
      }).finally(() => {
        this.running--
        this.pump()
      })
    }
  }

  /** The head of the queue, with the small instances waiting behind it when it is small too. */
  private take(): Pending[] {
    const head = this.queue.shift()!
    if (!this.zip || head.dicom.length > SMALL_INSTANCE_BYTES) return [head]
    const batch = [head]
    let bytes = head.dicom.length
    for (let index = 0; index < this.queue.length && batch.length < ZIP_MAX_ENTRIES;) {
      const next = this.queue[index]!
      if (next.dicom.length <= SMALL_INSTANCE_BYTES && bytes + next.dicom.length <= ZIP_MAX_BYTES) {
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
    try {
      answers = await this.client.uploadZip(storedZip(batch.map((entry) => entry.dicom)), batch[0]!.signal)
    } catch (error) {
      // The link failed (retries spent): every instance of the batch failed alike.
      if (!(error instanceof OrthancHttpError)) {
        for (const entry of batch) entry.reject(error)
        return
      }
      // A file the target refuses fails the whole ZIP: one at a time, each gets its own answer.
    }

    // Orthanc passes over what it cannot read in a ZIP without a word: an answer per file, or send them one by one.
    if (!answers || answers.length !== batch.length) {
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

  private async single(entry: Pending): Promise<void> {
    try {
      entry.resolve(await this.client.uploadInstance(entry.dicom, entry.signal))
    } catch (error) {
      entry.reject(error)
    }
  }

  private async zipAccepted(signal?: AbortSignal): Promise<boolean> {
    return (await this.client.features(signal)).zipUpload
  }
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
