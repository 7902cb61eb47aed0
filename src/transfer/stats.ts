import {MAX_LISTED_PROBLEMS, type Problem} from '../problems.js'

/** What every command that moves instances reports; the names are the same in every --json summary. */
export interface TransferStats {
  /** Instances this run stored (or wrote): not those another run or path put there. */
  transferred: number
  skipped: number
  failed: number
  bytes: number
  durationMs: number
  /** Requests that were sent again after a transient failure. */
  retries: number
  /** The first failures in full; `failed` counts them all. */
  failures: Problem[]
  /** Stopped by Ctrl-C or SIGTERM: the counts are what was done until then. */
  interrupted: boolean
}

/**
 * What a job set out to move, counted before moving anything. A dry run reports its work here
 * and nowhere else: its `transferred` and `bytes` stay 0.
 */
export interface PlannedCounts {
  instances: number
  bytes: number
}

export function emptyStats(): TransferStats {
  return {transferred: 0, skipped: 0, failed: 0, bytes: 0, durationMs: 0, retries: 0, failures: [], interrupted: false}
}

export function recordFailure(stats: TransferStats, failure: Problem): void {
  stats.failed++
  if (stats.failures.length < MAX_LISTED_PROBLEMS) stats.failures.push(failure)
}
