import {Args, Flags} from '@oclif/core'

import {BaseCommand} from '../src/cli/base-command.js'
import {decryptionFlags, decryptionKeysFromFlags} from '../src/cli/encryption-flags.js'
import {ExitCode} from '../src/cli/exit-codes.js'
import {endpointFromFlags, serverFlags} from '../src/cli/server-flags.js'
import {renderProblem, renderVolumeRange} from '../src/cli/summary.js'
import {UserFacingError} from '../src/errors.js'
import {resolveImportInputs} from '../src/import/inputs.js'
import {OrthancClient} from '../src/orthanc/client.js'
import {archiveInputs} from '../src/sources/archive-inputs.js'
import {verifyArchives, verifyOutcome, type VerifySummary} from '../src/verify/verify.js'

export default class Verify extends BaseCommand {
  static override summary = 'Check archive volumes offline: all volumes and entries present, every checksum matching; with --target, that every instance is on that server.'
  static override description = 'Run it on the receiving side before the source data may be deleted: exit 0 means every archived instance is complete and valid (and, with --target, stored on the target with the same MD5).'
  static override examples = [
    '<%= config.bin %> verify /media/usb/export-2024-06',
    '<%= config.bin %> verify /media/usb/export-2024-06 --target http://localhost:8042',
  ]

  static override strict = false
  static override args = {path: Args.string({description: 'archive volume(s), folder(s) of volumes, or - for an archive on stdin', required: true})}
  static override flags = {
    ...serverFlags('target', false),
    concurrency: Flags.integer({char: 'c', description: 'parallel checks against the target', default: 8, min: 1, max: 64}),
    ...decryptionFlags,
    'spool-dir': Flags.string({description: 'where an archive read from stdin waits, one volume at a time, while it is checked (default: the system temporary folder)'}),
  }

  async run(): Promise<VerifySummary> {
    const {flags, argv} = await this.parse(Verify)
    const archives = (await resolveImportInputs(argv as string[], process.stdin, 'auto')).map((input) => {
      if (input.kind === 'archive-file' || input.kind === 'archive-stream') return input
      throw new UserFacingError(`${input.path} holds no archive volume`, 'Give the .tar (or .tar.age) volumes written by export, or the folder holding them, or - for stdin.', 'bad-input', 'not-an-archive')
    })
    const inputs = await archiveInputs(archives, await decryptionKeysFromFlags(flags))
    const target = flags.target ? new OrthancClient(endpointFromFlags('target', flags), this.httpOptions(flags, flags.concurrency + 2)) : undefined
    try {
      const summary = await verifyArchives(inputs, {target, concurrency: flags.concurrency, spoolDir: flags['spool-dir'], signal: this.signal})
      const outcome = verifyOutcome(summary)
      if (outcome === 'bad-input') process.exitCode = ExitCode.badInput
      else if (outcome === 'target-differs') process.exitCode = ExitCode.different
      if (!this.jsonEnabled()) this.log(renderVerify(summary))
      return summary
    } finally {
      await target?.close()
    }
  }
}

function renderVerify(summary: VerifySummary): string {
  const lines = [
    `Volumes: ${summary.volumes.read} read, ${summary.volumes.proven} proven, ${summary.volumes.complete} complete${summary.volumes.missing.length > 0 ? `, missing: ${summary.volumes.missing.map(renderVolumeRange).join(', ')}` : ''}.`,
    `Instances: ${summary.instances} valid.`,
  ]
  for (const volume of summary.volumes.unproven) lines.push(`  ${volume.input}: volume ${volume.volume} cannot be proven (see below): none of its ${volume.instances} instance(s) counts`)
  for (const problem of summary.problems.slice(0, 20)) lines.push(`  ${renderProblem(problem)}`)
  if (summary.problemCount > 20) lines.push(`  ... and ${summary.problemCount - 20} more (see --json)`)
  const incompleteStudies = summary.studies.filter((study) => study.valid < study.expected)
  lines.push(`Studies: ${summary.studies.length - incompleteStudies.length} of ${summary.studies.length} complete and valid.`)
  for (const study of incompleteStudies.slice(0, 20)) lines.push(`  ${study.studyInstanceUid}: ${study.valid} of ${study.expected} instances`)
  if (summary.target) {
    lines.push(`Target ${summary.target.server}: ${summary.target.confirmed} confirmed, ${summary.target.missing.length} missing, ${summary.target.different.length} with another MD5.`)
  }

  const outcome = verifyOutcome(summary)
  if (outcome === 'bad-input') lines.push(`Archive NOT ${summary.valid ? 'complete' : summary.complete ? 'valid' : 'complete and valid'}: see above.`)
  else lines.push(outcome === 'ok' ? 'Archive complete and valid.' : 'Archive complete and valid, but the target does not hold all of it (see above).')
  return lines.join('\n')
}
