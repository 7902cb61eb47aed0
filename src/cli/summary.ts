import type {Problem} from '../problems.js'
import type {NotCarried} from '../sinks/orthanc-sink.js'
import type {ZipUploads} from '../sinks/upload-batcher.js'
import type {PlannedCounts, TransferStats} from '../transfer/stats.js'
import {formatBytes, formatDuration} from '../util/format.js'
import {withoutControls} from '../util/printable.js'

const LISTED_FAILURES = 20

/** Where a run's concurrency stood: `unit` names what ran at once (uploads, downloads). */
export interface ConcurrencyReport {
  concurrency: number
  concurrencyAdaptive: boolean
  unit: string
  /** Uploads that carried several small instances in one ZIP (sync, import). */
  zipUploads?: ZipUploads
}

/**
 * The closing lines every transfer command prints for a person: counts, concurrency, then what
 * failed. A dry run says what it would transfer (`planned`), never that it transferred anything.
 * `onRetry`: what running the command again does with what succeeded, where it is not "nothing".
 * `notRetried`: failures a run again does not try (said apart, with what to do instead).
 */
export function renderTransferSummary(stats: TransferStats & {dryRun?: boolean; planned?: PlannedCounts}, headline: string, concurrency?: ConcurrencyReport, onRetry = 'what succeeded is not redone', notRetried = 0): string {
  const counts = stats.dryRun
    ? `${stats.planned?.instances ?? 0} would be transferred (${formatBytes(stats.planned?.bytes ?? 0)}), ${stats.skipped} skipped, ${stats.failed} failed; in ${formatDuration(stats.durationMs)}.`
    : `${stats.transferred} transferred, ${stats.skipped} skipped, ${stats.failed} failed; ${formatBytes(stats.bytes)} in ${formatDuration(stats.durationMs)}.`
  const lines = [`${headline}: ${counts}`]
  if (stats.retries > 0) lines.push(`${stats.retries} request(s) or instance(s) sent again after a failure that passed (retries).`)
  if (concurrency && concurrency.concurrency > 0 && !stats.dryRun) {
    lines.push(concurrency.concurrencyAdaptive
      ? `Concurrency: settled on ${concurrency.concurrency} ${concurrency.unit} at once (adaptive; --concurrency N fixes it).`
      : `Concurrency: ${concurrency.concurrency} ${concurrency.unit} at once (--concurrency).`)
  }
  const zipped = concurrency?.zipUploads
  if (zipped && zipped.requests > 0) lines.push(`ZIP uploads: ${zipped.instances} small instances went in ${zipped.requests} requests, each then checked by its own MD5 like any other (--no-zip-uploads sends one per request).`)
  if (zipped && zipped.refusedAsTooLarge > 0) {
    lines.push(`ZIP uploads: ${zipped.refusedAsTooLarge} refused as too large (HTTP 413, a limit on request bodies, usually a proxy's before the target, such as nginx's client_max_body_size); their instances went one by one, and later ZIPs were kept under half that size, or none made once they could not hold 16 KiB or two instances (raise the limit, or --no-zip-uploads).`)
  }
  if (stats.failed > 0) {
    lines.push('Failed:')
    lines.push(...listed(stats.failures.map(renderProblem), stats.failed))
    // Two copies of one instance fail again at every run until a person chooses, and a target that
    // changes files as it stores them changes them again: said so, not "retry".
    const contradictions = stats.failures.filter((failure) => failure.kind === 'contradiction').length
    const changed = stats.failures.filter((failure) => failure.kind === 'changed-by-target').length
    if (contradictions + changed + notRetried < stats.failed) lines.push(`Run the same command again to retry what failed; ${onRetry}.`)
    if (contradictions > 0) lines.push(`${contradictions} of them ${contradictions === 1 ? 'is a copy' : 'are copies'} of an instance already taken, with other bytes (contradiction): running again changes nothing until the wrong file is removed.`)
    if (changed > 0) lines.push(`${changed} of them ${changed === 1 ? 'was' : 'were'} changed by the target as it stored ${changed === 1 ? 'it' : 'them'} (changed-by-target): running again changes nothing until the target keeps files as they are sent (IngestTranscoding, Lua scripts, plugins).`)
  }

  if (stats.interrupted) lines.push('Interrupted before the end: run the same command again to finish; what is done is not redone.')

  return `${lines.join('\n')}\n`
}

/**
 * The first LISTED_FAILURES of a list, indented, then how many more there are: `total` counts
 * them all (a summary keeps only the first ones in full).
 */
export function listed(lines: string[], total = lines.length, limit = LISTED_FAILURES): string[] {
  const shown = lines.slice(0, limit).map((line) => `  ${line}`)
  if (total > shown.length) shown.push(`  ... and ${total - shown.length} more (see --json)`)
  return shown
}

/** A path or URL as a shell word, quoted when it needs to be, for commands suggested to the user. */
/**
 * The key flags a suggested command needs to open encrypted volumes, as placeholders (never the
 * paths given: a hint is copied into tickets and chats): " --identity KEY-FILE" and/or
 * " --passphrase-file PASSPHRASE-FILE", or "" for plain volumes.
 */
export function keyFlagPlaceholders(keys: {identity?: boolean; passphrase?: boolean}): string {
  return `${keys.identity ? ' --identity KEY-FILE' : ''}${keys.passphrase ? ' --passphrase-file PASSPHRASE-FILE' : ''}`
}

export function shellWord(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`
}

/** One problem on one line: what, where, why; a file name's line break or escape sequence written out, so that none can forge a line. */
export function renderProblem(problem: Problem): string {
  return withoutControls(`${problem.path ? `${problem.path}: ` : ''}${problem.id}: ${problem.reason}`)
}

/** Missing volumes of an export, as verify and import list them. */
export function renderVolumeRange(range: {from: number; to: number; volumeCount: number}): string {
  return range.from === range.to ? `${range.from} of ${range.volumeCount}` : `${range.from}-${range.to} of ${range.volumeCount}`
}

/** What side data could not be carried, one line per level, kind and name. */
export function renderNotCarried(notCarried: NotCarried[]): string[] {
  return notCarried.map((entry) => `Not carried: ${entry.kind}${entry.name === undefined ? '' : ` "${entry.name}"`} of ${entry.count} ${entry.level === 'series' ? 'series' : `${entry.level}(s)`}: ${entry.reason}.`)
}
