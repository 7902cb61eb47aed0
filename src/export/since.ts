import {readdir, stat} from 'node:fs/promises'
import {join} from 'node:path'

import {CONTENTS_FILE, MANIFEST_FILE, VOLUME_NAME_PATTERN, type VolumeContents, type VolumeManifest} from '../archive/format.js'
import {indexTarFile, readIndexedEntry} from '../archive/tar-index.js'
import {UserFacingError} from '../errors.js'
import type {OrthancClient} from '../orthanc/client.js'
import type {SelectedInstance} from '../sources/orthanc-selection.js'

/** What an earlier export holds: the base of an incremental one. */
export interface ExportBase {
  group: string
  changeCursor: number
  /** Instance ID → MD5 of every instance the earlier export wrote. */
  instances: Map<string, string>
}

/**
 * Reads an earlier export (its folder, or some of its volume files) without extracting it:
 * only each volume's manifest is read, found by its tar headers.
 */
export async function readExportBase(path: string): Promise<ExportBase> {
  const volumes = await volumeFiles(path)
  const instances = new Map<string, string>()
  let group: string | undefined
  let changeCursor: number | undefined
  for (const file of volumes) {
    const manifest = await readVolumeManifest(file)
    group ??= manifest.group
    changeCursor = Math.min(changeCursor ?? manifest.changeCursor, manifest.changeCursor)
    for (const record of manifest.instances) instances.set(record.id, record.md5)
  }

  if (group === undefined || changeCursor === undefined) {
    throw new UserFacingError(`${path} holds no export volume`, 'Give --since the folder of an earlier export, or one of its .tar volumes.', 'bad-input', 'no-base')
  }

  return {group, changeCursor, instances}
}

export async function volumeFiles(path: string): Promise<string[]> {
  const info = await stat(path).catch(() => undefined)
  if (!info) throw new UserFacingError(`${path}: no such file or folder`, 'Give --since the folder of an earlier export, or one of its .tar volumes.', 'usage', 'no-base')
  if (info.isFile()) return [path]
  return (await readdir(path)).filter((name) => VOLUME_NAME_PATTERN.test(name)).sort().map((name) => join(path, name))
}

/** A volume's manifest, or its contents file when the volume was cut short before the manifest. */
export async function readVolumeManifest(file: string): Promise<VolumeManifest | VolumeContents> {
  const index = await indexTarFile(file)
  const find = (name: string) => index.entries.find((entry) => entry.name.endsWith(`/${name}`) && !entry.truncated)
  const entry = find(MANIFEST_FILE) ?? find(CONTENTS_FILE)
  if (!entry) throw new UserFacingError(`${file} has no readable ${MANIFEST_FILE}`, 'Check that it is a volume written by orthanc-replicate export.', 'bad-input', 'not-a-volume')
  return JSON.parse((await readIndexedEntry(file, entry)).toString('utf8')) as VolumeManifest
}

/**
 * Leaves out what the base already holds, unless Orthanc logged the instance as stored again
 * after the base was made (a rewrite under the same ID). The ID comparison catches what
 * /changes cannot show: changes of deleted resources vanish, and a cursor can be stale.
 */
export async function excludeExportedBefore(client: OrthancClient, base: ExportBase, signal?: AbortSignal): Promise<(instance: SelectedInstance) => boolean> {
  const restoredSince = new Set<string>()
  const changes = client.changesSince(base.changeCursor, signal)
  for await (const change of changes) {
    if (change.ChangeType === 'NewInstance' && base.instances.has(change.ID)) restoredSince.add(change.ID)
  }

  return (instance) => base.instances.has(instance.id) && !restoredSince.has(instance.id)
}
