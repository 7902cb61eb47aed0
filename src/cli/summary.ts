import type {Problem} from '../problems.js'
import type {NotCarried} from '../sinks/orthanc-sink.js'
import type {TransferStats} from '../transfer/stats.js'
import {formatBytes, formatDuration} from '../util/format.js'

const LISTED_FAILURES = 20

/** Where a run's concurrency stood: `unit` names what ran at once (uploads, downloads). */
export interface ConcurrencyReport {
  concurrency: number
  concurrencyAdaptive: boolean
  unit: string
}

/** The closing lines every transfer command prints for a person: counts, concurrency, then what failed. */
export function renderTransferSummary(stats: TransferStats, headline: string, concurrency?: ConcurrencyReport): string {
  const lines = [
    `${headline}: ${stats.transferred} transferred, ${stats.skipped} skipped, ${stats.failed} failed; ${formatBytes(stats.bytes)} in ${formatDuration(stats.durationMs)}.`,
  ]
  if (concurrency && concurrency.concurrency > 0) {
    lines.push(concurrency.concurrencyAdaptive
      ? `Concurrency: settled on ${concurrency.concurrency} ${concurrency.unit} at once (adaptive; --concurrency N fixes it).`
      : `Concurrency: ${concurrency.concurrency} ${concurrency.unit} at once (--concurrency).`)
  }

  if (stats.failed > 0) {
    lines.push('Failed:')
    for (const failure of stats.failures.slice(0, LISTED_FAILURES)) lines.push(`  ${renderProblem(failure)}`)
    if (stats.failed > LISTED_FAILURES) lines.push(`  ... and ${stats.failed - LISTED_FAILURES} more (see --json)`)
    lines.push('Run the same command again to retry what failed; what succeeded is not redone.')
  }

  if (stats.interrupted) lines.push('Interrupted before the end: run the same command again to finish; what is done is not redone.')

  return `${lines.join('\n')}\n`
}

/** One problem on one line: what, where, why. */
export function renderProblem(problem: Problem): string {
  return `${problem.path ? `${problem.path}: ` : ''}${problem.id}: ${problem.reason}`
}

/** Missing volumes of an export, as verify and import list them. */
export function renderVolumeRange(range: {from: number; to: number; volumeCount: number}): string {
  return range.from === range.to ? `${range.from} of ${range.volumeCount}` : `${range.from}-${range.to} of ${range.volumeCount}`
}

/** What side data could not be carried, one line per level, kind and name. */
export function renderNotCarried(notCarried: NotCarried[]): string[] {
  return notCarried.map((entry) => `Not carried: ${entry.kind}${entry.name === undefined ? '' : ` "${entry.name}"`} of ${entry.count} ${entry.level === 'series' ? 'series' : `${entry.level}(s)`}: ${entry.reason}.`)
}
