import {MAX_HOPS} from '../archive/manifest-schema.js'
import type {Hop} from '../model.js'
import {UserFacingError} from '../errors.js'
import {readReceipt} from '../import/receipt.js'
import {readVolumeManifest, volumeFiles} from './since.js'

/**
 * The chain of earlier hops for data that reached this source through archives: read from the
 * import receipt written when the data arrived, or from the archive itself (its own hops, then it).
 */
export async function readHops(path: string): Promise<Hop[]> {
  if (path.endsWith('.jsonl')) {
    let hops: Hop[]
    try {
      hops = (await readReceipt(path)).header.hops ?? []
    } catch (error) {
      throw new UserFacingError(`cannot read hops from ${path}: ${(error as Error).message}`, 'Give the import receipt (.jsonl) or the archive the data came from.', 'bad-input', 'bad-hops')
    }

    // A volume records at most MAX_HOPS: more would make volumes every reader refuses.
    if (hops.length > MAX_HOPS) throw new UserFacingError(`${path} names ${hops.length} archives the data came through, more than the ${MAX_HOPS} a volume records`, 'Give --hops-from the archive the data came from instead of the receipt.', 'usage', 'bad-hops')
    return hops
  }

  const [first] = await volumeFiles(path, '--hops-from')
  if (!first) throw new UserFacingError(`${path} holds no export volume`, 'Give --hops-from the import receipt or the archive the data came from.', 'bad-input', 'bad-hops')
  const manifest = await readVolumeManifest(first)
  return [...manifest.hops, {group: manifest.group, source: manifest.source, exportedAt: manifest.exportedAt}]
}
