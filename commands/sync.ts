import {createHash} from 'node:crypto'

import {Flags} from '@oclif/core'

import {BaseCommand} from '../src/cli/base-command.js'
import {ExitCode} from '../src/cli/exit-codes.js'
import {applyFileGroup, fileGroupFlags} from '../src/cli/file-group-flag.js'
import {filterFlags, filtersFromFlags} from '../src/cli/filter-flags.js'
import {fractionFlag, MAX_TIMER_SECONDS} from '../src/cli/flag-types.js'
import {describeUndeclared} from '../src/cli/reporter.js'
import {reportingFlags} from '../src/cli/reporting-flags.js'
import {endpointFromFlags, serverFlags} from '../src/cli/server-flags.js'
import {renderNotCarried, renderTransferSummary} from '../src/cli/summary.js'
import {transferFlags, transferSettingsFromFlags, uploadFlags} from '../src/cli/transfer-flags.js'
import {connectionsFor} from '../src/transfer/adaptive-concurrency.js'
import {FILTERS_MATCHED_NOTHING_HINT, UserFacingError} from '../src/errors.js'
import {OrthancClient} from '../src/orthanc/client.js'
import {formatBytes} from '../src/util/format.js'
import {deleteExtras, type DeletionPass, refusedBeforeCopying} from '../src/sync/delete.js'
import {heldByTarget} from '../src/sync/plan.js'
import {DELETIONS_AT_ONCE, type FollowSummary, followSource} from '../src/sync/follow.js'
import {type SyncSummary, syncServers} from '../src/sync/sync.js'

type SyncResult = (SyncSummary & {deletion?: DeletionPass}) | (FollowSummary & {following: true; stateFile: string})

export default class Sync extends BaseCommand {
  static override transfersInstances = true
  static override summary = 'Copy what the target lacks straight from the source, once or continuously (--follow).'
  static override description = `Compares the instance IDs of both servers (and with --checksum their MD5s, on the servers, without downloading) and streams only what is missing, with no temporary files. Each instance is checked against the source's MD5, its user metadata, attachments and labels are restored, and the target's MD5 is confirmed. With --follow it keeps the target mirrored by following the source's change log; stop it with Ctrl-C or SIGTERM.`

  static override examples = [
    '<%= config.bin %> sync --source http://old:8042 --target http://new:8042',
    '<%= config.bin %> sync --source http://old:8042 --target http://new:8042 --dry-run',
    '<%= config.bin %> sync --source http://pacs:8042 --target http://mirror:8042 --follow --interval 30 --delete',
  ]

  static override flags = {
    ...serverFlags('source'),
    ...serverFlags('target'),
    ...transferFlags('uploads to the target (twice as many instances are fetched ahead)'),
    ...uploadFlags,
    checksum: Flags.boolean({description: 'also compare MD5s of instances on both sides, and send again those that differ'}),
    'dry-run': Flags.boolean({description: 'print the plan (instances, bytes, studies per state) and change nothing'}),
    delete: Flags.boolean({description: 'delete from the target what the source no longer has (guarded by --max-delete-fraction)'}),
    'max-delete-fraction': fractionFlag({description: 'refuse a deletion pass that would remove more than this fraction of the target (0 to 1)', default: 0.1}),
    // A mirror always changes the target: with --dry-run it would copy and delete for real.
    follow: Flags.boolean({description: 'keep following the source\'s changes until stopped', exclusive: ['dry-run']}),
    // Bounded: Node's timers hold at most 2^31 ms (24.8 days), and a larger delay fires at once.
    interval: Flags.integer({description: 'seconds between polls of the source with --follow', default: 10, min: 1, max: MAX_TIMER_SECONDS}),
    'full-every': Flags.integer({description: 'minutes between full comparisons with --follow (they also catch deletions)', default: 60, min: 1, max: Math.floor(MAX_TIMER_SECONDS / 60)}),
    state: Flags.string({description: 'file keeping the change cursor with --follow (default: .orthanc-replicate-follow-<hash>.json here)'}),
    ...filterFlags,
    ...fileGroupFlags,
    ...reportingFlags,
  }

  async run(): Promise<SyncResult> {
    const {flags} = await this.parse(Sync)
    applyFileGroup(flags)
    const maxDeleteFraction = flags['max-delete-fraction']
    const filters = filtersFromFlags(flags)
    if (flags.delete && Object.keys(filters).length > 0) {
      throw new UserFacingError('--delete cannot be combined with filters', 'What the target holds outside the filters is not the source\'s to judge: sync without filters to mirror deletions.', 'usage', 'delete-with-filters')
    }

    const reporter = await this.startReporting(flags, {plansAsDetails: flags.follow || flags['dry-run']})
    const {concurrency, bandwidth} = transferSettingsFromFlags(flags)
    const http = this.httpOptions(flags, connectionsFor(concurrency))
    const source = new OrthancClient(endpointFromFlags('source', flags), {...http, bandwidth: {download: bandwidth?.download}})
    const target = new OrthancClient(endpointFromFlags('target', flags), {...http, bandwidth: {upload: bandwidth?.upload}})
    if (!flags['dry-run']) this.warnAboutTarget(target)
    try {
      if (flags.follow) {
        const stateFile = flags.state ?? `.orthanc-replicate-follow-${createHash('sha1').update(`${source.display} ${target.display}`).digest('hex').slice(0, 12)}.json`
        const summary = await followSource({
          source, target, filters, checksum: flags.checksum, concurrency, zipUploads: flags['zip-uploads'], signal: this.signal,
          stateFile, intervalMs: flags.interval * 1000, fullEveryMs: flags['full-every'] * 60_000,
          deleteExtras: flags.delete, maxDeleteFraction,
          onProgress: reporter.onProgress,
          onEvent: (event) => {
            const time = new Date().toISOString()
            if (event.type === 'outage') reporter.warn(`${time} waiting out an outage: ${event.message}`)
            else if (event.type === 'other-history') reporter.warn(`${time} ${event.message}`)
            else {
              const deletion = event.deletion ? `, ${event.deletion.deleted} deleted${event.deletion.refused ? ` (deletion refused: ${event.deletion.refused})` : ''}` : ''
              const line = `${time} ${event.full ? 'full pass' : 'changes'} up to ${event.cursor}: ${event.summary.transferred} transferred, ${event.summary.failed} failed${deletion}`
              if (event.summary.transferred + event.summary.failed > 0 || event.deletion?.deleted || event.deletion?.refused) reporter.note(line)
              else reporter.detail(line)
            }
          },
          onPassEvent: reporter.onEvent,
        })
        if (summary.stoppedBecause && !summary.interrupted) {
          process.exitCode = ExitCode.different
          reporter.warn(`the mirror stopped: ${summary.stoppedBecause}`)
        }
        return this.result({...summary, following: true as const, stateFile}, renderFollowSummary)
      }

      const summary: SyncSummary & {deletion?: DeletionPass} = await syncServers({
        source, target, filters, checksum: flags.checksum, dryRun: flags['dry-run'], concurrency, zipUploads: flags['zip-uploads'],
        signal: this.signal, onProgress: reporter.onProgress, onEvent: reporter.onEvent,
        holdBack: flags.delete ? (plan) => refusedBeforeCopying(plan, maxDeleteFraction) : undefined,
      })
      if (summary.heldBack) summary.deletion = {candidates: summary.plan.onlyOnTarget, deleted: 0, refused: summary.heldBack}
      else if (flags.delete && !summary.interrupted) summary.deletion = await deleteExtras(source, target, {maxFraction: maxDeleteFraction, targetHeldBefore: heldByTarget(summary.plan), dryRun: flags['dry-run'], concurrency: concurrency ?? DELETIONS_AT_ONCE, signal: this.signal})
      const matched = summary.plan.present + summary.plan.missing + summary.plan.different
      if (summary.failed > 0) process.exitCode = ExitCode.partialFailure
      // Asked to compare MD5s, and some could not be: what they hold is not known to be the same.
      else if ((summary.plan.md5Unrecorded ?? 0) > 0 && !summary.interrupted) process.exitCode = ExitCode.partialFailure
      // Asked to mirror deletions, and refused: the target still holds what the source no longer has.
      else if (summary.deletion?.refused && !summary.dryRun) process.exitCode = ExitCode.different
      // As export says it: filters that select nothing are most often mistyped.
      else if (Object.keys(filters).length > 0 && matched === 0 && !summary.interrupted) {
        process.exitCode = ExitCode.nothingMatched
        reporter.warn(`the filters matched no instance on the source. ${FILTERS_MATCHED_NOTHING_HINT}`)
      }
      this.result(summary, renderSyncSummary)
      if (summary.dryRun && summary.planned.instances > 0) reporter.hint('Next: the same command without --dry-run sends them.')
      return summary
    } finally {
      await Promise.all([source.close(), target.close()])
    }
  }
}

function renderSyncSummary(summary: SyncSummary & {deletion?: DeletionPass}): string {
  const {plan} = summary
  const lines = [
    plan.md5Compared
      ? `Plan: ${plan.missing} missing on the target, ${plan.different} different, ${plan.present - (plan.md5Unrecorded ?? 0)} identical (MD5s compared)${plan.md5Unrecorded ? `, ${plan.md5Unrecorded} on both not compared (a server records no MD5 for them: it runs with StoreMD5ForAttachments off)` : ''}; ${formatBytes(plan.bytesToTransfer)} to send.`
      : `Plan: ${plan.missing} missing on the target, ${plan.present} already there by ID (MD5s not compared: --checksum compares them); ${formatBytes(plan.bytesToTransfer)} to send.`,
    `Studies: ${plan.studies.complete} complete, ${plan.studies.partial} partial, ${plan.studies.missing} missing on the target.`,
  ]
  if (plan.onlyOnTarget > 0) lines.push(`${plan.onlyOnTarget} instance(s) only on the target${summary.deletion ? '' : ' (--delete removes them)'}.`)
  if (summary.deletion) {
    lines.push(summary.deletion.refused ? `Deletion refused: ${summary.deletion.refused}.` : `${summary.dryRun ? 'Would delete' : 'Deleted'} ${summary.dryRun ? summary.deletion.candidates : summary.deletion.deleted} instance(s) from the target.`)
  }

  if (plan.undeclaredUserMetadata?.length) lines.push(describeUndeclared(plan.undeclaredUserMetadata))
  if (summary.leftoversWrittenBack) lines.push(`Wrote back what ${summary.leftoversWrittenBack} replacement(s) by an earlier run, killed before the end, had kept of the target's own (from the replacement journal).`)
  lines.push(...renderNotCarried(summary.notCarried))

  const headline = summary.dryRun ? `Dry run, nothing changed on ${summary.target.url}` : `Synced ${summary.source.url} to ${summary.target.url}`
  return `${lines.join('\n')}\n${renderTransferSummary(summary, headline, {...summary, unit: 'uploads'})}`
}

function renderFollowSummary(summary: FollowSummary & {stateFile: string}): string {
  const lines = [`Stopped. Cursor ${summary.cursor} saved in ${summary.stateFile}; ${summary.passes} pass(es), ${summary.fullPasses} of them full, ${summary.outages} outage(s) waited out${summary.deleted > 0 ? `, ${summary.deleted} deleted` : ''}.`]
  lines.push(...renderNotCarried(summary.notCarried))
  return `${lines.join('\n')}\n${renderTransferSummary(summary, `Mirrored ${summary.source.url} to ${summary.target.url}`)}`
}
