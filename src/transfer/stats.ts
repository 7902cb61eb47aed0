/** What every command that moves instances reports; the names are the same in every --json summary. */
export interface TransferStats {
  transferred: number
  skipped: number
  failed: number
  bytes: number
  durationMs: number
  /** Requests that were sent again after a transient failure. */
  retries: number
  failures: FailureRecord[]
}

export interface FailureRecord {
  /** The instance ID, file path or archive entry that failed. */
  item: string
  reason: string
}

export function emptyStats(): TransferStats {
  return {transferred: 0, skipped: 0, failed: 0, bytes: 0, durationMs: 0, retries: 0, failures: []}
}

/** Failures kept in full in the summary; beyond this only the count grows, so a bad day cannot fill memory. */
export const MAX_LISTED_FAILURES = 1000

export function recordFailure(stats: TransferStats, item: string, reason: string): void {
  stats.failed++
  if (stats.failures.length < MAX_LISTED_FAILURES) stats.failures.push({item, reason})
}
