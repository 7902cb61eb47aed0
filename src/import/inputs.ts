import {readdir, stat} from 'node:fs/promises'
import {join} from 'node:path'
import type {Readable} from 'node:stream'

import {VOLUME_NAME_PATTERN} from '../archive/format.js'
import {UserFacingError} from '../errors.js'
import {looksLikeStorageFolder} from '../sources/storage-folder.js'

export type ImportInput =
  | {kind: 'archive-file'; path: string}
  | {kind: 'archive-stream'; label: string; stream: Readable}
  | {kind: 'dicom-folder'; path: string}
  | {kind: 'storage-folder'; path: string}

export type FolderMode = 'auto' | 'dicom' | 'storage'

/**
 * What each PATH argument is: `-` is an archive on stdin; a .tar file is a volume; a folder
 * holding volumes gives those volumes; an Orthanc storage folder is detected (or forced with
 * the mode); any other folder or file is read as DICOM files.
 */
export async function resolveImportInputs(paths: string[], stdin: Readable, mode: FolderMode): Promise<ImportInput[]> {
  const inputs: ImportInput[] = []
  for (const path of paths) {
    if (path === '-') {
      inputs.push({kind: 'archive-stream', label: 'stdin', stream: stdin})
      continue
    }

    let info
    try {
      info = await stat(path)
    } catch {
      throw new UserFacingError(`${path}: no such file or folder`, 'Give archive volumes, a folder of them, a DICOM folder, an Orthanc storage folder, or - for stdin.', 'usage', 'no-such-input')
    }

    if (info.isFile()) {
      inputs.push(path.endsWith('.tar') && mode === 'auto' ? {kind: 'archive-file', path} : {kind: 'dicom-folder', path})
      continue
    }

    if (mode === 'storage') inputs.push({kind: 'storage-folder', path})
    else if (mode === 'dicom') inputs.push({kind: 'dicom-folder', path})
    else {
      const volumes = (await readdir(path)).filter((name) => VOLUME_NAME_PATTERN.test(name)).sort()
      if (volumes.length > 0) inputs.push(...volumes.map((name) => ({kind: 'archive-file' as const, path: join(path, name)})))
      else if (await looksLikeStorageFolder(path)) inputs.push({kind: 'storage-folder', path})
      else inputs.push({kind: 'dicom-folder', path})
    }
  }

  return inputs
}
