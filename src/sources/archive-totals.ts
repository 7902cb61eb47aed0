import {readVolumeManifest} from '../export/since.js'

export interface ExportOfVolume {
  group: string
  exportedAt: string
}

/**
 * What volume files say they hold (their manifests, read ahead through the tar headers): the
 * total a progress display counts towards. Undefined when any of them cannot say: a total that
 * leaves some out would lie. Nothing here is trusted for the job itself: every volume is proven
 * again when it is read. `exports`: which export each volume says it belongs to. `repeated`: the
 * instances more than one volume holds (two exports of them).
 */
export async function archiveTotals(paths: string[]): Promise<{instances: number; bytes: number; exports: Map<string, ExportOfVolume>; repeated: Set<string>} | undefined> {
  if (paths.length === 0) return undefined
  let instances = 0
  let bytes = 0
  const exports = new Map<string, ExportOfVolume>()
  // Every ID met, only while the manifests are read (some 100 bytes each): what is kept is the few
  // met twice, which the import counts once.
  const met = new Set<string>()
  const repeated = new Set<string>()
  for (const path of paths) {
    const manifest = await readVolumeManifest(path).catch(() => undefined)
    if (!Array.isArray(manifest?.instances)) return undefined
    exports.set(path, {group: manifest.group, exportedAt: manifest.exportedAt})
    instances += manifest.instances.length
    for (const record of manifest.instances) {
      bytes += Number(record.size) || 0
      // An export holds each instance once: only two exports (or a volume named twice) repeat one.
      if (paths.length > 1 && typeof record.id === 'string') {
        if (met.has(record.id)) repeated.add(record.id)
        else met.add(record.id)
      }
    }
  }

  return {instances, bytes, exports, repeated}
}
