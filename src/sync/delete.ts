import type {OrthancClient} from '../orthanc/client.js'
import {mapConcurrent} from '../util/concurrency.js'
import {isCount} from '../util/count.js'
import {compareServers} from './compare.js'
import {heldByTarget, type SyncPlan} from './plan.js'

export interface DeletionPass {
  /** Instances on the target that the source no longer has. */
  candidates: number
  deleted: number
  /** Why nothing was deleted although there were candidates. */
  refused?: string
}

export interface DeletionOptions {
  maxFraction: number
  /**
   * How many instances the target held before this run added any (the sync's comparison: present,
   * different and only on the target). The fraction is of these: measured after the sync, a source
   * replaced by unrelated data would first add its instances, and then the target's originals
   * would be a small fraction of the whole however many of them go.
   */
  targetHeldBefore?: number
  dryRun: boolean
  concurrency: number
  signal?: AbortSignal
}

/**
 * For sync --delete, decided on the plan before anything moves: why this pass should neither copy
 * nor delete. A deletion that would be refused must stay refused when the same command runs
 * again, so the pass copies nothing either: had it copied the source's instances, the next run
 * would find the target's own a small fraction of it, and delete them (another server's data
 * given as the source, run twice).
 */
export function refusedBeforeCopying(plan: SyncPlan, maxFraction: number): string | undefined {
  if (plan.onlyOnTarget === 0) return undefined
  if (plan.present + plan.different + plan.missing === 0) return 'the source answered with no instances at all; nothing copied or deleted'
  const held = heldByTarget(plan)
  const fraction = plan.onlyOnTarget / held
  if (fraction <= maxFraction) return undefined
  return `deleting ${plan.onlyOnTarget} of the ${held} instances the target holds (${(fraction * 100).toFixed(1)}%) is over --max-delete-fraction ${maxFraction}; nothing copied or deleted, so that the same command run again finds the target as it is: check that the source is the right one`
}

/**
 * Removes from the target what the source no longer has, unless that looks like a mistake: a
 * source that answers with no instances at all, or a pass that would remove more than
 * `maxFraction` of what the target held (a half-empty source after a failed restore, say, or
 * another server's data given as the source). A refused pass deletes nothing and says why.
 */
export async function deleteExtras(source: OrthancClient, target: OrthancClient, options: DeletionOptions): Promise<DeletionPass> {
  const extras: string[] = []
  for await (const item of compareServers(source, target, {filters: {}, checksum: false, signal: options.signal})) {
    if (item.state === 'only-target') extras.push(item.id)
  }

  const pass: DeletionPass = {candidates: extras.length, deleted: 0}
  if (extras.length === 0) return pass
  const [onSource, onTarget] = await Promise.all([source.statistics(options.signal), target.statistics(options.signal)])
  // Counts that are not counts (a broken server or proxy) judge nothing: refused, as an empty source.
  if (!isCount(onSource.CountInstances) || !isCount(onTarget.CountInstances)) {
    pass.refused = 'a server did not answer its instance count as a number; not deleting anything from the target'
    return pass
  }
  if (onSource.CountInstances === 0) {
    pass.refused = 'the source answered with no instances at all; not deleting anything from the target'
    return pass
  }

  // Another writer may have added to the target since the comparison: never measure against less
  // than the candidates themselves.
  const held = Math.max(options.targetHeldBefore ?? onTarget.CountInstances, extras.length)
  const fraction = extras.length / held
  if (fraction > options.maxFraction) {
    const whole = options.targetHeldBefore === undefined ? 'target instances' : 'instances the target held before this run'
    pass.refused = `deleting ${extras.length} of ${held} ${whole} (${(fraction * 100).toFixed(1)}%) is over --max-delete-fraction ${options.maxFraction}`
    return pass
  }

  if (options.dryRun) return pass
  await mapConcurrent(extras, options.concurrency, async (id) => {
    await target.deleteInstance(id, options.signal)
    pass.deleted++
  })
  return pass
}
