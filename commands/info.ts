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
      return this.result(await describeServer(client, this.signal), renderReport)
    } finally {
      await client.close()
    }
  }
}

function renderReport(report: ServerReport): string {
  const yesNo = (value: boolean | null, unknown: string) => (value === null ? unknown : value ? 'yes' : 'no')
  const {counts, disk, features, accepts} = report
  const metadata = accepts.userMetadata === null
    ? 'unknown: Orthanc before 1.12 does not list its UserMetadata (names it does not declare are refused, and reported as not carried)'
    : accepts.userMetadata.length === 0 ? 'none declared: user metadata sent to it is refused (declare names in its UserMetadata)' : `only ${accepts.userMetadata.map((name) => `"${name}"`).join(', ')} (its UserMetadata): others are refused`
  return [
    `Server:        ${report.server.url}`,
    `Name:          ${report.name}`,
    `Version:       Orthanc ${report.version} (REST API ${report.apiVersion})`,
    `Database:      ${report.databaseBackend}`,
    `Storage:       ${report.storageBackend}`,
    `Contents:      ${counts.patients} patients, ${counts.studies} studies, ${counts.series} series, ${counts.instances} instances`,
    `Disk:          ${disk.storedBytes === null ? 'not said' : formatBytes(disk.storedBytes)} stored, ${disk.uncompressedBytes === null ? 'not said' : formatBytes(disk.uncompressedBytes)} uncompressed`,
    'Replication features:',
    `  labels:              ${features.labels ? 'yes' : 'no (labels need Orthanc 1.12.0 or later)'}`,
    `  attachment info:     ${features.attachmentInfo ? 'yes' : 'no (MD5 checks use older routes)'}`,
    `  storage compression: ${yesNo(features.storageCompression, 'unknown (no instance stored to look at)')}`,
    'As a target, it takes:',
    `  uploads:             ${accepts.uploads === null ? 'yes, unless it is ReadOnly (Orthanc before 1.12 does not say)' : accepts.uploads ? 'yes' : 'no: it is ReadOnly, every upload is refused'}`,
    `  labels:              ${accepts.labels ? 'yes' : 'no: Orthanc before 1.12 has no labels (reported as not carried)'}`,
    `  user metadata:       ${metadata}`,
    '  user attachments:    yes (written by content type number)',
    '  system metadata:     no: Orthanc keeps its own (reception date, remote AET...) and no REST call writes it',
  ].join('\n')
}
