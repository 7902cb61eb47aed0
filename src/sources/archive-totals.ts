import {readVolumeManifest} from '../export/since.js'

/**
 * What volume files say they hold (their manifests, read ahead through the tar headers): the
 * total a progress display counts towards. Undefined when any of them cannot say: a total that
 * leaves some out would lie. Nothing here is trusted for the job itself: every volume is proven
 * again when it is read. `groups`: how many exports the volumes come from.
 */
export async function archiveTotals(paths: string[]): Promise<{instances: number; bytes: number; groups: number} | undefined> {
  if (paths.length === 0) return undefined
  let instances = 0
  let bytes = 0
  const groups = new Set<string>()
  for (const path of paths) {
    const manifest = await readVolumeManifest(path).catch(() => undefined)
    if (!Array.isArray(manifest?.instances)) return undefined
    groups.add(manifest.group)
    instances += manifest.instances.length
    for (const record of manifest.instances) bytes += Number(record.size) || 0
  }

  return {instances, bytes, groups: groups.size}
}
