import type {Readable, Writable} from 'node:stream'

import {DEFAULT_MAX_VOLUME_BYTES} from './archive/format.js'
import type {AgeDecryptionKeys, AgeEncryptionKeys} from './crypto/age.js'
import type {ExportSummary} from './export/export.js'
import type {ImportSummary} from './import/import.js'
import type {FolderMode, ImportInput} from './import/inputs.js'
import type {InstanceFilters} from './model.js'
import {OrthancClient} from './orthanc/client.js'
import {resolveEndpoint, type ServerEndpoint} from './orthanc/endpoint.js'
import type {HttpOptions} from './orthanc/http.js'
import type {archiveInputs} from './sources/archive-inputs.js'
import type {DiffSummary} from './sync/diff.js'
import type {FollowEvent, FollowSummary} from './sync/follow.js'
import type {SyncSummary} from './sync/sync.js'
import {connectionsFor} from './transfer/adaptive-concurrency.js'
import type {JobEventListener, ProgressListener} from './transfer/progress.js'
import {Secret} from './util/secret.js'
import type {VerifySummary} from './verify/verify.js'
import {UserFacingError} from './errors.js'

// Each job's modules are loaded when the job runs: a command (or a program) that exports loads
// nothing of import, recovery or verify at start-up.

/**
 * The library's entry points: the same jobs as the commands, with the commands' defaults, taking
 * paths, streams and URLs as the commands do. Nothing here prints, exits or reads flags: every
 * job returns its summary (the commands' --json output), reports progress and events through
 * the callbacks given, and stops at `signal`. Errors are typed (see errors.ts and
 * orthanc/errors.ts); UserFacingError carries a message, a suggestion and a category.
 */

/** What every job takes to report and to stop. */
export interface JobCallbacks {
  signal?: AbortSignal
  /** Phase, counts, bytes, totals: called often, keep it cheap. */
  onProgress?: ProgressListener
  /** The plan before anything moves, each failure and each retry. */
  onEvent?: JobEventListener
}

/** Where a server is, and how to authenticate: as the commands take it. */
export interface ConnectOptions {
  /** http(s)://host:port[/prefix]; may carry user:password@. */
  url: string
  username?: string
  /** The password itself (a library caller holds it already); or passwordFile. */
  password?: string
  passwordFile?: string
  caFile?: string
  clientCertFile?: string
  clientKeyFile?: string
  /** Parallel connections (default: enough for the adaptive concurrency's highest). */
  connections?: number
  /** The pace of instance data, per direction (see bandwidthBuckets and parseBandwidthLimit). */
  bandwidth?: HttpOptions['bandwidth']
  /** Seconds to wait for an answer (default 120). */
  timeoutSeconds?: number
  /** Attempts after the first for a request that may be sent again (default 5). */
  retries?: number
  /** Told of each request sent again. */
  onRetry?: HttpOptions['onRetry']
}

/**
 * A client for one Orthanc server: one connection pool, typed errors. Close it when done
 * (`await client.close()`). Credentials in the URL come first, then `password`, then the
 * ORTHANC_USERNAME / ORTHANC_PASSWORD environment, as for the commands.
 */
export function connect(server: string | ConnectOptions): OrthancClient {
  const options: ConnectOptions = typeof server === 'string' ? {url: server} : server
  let endpoint: ServerEndpoint = resolveEndpoint({
    url: options.url, username: options.username, passwordFile: options.passwordFile,
    caFile: options.caFile, clientCertFile: options.clientCertFile, clientKeyFile: options.clientKeyFile,
  })
  if (options.password !== undefined && !new URL(options.url).password) endpoint = {...endpoint, password: new Secret(options.password)}
  const timeoutMs = (options.timeoutSeconds ?? 120) * 1000
  return new OrthancClient(endpoint, {
    connections: options.connections ?? connectionsFor(undefined),
    headersTimeoutMs: timeoutMs,
    bodyTimeoutMs: timeoutMs,
    retry: {retries: options.retries ?? 5, minDelayMs: 250, maxDelayMs: 8000},
    onRetry: options.onRetry,
    bandwidth: options.bandwidth,
  })
}

export interface ExportArchiveOptions extends JobCallbacks {
  source: OrthancClient
  /** A folder for the volume files (created if missing; the same folder resumes), or a stream for one archive. */
  output: string | Writable
  filters?: InstanceFilters
  /** Largest volume file in bytes (default: 4 GiB − 64 MiB, for FAT32). */
  maxVolumeBytes?: number
  /** Most instances per volume (default 2000). */
  maxVolumeInstances?: number
  /** Downloads at once (default: adaptive, from 8 up to what the link and the source reward). */
  concurrency?: number
  /** Volume file names (default "orthanc-export"). */
  namePrefix?: string
  dryRun?: boolean
  /** Also write index.csv with patient names and IDs beside the volumes. */
  patientIndex?: boolean
  /** Incremental: only what is new since this earlier export (its folder or a volume). */
  since?: string
  /** Leave out what these import receipts from the far side show as arrived. */
  excludeReceipts?: string[]
  /** The source got its data from an archive: that archive's chain of hops (its receipt or the archive). */
  hopsFrom?: string
  /** Encrypt every volume (or the stream) in the age format, to recipients or to a passphrase. */
  encryption?: AgeEncryptionKeys
  /** Where a folder export keeps its state (default: .orthanc-replicate inside `output`); give the same to resume, or as `since`. */
  state?: string
}

/** Exports a server's instances into verifiable archive volumes (tar + BagIt), as `export` does. */
export async function exportArchive(options: ExportArchiveOptions): Promise<ExportSummary> {
  const [{buildExclusions}, {exportArchive: runExport}, {readHops}] = await Promise.all([import('./export/exclusions.js'), import('./export/export.js'), import('./export/hops.js')])
  const exclusions = await buildExclusions(options.source, options.since, options.excludeReceipts ?? [], options.signal)
  return runExport({
    client: options.source,
    output: typeof options.output === 'string' ? {kind: 'directory', path: options.output} : {kind: 'stream', stream: options.output},
    filters: options.filters ?? {},
    maxVolumeBytes: options.maxVolumeBytes ?? DEFAULT_MAX_VOLUME_BYTES,
    maxVolumeInstances: options.maxVolumeInstances ?? 2000,
    concurrency: options.concurrency,
    namePrefix: options.namePrefix ?? 'orthanc-export',
    dryRun: options.dryRun ?? false,
    patientIndex: options.patientIndex ?? false,
    hops: options.hopsFrom ? await readHops(options.hopsFrom) : [],
    exclude: exclusions.exclude,
    exclusions: exclusions.description,
    receipts: exclusions.receipts.length > 0 ? exclusions.receipts : undefined,
    incrementalBase: exclusions.incrementalBase,
    changeCursor: exclusions.changeCursor,
    chainBase: exclusions.chainBase,
    encryption: options.encryption,
    stateDir: options.state,
    signal: options.signal,
    onProgress: options.onProgress,
    onEvent: options.onEvent,
  })
}

export interface ImportInputsOptions extends JobCallbacks {
  target: OrthancClient
  /**
   * What to import, as the command's arguments: archive volume files, folders of volumes, DICOM
   * folders, an Orthanc storage folder, or streams carrying an archive (what `export` wrote to
   * a stream). Optional with `fromPostgres`.
   */
  inputs?: Array<string | Readable>
  /** How to read folders (default: recognise them). */
  folders?: FolderMode
  /** A stopped server's SQLite index, when it is not in its storage folder. */
  index?: string
  /** Recognise instances file by file even where an index is found. */
  ignoreIndex?: boolean
  /** Also import stored files the index does not know. */
  includeUnindexed?: boolean
  /** Recover a stopped server from its PostgreSQL database (postgresql://user@host:port/db); `inputs`, if any, is its storage folder. */
  fromPostgres?: string
  postgresPasswordFile?: string
  /** Uploads at once (default: adaptive, from 8 up to what the link and the target reward). */
  concurrency?: number
  /** Send small instances waiting for an upload together in one ZIP (Orthanc 1.8.2+); default: when the job is known to be many small instances. */
  zipUploads?: boolean
  dryRun?: boolean
  /** The receipt to write: a path, `false` for none, or (default) import-receipt-<time>.jsonl beside the first volume. */
  receipt?: string | false
  /** Where an archive read from a stream waits, one volume at a time, until it is proven. */
  spoolDir?: string
  /** What opens encrypted volumes (.tar.age, or an encrypted stream). */
  decryption?: AgeDecryptionKeys
}

/** Imports archives, DICOM folders, a stopped server's storage or database into a server, as `import` does. */
export async function importInputs(options: ImportInputsOptions): Promise<ImportSummary> {
  const given = options.inputs ?? []
  if (given.length === 0 && options.fromPostgres === undefined) {
    throw new UserFacingError('nothing to import', 'Give archive volumes, a DICOM folder, a storage folder, a stream, or fromPostgres.', 'usage', 'no-input')
  }

  const [{importInstances}, {postgresInputs, resolveImportInputs}, {defaultReceiptPath}, {resolvePostgresSource}, {checkSpoolFolder}] = await Promise.all([
    import('./import/import.js'), import('./import/inputs.js'), import('./import/receipt.js'), import('./recovery/postgres-index.js'), import('./archive/bag-spool.js'),
  ])
  if (options.spoolDir !== undefined) await checkSpoolFolder(options.spoolDir)
  let inputs: ImportInput[]
  if (options.fromPostgres !== undefined) {
    inputs = postgresInputs(given.map(String), resolvePostgresSource(options.fromPostgres, {passwordFile: options.postgresPasswordFile}))
  } else {
    inputs = []
    const named = new Set<string>()
    for (const [index, input] of given.entries()) {
      if (typeof input === 'string') inputs.push(...await resolveImportInputs([input], process.stdin, options.folders ?? 'auto', {index: options.index, ignoreIndex: options.ignoreIndex}, 'anything', named))
      else inputs.push({kind: 'archive-stream', label: `stream ${index + 1}`, stream: input})
    }
  }

  const archives = inputs.flatMap((input) => (input.kind === 'archive-file' ? [input.path] : []))
  const receiptPath = options.receipt === false ? undefined : options.receipt ?? await defaultReceiptPath(archives)
  return importInstances({
    client: options.target,
    inputs,
    concurrency: options.concurrency,
    zipUploads: options.zipUploads,
    dryRun: options.dryRun ?? false,
    receiptPath,
    spoolDir: options.spoolDir,
    decryption: options.decryption,
    includeUnindexed: options.includeUnindexed,
    signal: options.signal,
    onProgress: options.onProgress,
    onEvent: options.onEvent,
  })
}

export interface SyncServersOptions extends JobCallbacks {
  source: OrthancClient
  target: OrthancClient
  filters?: InstanceFilters
  /** Also compare MD5s of instances on both sides, and send again those that differ. */
  checksum?: boolean
  dryRun?: boolean
  /** Uploads at once (default: adaptive, from 8 up to what the link and the target reward). */
  concurrency?: number
  /** Send small instances waiting for an upload together in one ZIP (Orthanc 1.8.2+); default: when the job is known to be many small instances. */
  zipUploads?: boolean
}

/** Copies what the target lacks straight from the source, as `sync` does (once). */
export async function syncServers(options: SyncServersOptions): Promise<SyncSummary> {
  const {syncServers: runSync} = await import('./sync/sync.js')
  return runSync({...options, filters: options.filters ?? {}, checksum: options.checksum ?? false, dryRun: options.dryRun ?? false, concurrency: options.concurrency})
}

export interface FollowServersOptions extends Omit<SyncServersOptions, 'dryRun' | 'onEvent'> {
  /** Where the change cursor is kept between runs. */
  stateFile: string
  /** Between polls of the source (default 10 s). */
  intervalMs?: number
  /** Between full comparisons (default 60 min). */
  fullEveryMs?: number
  /** Delete from the target what the source no longer has, within maxDeleteFraction (default 0.1) of the target per pass. */
  deleteExtras?: boolean
  maxDeleteFraction?: number
  /** Each pass, each outage waited out. */
  onEvent?: (event: FollowEvent) => void
  /** Each pass's plan, failures and retries. */
  onPassEvent?: JobEventListener
}

/** Keeps the target mirrored until `signal` aborts, as `sync --follow` does; returns the counts of every pass. */
export async function followServers(options: FollowServersOptions): Promise<FollowSummary> {
  const {followSource} = await import('./sync/follow.js')
  return followSource({
    ...options, filters: options.filters ?? {}, checksum: options.checksum ?? false, concurrency: options.concurrency,
    intervalMs: options.intervalMs ?? 10_000, fullEveryMs: options.fullEveryMs ?? 3_600_000,
    deleteExtras: options.deleteExtras ?? false, maxDeleteFraction: options.maxDeleteFraction ?? 0.1,
  })
}

export interface VerifyArchiveOptions extends JobCallbacks {
  /** Also confirm that every archived instance is on this server with the same MD5. */
  target?: OrthancClient
  /** Instances checked on the target at once (default 8). */
  concurrency?: number
  /** Where an archive read from a stream waits, one volume at a time, while it is checked. */
  spoolDir?: string
  /** What opens encrypted volumes (.tar.age, or an encrypted stream). */
  decryption?: AgeDecryptionKeys
}

/**
 * Checks archives, as `verify` does: volume files, folders of them, or streams carrying an
 * archive. Exit-code-free: see verifyOutcome() for the verdict.
 */
export async function verifyArchives(archives: Array<string | Readable>, options: VerifyArchiveOptions = {}): Promise<VerifySummary> {
  const [{resolveImportInputs}, {archiveInputs: toArchiveInputs}, {verifyArchives: runVerify}] = await Promise.all([
    import('./import/inputs.js'), import('./sources/archive-inputs.js'), import('./verify/verify.js'),
  ])
  const found: Parameters<typeof archiveInputs>[0] = []
  const named = new Set<string>()
  for (const [index, archive] of archives.entries()) {
    if (typeof archive !== 'string') {
      found.push({kind: 'archive-stream', label: `stream ${index + 1}`, stream: archive})
      continue
    }

    for (const input of await resolveImportInputs([archive], process.stdin, 'auto', {}, 'archives', named)) {
      if (input.kind !== 'archive-file' && input.kind !== 'archive-stream') {
        throw new UserFacingError(`${input.path} holds no archive volume`, 'Give the .tar (or .tar.age) volumes written by export, or the folder holding them, or - for stdin.', 'bad-input', 'not-an-archive')
      }

      found.push(input)
    }
  }

  // Encrypted volumes are decrypted as they stream; one without a key to open it is refused before any work.
  const inputs = await toArchiveInputs(found, options.decryption)
  return runVerify(inputs, {...options, concurrency: options.concurrency ?? 8})
}

/** Checks one archive: a volume file, the folder of its volumes, or a stream. See verifyArchives. */
export async function verifyArchive(archive: string | Readable, options: VerifyArchiveOptions = {}): Promise<VerifySummary> {
  return verifyArchives([archive], options)
}

export interface DiffServersOptions {
  filters?: InstanceFilters
  /** Also count the differences per study. */
  perStudy?: boolean
  /** Also compare user metadata, attachments and labels at every level. */
  sideData?: boolean
  signal?: AbortSignal
  onProgress?: ProgressListener
}

/** Compares two servers by instance ID and recorded MD5 (no download), as `diff` does. See serversDiffer. */
export async function diffServers(source: OrthancClient, target: OrthancClient, options: DiffServersOptions = {}): Promise<DiffSummary> {
  const {diffServers: runDiff} = await import('./sync/diff.js')
  return runDiff(source, target, {...options, filters: options.filters ?? {}, perStudy: options.perStudy ?? false})
}
