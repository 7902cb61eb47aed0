import {constants as bufferConstants} from 'node:buffer'

import type pg from 'pg'

import {UserFacingError} from '../errors.js'
import {CredentialFileError} from '../orthanc/endpoint.js'
import type {SourceEvents} from '../sources/source-events.js'
import {Secret} from '../util/secret.js'
import {CREDENTIAL_FILE_BYTES, readSmallFile} from '../util/small-file.js'
import {FolderStore} from './attachment-store.js'
import type {OrthancIndex} from './index-model.js'
import type {RecoveryStore, UnindexedEntry} from './recover.js'
import {type Row, type SqlConnection, SqlIndex} from './sql-index.js'
import type {StoredRead} from './stored-attachment.js'

/** A PostgreSQL database as the user named it; safe to print: see `display`. */
export interface PostgresSource {
  /** postgresql://user@host:port/database: never the password. */
  display: string
  host: string
  port: number
  user?: string
  database?: string
  password?: Secret
  ssl: pg.ClientConfig['ssl']
}

/**
 * Reads a PostgreSQL URL (`postgresql://user:password@host:5432/orthanc?sslmode=require`). The
 * password comes from the URL (its user information, else `?password=` as libpq takes it), else
 * from `passwordFile`, else the pg client's own sources (PGPASSWORD, ~/.pgpass); it is kept in a
 * Secret, and no message ever shows it, nor the URL's query string.
 */
export function resolvePostgresSource(input: string, options: {passwordFile?: string} = {}): PostgresSource {
  let url: URL
  try {
    url = new URL(input)
  } catch {
    throw new UserFacingError(`not a PostgreSQL URL: ${shownPostgresUrl(input)}`, 'Give the database as postgresql://user@host:5432/database (the password in the URL, with --postgres-password-file, or in PGPASSWORD).', 'usage', 'invalid-database-url')
  }
  if (url.protocol !== 'postgresql:' && url.protocol !== 'postgres:') {
    throw new UserFacingError(`unsupported scheme "${url.protocol.replace(':', '')}" for the database`, 'Give the database as postgresql://user@host:5432/database.', 'usage', 'invalid-database-url')
  }

  // A password holding an unencoded '/', '?' or '#' ends the host there, and what follows, password
  // and all, is taken for the database, the query or a fragment (postgresql://u:2024/Spring@db/orthanc:
  // the host "u", the port 2024), to be shown as the database's name. An '@' there is refused
  // (but in ?password=, which is the password's own place).
  const query = url.search.slice(1).split('&').filter((parameter) => !parameter.startsWith('password='))
  if (`${url.pathname}${query.join('&')}${url.hash}`.includes('@')) {
    throw new UserFacingError(
      `not a PostgreSQL URL: an '@' after the host (${shownPostgresUrl(input)}): a password holding '/', '?' or '#' ends the host there`,
      'Percent-encode a \'/\', \'?\', \'#\' or \'@\' in the password (%2F, %3F, %23, %40), or give the password with --postgres-password-file or in PGPASSWORD.',
      'usage',
      'invalid-database-url',
    )
  }

  // libpq takes the password from the query too (?password=): a secret from here on, as the URL's.
  const queryPassword = url.searchParams.get('password') || undefined
  const user = decodeUrlPart(url.username, 'user name') || undefined
  const database = decodeUrlPart(url.pathname.replace(/^\//, ''), 'database name') || undefined
  const host = url.searchParams.get('host') ?? (url.hostname.replace(/^\[(.*)\]$/, '$1') || 'localhost')
  const port = url.port === '' ? 5432 : Number(url.port)
  let password = decodeUrlPart(url.password, 'password') || queryPassword
  if (password === undefined && options.passwordFile !== undefined) {
    try {
      password = readSmallFile(options.passwordFile, CREDENTIAL_FILE_BYTES).toString('utf8').replace(/\r?\n$/, '')
    } catch (error) {
      throw new CredentialFileError(options.passwordFile, 'password file', error)
    }
  }

  const sslmode = url.searchParams.get('sslmode')
  const ssl = sslmode === 'require' || sslmode === 'prefer' || sslmode === 'no-verify' ? {rejectUnauthorized: false} : sslmode === 'verify-ca' || sslmode === 'verify-full' ? true : false
  return {
    display: `postgresql://${user === undefined ? '' : `${encodeURIComponent(user)}@`}${url.host || host}${url.pathname}`,
    host,
    port,
    user,
    database,
    password: password === undefined ? undefined : new Secret(password),
    ssl,
  }
}

/**
 * A PostgreSQL URL as an error may show it: no user information (a password may hold '/' or
 * '@', so all before the last '@'), and no query string or fragment (`?password=`).
 */
function shownPostgresUrl(input: string): string {
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(input)?.[0] ?? ''
  const rest = input.slice(scheme.length)
  return scheme + rest.slice(rest.lastIndexOf('@') + 1).replace(/[?#].*$/s, '')
}

/** A part of a PostgreSQL URL, percent-escapes decoded; one that is not an escape (`50%zz`) is refused, as libpq refuses it, and not shown. */
function decodeUrlPart(text: string, what: string): string {
  try {
    return decodeURIComponent(text)
  } catch {
    throw new UserFacingError(`the PostgreSQL URL's ${what} holds a '%' that begins no percent-escape`, `Write a '%' in the ${what} as %25${what === 'password' ? ', or give the password with --postgres-password-file or in PGPASSWORD' : ''}.`, 'usage', 'invalid-database-url')
  }
}

export interface PostgresRecovery {
  index: OrthancIndex
  store: RecoveryStore
}

/**
 * Opens the PostgreSQL database of a stopped Orthanc that used the PostgreSQL index plugin, for
 * reading only: one READ ONLY transaction at REPEATABLE READ, so every query sees the same state
 * and nothing can be written. The files come from the storage plugin's large objects (table
 * StorageArea: uuid, content oid, type), or from `storageFolder` when the server kept them on disk.
 */
export async function openPostgresRecovery(source: PostgresSource, options: {storageFolder?: string} = {}): Promise<PostgresRecovery> {
  const {default: postgres} = await import('pg')
  const client = new postgres.Client({
    host: source.host,
    port: source.port,
    user: source.user,
    database: source.database,
    // A function keeps the value out of the client's enumerable configuration.
    ...(source.password === undefined ? {} : {password: () => source.password!.reveal()}),
    ssl: source.ssl,
    application_name: 'orthanc-replicate recovery',
    connectionTimeoutMillis: 30_000,
  })
  // An idle connection that breaks must not crash the process: queries report it.
  client.on('error', () => undefined)
  try {
    await client.connect()
  } catch (error) {
    await client.end().catch(() => undefined)
    throw connectionFailure(error, source)
  }

  const close = async () => {
    await client.query('ROLLBACK').catch(() => undefined)
    await client.end().catch(() => undefined)
  }
  try {
    await client.query('BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY')
    // One connection, one transaction: its queries one after the other, as the protocol has them
    // (the units read large objects at once; pg queues them itself, and warns it will stop).
    let queue: Promise<unknown> = Promise.resolve()
    const connection: SqlConnection = {
      kind: 'postgresql',
      all(sql: string, params: unknown[] = []): Promise<Row[]> {
        let index = 0
        const text = sql.replace(/\?/g, () => `$${++index}`)
        const query = queue.then(async () => {
          try {
            return (await client.query(text, params)).rows as Row[]
          } catch (error) {
            throw queryFailure(error, source)
          }
        })
        queue = query.catch(() => undefined)
        return query
      },
    }
    const index = await SqlIndex.open(connection, source.display, close)
    if (options.storageFolder !== undefined) return {index, store: new FolderStore(options.storageFolder)}
    const [storageArea] = await connection.all("SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = current_schema() AND lower(table_name) = 'storagearea'")
    if (Number(storageArea?.n) === 0) {
      await close()
      throw new UserFacingError(`${source.display} has no StorageArea table: that server kept its files in a folder`, 'Give its StorageDirectory as PATH beside --from-postgres.', 'usage', 'no-storage-area')
    }
    return {index, store: new LargeObjectStore(connection, source.display)}
  } catch (error) {
    await close()
    throw error
  }
}

/** Large objects are read this much at a time: a DICOM file of several GB never sits in one query's answer. */
const CHUNK = 8 * 1024 * 1024
const UNINDEXED_PAGE = 1000

/** The storage plugin's area: one large object per attachment, found by UUID in StorageArea. */
class LargeObjectStore implements RecoveryStore {
  constructor(private readonly connection: SqlConnection, private readonly display: string) {}

  locate(uuid: string): string {
    return `${this.display} large object ${uuid}`
  }

  async read(uuid: string, expectedSize: number): Promise<StoredRead> {
    const oid = await this.oidOf(uuid)
    if (oid === undefined) return {state: 'missing'}
    const content = await this.readLargeObject(oid, expectedSize)
    if (content.larger) return {state: 'size', size: expectedSize, larger: true}
    if (content.bytes.length !== expectedSize) return {state: 'size', size: content.bytes.length}
    return {state: 'bytes', bytes: content.bytes}
  }

  async *unindexed(_index: OrthancIndex, _events: SourceEvents, signal?: AbortSignal): AsyncGenerator<UnindexedEntry> {
    let after = ''
    for (;;) {
      signal?.throwIfAborted()
      const rows = await this.connection.all(
        'SELECT s.uuid AS uuid FROM StorageArea AS s WHERE s.uuid > ? AND NOT EXISTS (SELECT 1 FROM AttachedFiles AS a WHERE a.uuid = s.uuid)'
        + ` ORDER BY s.uuid LIMIT ${UNINDEXED_PAGE}`,
        [after],
      )
      if (rows.length === 0) return
      after = String(rows.at(-1)!.uuid)
      for (const row of rows) {
        const uuid = String(row.uuid)
        yield {
          location: this.locate(uuid),
          read: async () => {
            const oid = await this.oidOf(uuid)
            const content = oid === undefined ? undefined : await this.readLargeObject(oid, bufferConstants.MAX_LENGTH)
            return content === undefined || content.larger ? undefined : content.bytes
          },
        }
      }
    }
  }

  private async oidOf(uuid: string): Promise<number | undefined> {
    // A row whose large object is gone counts as missing, and keeps lo_get from aborting the transaction.
    const [row] = await this.connection.all(
      'SELECT s.content AS oid FROM StorageArea AS s WHERE s.uuid = ? AND EXISTS (SELECT 1 FROM pg_largeobject_metadata AS m WHERE m.oid = s.content)',
      [uuid],
    )
    return row === undefined ? undefined : Number(row.oid)
  }

  /** Reads at most `limit` bytes, and says whether there are more: a larger object is never read whole. */
  private async readLargeObject(oid: number, limit: number): Promise<{bytes: Buffer; larger: boolean}> {
    const chunks: Buffer[] = []
    let total = 0
    for (;;) {
      const wanted = Math.min(CHUNK, limit + 1 - total)
      const [row] = await this.connection.all('SELECT lo_get(CAST(? AS oid), CAST(? AS bigint), CAST(? AS integer)) AS data', [oid, total, wanted])
      const data = row?.data as Buffer
      chunks.push(data)
      total += data.length
      if (total > limit) return {bytes: Buffer.alloc(0), larger: true}
      if (data.length < wanted) return {bytes: Buffer.concat(chunks, total), larger: false}
    }
  }
}

/** The pg client's errors, in words that name the database (never with its password). */
function connectionFailure(error: unknown, source: PostgresSource): UserFacingError {
  const code = (error as {code?: string}).code
  const message = (error as Error).message
  if (code === '28P01' || code === '28000') {
    return new UserFacingError(`${source.display} refused the credentials: ${message}`, 'Give the password in the URL, with --postgres-password-file, or in PGPASSWORD.', 'authentication', 'database-authentication')
  }
  if (code === '3D000') return new UserFacingError(`${source.display}: ${message}`, 'Check the database name: the one in the Orthanc configuration\'s PostgreSQL section.', 'usage', 'no-such-database')
  return new UserFacingError(`cannot connect to ${source.display}: ${message}`, 'Check that PostgreSQL runs and accepts connections from here, and the host and port in the URL.', 'unreachable', 'database-unreachable')
}

function queryFailure(error: unknown, source: PostgresSource): unknown {
  if (error instanceof UserFacingError) return error
  const code = (error as {code?: string}).code
  if (code === '42501') return new UserFacingError(`${source.display}: ${(error as Error).message}`, 'Connect as the user Orthanc used (it owns the tables and large objects), or one that may read them.', 'authentication', 'database-permission')
  if (typeof code === 'string') return new UserFacingError(`${source.display}: ${(error as Error).message}`, 'The database is not the index of a stopped Orthanc, or it went away; check it, then run the same command again.', 'bad-input', 'database-error')
  return error
}
