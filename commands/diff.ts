import {Flags} from '@oclif/core'

import {BaseCommand} from '../src/cli/base-command.js'
import {ExitCode} from '../src/cli/exit-codes.js'
import {filterFlags, filtersFromFlags} from '../src/cli/filter-flags.js'
import {reportingFlags} from '../src/cli/reporting-flags.js'
import {endpointFromFlags, serverFlags} from '../src/cli/server-flags.js'
import {listed, shellWord} from '../src/cli/summary.js'
import {FILTERS_MATCHED_NOTHING_HINT} from '../src/errors.js'
import {OrthancClient} from '../src/orthanc/client.js'
import {type DiffSummary, diffServers, notAllCompared, serversDiffer} from '../src/sync/diff.js'

export default class Diff extends BaseCommand {
  static override summary = 'Compare two servers instance by instance, by ID and by the MD5s the servers recorded (no download).'
  static override description = 'Each instance is only on the source, only on the target, on both with a different MD5, or identical. Exits 14 when the servers differ, 10 when some instances on both could not be compared (a server records no MD5s), 0 when they hold the same instances.'
  static override examples = [
    '<%= config.bin %> diff --source http://old:8042 --target http://new:8042',
    '<%= config.bin %> diff --source http://old:8042 --target http://new:8042 --per-study --json',
  ]

  static override flags = {
    ...serverFlags('source'),
    ...serverFlags('target'),
    'per-study': Flags.boolean({description: 'list the differences per study'}),
    'side-data': Flags.boolean({description: 'also compare user metadata, attachments and labels of patients, studies, series and instances on both sides'}),
    ...filterFlags,
    ...reportingFlags,
  }

  async run(): Promise<DiffSummary> {
    const {flags} = await this.parse(Diff)
    const reporter = await this.startReporting(flags)
    const http = this.httpOptions(flags, 10)
    const source = new OrthancClient(endpointFromFlags('source', flags), http)
    const target = new OrthancClient(endpointFromFlags('target', flags), http)
    try {
      const filters = filtersFromFlags(flags)
      const summary = await diffServers(source, target, {filters, perStudy: flags['per-study'], sideData: flags['side-data'], signal: this.signal, onProgress: reporter.onProgress})
      if (serversDiffer(summary)) process.exitCode = ExitCode.different
      // Not all of it compared: never "the same".
      else if (notAllCompared(summary) > 0) process.exitCode = ExitCode.partialFailure
      // Nothing selected on either server (the same filters select on both): most often mistyped filters, as export says.
      else if (Object.keys(filters).length > 0 && summary.identical === 0) {
        process.exitCode = ExitCode.nothingMatched
        reporter.warn(`the filters matched no instance on ${filters.orthancIds ? 'the source' : 'either server'}. ${FILTERS_MATCHED_NOTHING_HINT}`)
      }
      this.result(summary, (compared) => renderDiff(compared, Object.keys(filters).length > 0))
      if (serversDiffer(summary)) reporter.hint(nextStep(this.config.bin, summary, this.argv))
      return summary
    } finally {
      await Promise.all([source.close(), target.close()])
    }
  }
}

/**
 * The sync that makes the target like the source: the same servers and filters as this diff
 * (credentials stay where they were: the URLs shown carry none), with --checksum when MD5s
 * differ and --delete when the target holds more and no filter narrows the comparison.
 */
function nextStep(bin: string, summary: DiffSummary, argv: string[]): string {
  const given = (name: string) => argv.some((word) => word === `--${name}` || word.startsWith(`--${name}=`))
  const carried = argv.filter((word, index) => FILTER_FLAGS.some((name) => word === `--${name}` || word.startsWith(`--${name}=`) || (argv[index - 1] === `--${name}` && !word.startsWith('--'))))
  const words = [bin, 'sync', '--source', shellWord(summary.source.url), '--target', shellWord(summary.target.url), ...carried.map(shellWord)]
  if (summary.different > 0) words.push('--checksum')
  if (summary.onlyTarget > 0 && !FILTER_FLAGS.some(given)) words.push('--delete')
  const what = summary.onlySource + summary.different + summary.onlyTarget > 0 ? 'make the target hold what the source holds' : 'put the side data back'
  return `Next: to ${what}, see the plan first: ${[...words, '--dry-run'].join(' ')}`
}

const FILTER_FLAGS = Object.keys(filterFlags)

/** The last line: a filtered comparison speaks of what it selected, as the servers may differ elsewhere. */
function verdict(summary: DiffSummary, filtered: boolean): string {
  if (serversDiffer(summary)) return filtered ? 'The servers differ in the selected instances.' : 'The servers differ.'
  if (summary.identical + summary.notCompared === 0 && filtered) return 'The filters matched no instance on either server.'
  const same = filtered ? 'The selected instances are the same on both servers' : 'The servers hold the same instances'
  const attachments = summary.sideData?.notCompared ?? 0
  const norAttachments = attachments > 0 ? `, nor ${attachments} of their attachments` : ''
  if (summary.notCompared > 0) return `${filtered ? 'The selected instances have the same IDs on both servers' : 'The servers hold the same instance IDs'}; ${summary.notCompared} of them could not be compared by MD5${norAttachments}.`
  if (attachments > 0) return `${same}, but ${attachments} of their attachments could not be compared by MD5.`
  return summary.sideData ? `${same}, with the same side data.` : `${same}.`
}

function renderDiff(summary: DiffSummary, filtered: boolean): string {
  const lines = [
    `Source: ${summary.source.url} (${summary.source.name}, Orthanc ${summary.source.version}); target: ${summary.target.url} (${summary.target.name}, Orthanc ${summary.target.version}).`,
    `only on the source: ${summary.onlySource}`,
    `only on the target: ${summary.onlyTarget}`,
    `different MD5:      ${summary.different}`,
    `identical:          ${summary.identical}`,
    ...(summary.notCompared > 0 ? [`not compared:       ${summary.notCompared} (on both; a server records no MD5 for them: it runs with StoreMD5ForAttachments off)`] : []),
  ]
  const lists = [['only on the source', summary.instances.onlySource, summary.onlySource], ['only on the target', summary.instances.onlyTarget, summary.onlyTarget], ['different', summary.instances.different, summary.different], ['not compared', summary.instances.notCompared, summary.notCompared]] as const
  for (const [label, ids, count] of lists) {
    if (count > 0) lines.push(`${label}:`, ...listed([...ids], count))
  }

  const studies = (summary.studies ?? []).filter((study) => study.onlySource + study.onlyTarget + study.different + study.notCompared > 0)
  if (studies.length > 0) lines.push('studies that differ or could not be compared:', ...listed(studies.map((study) => `${study.studyInstanceUid}: ${study.onlySource} only on the source, ${study.onlyTarget} only on the target, ${study.different} different, ${study.identical} identical${study.notCompared > 0 ? `, ${study.notCompared} not compared` : ''}`)))

  if (summary.sideData) {
    lines.push(`side data:          ${summary.sideData.differences} difference(s)${summary.sideData.notCompared > 0 ? `, ${summary.sideData.notCompared} attachment(s) not compared` : ''}`)
    lines.push(...listed(summary.sideData.items.map((item) => `${item.id}: ${item.reason}`), summary.sideData.differences + summary.sideData.notCompared))
  }

  lines.push(verdict(summary, filtered))
  return lines.join('\n')
}
