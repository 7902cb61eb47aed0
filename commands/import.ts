import {Args, Flags} from '@oclif/core'

import {BaseCommand} from '../src/cli/base-command.js'
import {ExitCode} from '../src/cli/exit-codes.js'
import {progressRenderer} from '../src/cli/progress-renderer.js'
import {endpointFromFlags, serverFlags} from '../src/cli/server-flags.js'
import {renderNotCarried, renderProblem, renderTransferSummary, renderVolumeRange} from '../src/cli/summary.js'
import {importInstances, importOutcome, type ImportSummary} from '../src/import/import.js'
import {defaultReceiptPath} from '../src/import/receipt.js'
import {type FolderMode, resolveImportInputs} from '../src/import/inputs.js'
import {OrthancClient} from '../src/orthanc/client.js'

export default class Import extends BaseCommand {
  static override transfersInstances = true
  static override summary = 'Import archive volumes, DICOM folders or an Orthanc storage folder into a server, checking every instance.'
  static override description = `Every archive entry is checked against the manifest (size, MD5, and SHA-256 for volume files) before it is uploaded; corrupt, truncated, missing or hostile entries are refused and reported by name while the rest is imported. After each upload the instance's user metadata, attachments and labels are restored and the target's MD5 is confirmed. Instances already on the target with the same MD5 are skipped, so running the command again finishes an interrupted import.`

  static override examples = [
    '<%= config.bin %> import --target http://localhost:8042 /media/usb/export-2024-06',
    '<%= config.bin %> import --target http://localhost:8042 - < volume.tar',
    '<%= config.bin %> import --target http://localhost:8042 --storage-folder /var/lib/orthanc/db-v6',
    '<%= config.bin %> import --target http://localhost:8042 ~/incoming-dicom',
  ]

  static override strict = false
  static override args = {
    path: Args.string({description: 'archive volume(s), folder(s) of volumes, DICOM folder(s), an Orthanc storage folder, or - for an archive on stdin', required: true}),
  }

  static override flags = {
    ...serverFlags('target'),
    concurrency: Flags.integer({char: 'c', description: 'parallel uploads (twice as many files are read ahead)', default: 4, min: 1, max: 64}),
    'dry-run': Flags.boolean({description: 'read and check everything, report what would be uploaded, change nothing'}),
    receipt: Flags.string({description: 'write the import receipt here, a new file (default: import-receipt-<time>-<random>.jsonl beside the first archive volume if that folder is writable, else in the current folder)'}),
    'no-receipt': Flags.boolean({description: 'write no receipt'}),
    'storage-folder': Flags.boolean({description: 'read PATH as an Orthanc StorageDirectory (stop that Orthanc first)', exclusive: ['dicom-folder']}),
    'dicom-folder': Flags.boolean({description: 'read PATH as a folder of DICOM files, even if it looks like something else'}),
    'spool-dir': Flags.string({description: 'where an archive read from stdin waits, one volume at a time, until its checks are done (default: the system temporary folder)'}),
  }

  async run(): Promise<ImportSummary> {
    const {flags, argv} = await this.parse(Import)
    const mode: FolderMode = flags['storage-folder'] ? 'storage' : flags['dicom-folder'] ? 'dicom' : 'auto'
    const inputs = await resolveImportInputs(argv as string[], process.stdin, mode)
    const client = new OrthancClient(endpointFromFlags('target', flags), this.httpOptions(flags, flags.concurrency + 2))
    const progress = progressRenderer(this.interactive)
    const archives = inputs.flatMap((input) => (input.kind === 'archive-file' ? [input.path] : []))
    const receiptPath = flags['no-receipt'] ? undefined : flags.receipt ?? await defaultReceiptPath(archives)
    try {
      const summary = await importInstances({
        client,
        inputs,
        concurrency: flags.concurrency,
        dryRun: flags['dry-run'],
        receiptPath,
        spoolDir: flags['spool-dir'],
        signal: this.signal,
        onProgress: progress.listener,
      })
      progress.done()
      const outcome = importOutcome(summary)
      if (outcome === 'bad-input') process.exitCode = ExitCode.badInput
      else if (outcome === 'partial-failure') process.exitCode = ExitCode.partialFailure
      if (!this.jsonEnabled()) process.stderr.write(renderImportSummary(summary))
      return summary
    } finally {
      progress.done()
      await client.close()
    }
  }
}

function renderImportSummary(summary: ImportSummary): string {
  const lines: string[] = []
  if (summary.problemCount > 0) {
    lines.push(`Refused or missing (${summary.problemCount}):`)
    for (const problem of summary.problems.slice(0, 20)) lines.push(`  ${renderProblem(problem)}`)
    if (summary.problemCount > 20) lines.push(`  ... and ${summary.problemCount - 20} more (see --json)`)
  }

  const {volumes} = summary
  if (volumes.read > 0 || volumes.missing.length > 0) {
    lines.push(`Volumes: ${volumes.read} read, ${volumes.proven} proven, ${volumes.complete} complete${volumes.missing.length > 0 ? `, missing: ${volumes.missing.map(renderVolumeRange).join(', ')}` : ''}.`)
  }
  for (const volume of volumes.unproven) {
    lines.push(`  ${volume.input}: volume ${volume.volume} cannot be proven, so none of its ${volume.instances} instance(s) was imported: copy it again from the source media.`)
  }
  if (summary.studies.complete + summary.studies.incomplete.length > 0) {
    lines.push(`Studies: ${summary.studies.complete} complete, ${summary.studies.incomplete.length} incomplete on the target.`)
    for (const study of summary.studies.incomplete.slice(0, 20)) lines.push(`  ${study.studyInstanceUid}: ${study.present} of ${study.expected} instances`)
  }

  if (summary.ignoredFiles > 0) lines.push(`Ignored ${summary.ignoredFiles} file(s) that are not whole DICOM instances.`)
  lines.push(...renderNotCarried(summary.notCarried))
  if (summary.receipt) lines.push(`Receipt: ${summary.receipt}`)
  const headline = summary.dryRun ? 'Dry run, nothing changed' : 'Imported'
  return `${lines.join('\n')}${lines.length > 0 ? '\n' : ''}${renderTransferSummary(summary, headline)}`
}
