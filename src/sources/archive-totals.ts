import {readVolumeManifest} from '../export/since.js'

export interface ExportOfVolume {
  group: string
  exportedAt: string
}

export interface ArchiveTotals {
  instances: number
  bytes: number
  /** Which export each volume says it belongs to. */
  exports: Map<string, ExportOfVolume>
  /** With `findRepeated`: the instances the volumes of more than one export hold. */
  repeated: Set<string>
}

/**
 * What volume files say they hold (their manifests, read ahead through the tar headers): the
 * total a progress display counts towards. Undefined when any of them cannot say: a total that
 * leaves some out would lie. Nothing here is trusted for the job itself: every volume is proven
 * again when it is read.
 */
export async function archiveTotals(paths: string[], options: {findRepeated?: boolean} = {}): Promise<ArchiveTotals | undefined> {
  if (paths.length === 0) return undefined
  let instances = 0
  let bytes = 0
  const exports = new Map<string, ExportOfVolume>()
  const instancesByGroup = new Map<string, number>()
  for (const path of paths) {
    const manifest = await readVolumeManifest(path).catch(() => undefined)
    if (!Array.isArray(manifest?.instances)) return undefined
    exports.set(path, {group: manifest.group, exportedAt: manifest.exportedAt})
    instances += manifest.instances.length
    instancesByGroup.set(manifest.group, (instancesByGroup.get(manifest.group) ?? 0) + manifest.instances.length)
    for (const record of manifest.instances) bytes += Number(record.size) || 0
  }

  const repeated = options.findRepeated && instancesByGroup.size > 1 ? await repeatedAcrossExports(paths, exports, instancesByGroup) : new Set<string>()
  return {instances, bytes, exports, repeated}
}

/**
 * The instances the volumes of several exports hold (an export holds each once). Memory holds the
 * IDs of every export but the largest (some 100 bytes each): a whole export and the incremental
 * ones after it keep the incremental ones' alone. The largest's manifests are read again, and
 * met against them.
 */
async function repeatedAcrossExports(paths: string[], exports: Map<string, ExportOfVolume>, instancesByGroup: Map<string, number>): Promise<Set<string>> {
  const largest = [...instancesByGroup].reduce((a, b) => (b[1] > a[1] ? b : a))[0]
  const met = new Set<string>()
  const repeated = new Set<string>()
  const ids = async (path: string) => ((await readVolumeManifest(path).catch(() => undefined))?.instances ?? []).flatMap((record) => (typeof record.id === 'string' ? [record.id] : []))
  for (const path of paths.filter((path) => exports.get(path)!.group !== largest)) {
    for (const id of await ids(path)) {
      if (met.has(id)) repeated.add(id)
      else met.add(id)
    }
  }

  for (const path of paths.filter((path) => exports.get(path)!.group === largest)) for (const id of await ids(path)) if (met.has(id)) repeated.add(id)
  return repeated
}
