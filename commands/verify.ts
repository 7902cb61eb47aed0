import {Args, Flags} from '@oclif/core'

import {BaseCommand} from '../src/cli/base-command.js'
import {decryptionFlags, decryptionKeysFromFlags} from '../src/cli/encryption-flags.js'
import {ExitCode} from '../src/cli/exit-codes.js'
import {endpointFromFlags, serverFlags} from '../src/cli/server-flags.js'
import {reportingFlags} from '../src/cli/reporting-flags.js'
import {keyFlagPlaceholders, listed, renderProblem, renderVolumeRange, shellWord} from '../src/cli/summary.js'
import {verifyArchives} from '../src/api.js'
import {OrthancClient} from '../src/orthanc/client.js'
import {verifyOutcome, type VerifySummary} from '../src/verify/verify.js'
import type {ProblemKind} from '../src/problems.js'

/** What a volume damaged or cut short since it was written is named as. */
const DAMAGE = new Set<ProblemKind>(['checksum', 'damaged', 'truncated'])

export default class Verify extends BaseCommand {
  static override summary = 'Check archive volumes offline: all volumes and entries present, every checksum matching; with --target, that every instance is on that server.'
  static override description = 'Run it on the receiving side before the source data may be deleted: exit 0 means every archived instance is complete and valid (and, with --target, stored on the target with the same MD5).'
  static override examples = [
    '<%= config.bin %> verify /media/usb/export-2024-06',
    '<%= config.bin %> verify /media/usb/export-2024-06 --target http://localhost:8042',
  ]

  static override strict = false
  static override pathArguments = true
  static override args = {path: Args.string({description: 'archive volume(s), folder(s) of volumes, or - for an archive on stdin', required: true})}
  static override flags = {
    ...serverFlags('target', false),
    concurrency: Flags.integer({char: 'c', description: 'parallel checks against the target', default: 8, min: 1, max: 64}),
    ...decryptionFlags,
    'spool-dir': Flags.string({description: 'where an archive read from stdin waits, one volume at a time, while it is checked (default: the system temporary folder)'}),
    ...reportingFlags,
  }

  async run(): Promise<VerifySummary> {
    const {flags, argv} = await this.parse(Verify)
    const reporter = await this.startReporting(flags)
    const target = flags.target ? new OrthancClient(endpointFromFlags('target', flags), this.httpOptions(flags, flags.concurrency + 2)) : undefined
    try {
      const summary = await verifyArchives(argv as string[], {target, decryption: await decryptionKeysFromFlags(flags), concurrency: flags.concurrency, spoolDir: flags['spool-dir'], signal: this.signal, onProgress: reporter.onProgress, onEvent: reporter.onEvent})
      const outcome = verifyOutcome(summary)
      if (outcome === 'bad-input') process.exitCode = ExitCode.badInput
      else if (outcome === 'target-differs') process.exitCode = ExitCode.different
      this.result(summary, renderVerify)
      // A resume reads a finished volume by its size alone: one damaged in place is written anew
      // only once it is gone. (Not for a volume no key given opens, or one given twice: those are whole.)
      if (summary.problems.some((problem) => DAMAGE.has(problem.kind)) && !argv.includes('-')) {
        reporter.hint('Where the export was made: delete each volume named above as damaged or cut short, and run the same export command again into the same folder; it writes them anew.')
      }
      if (outcome === 'ok' && !summary.target && !argv.includes('-')) {
        // The keys that opened the volumes here open them for import too: named by placeholder, never by the path given.
        const keys = keyFlagPlaceholders({identity: (flags.identity?.length ?? 0) > 0, passphrase: flags['passphrase-file'] !== undefined})
        reporter.hint(`Next: import it (${this.config.bin} import --target URL${keys} ${argv.map((path) => shellWord(String(path))).join(' ')}), then verify again with --target URL${keys} before anything is deleted.`)
      }

      return summary
    } finally {
      await target?.close()
    }
  }
}

function renderVerify(summary: VerifySummary): string {
  const lines = [
    `Volumes: ${summary.volumes.read} read, ${summary.volumes.proven} proven, ${summary.volumes.complete} complete${summary.volumes.missing.length > 0 ? `, missing: ${summary.volumes.missing.map(renderVolumeRange).join(', ')}` : ''}.`,
    `Instances: ${summary.instances} valid${summary.exports > 1 ? ` (across ${summary.exports} exports: an instance in more than one counts once in each)` : ''}.`,
  ]
  for (const volume of summary.volumes.unproven) lines.push(`  ${volume.input}: volume ${volume.volume} cannot be proven (see below): none of its ${volume.instances} instance(s) counts`)
  lines.push(...listed(summary.problems.map(renderProblem), summary.problemCount))
  const incompleteStudies = summary.studies.filter((study) => study.valid < study.expected)
  // Only proven volumes say which studies they hold: with one unproven or missing, the count is of those it knows.
  const unknown = summary.volumes.unproven.length + summary.volumes.missing.length > 0 ? ' (of the studies the proven volumes name; an unproven or missing volume may hold others)' : ''
  lines.push(`Studies: ${summary.studies.length - incompleteStudies.length} of ${summary.studies.length} complete and valid${unknown}.`)
  lines.push(...listed(incompleteStudies.map((study) => `${study.studyInstanceUid}: ${study.valid} of ${study.expected} instances`)))
  if (summary.target) {
    const {target} = summary
    lines.push(`Target ${target.url}: ${target.confirmed} confirmed, ${target.missingCount} missing, ${target.differentCount} with another MD5${summary.exports > 1 ? ' (each export\'s copies counted)' : ''}.`)
    if (target.missingCount > 0) lines.push(`missing on the target${target.missingCount > target.missing.length ? ` (the first ${target.missing.length})` : ''}:`, ...listed(target.missing))
    if (target.differentCount > 0) lines.push(`with another MD5 on the target${target.differentCount > target.different.length ? ` (the first ${target.different.length})` : ''}:`, ...listed(target.different))
    if (target.studiesShort.length > 0) {
      lines.push('studies the archive left partly out as the far side\'s, of which the target holds fewer instances than the source had (import first the export it adds to):')
      lines.push(...listed(target.studiesShort.map((study) => `${study.studyInstanceUid}: ${study.present} of ${study.expected} instances`)))
    }
  }

  const outcome = verifyOutcome(summary)
  if (outcome === 'bad-input') lines.push(`Archive NOT ${summary.valid ? 'complete' : summary.complete ? 'valid' : 'complete and valid'}: see above.`)
  else lines.push(outcome === 'ok' ? 'Archive complete and valid.' : 'Archive complete and valid, but the target does not hold all of it (see above).')
  return lines.join('\n')
}
