import {readdir, readFile, stat} from 'node:fs/promises'
import {dirname, join} from 'node:path'

import {CONTENTS_FILE, MANIFEST_FILE, VOLUME_NAME_PATTERN, type VolumeContents, type VolumeManifest} from '../archive/format.js'
import {parseContents, parseManifest} from '../archive/manifest-schema.js'
import {indexTarFile, readIndexedEntry} from '../archive/tar-index.js'
import {UserFacingError} from '../errors.js'
import type {OrthancClient} from '../orthanc/client.js'
import {isSideDataChange} from '../orthanc/side-data-changes.js'
import type {SelectedInstance} from '../sources/orthanc-selection.js'
import {writeFileDurably} from '../util/json-file.js'
import {CHAIN_FILE, DEFAULT_STATE_FOLDER, loadPlan} from './plan.js'

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
  // The folder an export was given as --state: its own record, enough even for encrypted volumes.
  const asState = (await stat(path).catch(() => undefined))?.isDirectory() ? await loadPlan(path) : undefined
  if (asState) {
    const chain = await readChain(path)
    if (chain.length > 0) return {group: asState.group, changeCursor: asState.changeCursor, instances: new Map(chain.map((id) => [id, '']))}
    throw new UserFacingError(`${path} is the state of an export that has not finished`, 'Run that export again with the same --state to finish it, then give --since this folder.', 'bad-input', 'no-base')
  }

  const volumes = await volumeFiles(path)
  // The export's own state, when it is here (the side that exported): enough even for encrypted volumes.
  const folder = volumes[0] === undefined ? path : dirname(volumes[0])
  const plan = await loadPlan(join(folder, DEFAULT_STATE_FOLDER))
  const chain = await readChain(join(folder, DEFAULT_STATE_FOLDER))
  if (plan && chain.length > 0) return {group: plan.group, changeCursor: plan.changeCursor, instances: new Map(chain.map((id) => [id, '']))}
  if (volumes.some((volume) => volume.endsWith('.age'))) {
    throw new UserFacingError(`${path} holds encrypted volumes and no export state to read instead`, `Give --since the folder the export wrote (it keeps a ${DEFAULT_STATE_FOLDER} folder beside the volumes), or the folder that export was given as --state.`, 'bad-input', 'no-base')
  }

  const instances = new Map<string, string>()
  let group: string | undefined
  let changeCursor: number | undefined
  for (const file of volumes) {
    const manifest = await readVolumeManifest(file)
    group ??= manifest.group
    if (manifest.group !== group) {
      throw new UserFacingError(`${path} holds volumes of two exports (groups ${group} and ${manifest.group})`, 'Give --since the volumes of one export: its folder alone, or its own volume files.', 'bad-input', 'no-base')
    }
    changeCursor = Math.min(changeCursor ?? manifest.changeCursor, manifest.changeCursor)
    // A volume cut short before its manifest says what it was to hold, not what it holds: what it
    // planned is not the far side's, and goes again.
    if (!('failed' in manifest)) continue
    for (const record of manifest.instances) instances.set(record.id, record.md5)
  }

  if (group === undefined || changeCursor === undefined) {
    throw new UserFacingError(`${path} holds no export volume`, 'Give --since the folder of an earlier export, or one of its .tar volumes.', 'bad-input', 'no-base')
  }

  // An incremental export's own volumes hold only what it added: what the exports before it
  // held is in the chain list it left beside them.
  for (const id of await readChain(join(dirname(volumes[0]!), DEFAULT_STATE_FOLDER))) if (!instances.has(id)) instances.set(id, '')
  return {group, changeCursor, instances}
}

/** The list, in an export's state folder, of every instance its chain of exports holds. */
export function chainFile(stateFolder: string): string {
  return join(stateFolder, CHAIN_FILE)
}

/** The instance IDs an export and the exports it continued hold (none when it left no list). */
export async function readChain(stateFolder: string): Promise<string[]> {
  try {
    return (await readFile(chainFile(stateFolder), 'utf8')).split('\n').filter((line) => /^[0-9a-f]{8}(-[0-9a-f]{8}){4}$/.test(line))
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw error
  }
}

/** Writes an export's chain list: what the exports it continued hold, and what its own finished volumes hold. */
export async function writeChain(stateFolder: string, base: Iterable<string>, held: Iterable<string>): Promise<void> {
  const ids = new Set([...base, ...held])
  await writeFileDurably(chainFile(stateFolder), [...ids].sort().map((id) => `${id}\n`).join(''))
}

/** The volume files at `path` (a volume, or an export's folder), for the flag that named it. */
export async function volumeFiles(path: string, flag: '--since' | '--hops-from' = '--since'): Promise<string[]> {
  const info = await stat(path).catch(() => undefined)
  if (!info) {
    const what = flag === '--since' ? 'the folder of an earlier export, or one of its .tar volumes' : 'the import receipt (.jsonl) or the archive the data came from'
    throw new UserFacingError(`${path}: no such file or folder`, `Give ${flag} ${what}.`, 'usage', flag === '--since' ? 'no-base' : 'bad-hops')
  }

  if (info.isFile()) return [path]
  return (await readdir(path)).filter((name) => VOLUME_NAME_PATTERN.test(name)).sort().map((name) => join(path, name))
}

/** A volume's manifest, or its contents file when the volume was cut short before the manifest. */
export async function readVolumeManifest(file: string): Promise<VolumeManifest | VolumeContents> {
  const index = await indexTarFile(file)
  const find = (name: string) => index.entries.find((entry) => entry.name.endsWith(`/${name}`) && !entry.truncated)
  const entry = find(MANIFEST_FILE) ?? find(CONTENTS_FILE)
  if (!entry) throw new UserFacingError(`${file} has no readable ${MANIFEST_FILE}`, 'Check that it is a volume written by orthanc-replicate export.', 'bad-input', 'not-a-volume')
  // Held to the format like any archive's file: what it says becomes this export's chain and hops.
  const bytes = await readIndexedEntry(file, entry)
  const parsed = entry.name.endsWith(`/${MANIFEST_FILE}`) ? parseManifest(bytes) : parseContents(bytes)
  if ('violations' in parsed) {
    throw new UserFacingError(`${file}: its ${entry.name.split('/').at(-1)} is damaged: ${parsed.violations.join('; ')}`, 'Give an intact volume of that export (verify says which are), or its export folder with the .orthanc-replicate state beside the volumes.', 'bad-input', 'damaged-volume')
  }

  return parsed.value
}

/**
 * What Orthanc logged on the source since the base was made, for what the base holds: instances
 * stored again (a rewrite under the same ID), and resources whose user metadata or attachments
 * were set (at any level).
 */
export interface ChangedSinceBase {
  /** Whether the base holds the instance, and nothing logged since asks for it again. */
  exclude: (instance: SelectedInstance) => boolean
  /**
   * Whether the instance goes whatever the exclusions say, to carry side data set since the base:
   * an instance's own; a series', study's or patient's with one instance of it in each study
   * (one the export sends anyway when there is one), as a volume records the side data of the
   * resources its instances belong to, and the far side's import compares and completes it.
   */
  carries: (instance: SelectedInstance, studyInstances: readonly SelectedInstance[]) => boolean
  /**
   * The change the log was read up to: the export's own cursor, so that what is logged after it
   * (while the export plans) is the next incremental export's to read, never passed over.
   */
  readUpTo: number
}

/**
 * Leaves out what the base already holds, unless Orthanc logged the instance as stored again
 * after the base was made, or logged side data set on it or a resource above it since. The ID
 * comparison catches what /changes cannot show: changes of deleted resources vanish, and a cursor
 * can be stale.
 */
export async function changedSinceBase(client: OrthancClient, base: ExportBase, signal?: AbortSignal): Promise<ChangedSinceBase> {
  // A log begun again numbers other changes from 1: its changes after the base's cursor are not
  // what happened since the base (an instance stored again with other bytes would be left out).
  const head = await client.logHead(base.changeCursor, signal)
  if (head < base.changeCursor) {
    throw new UserFacingError(
      `${client.display}'s change log stands at ${head}, before the change ${base.changeCursor} the export given to --since was made at: it is not the log that export was made from (a server moved onto a new database, rebuilt, or restored from a backup), so what changed since cannot be told`,
      'Export without --since (a whole export), or with --exclude-receipt RECEIPT of the far side\'s last import, which compares each instance\'s MD5.',
      'bad-input', 'other-history',
    )
  }

  // Held for what the base holds only: an instance it does not hold goes anyway, with its side data.
  const storedAgain = new Set<string>()
  const sideDataOf = {instances: new Set<string>(), series: new Set<string>(), studies: new Set<string>(), patients: new Set<string>()}
  const changes = client.changesSince(base.changeCursor, signal)
  let next = await changes.next()
  for (; !next.done; next = await changes.next()) {
    const change = next.value
    if (change.ChangeType === 'NewInstance' && base.instances.has(change.ID)) storedAgain.add(change.ID)
    if (!isSideDataChange(change)) continue
    if (change.ResourceType === 'Instance') {
      if (base.instances.has(change.ID)) sideDataOf.instances.add(change.ID)
    } else if (change.ResourceType === 'Series') sideDataOf.series.add(change.ID)
    else if (change.ResourceType === 'Study') sideDataOf.studies.add(change.ID)
    else if (change.ResourceType === 'Patient') sideDataOf.patients.add(change.ID)
  }
  const readUpTo = next.value

  // A patient's side data goes with one instance of each of its studies (deleted since: none).
  for (const patientId of sideDataOf.patients) for (const studyId of (await client.resource('patient', patientId, signal))?.Studies ?? []) sideDataOf.studies.add(studyId)
  const inBase = (instance: SelectedInstance) => base.instances.has(instance.id)
  // The carrier of a resource: one the export sends anyway if there is one (not in the base, stored
  // again, or carrying side data of its own), else the first.
  const goesAnyway = (instance: SelectedInstance) => !inBase(instance) || storedAgain.has(instance.id) || sideDataOf.instances.has(instance.id)
  const carrierOf = (instances: readonly SelectedInstance[]) => (instances.find(goesAnyway) ?? instances[0])?.id
  const carriersByStudy = new WeakMap<readonly SelectedInstance[], Set<string>>()
  const carriersOf = (studyInstances: readonly SelectedInstance[]): Set<string> => {
    let carriers = carriersByStudy.get(studyInstances)
    if (carriers) return carriers
    carriers = new Set()
    const studyId = studyInstances[0]?.studyId
    const series = new Set(studyInstances.map((instance) => instance.seriesId).filter((id) => sideDataOf.series.has(id)))
    for (const seriesId of series) carriers.add(carrierOf(studyInstances.filter((instance) => instance.seriesId === seriesId))!)
    // Any instance of the study carries the study's side data: one only when no series' does.
    if (studyId !== undefined && sideDataOf.studies.has(studyId) && carriers.size === 0) carriers.add(carrierOf(studyInstances)!)
    carriersByStudy.set(studyInstances, carriers)
    return carriers
  }

  return {
    exclude: (instance) => inBase(instance) && !storedAgain.has(instance.id),
    carries: (instance, studyInstances) => sideDataOf.instances.has(instance.id) || carriersOf(studyInstances).has(instance.id),
    readUpTo,
  }
}
