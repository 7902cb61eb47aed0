import {Flags} from '@oclif/core'

import {DEFAULT_MAX_VOLUME_BYTES} from '../src/archive/format.js'
import {archiveStdout} from '../src/cli/archive-stdout.js'
import {BaseCommand} from '../src/cli/base-command.js'
import {encryptionFlags, encryptionKeysFromFlags} from '../src/cli/encryption-flags.js'
import {ExitCode} from '../src/cli/exit-codes.js'
import {filterFlags, filtersFromFlags} from '../src/cli/filter-flags.js'
import {progressRenderer} from '../src/cli/progress-renderer.js'
import {renderTransferSummary} from '../src/cli/summary.js'
import {endpointFromFlags, serverFlags} from '../src/cli/server-flags.js'
import {connectionsFor, transferFlags, transferSettingsFromFlags} from '../src/cli/transfer-flags.js'
import {UserFacingError} from '../src/errors.js'
import {buildExclusions} from '../src/export/exclusions.js'
import {exportArchive, type ExportSummary} from '../src/export/export.js'
import {readHops} from '../src/export/hops.js'
import {OrthancClient} from '../src/orthanc/client.js'
import {parseSize} from '../src/util/size.js'

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
    'max-volume-size': Flags.string({description: 'largest volume file, e.g. 700MB, 4GiB (default: fits FAT32)', default: String(DEFAULT_MAX_VOLUME_BYTES)}),
    // A volume's manifest is held in memory while the volume is written: peak RSS went from 127 MB
    // (1003 instances in one volume) to 168 MB (5000 in one volume), about 10 KB per instance. With
    // 2000, memory stays flat however large the export; volumes of 130 KB images still hold 260 MB.
    'max-volume-instances': Flags.integer({description: 'most instances per volume (bounds the memory a volume\'s manifest takes)', default: 2000, min: 1}),
    'name-prefix': Flags.string({description: 'volume file names start with this', default: 'orthanc-export'}),
    ...transferFlags('downloads'),
    'dry-run': Flags.boolean({description: 'report what would be exported (instances, bytes, volumes) and write nothing'}),
    since: Flags.string({description: 'incremental: export only what is new since this earlier export (its folder or a volume)'}),
    'hops-from': Flags.string({description: 'this source got the data from an archive: record that archive\'s chain of hops (give its import receipt or the archive)'}),
    'exclude-receipt': Flags.string({description: 'leave out instances an import receipt from the far side shows as arrived (repeatable)', multiple: true, multipleNonGreedy: true}),
    ...encryptionFlags,
    'patient-index': Flags.boolean({description: 'also write index.csv beside the volumes, with patient names and IDs (off: a lost drive should not name patients)'}),
    ...filterFlags,
  }

  /** With --output -, stdout carries the archive: the JSON summary goes to stderr instead. */
  private summaryToStderr = false

  async run(): Promise<ExportSummary> {
    const {flags} = await this.parse(Export)
    const maxVolumeBytes = parseSize(flags['max-volume-size'])
    if (!maxVolumeBytes || maxVolumeBytes < 64 * 1024) {
      throw new UserFacingError(`--max-volume-size "${flags['max-volume-size']}" is not a size of at least 64 KiB`, 'Write it like 700MB, 4GiB or 1500000000.', 'usage', 'bad-size')
    }

    const encryption = await encryptionKeysFromFlags(flags)
    const toStdout = flags.output === '-'
    this.summaryToStderr = toStdout
    const {concurrency, bandwidth} = transferSettingsFromFlags(flags)
    const client = new OrthancClient(endpointFromFlags('source', flags), {...this.httpOptions(flags, connectionsFor(concurrency)), bandwidth: {download: bandwidth?.download}})
    // On stdout the archive is the output: progress and notes must stay on stderr, and only for a terminal.
    const progress = progressRenderer(this.interactive)
    try {
      const exclusions = await buildExclusions(client, flags.since, flags['exclude-receipt'] ?? [], this.signal)
      const summary = await exportArchive({
        hops: flags['hops-from'] ? await readHops(flags['hops-from']) : [],
        exclude: exclusions.exclude,
        exclusions: exclusions.description,
        incrementalBase: exclusions.incrementalBase,
        chainBase: exclusions.chainBase,
        encryption,
        client,
        output: toStdout ? {kind: 'stream', stream: archiveStdout()} : {kind: 'directory', path: flags.output},
        filters: filtersFromFlags(flags),
        maxVolumeBytes,
        maxVolumeInstances: flags['max-volume-instances'],
        concurrency,
        namePrefix: flags['name-prefix'],
        dryRun: flags['dry-run'],
        patientIndex: flags['patient-index'],
        signal: this.signal,
        onProgress: progress.listener,
      })
      progress.done()
      if (summary.failed > 0) process.exitCode = ExitCode.partialFailure
      if (!this.jsonEnabled()) process.stderr.write(renderExportSummary(summary))
      return summary
    } finally {
      progress.done()
      await client.close()
    }
  }

  protected override logJson(json: unknown): void {
    if (this.summaryToStderr) process.stderr.write(`${JSON.stringify(json, null, 2)}\n`)
    else super.logJson(json)
  }
}

function renderExportSummary(summary: ExportSummary): string {
  const what = summary.dryRun ? 'Would export' : 'Exported'
  return renderTransferSummary(summary, `${what} ${summary.dryRun ? summary.instancesPlanned : summary.transferred} instances into ${summary.volumes} volume(s) (${summary.volumesWritten} written now)`, {...summary, unit: 'downloads'})
}
