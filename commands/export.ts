import {Flags} from '@oclif/core'

import {DEFAULT_MAX_VOLUME_BYTES} from '../src/archive/format.js'
import {sizeFlag} from '../src/cli/flag-types.js'
import {archiveStdout} from '../src/cli/archive-stdout.js'
import {BaseCommand} from '../src/cli/base-command.js'
import {encryptionFlags, encryptionKeysFromFlags} from '../src/cli/encryption-flags.js'
import {ExitCode} from '../src/cli/exit-codes.js'
import {applyFileGroup, fileGroupFlags} from '../src/cli/file-group-flag.js'
import {filterFlags, filtersFromFlags} from '../src/cli/filter-flags.js'
import {keyFlagPlaceholders, shellWord, renderTransferSummary} from '../src/cli/summary.js'
import {reportingFlags} from '../src/cli/reporting-flags.js'
import {endpointFromFlags, serverFlags} from '../src/cli/server-flags.js'
import {exportArchive} from '../src/api.js'
import type {ExportSummary} from '../src/export/export.js'
import {transferFlags, transferSettingsFromFlags} from '../src/cli/transfer-flags.js'
import {connectionsFor} from '../src/transfer/adaptive-concurrency.js'
import {OrthancClient} from '../src/orthanc/client.js'
import {formatBytes} from '../src/util/format.js'
import {redactedValue, unmasked} from '../src/util/redact.js'

/** Below this, a volume holds little more than its tag files. */
const MIN_VOLUME_BYTES = 64 * 1024

export default class Export extends BaseCommand {
  static override transfersInstances = true
  static override summary = 'Export a server\'s instances into verifiable archive volumes (tar + BagIt), for carrying across an air gap.'
  static override description = `Each volume is a standard tar that is also a complete BagIt bag: check it on the far side with "sha256sum -c" or any BagIt tool. Volumes are written in order; running the same command into the same folder after an interruption resumes, and finished volumes are never written again. Patient names and IDs appear in no archive file unless --patient-index is given.`

  static override examples = [
    '<%= config.bin %> export --source http://localhost:8042 --output /media/usb/export-2024-06',
    '<%= config.bin %> export --source http://pacs:8042 --output /media/usb/ct --modality CT --study-date-from 20240101',
    '<%= config.bin %> export --source http://pacs:8042 --output - | ssh far-side orthanc-replicate import --target http://localhost:8042 -',
  ]

  static override flags = {
    ...serverFlags('source'),
    output: Flags.string({char: 'o', description: 'folder for the volumes, or - for one archive on stdout', required: true}),
    'max-volume-size': sizeFlag({description: 'largest volume file, e.g. 700MB, 4GiB (the default fits FAT32)', default: DEFAULT_MAX_VOLUME_BYTES, min: MIN_VOLUME_BYTES}),
    // A volume's manifest is held in memory while the volume is written: peak RSS went from 127 MB
    // (1003 instances in one volume) to 168 MB (5000 in one volume), about 10 KB per instance. With
    // 2000, memory stays flat however large the export; volumes of 130 KB images still hold 260 MB.
    'max-volume-instances': Flags.integer({description: 'most instances per volume (bounds the memory a volume\'s manifest takes)', default: 2000, min: 1}),
    'name-prefix': Flags.string({description: 'volume file names start with this', default: 'orthanc-export'}),
    ...transferFlags('downloads'),
    'dry-run': Flags.boolean({description: 'report what would be exported (instances, bytes, volumes) and write nothing'}),
    since: Flags.string({description: 'incremental: export only what is new since this earlier export (its folder, a volume, or its --state folder)'}),
    state: Flags.string({description: 'folder for the export\'s own state (plan, volumes done, instances exported), default .orthanc-replicate inside --output: put it off a drive that leaves the site; give the same --state to resume'}),
    'hops-from': Flags.string({description: 'this source got the data from an archive: record that archive\'s chain of hops (give its import receipt or the archive)'}),
    'exclude-receipt': Flags.string({description: 'leave out instances an import receipt from the far side shows as arrived (repeatable)', multiple: true, multipleNonGreedy: true}),
    ...encryptionFlags,
    ...fileGroupFlags,
    'patient-index': Flags.boolean({description: 'also write index.csv beside the volumes, with patient names and IDs (off: a lost drive should not name patients)'}),
    ...filterFlags,
    ...reportingFlags,
  }

  async run(): Promise<ExportSummary> {
    const {flags} = await this.parse(Export)
    applyFileGroup(flags)
    const encryption = await encryptionKeysFromFlags(flags)
    const toStdout = flags.output === '-'
    // With --output -, stdout carries the archive: the result, JSON or not, goes to stderr.
    if (toStdout) this.resultStream = process.stderr
    const reporter = await this.startReporting(flags, {plansAsDetails: flags['dry-run']})
    const {concurrency, bandwidth} = transferSettingsFromFlags(flags)
    const client = new OrthancClient(endpointFromFlags('source', flags), {...this.httpOptions(flags, connectionsFor(concurrency)), bandwidth: {download: bandwidth?.download}})
    try {
      const summary = await exportArchive({
        source: client,
        output: toStdout ? archiveStdout({dryRun: flags['dry-run']}) : flags.output,
        since: flags.since,
        state: flags.state,
        excludeReceipts: flags['exclude-receipt'],
        hopsFrom: flags['hops-from'],
        encryption,
        filters: filtersFromFlags(flags),
        maxVolumeBytes: flags['max-volume-size'],
        maxVolumeInstances: flags['max-volume-instances'],
        concurrency,
        namePrefix: flags['name-prefix'],
        dryRun: flags['dry-run'],
        patientIndex: flags['patient-index'],
        signal: this.signal,
        onProgress: reporter.onProgress,
        onEvent: reporter.onEvent,
      })
      if (summary.failed > 0) process.exitCode = ExitCode.partialFailure
      this.result(summary, (done) => renderExportSummary(done, toStdout))
      if (summary.dryRun) reporter.hint('Next: the same command without --dry-run writes the volumes.')
      else if (summary.notPlanned > 0 && !toStdout) {
        reporter.hint(`${summary.notPlanned} instance(s) could not be planned when this export began, and its plan is fixed: running it again does not try them. Export them into another folder: ${this.config.bin} export --source ... --since ${shellWord(flags.output)} --output NEW-FOLDER`)
      } else if (!toStdout && summary.volumes === 0 && flags.since && !summary.interrupted && summary.failed === 0) {
        // Nothing new: no folder was made, so there is nothing to verify, and nothing to give the next --since.
        reporter.hint(`Nothing new since ${shellWord(flags.since)}: no volume was written. The next incremental export is again --since ${shellWord(flags.since)}.`)
      } else if (!toStdout && !summary.interrupted && summary.failed === 0) {
        const keys = keyFlagPlaceholders({identity: encryption !== undefined && 'recipients' in encryption, passphrase: encryption !== undefined && 'passphrase' in encryption})
        reporter.hint(`Next: check the volumes, here or on the far side, before anything is deleted: ${this.config.bin} verify${keys} ${shellWord(flags.output)}`)
      }
      return summary
    } finally {
      await client.close()
    }
  }

  override logJson(json: unknown): void {
    if (this.resultStream === process.stderr) unmasked(() => process.stderr.write(`${JSON.stringify(redactedValue(json), null, 2)}\n`))
    else super.logJson(json)
  }
}

function renderExportSummary(summary: ExportSummary, toStdout: boolean): string {
  const headline = summary.dryRun
    ? `Dry run, nothing written: ${summary.instancesPlanned} instances (${formatBytes(summary.bytesPlanned)}) would go into ${summary.volumes} volume(s)`
    : `Exported ${summary.transferred} instances into ${summary.volumes} volume(s) (${summary.volumesWritten} written now)`
  const lines: string[] = []
  // What was left out, and on whose word: a receipt from the wrong server would leave out what
  // the far side does not have, and only its header can show that.
  if (summary.leftOut > 0) lines.push(`${summary.leftOut} selected instance(s) left out: the far side has them (--since, --exclude-receipt).`)
  for (const receipt of summary.receipts ?? []) {
    lines.push(`Receipt ${receipt.path}: ${receipt.arrived} instance(s) arrived on "${receipt.target.name}" (${receipt.target.server}, Orthanc ${receipt.target.version}), imported ${receipt.importedAt}.`)
  }
  // A volume that holds a failure is not finished: the next run writes it again whole, its other
  // instances with it. A stream keeps nothing: it is written again whole, and the import takes
  // only what its target lacks. What could not be planned is not tried by a folder's next run
  // (its plan is fixed; the hint says what to do instead).
  const onRetry = toStdout
    ? 'the stream is written again whole, and its import takes only what the target lacks'
    : 'a volume that holds a failed instance is written again whole, the other volumes are kept'
  return renderTransferSummary(summary, headline, {...summary, unit: 'downloads'}, onRetry, toStdout ? 0 : summary.notPlanned) + lines.map((line) => `${line}\n`).join('')
}
