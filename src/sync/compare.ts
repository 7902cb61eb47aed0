import type {ExportFilters} from '../archive/format.js'
import type {OrthancClient} from '../orthanc/client.js'
import {selectInstances, type SelectedInstance} from '../sources/orthanc-selection.js'
import {mapConcurrent} from '../util/concurrency.js'

const MD5_CONCURRENCY = 8

/** Where an instance stands between two servers; 'present' is on both, MD5s not compared. */
export type InstanceState = 'only-source' | 'only-target' | 'different' | 'identical' | 'present'

export interface ComparedInstance {
  id: string
  studyId?: string
  studyInstanceUid?: string
  state: InstanceState
  size?: number
  source?: SelectedInstance
}

/** Every instance ID on a server, in a Set: about 100 bytes per instance. */
export async function instanceIdSet(client: OrthancClient, signal?: AbortSignal): Promise<Set<string>> {
  const ids = new Set<string>()
  for await (const id of client.listInstanceIds(signal)) ids.add(id)
  return ids
}

/**
 * Walks the source's selected instances and says where each one stands on the target, by
 * comparing ID sets (one listing each), then, for instances on both sides and only when asked,
 * the MD5s both servers recorded (no file is downloaded). Instances only on the target come
 * last, and only for an unfiltered comparison: with filters, the target's extra instances are
 * out of scope.
 */
export async function* compareServers(
  source: OrthancClient, target: OrthancClient,
  options: {filters: ExportFilters; checksum: boolean; signal?: AbortSignal; lookupEachOnTarget?: boolean; ignoreUnknownIds?: boolean},
): AsyncGenerator<ComparedInstance> {
  // For a handful of instances (new changes while following) asking the target about each beats listing it all.
  const onTarget = options.lookupEachOnTarget ? undefined : await instanceIdSet(target, options.signal)
  for await (const study of selectInstances(source, options.filters, options.signal, {ignoreUnknownIds: options.ignoreUnknownIds})) {
    const present = onTarget
      ? study.instances.map((instance) => onTarget.delete(instance.id))
      : await mapConcurrent(study.instances, MD5_CONCURRENCY, async (instance) => (await target.instance(instance.id, options.signal)) !== undefined)
    // MD5s of one study are compared in parallel: two metadata reads per instance, no download.
    const same = options.checksum
      ? await mapConcurrent([...study.instances.keys()], MD5_CONCURRENCY, async (index) => !present[index] || sameMd5(source, target, study.instances[index]!.id, options.signal))
      : undefined
    for (const [index, instance] of study.instances.entries()) {
      const base = {id: instance.id, studyId: study.studyId, studyInstanceUid: study.studyInstanceUid, size: instance.size, source: instance}
      if (!present[index]) yield {...base, state: 'only-source'}
      else if (!same) yield {...base, state: 'present'}
      else yield {...base, state: same[index] ? 'identical' : 'different'}
    }
  }

  const unfiltered = Object.keys(options.filters).length === 0
  if (unfiltered && onTarget) for (const id of onTarget) yield {id, state: 'only-target'}
}

export async function sameMd5(source: OrthancClient, target: OrthancClient, id: string, signal?: AbortSignal): Promise<boolean> {
  const [a, b] = await Promise.all([source.storedFileInfo(id, signal), target.storedFileInfo(id, signal)])
  return a !== undefined && b !== undefined && a.md5 === b.md5
}
