import {readdir, stat} from 'node:fs/promises'
import {join} from 'node:path'
import type {Readable} from 'node:stream'

import {ARCHIVE_MAGIC_BYTES, looksLikeArchive, VOLUME_NAME_PATTERN} from '../archive/format.js'
import {UserFacingError} from '../errors.js'
import type {PostgresSource} from '../recovery/postgres-index.js'
import type {RecoveryInput} from '../recovery/recover-server.js'
import {looksLikeStorageFolder} from '../sources/storage-folder.js'
import {fileStart} from '../util/file-start.js'

export type ImportInput =
  | {kind: 'archive-file'; path: string}
  | {kind: 'archive-stream'; label: string; stream: Readable}
  | {kind: 'dicom-folder'; path: string}
  | RecoveryInput

export type FolderMode = 'auto' | 'dicom' | 'storage'

/** The inputs found on disk (everything but a PostgreSQL database): each has a path. */
export type PathInput = Exclude<ImportInput, {kind: 'postgres'}>

/** How to recover a stopped server's storage folder: where its index is, or to do without. */
export interface RecoverySelection {
  /** The SQLite index (IndexDirectory or its `index` file), when not in the storage folder. */
  index?: string
  /** Recognise instances file by file even when an index is there. */
  ignoreIndex?: boolean
}

/** The inputs of a recovery from PostgreSQL: the database, and at most one PATH, the storage folder when the files were on disk. */
export function postgresInputs(paths: string[], postgres: PostgresSource): ImportInput[] {
  if (paths.length > 1) throw new UserFacingError('--from-postgres takes at most one PATH: the StorageDirectory, when the server kept its files on disk', 'Give the database alone, or the database and the storage folder.', 'usage', 'too-many-inputs')
  return [{kind: 'postgres', path: postgres.display, source: postgres, storageFolder: paths[0]}]
}

/**
 * Whether a file is an archive volume: named as export names them (`.tar`, `.tar.age`), or, under
 * any other name, starting as a tar file or an age file does. Read as DICOM, a volume would only
 * be set aside as "not DICOM", and nothing in it imported or checked.
 */
export async function isArchiveFile(path: string): Promise<boolean> {
  if (/\.tar(\.age)?$/.test(path)) return true
  return looksLikeArchive(await fileStart(path, ARCHIVE_MAGIC_BYTES))
}

/**
 * What each PATH argument is: `-` is an archive on stdin; a volume file (isArchiveFile) is a volume; a folder
 * holding volumes gives those volumes; an Orthanc storage folder is detected (or forced with
 * the mode); any other folder or file is read as DICOM files.
 */
export async function resolveImportInputs(paths: string[], stdin: Readable, mode: FolderMode, recovery: RecoverySelection = {}, accepts: 'anything' | 'archives' = 'anything', named = new Set<string>()): Promise<PathInput[]> {
  const storage = (path: string): PathInput => ({kind: 'storage-folder', path, index: recovery.index, ignoreIndex: recovery.ignoreIndex})
  const inputs: PathInput[] = []
  // The same file or folder named twice (`vols vols`, `vols ./vols`, a folder and a volume in it) is
  // read once: `named` holds what calls for the other paths of one command met.
  const firstTime = (info: {dev: number; ino: number}) => !named.has(`${info.dev}:${info.ino}`) && Boolean(named.add(`${info.dev}:${info.ino}`))
  for (const path of paths) {
    if (path === '-') {
      inputs.push({kind: 'archive-stream', label: 'stdin', stream: stdin})
      continue
    }

    let info
    try {
      info = await stat(path)
    } catch {
      // Each command names what it reads: verify reads archives only.
      const suggestion = accepts === 'archives'
        ? 'Give .tar volumes written by export, the folder holding them, or - for an archive on stdin.'
        : 'Give archive volumes, a folder of them, a DICOM folder, an Orthanc storage folder, or - for stdin.'
      throw new UserFacingError(`${path}: no such file or folder`, suggestion, 'usage', 'no-such-input')
    }

    if (!firstTime(info)) continue
    if (info.isFile()) {
      inputs.push(mode === 'auto' && await isArchiveFile(path) ? {kind: 'archive-file', path} : {kind: 'dicom-folder', path})
      continue
    }

    // A pipe (<(...), a FIFO) or a device is neither: it is read as stdin is, with -.
    if (!info.isDirectory()) {
      throw new UserFacingError(`${path} is not a file or a folder (a pipe or a device)`, 'To read an archive from a pipe, give - and send it to stdin: ... | orthanc-replicate import -', 'usage', 'not-a-file')
    }

    if (mode === 'storage') inputs.push(storage(path))
    else if (mode === 'dicom') inputs.push({kind: 'dicom-folder', path})
    else {
      const volumes = (await readdir(path)).filter((name) => VOLUME_NAME_PATTERN.test(name)).sort()
      if (volumes.length > 0) {
        for (const name of volumes) {
          const volume = join(path, name)
          // One that cannot be looked at (a link to nowhere) is named by the reader.
          const info = await stat(volume).catch(() => undefined)
          if (!info || firstTime(info)) inputs.push({kind: 'archive-file', path: volume})
        }
      }
      else if (await looksLikeStorageFolder(path)) inputs.push(storage(path))
      else inputs.push({kind: 'dicom-folder', path})
    }
  }

  return inputs
}
