import {Args, Flags} from '@oclif/core'

import {BaseCommand} from '../src/cli/base-command.js'
import {decryptionFlags, decryptionKeysFromFlags} from '../src/cli/encryption-flags.js'
import {ExitCode} from '../src/cli/exit-codes.js'
import {applyFileGroup, fileGroupFlags} from '../src/cli/file-group-flag.js'
import {reportingFlags} from '../src/cli/reporting-flags.js'
import {endpointFromFlags, serverFlags} from '../src/cli/server-flags.js'
import {listed, renderNotCarried, renderProblem, renderTransferSummary, renderVolumeRange} from '../src/cli/summary.js'
import {importInputs} from '../src/api.js'
import {transferFlags, transferSettingsFromFlags, uploadFlags} from '../src/cli/transfer-flags.js'
import {connectionsFor} from '../src/transfer/adaptive-concurrency.js'
import {UserFacingError} from '../src/errors.js'
import {importOutcome, type ImportSummary} from '../src/import/import.js'
import {OrthancClient} from '../src/orthanc/client.js'
import type {RecoveryReport} from '../src/recovery/recover.js'

export default class Import extends BaseCommand {
  static override transfersInstances = true
  static override pathArguments = true
  static override summary = 'Import archive volumes, DICOM folders, or a stopped Orthanc (its storage folder, or its PostgreSQL database) into a server, checking every instance.'
  static override description = `Every archive entry is checked against the proven manifests (size and SHA-256) before it is uploaded; corrupt, truncated, missing or hostile entries are refused and reported by name while the rest is imported. After each upload the instance's user metadata, attachments and labels are restored and the target's MD5 is confirmed. Instances already on the target with the same MD5 are skipped, so running the command again finishes an interrupted import.

A stopped server is recovered from its index when there is one (the SQLite index in its storage folder or given with --index, or its PostgreSQL database with --from-postgres): exactly the instances it lists, each checked against the size and MD5 it recorded, with their user metadata, attachments and labels. Without an index, instances are recognised file by file.`

  static override examples = [
    '<%= config.bin %> import --target http://localhost:8042 /media/usb/export-2024-06',
    '<%= config.bin %> import --target http://localhost:8042 - < volume.tar',
    '<%= config.bin %> import --target http://localhost:8042 --storage-folder /var/lib/orthanc/db-v6',
    '<%= config.bin %> import --target http://localhost:8042 --storage-folder /srv/orthanc/storage --index /srv/orthanc/index',
    '<%= config.bin %> import --target http://localhost:8042 --from-postgres postgresql://orthanc@db.local:5432/orthanc',
    '<%= config.bin %> import --target http://localhost:8042 ~/incoming-dicom',
  ]

  static override strict = false
  static override args = {
    path: Args.string({description: 'archive volume(s), folder(s) of volumes, DICOM folder(s), an Orthanc storage folder, or - for an archive on stdin'}),
  }

  static override flags = {
    ...serverFlags('target'),
    ...transferFlags('uploads (twice as many files are read ahead)'),
    ...uploadFlags,
    'dry-run': Flags.boolean({description: 'read and check everything, report what would be uploaded, change nothing'}),
    receipt: Flags.string({description: 'write the import receipt here, a new file (default: import-receipt-<time>-<random>.jsonl beside the first archive volume if that folder is writable, else in the current folder)'}),
    'no-receipt': Flags.boolean({description: 'write no receipt', exclusive: ['receipt']}),
    'storage-folder': Flags.boolean({description: 'read PATH as an Orthanc StorageDirectory (stop that Orthanc first)', exclusive: ['dicom-folder']}),
    'dicom-folder': Flags.boolean({description: 'read PATH as a folder of DICOM files, even if it looks like something else'}),
    ...decryptionFlags,
    ...fileGroupFlags,
    'spool-dir': Flags.string({description: 'where an archive read from stdin waits, one volume at a time, until its checks are done (default: the system temporary folder)'}),
    index: Flags.string({description: 'the stopped server\'s SQLite index (its IndexDirectory, or the index file in it), when it is not in the storage folder', exclusive: ['ignore-index', 'dicom-folder'], helpGroup: 'RECOVERY'}),
    'ignore-index': Flags.boolean({description: 'recognise instances file by file even where an index is found (a damaged index)', helpGroup: 'RECOVERY'}),
    'include-unindexed': Flags.boolean({description: 'also import stored files the index does not know, when they are DICOM', helpGroup: 'RECOVERY'}),
    'from-postgres': Flags.string({description: 'recover a stopped server from its PostgreSQL database, postgresql://user@host:5432/db (PATH, if given, is its StorageDirectory)', exclusive: ['index', 'ignore-index', 'dicom-folder'], helpGroup: 'RECOVERY'}),
    'postgres-password-file': Flags.string({description: 'file holding the database password (or in the URL, or PGPASSWORD)', dependsOn: ['from-postgres'], helpGroup: 'RECOVERY'}),
    ...reportingFlags,
  }

  async run(): Promise<ImportSummary> {
    const {flags, argv} = await this.parse(Import)
    applyFileGroup(flags)
    if (argv.length === 0 && flags['from-postgres'] === undefined) {
      throw new UserFacingError('nothing to import', 'Give archive volumes, a DICOM folder, a storage folder, - for stdin, or --from-postgres.', 'usage', 'no-input')
    }

    const reporter = await this.startReporting(flags, {plansAsDetails: flags['dry-run']})
    const {concurrency, bandwidth} = transferSettingsFromFlags(flags)
    const client = new OrthancClient(endpointFromFlags('target', flags), {...this.httpOptions(flags, connectionsFor(concurrency)), bandwidth: {upload: bandwidth?.upload}})
    if (!flags['dry-run']) this.warnAboutTarget(client)
    try {
      const summary = await importInputs({
        target: client,
        inputs: argv as string[],
        folders: flags['storage-folder'] || flags.index !== undefined ? 'storage' : flags['dicom-folder'] ? 'dicom' : 'auto',
        index: flags.index,
        ignoreIndex: flags['ignore-index'],
        includeUnindexed: flags['include-unindexed'],
        fromPostgres: flags['from-postgres'],
        postgresPasswordFile: flags['postgres-password-file'],
        concurrency,
        zipUploads: flags['zip-uploads'],
        dryRun: flags['dry-run'],
        receipt: flags['no-receipt'] ? false : flags.receipt,
        spoolDir: flags['spool-dir'],
        decryption: await decryptionKeysFromFlags(flags),
        signal: this.signal,
        onProgress: reporter.onProgress,
        onEvent: reporter.onEvent,
      })
      const outcome = importOutcome(summary)
      if (outcome === 'bad-input') process.exitCode = ExitCode.badInput
      else if (outcome === 'partial-failure') process.exitCode = ExitCode.partialFailure
      this.result(summary, renderImportSummary)
      if (summary.dryRun) reporter.hint('Next: the same command without --dry-run imports them.')
      return summary
    } finally {
      await client.close()
    }
  }
}

function renderImportSummary(summary: ImportSummary): string {
  const lines: string[] = []
  if (summary.problemCount > 0) {
    lines.push(`Refused or missing (${summary.problemCount}):`)
    lines.push(...listed(summary.problems.map(renderProblem), summary.problemCount))
  }

  const {volumes} = summary
  if (volumes.read > 0 || volumes.missing.length > 0) {
    lines.push(`Volumes: ${volumes.read} read, ${volumes.proven} proven, ${volumes.complete} complete${volumes.missing.length > 0 ? `, missing: ${volumes.missing.map(renderVolumeRange).join(', ')}` : ''}.`)
  }
  for (const volume of volumes.unproven) {
    const wayOut = volume.fromStream ? 'send the stream again (the import then takes only what the target lacks)' : 'copy it again from the source media'
    lines.push(`  ${volume.input}: volume ${volume.volume} cannot be proven, so none of its ${volume.instances} instance(s) was imported: ${wayOut}.`)
  }
  if (summary.studies.complete + summary.studies.incomplete.length > 0) {
    // A dry run counts what the target would hold once the instances it would upload are there.
    lines.push(summary.dryRun
      ? `Studies, were it imported: ${summary.studies.complete} complete, ${summary.studies.incomplete.length} incomplete on the target.`
      : `Studies: ${summary.studies.complete} complete, ${summary.studies.incomplete.length} incomplete on the target.`)
    lines.push(...listed(summary.studies.incomplete.map((study) => `${study.studyInstanceUid}: ${study.present} of ${study.expected} instances${study.leftOut
      ? ` (${study.leftOut} of them left out of this archive as the far side's already: import first the export it adds to, or the one whose receipt it was made with)`
      : ''}`)))
  }

  if (summary.superseded) {
    lines.push(`${summary.superseded} instance(s) ${summary.dryRun ? 'would be' : 'were'} stored again over the copy this run transferred, by a later export's other copy (superseded): counted transferred once.`)
  }
  if (summary.leftoversWrittenBack) lines.push(`Wrote back what ${summary.leftoversWrittenBack} replacement(s) by an earlier run, killed before the end, had kept of the target's own (from the replacement journal).`)
  for (const report of summary.recovery) lines.push(...renderRecovery(report))
  if (summary.ignoredFiles > 0) lines.push(`Set aside ${summary.ignoredFiles} file(s) not imported: ${Object.entries(summary.ignoredByKind).map(([kind, count]) => `${count} ${kind}`).join(', ')}.`)
  lines.push(...renderNotCarried(summary.notCarried))
  if (summary.receipt) lines.push(`Receipt: ${summary.receipt}`)
  const headline = summary.dryRun ? `Dry run, nothing changed on ${summary.target.url}` : `Imported into ${summary.target.url}`
  return `${lines.join('\n')}${lines.length > 0 ? '\n' : ''}${renderTransferSummary(summary, headline, {...summary, unit: 'uploads'})}`
}

const ROUTES: Record<RecoveryReport['route'], string> = {
  'sqlite-index': 'from its SQLite index',
  'postgresql': 'from its PostgreSQL database',
  'storage-folder-without-index': 'without an index, file by file',
}

function renderRecovery(report: RecoveryReport): string[] {
  const lines = [`Recovery of ${report.source} ${ROUTES[report.route]}${report.index ? ` (${report.index.schema})` : ''}: ${report.recovered} of ${report.candidates} instance(s) recovered, ${report.failed} failed.`]
  if (report.route === 'storage-folder-without-index') lines.push('  No index was found: give it with --index to recover exactly the instances it lists, checked against its MD5s.')
  if (report.attachmentsFailed > 0) lines.push(`  ${report.attachmentsFailed} user attachment(s) missing or damaged in storage: not restored (listed in the failures).`)
  if (report.notInIndex > 0) lines.push(`  ${report.notInIndex} stored file(s) the index does not know${report.route === 'postgresql' ? '' : ' (kind not-in-index)'}: imported only with --include-unindexed.`)
  if (report.unindexedInstances > 0) {
    lines.push(`  ${report.unindexedInstances} of them are whole instances the index does not list: deleted ones whose file outlived them, or instances stored after the index was last written (a lost index-wal, an index from a backup). If the index is older than the storage, they are lost to this recovery: --include-unindexed imports them.`)
  }
  if (report.unindexedAfterIndex > 0) {
    lines.push(`  ${report.unindexedAfterIndex} of those were stored after every instance the index lists: the index looks older than the storage, so they are failed unless --include-unindexed imports them.`)
  }
  if (report.unindexedUndated > 0) {
    lines.push(`  ${report.unindexedUndated} of those cannot be dated: the stored files' times do not tell (most were written days after their instance was received: a copy without cp -a, or files rewritten since, such as compressed later), so they are failed unless --include-unindexed imports them; if the disk was copied, copy it again keeping times.`)
  }
  if (report.contradictions > 0) lines.push(`  ${report.contradictions} other cop${report.contradictions === 1 ? 'y' : 'ies'} of instances already taken, with other bytes: left out, named in the failures (contradiction).`)
  if (report.checkedBySizeOnly > 0) lines.push(`  ${report.checkedBySizeOnly} file(s) checked by size only: the index holds no MD5s (StoreMD5ForAttachments was off).`)
  const side = report.resourceSideData
  if (side.resources > 0) {
    lines.push(`  ${side.resources} patient(s), study(ies) or series carry ${side.userMetadata} user metadata, ${side.attachments} attachment(s) and ${side.labels} label(s)${side.protectedPatients > 0 ? `, ${side.protectedPatients} patient(s) protected from recycling,` : ''} in the index: restored with their instances (see "Not carried" for what the target could not take).`)
  }
  return lines
}
