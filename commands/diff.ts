import {Flags} from '@oclif/core'

import {BaseCommand} from '../src/cli/base-command.js'
import {ExitCode} from '../src/cli/exit-codes.js'
import {filterFlags, filtersFromFlags} from '../src/cli/filter-flags.js'
import {endpointFromFlags, serverFlags} from '../src/cli/server-flags.js'
import {OrthancClient} from '../src/orthanc/client.js'
import {type DiffSummary, diffServers, serversDiffer} from '../src/sync/diff.js'

export default class Diff extends BaseCommand {
  static override summary = 'Compare two servers instance by instance, by ID and by the MD5s the servers recorded (no download).'
  static override description = 'Each instance is only on the source, only on the target, on both with a different MD5, or identical. Exits 14 when the servers differ, 0 when they hold the same instances.'
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
  }

  async run(): Promise<DiffSummary> {
    const {flags} = await this.parse(Diff)
    const http = this.httpOptions(flags, 10)
    const source = new OrthancClient(endpointFromFlags('source', flags), http)
    const target = new OrthancClient(endpointFromFlags('target', flags), http)
    try {
      const summary = await diffServers(source, target, {filters: filtersFromFlags(flags), perStudy: flags['per-study'], sideData: flags['side-data'], signal: this.signal})
      if (serversDiffer(summary)) process.exitCode = ExitCode.different
      if (!this.jsonEnabled()) this.log(renderDiff(summary))
      return summary
    } finally {
      await Promise.all([source.close(), target.close()])
    }
  }
}

function renderDiff(summary: DiffSummary): string {
  const lines = [
    `only on the source: ${summary.onlySource}`,
    `only on the target: ${summary.onlyTarget}`,
    `different MD5:      ${summary.different}`,
    `identical:          ${summary.identical}`,
  ]
  for (const [label, ids] of [['only on the source', summary.instances.onlySource], ['only on the target', summary.instances.onlyTarget], ['different', summary.instances.different]] as const) {
    for (const id of ids.slice(0, 20)) lines.push(`  ${label}: ${id}`)
  }

  for (const study of summary.studies ?? []) {
    if (study.onlySource + study.different > 0) lines.push(`study ${study.studyInstanceUid}: ${study.onlySource} only on the source, ${study.different} different, ${study.identical} identical`)
  }

  if (summary.sideData) {
    lines.push(`side data:          ${summary.sideData.differences} difference(s)`)
    for (const item of summary.sideData.items.slice(0, 20)) lines.push(`  ${item.id}: ${item.reason}`)
    if (summary.sideData.differences > 20) lines.push(`  ... and ${summary.sideData.differences - 20} more (see --json)`)
  }

  lines.push(serversDiffer(summary) ? 'The servers differ.' : summary.sideData ? 'The servers hold the same instances, with the same side data.' : 'The servers hold the same instances.')
  return lines.join('\n')
}
