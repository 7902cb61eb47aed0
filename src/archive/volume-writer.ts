import {createHash} from 'node:crypto'
import type {Writable} from 'node:stream'
import {pipeline} from 'node:stream/promises'

import tar from 'tar-stream'

import {UserFacingError} from '../errors.js'

import {BAGIT_TXT, type BagInfo, renderBagInfo, renderChecksumManifest} from './bagit.js'
import {BAG_INFO_FILE, BAGIT_FILE, CONTENTS_FILE, MANIFEST_FILE, PAYLOAD_MANIFEST_FILE, TAG_MANIFEST_FILE, type VolumeContents, type VolumeManifest} from './format.js'

/** Bytes a tar entry of `size` bytes takes: a 512-byte header, the data padded to 512. */
export function tarEntryBytes(size: number, pathLength = 100): number {
  // Paths over 100 bytes that ustar's prefix field cannot hold need a pax header: two blocks more.
  const paxOverhead = pathLength > 100 ? 1024 : 0
  return 512 + paxOverhead + Math.ceil(size / 512) * 512
}

/**
 * A tar stream being written to a file or to stdout. Several volumes (bags) may share one, as
 * they do on a pipe; a failure of the output (a full disk) surfaces at the next entry.
 */
export class TarOutput {
  private readonly pack = tar.pack()
  private readonly written: Promise<void>
  private failure?: Error

  constructor(output: Writable) {
    this.written = pipeline(this.pack, output).catch((error: Error) => {
      this.failure = outputFailure(error)
      throw this.failure
    })
    // Seen at the next entry; never an unhandled rejection meanwhile.
    this.written.catch(() => {})
  }

  async entry(name: string, bytes: Buffer, mtime: Date): Promise<void> {
    if (this.failure) throw this.failure
    await new Promise<void>((resolve, reject) => {
      const entry = this.pack.entry({name, size: bytes.length, mtime, mode: 0o600, type: 'file'}, bytes, (error) => {
        // The output may fail before the pipeline has said so (a reader gone at the first bytes): told apart the same way.
        if (error) reject(this.failure ?? outputFailure(error))
        else resolve()
      })
      // When the output fails, the entry being written fails too: that reaches the callback above,
      // and must not also be an 'error' event nobody listens to.
      entry.on('error', () => {})
    })
    if (this.failure) throw this.failure
  }

  /** Writes the end-of-archive blocks and waits until the output has everything. */
  async close(): Promise<void> {
    this.pack.finalize()
    await this.written
  }

  /** Stops writing at once; what was written stays without an end. */
  abort(error: Error): void {
    this.pack.destroy(error)
    this.written.catch(() => {})
  }
}

/** The reader of a pipe went away (`export -o - | head`): the archive on it cannot be finished. */
export class OutputClosedError extends UserFacingError {
  constructor() {
    super('the output was closed by its reader (a broken pipe): the archive written to it is incomplete', 'Nothing on the other end of the pipe should be used; run the command again with a reader that takes the whole archive.', 'output-closed', 'output-closed')
  }
}

function outputFailure(error: Error): Error {
  const code = (error as NodeJS.ErrnoException).code
  return code === 'EPIPE' || code === 'ERR_STREAM_DESTROYED' || code === 'ERR_STREAM_PREMATURE_CLOSE' ? new OutputClosedError() : error
}

/**
 * Writes one volume, a BagIt bag rooted at `bagName/`, into a tar output. The tag manifest is
 * the bag's last entry, so a volume cut short anywhere is recognisable as incomplete.
 */
export class VolumeWriter {
  private readonly payloadDigests = new Map<string, string>()
  private readonly tagDigests = new Map<string, string>()
  private payloadBytes = 0

  constructor(private readonly output: TarOutput, private readonly bagName: string, private readonly mtime: Date) {}

  async begin(contents: VolumeContents): Promise<void> {
    await this.addTagFile(BAGIT_FILE, Buffer.from(BAGIT_TXT))
    await this.addTagFile(CONTENTS_FILE, jsonBytes(contents))
  }

  /** Adds a payload file (path relative to the bag root, under data/); returns its SHA-256. */
  async addPayload(path: string, bytes: Buffer): Promise<string> {
    const sha256 = createHash('sha256').update(bytes).digest('hex')
    await this.output.entry(`${this.bagName}/${path}`, bytes, this.mtime)
    this.payloadDigests.set(path, sha256)
    this.payloadBytes += bytes.length
    return sha256
  }

  /** Writes the remaining tag files; the tag manifest goes last. */
  async finish(manifest: VolumeManifest, info: Omit<BagInfo, 'payloadBytes' | 'payloadFiles'>): Promise<void> {
    await this.addTagFile(BAG_INFO_FILE, Buffer.from(renderBagInfo({...info, payloadBytes: this.payloadBytes, payloadFiles: this.payloadDigests.size})))
    await this.addTagFile(MANIFEST_FILE, jsonBytes(manifest))
    await this.addTagFile(PAYLOAD_MANIFEST_FILE, Buffer.from(renderChecksumManifest(this.payloadDigests)))
    await this.output.entry(`${this.bagName}/${TAG_MANIFEST_FILE}`, Buffer.from(renderChecksumManifest(this.tagDigests)), this.mtime)
  }

  private async addTagFile(path: string, bytes: Buffer): Promise<void> {
    await this.output.entry(`${this.bagName}/${path}`, bytes, this.mtime)
    this.tagDigests.set(path, createHash('sha256').update(bytes).digest('hex'))
  }
}

function jsonBytes(value: unknown): Buffer {
  return Buffer.from(`${JSON.stringify(value, null, 1)}\n`)
}
