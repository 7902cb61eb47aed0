import {constants as bufferConstants} from 'node:buffer'
import {stat} from 'node:fs/promises'
import {basename, join} from 'node:path'

import {FileTooLargeError, isFileSystemError, readWholeFile, readWholeFileOrReport} from '../sources/dicom-folder.js'
import type {SourceEvents} from '../sources/source-events.js'
import {storageFiles} from '../sources/storage-folder.js'
import type {OrthancIndex} from './index-model.js'
import type {RecoveryStore, UnindexedEntry} from './recover.js'
import type {StoredRead} from './stored-attachment.js'
import {UuidSet} from './uuid-set.js'

/** Where a stopped Orthanc kept its attachments: its StorageDirectory, or the PostgreSQL plugin's large objects. */
export interface AttachmentStore {
  /** The bytes stored under an attachment UUID, when they have the size the index recorded. */
  read(uuid: string, expectedSize: number): Promise<StoredRead>
  /** Where an attachment is or should be, for reports: a file path, or the large object's UUID. */
  locate(uuid: string): string
}

/**
 * The StorageDirectory: `aa/bb/<uuid>` where aabb are the UUID's first four hex digits
 * (Orthanc's FilesystemStorage). A file of the wrong size is not read at all.
 */
export class FolderStore implements RecoveryStore {
  constructor(readonly root: string) {}

  locate(uuid: string): string {
    return join(this.root, uuid.slice(0, 2), uuid.slice(2, 4), uuid)
  }

  async read(uuid: string, expectedSize: number): Promise<StoredRead> {
    const path = this.locate(uuid)
    try {
      const info = await stat(path)
      if (!info.isFile()) return {state: 'unreadable', reason: 'not a regular file'}
      if (info.size !== expectedSize) return {state: 'size', size: info.size}
      return {state: 'bytes', bytes: await readWholeFile(path, Math.min(expectedSize, bufferConstants.MAX_LENGTH)), modifiedAt: info.mtimeMs}
    } catch (error) {
      // It grew between the look and the read.
      if (error instanceof FileTooLargeError) return {state: 'size', size: error.size}
      if (!isFileSystemError(error)) throw error
      return error.code === 'ENOENT' ? {state: 'missing'} : {state: 'unreadable', reason: error.message}
    }
  }

  /** The storage files whose UUID the index does not list (the walk also names what is outside the layout). */
  async *unindexed(index: OrthancIndex, events: SourceEvents, signal?: AbortSignal): AsyncGenerator<UnindexedEntry> {
    const known = await UuidSet.build(() => index.attachmentUuids(signal))
    for await (const file of storageFiles(this.root, events, signal)) {
      if (known.has(basename(file.path))) continue
      yield {
        location: file.path,
        read: () => readWholeFileOrReport(file.path, bufferConstants.MAX_LENGTH, events),
        size: () => stat(file.path).then((info) => info.size, () => undefined),
        modifiedAt: () => stat(file.path).then((info) => info.mtimeMs, () => undefined),
      }
    }
  }
}
