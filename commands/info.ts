import {BaseCommand} from '../src/cli/base-command.js'
import {endpointFromFlags, serverFlags} from '../src/cli/server-flags.js'
import {describeServer, type ServerReport} from '../src/info.js'
import {OrthancClient} from '../src/orthanc/client.js'
import {formatBytes} from '../src/util/format.js'

export default class Info extends BaseCommand {
  static override summary = 'Check a server URL and its credentials, and show what the server offers to replication.'
  static override examples = [
    '<%= config.bin %> info --server http://localhost:8042',
    'ORTHANC_PASSWORD_FILE=~/.orthanc-pass <%= config.bin %> info --server https://pacs.example.org --username replicator --ca-file ca.pem --json',
  ]

  static override flags = {...serverFlags('server')}

  async run(): Promise<ServerReport> {
    const {flags} = await this.parse(Info)
    const client = new OrthancClient(endpointFromFlags('server', flags), this.httpOptions(flags, 2))
    try {
      const report = await describeServer(client, this.signal)
      if (!this.jsonEnabled()) this.log(renderReport(report))
      return report
    } finally {
      await client.close()
    }
  }
}

function renderReport(report: ServerReport): string {
  const yesNo = (value: boolean | null, unknown: string) => (value === null ? unknown : value ? 'yes' : 'no')
  const {counts, disk, features} = report
  return [
    `Server:        ${report.server}`,
    `Name:          ${report.name}`,
    `Version:       Orthanc ${report.version} (REST API ${report.apiVersion})`,
    `Database:      ${report.databaseBackend}`,
    `Storage:       ${report.storageBackend}`,
    `Contents:      ${counts.patients} patients, ${counts.studies} studies, ${counts.series} series, ${counts.instances} instances`,
    `Disk:          ${formatBytes(disk.storedBytes)} stored, ${formatBytes(disk.uncompressedBytes)} uncompressed`,
    'Replication features:',
    `  labels:              ${features.labels ? 'yes' : 'no (labels need Orthanc 1.12.0 or later)'}`,
    `  attachment info:     ${features.attachmentInfo ? 'yes' : 'no (MD5 checks use older routes)'}`,
    `  storage compression: ${yesNo(features.storageCompression, 'unknown (no instance stored to look at)')}`,
  ].join('\n')
}
