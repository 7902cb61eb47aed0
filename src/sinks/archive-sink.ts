import {open, rename, rm, stat} from 'node:fs/promises'
import {join} from 'node:path'
import type {Writable} from 'node:stream'

import type {BagInfo} from '../archive/bagit.js'
import {AGE_FILE_SUFFIX, type AgeEncryptionKeys, createEncryptingWriter} from '../crypto/age.js'
import type {VolumeHeader, WrittenInstanceRecord, WrittenResourceRecord} from '../archive/format.js'
import {TarOutput, VolumeWriter} from '../archive/volume-writer.js'
import type {InstanceRecord, ResourceRecord} from '../model.js'
import type {Outcome} from '../transfer/engine.js'
import {crashPoint} from '../util/crash-points.js'
import {redactSecrets} from '../util/redact.js'
import {syncDirectory} from '../util/json-file.js'
import {openPrivateFile} from '../util/private-files.js'

/** One instance on its way into a volume: its record, and the bytes it was checked against. */
export interface ArchivedInstance {
  record: InstanceRecord
  dicom: Buffer
  /** The bytes of the record's attachments, in the record's order. */
  attachments: Buffer[]
  /** Attachments of its patient, study or series that go into the volume before it (their first instance there). */
  resourceFiles: Array<{path: string; data: Buffer}>
}

/** A volume about to be written: its bag name, the header of its tag files, and what it will hold. */
export interface VolumeToWrite {
  bagName: string
  header: VolumeHeader
  instances: InstanceRecord[]
  resources: ResourceRecord[]
  /** Modification time of every entry: the export's, so that a volume written again is the same bytes. */
  mtime: Date
  bagInfo: Omit<BagInfo, 'payloadBytes' | 'payloadFiles'>
  /**
   * Told what the volume holds once its bytes are on the disk, before it takes its final name:
   * a volume file with its final name always has what this records (a resumed export reads it,
   * even when the volume is encrypted).
   */
  onSealed?: (held: VolumeContentsHeld) => Promise<void>
}

/** The instances a finished volume holds, and those planned for it that failed. */
export interface VolumeContentsHeld {
  written: string[]
  failed: string[]
  /** The size of the finished volume file, when it is one (not a stream): a resume checks it. */
  bytes?: number
}

/**
 * Where export's instances go, as the Orthanc sink is where sync's and import's go: archive
 * volumes, each a BagIt bag in a tar, in a folder (one file per volume) or one after another on
 * a stream. Instances are stored in the order they are given; a volume is finished with the
 * list of what failed, and its tag manifest last.
 */
export interface ArchiveSink {
  openVolume(volume: VolumeToWrite): Promise<ArchiveVolume>
  /** After the last volume: ends the output. */
  close(): Promise<void>
  /** Stops writing at once (an error, an interruption): what was written stays without an end. */
  abort(error: Error): void
}

/** One volume being written. */
export class ArchiveVolume {
  private readonly written: WrittenInstanceRecord[] = []
  /** SHA-256 of each resource attachment written, by path. */
  private readonly resourceDigests = new Map<string, string>()

  constructor(private readonly writer: VolumeWriter, private readonly volume: VolumeToWrite, private readonly onFinish: (held: VolumeContentsHeld) => Promise<void>, private readonly onAbort: (error: Error) => void) {}

  /** Writes one instance's entries (a resource's attachments before the first instance of it). */
  async store(instance: ArchivedInstance): Promise<Outcome> {
    for (const file of instance.resourceFiles) this.resourceDigests.set(file.path, await this.writer.addPayload(file.path, file.data))
    const sha256 = await this.writer.addPayload(instance.record.path, instance.dicom)
    const attachments = []
    for (const [index, attachment] of instance.record.attachments.entries()) {
      attachments.push({...attachment, sha256: await this.writer.addPayload(attachment.path, instance.attachments[index]!)})
    }

    this.written.push({...instance.record, sha256, attachments})
    crashPoint('export:entry-written')
    return {kind: 'transferred', bytes: instance.dicom.length}
  }

  /**
   * Writes the tag files: every planned instance not written is listed as failed, with its
   * reason when one is known, and a resource attachment whose instance failed has no SHA-256
   * (it is not in the volume).
   */
  async finish(reasons: Map<string, string>): Promise<VolumeContentsHeld> {
    const writtenIds = new Set(this.written.map((record) => record.id))
    const failed = this.volume.instances.filter((record) => !writtenIds.has(record.id))
      // Through the same mask as everything printed: a manifest names no password, whatever an error quoted.
      .map((record) => ({id: record.id, reason: redactSecrets(reasons.get(record.id) ?? 'failed (see the export\'s summary)')}))
    const resources: WrittenResourceRecord[] = this.volume.resources.map((resource) => ({
      ...resource,
      attachments: resource.attachments.map((attachment) => {
        const sha256 = this.resourceDigests.get(attachment.path)
        return sha256 === undefined ? attachment : {...attachment, sha256}
      }),
    }))
    await this.writer.finish({...this.volume.header, instances: this.written, resources, failed}, this.volume.bagInfo)
    const held = {written: this.written.map((record) => record.id), failed: failed.map((failure) => failure.id)}
    await this.onFinish(held)
    return held
  }

  /** Stops the volume where it is: it stays unfinished (no tag manifest), recognisably so. */
  abort(error: Error): void {
    this.onAbort(error)
  }
}

/**
 * How much a volume file's stream buffers before it asks the writer to wait. With the default
 * 16 KiB, each instance waited for its own disk write to finish before the next could be added
 * to the tar, and entries go in order: downloads waited on the disk one file at a time.
 */
const VOLUME_WRITE_BUFFER_BYTES = 8 * 1024 * 1024

/** Where the volumes go, and whether they are encrypted (age) on the way. */
export interface ArchiveSinkOptions {
  encryption?: AgeEncryptionKeys
}

/**
 * Volume files in a folder (`NAME.tar`, or `NAME.tar.age` encrypted). Each is written as
 * `….partial` (private to its owner) and takes its final name, replacing any earlier copy, only
 * once complete and flushed to the disk.
 */
export class FolderArchiveSink implements ArchiveSink {
  constructor(private readonly folder: string, private readonly options: ArchiveSinkOptions = {}) {}

  /** The file a volume takes once finished. */
  volumeFile(bagName: string): string {
    return join(this.folder, `${bagName}.tar${this.options.encryption ? AGE_FILE_SUFFIX : ''}`)
  }

  async openVolume(volume: VolumeToWrite): Promise<ArchiveVolume> {
    const file = this.volumeFile(volume.bagName)
    const partial = `${file}.partial`
    await rm(partial, {force: true})
    const handle = await openPrivateFile(partial, 'wx')
    const fileStream = handle.createWriteStream({highWaterMark: VOLUME_WRITE_BUFFER_BYTES})
    const output = new TarOutput(this.options.encryption ? createEncryptingWriter(fileStream, this.options.encryption) : fileStream)
    const writer = new VolumeWriter(output, volume.bagName, volume.mtime)
    const finish = async (held: VolumeContentsHeld) => {
      await output.close()
      crashPoint('export:volume-closed')
      await syncFile(partial)
      crashPoint('export:volume-synced')
      await volume.onSealed?.({...held, bytes: (await stat(partial)).size})
      await rename(partial, file)
      crashPoint('export:volume-renamed')
      await syncDirectory(this.folder)
    }

    try {
      await writer.begin({...volume.header, instances: volume.instances, resources: volume.resources})
    } catch (error) {
      output.abort(error as Error)
      throw error
    }

    return new ArchiveVolume(writer, volume, finish, (error) => output.abort(error))
  }

  async close(): Promise<void> {}

  /** Each volume file is aborted by its own writer. */
  abort(): void {}
}

/** Volumes one after another in one tar stream (stdout), encrypted as one age stream if asked: the far side reads bag after bag. */
export class StreamArchiveSink implements ArchiveSink {
  private readonly output: TarOutput

  constructor(stream: Writable, options: ArchiveSinkOptions = {}) {
    this.output = new TarOutput(options.encryption ? createEncryptingWriter(stream, options.encryption) : stream)
  }

  async openVolume(volume: VolumeToWrite): Promise<ArchiveVolume> {
    const writer = new VolumeWriter(this.output, volume.bagName, volume.mtime)
    try {
      await writer.begin({...volume.header, instances: volume.instances, resources: volume.resources})
    } catch (error) {
      this.output.abort(error as Error)
      throw error
    }

    return new ArchiveVolume(writer, volume, async () => {}, (error) => this.output.abort(error))
  }

  /** Writes the end-of-archive blocks and waits until the stream has everything. */
  async close(): Promise<void> {
    await this.output.close()
  }

  abort(error: Error): void {
    this.output.abort(error)
  }
}

/** Flushes a file's bytes to the disk (through a descriptor of its own: the writing stream has closed its one). */
async function syncFile(path: string): Promise<void> {
  const handle = await open(path, 'r+')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}
