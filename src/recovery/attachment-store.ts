import {constants as bufferConstants} from 'node:buffer'
import {lstat, stat} from 'node:fs/promises'
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

const NOT_FOLLOWED = 'is a symbolic link, not followed (Orthanc stores none; a link could lead anywhere on this machine): put a copy of what it points to in its place (cp -L) to recover it'

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
      const linkedFolder = await this.linkedFolderOf(uuid)
      if (linkedFolder !== undefined) return {state: 'unreadable', reason: `${linkedFolder} ${NOT_FOLLOWED}`}
      const info = await lstat(path)
      if (info.isSymbolicLink()) return {state: 'unreadable', reason: `${path} ${NOT_FOLLOWED}`}
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

  // Whether each aa and aa/bb folder is a link, looked at once: at most 65,792 of them.
  private readonly folderIsLink = new Map<string, boolean>()

  /** The aa or aa/bb folder of an attachment that is a symbolic link, if one is. */
  private async linkedFolderOf(uuid: string): Promise<string | undefined> {
    for (const folder of [join(this.root, uuid.slice(0, 2)), join(this.root, uuid.slice(0, 2), uuid.slice(2, 4))]) {
      let isLink = this.folderIsLink.get(folder)
      if (isLink === undefined) {
        // A folder that is not there is no link; the file's own look then finds it missing.
        isLink = await lstat(folder).then((info) => info.isSymbolicLink(), () => false)
        this.folderIsLink.set(folder, isLink)
      }
      if (isLink) return folder
    }
    return undefined
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
