import {UserFacingError} from '../errors.js'
import type {IndexDescription, IndexedAttachment, IndexedInstance, OrthancIndex, ResourceLevel, ResourceSideData} from './index-model.js'
import {FIRST_USER_CONTENT_TYPE, FIRST_USER_METADATA_TYPE} from './index-model.js'

export type Row = Record<string, unknown>

/** One read-only connection to an index database; `?` placeholders, lower-case column aliases. */
export interface SqlConnection {
  readonly kind: 'sqlite' | 'postgresql'
  all(sql: string, params?: unknown[]): Promise<Row[]>
}

/** The parts of the schema that differ between Orthanc versions and back-ends. */
export interface IndexSchema {
  /** AttachedFiles' MD5 columns: uncompressedMD5 in Orthanc's SQLite, uncompressedHash in the PostgreSQL plugin. */
  md5Columns: {compressed: string; uncompressed: string}
  /** The Labels table (Orthanc 1.12 and later, and recent PostgreSQL plugins). */
  labels: boolean
  /** resourceType of each level: 1-4 in Orthanc's SQLite, 0-3 in the plugins. */
  resourceTypes: Record<ResourceLevel, number>
  /**
   * Whether the index tells which patients are protected from recycling: those missing from
   * PatientRecyclingOrder, where Orthanc enters every patient it stores and takes out those it
   * protects. Only an index with rows in it is read so: an empty one may be a table nobody kept
   * (then no protection is carried, rather than every patient protected).
   */
  protection: boolean
  description: string
}

/** Orthanc's GlobalProperty_DatabaseSchemaVersion, and the one version this reader knows. */
const SCHEMA_VERSION_PROPERTY = 1
const KNOWN_SCHEMA_VERSION = '6'

const REQUIRED_COLUMNS: Record<string, string[]> = {
  globalproperties: ['property', 'value'],
  resources: ['internalid', 'resourcetype', 'publicid', 'parentid'],
  attachedfiles: ['id', 'filetype', 'uuid', 'compressedsize', 'uncompressedsize', 'compressiontype'],
  metadata: ['id', 'type', 'value'],
}

/**
 * Checks that a database is an Orthanc index this reader understands, and finds out which
 * variant it is. Schema version 6 is the one of every Orthanc from 0.9.5 to 1.12 (SQLite:
 * OrthancServer/Sources/Database/PrepareDatabase.sql; PostgreSQL plugin: PostgreSQL/Plugins/SQL/
 * PrepareIndex.sql of orthanc-databases); later additions are optional columns and tables
 * (Labels in 1.12.0, revision and customData in 1.12.8, revision in the plugins from 4.0), and
 * any column this reader does not know is left alone. Anything else is refused, never guessed.
 */
export async function inspectSchema(connection: SqlConnection, source: string): Promise<IndexSchema> {
  const columns = await tableColumns(connection)
  const refuse = (what: string, suggestion: string) => new UserFacingError(`${source}: ${what}`, suggestion, 'bad-input', 'unknown-index-schema')
  for (const [table, required] of Object.entries(REQUIRED_COLUMNS)) {
    const present = columns.get(table)
    if (present === undefined) {
      const hint = connection.kind === 'sqlite'
        ? 'Give the index of a stopped Orthanc (IndexDirectory/index). If the server was killed, its last changes are in index-wal: keep that file beside index.'
        : 'Give the database the Orthanc PostgreSQL plugin used as its index.'
      throw refuse(`not an Orthanc index (no ${table} table)`, hint)
    }
    const missing = required.filter((column) => !present.has(column))
    if (missing.length > 0) throw refuse(`table ${table} lacks ${missing.join(', ')}: not an Orthanc index schema this tool knows`, 'Report the Orthanc version that wrote this index.')
  }

  const [version] = await connection.all('SELECT value FROM GlobalProperties WHERE property = ?', [SCHEMA_VERSION_PROPERTY])
  const found = version === undefined ? 'none' : String(version.value).trim()
  if (found !== KNOWN_SCHEMA_VERSION) {
    throw refuse(`Orthanc database schema version ${found}; this tool reads version ${KNOWN_SCHEMA_VERSION} (Orthanc 0.9.5 to 1.12)`, 'Recover through a running Orthanc that reads this schema (sync), or report the version that wrote it.')
  }

  const attached = columns.get('attachedfiles')!
  const md5Columns = attached.has('uncompressedmd5') && attached.has('compressedmd5')
    ? {compressed: 'compressedMD5', uncompressed: 'uncompressedMD5'}
    : attached.has('uncompressedhash') && attached.has('compressedhash') ? {compressed: 'compressedHash', uncompressed: 'uncompressedHash'} : undefined
  if (md5Columns === undefined) throw refuse('table attachedfiles has no MD5 columns (uncompressedMD5 or uncompressedHash)', 'Report the Orthanc version that wrote this index.')

  const labelColumns = columns.get('labels')
  const labels = labelColumns !== undefined && labelColumns.has('id') && labelColumns.has('label')

  // Patients are the resources without a parent, and the levels below follow in order.
  const roots = await connection.all('SELECT DISTINCT resourceType AS type FROM Resources WHERE parentId IS NULL')
  if (roots.length > 1) throw refuse(`resources of types ${roots.map((row) => row.type).join(', ')} have no parent: not an Orthanc hierarchy`, 'The index is damaged; recover without it (--ignore-index).')
  const patient = roots.length === 1 ? Number(roots[0]!.type) : connection.kind === 'sqlite' ? 1 : 0
  const resourceTypes = {patient, study: patient + 1, series: patient + 2, instance: patient + 3}

  const recycling = columns.get('patientrecyclingorder')
  const protection = recycling !== undefined && recycling.has('patientid') && (await connection.all('SELECT 1 AS found FROM PatientRecyclingOrder LIMIT 1')).length > 0

  const known = new Set(['uncompressedmd5', 'compressedmd5', 'uncompressedhash', 'compressedhash', ...REQUIRED_COLUMNS.attachedfiles!])
  const extras = [...attached].filter((column) => !known.has(column))
  if (columns.get('metadata')!.has('revision')) extras.push('metadata revisions')
  const description = [`Orthanc database schema ${KNOWN_SCHEMA_VERSION}`, labels ? 'with labels' : 'without labels', ...extras.map((column) => `attachment ${column}`)].join(', ')
  return {md5Columns, labels, resourceTypes, protection, description}
}

async function tableColumns(connection: SqlConnection): Promise<Map<string, Set<string>>> {
  const rows = connection.kind === 'sqlite'
    ? await connection.all("SELECT m.name AS table_name, p.name AS column_name FROM sqlite_master AS m, pragma_table_info(m.name) AS p WHERE m.type = 'table'")
    : await connection.all('SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()')
  const tables = new Map<string, Set<string>>()
  for (const row of rows) {
    const table = String(row.table_name).toLowerCase()
    const set = tables.get(table) ?? new Set<string>()
    set.add(String(row.column_name).toLowerCase())
    tables.set(table, set)
  }
  return tables
}

/** Instances read per query: bounded memory whatever the size of the index. */
const PAGE = 500
const UUID_PAGE = 5000

/** An Orthanc index read through SQL, the same way whatever the database. */
export class SqlIndex implements OrthancIndex {
  private constructor(
    private readonly connection: SqlConnection,
    private readonly schema: IndexSchema,
    readonly description: IndexDescription,
    private readonly onClose: () => Promise<void>,
  ) {}

  static async open(connection: SqlConnection, source: string, onClose: () => Promise<void>, lastWrittenAt?: number): Promise<SqlIndex> {
    const schema = await inspectSchema(connection, source)
    const [count] = await connection.all('SELECT COUNT(*) AS n FROM Resources WHERE resourceType = ?', [schema.resourceTypes.instance])
    return new SqlIndex(connection, schema, {source, schema: schema.description, instances: Number(count?.n ?? 0), ...(lastWrittenAt === undefined ? {} : {lastWrittenAt})}, onClose)
  }

  async *instanceBatches(signal?: AbortSignal): AsyncGenerator<IndexedInstance[]> {
    let after = -1
    for (;;) {
      signal?.throwIfAborted()
      // Keyset paging on the primary key, in Orthanc's own order of arrival. Outer joins: an
      // instance whose parents are gone (a damaged index) is still recovered, by its own ID.
      const rows = await this.connection.all(
        'SELECT i.internalId AS internal_id, i.publicId AS instance_id, se.publicId AS series_id, st.publicId AS study_id, p.publicId AS patient_id'
        + ' FROM Resources AS i LEFT JOIN Resources AS se ON se.internalId = i.parentId LEFT JOIN Resources AS st ON st.internalId = se.parentId'
        + ' LEFT JOIN Resources AS p ON p.internalId = st.parentId'
        + ` WHERE i.resourceType = ? AND i.internalId > ? ORDER BY i.internalId LIMIT ${PAGE}`,
        [this.schema.resourceTypes.instance, after],
      )
      if (rows.length === 0) return
      after = Number(rows.at(-1)!.internal_id)
      const ids = rows.map((row) => Number(row.internal_id))
      const [attachments, metadata, labels] = [await this.attachmentsOf(ids), await this.metadataOf(ids), await this.labelsOf(ids)]
      yield rows.map((row) => {
        const id = Number(row.internal_id)
        return {
          id: String(row.instance_id),
          seriesId: textOrEmpty(row.series_id),
          studyId: textOrEmpty(row.study_id),
          patientId: textOrEmpty(row.patient_id),
          attachments: attachments.get(id) ?? [],
          metadata: new Map((metadata.get(id) ?? []).map(({type, value}) => [type, value])),
          labels: labels.get(id) ?? [],
        }
      })
    }
  }

  async *resourceSideData(signal?: AbortSignal): AsyncGenerator<ResourceSideData> {
    const {resourceTypes} = this.schema
    const levels = new Map<number, ResourceSideData['level']>([[resourceTypes.patient, 'patient'], [resourceTypes.study, 'study'], [resourceTypes.series, 'series']])
    const labelled = this.schema.labels ? ' OR EXISTS (SELECT 1 FROM Labels AS l WHERE l.id = r.internalId)' : ''
    // A patient missing from the recycling order is protected (see IndexSchema.protection).
    const isProtected = this.schema.protection
      ? `(r.resourceType = ${resourceTypes.patient} AND NOT EXISTS (SELECT 1 FROM PatientRecyclingOrder AS p WHERE p.patientId = r.internalId))`
      : '(1 = 0)'
    let after = -1
    for (;;) {
      signal?.throwIfAborted()
      const rows = await this.connection.all(
        `SELECT r.internalId AS internal_id, r.resourceType AS type, r.publicId AS public_id, CASE WHEN ${isProtected} THEN 1 ELSE 0 END AS protected_flag FROM Resources AS r`
        + ' WHERE r.resourceType <> ? AND r.internalId > ? AND (EXISTS (SELECT 1 FROM Metadata AS m WHERE m.id = r.internalId AND m.type >= ?)'
        + ` OR EXISTS (SELECT 1 FROM AttachedFiles AS a WHERE a.id = r.internalId AND a.fileType >= ?)${labelled} OR ${isProtected})`
        + ` ORDER BY r.internalId LIMIT ${PAGE}`,
        [resourceTypes.instance, after, FIRST_USER_METADATA_TYPE, FIRST_USER_CONTENT_TYPE],
      )
      if (rows.length === 0) return
      after = Number(rows.at(-1)!.internal_id)
      const ids = rows.map((row) => Number(row.internal_id))
      const [attachments, metadata, labels] = [await this.attachmentsOf(ids), await this.metadataOf(ids), await this.labelsOf(ids)]
      for (const row of rows) {
        const id = Number(row.internal_id)
        const level = levels.get(Number(row.type))
        if (level === undefined) continue
        yield {
          level,
          id: String(row.public_id),
          userMetadata: Object.fromEntries((metadata.get(id) ?? []).filter(({type}) => type >= FIRST_USER_METADATA_TYPE).map(({type, value}) => [String(type), value])),
          labels: labels.get(id) ?? [],
          attachments: (attachments.get(id) ?? []).filter((attachment) => attachment.contentType >= FIRST_USER_CONTENT_TYPE),
          ...(Number(row.protected_flag) === 1 ? {protected: true as const} : {}),
        }
      }
    }
  }

  async *attachmentUuids(signal?: AbortSignal): AsyncGenerator<string> {
    let after = {id: -1, type: -1}
    for (;;) {
      signal?.throwIfAborted()
      const rows = await this.connection.all(
        `SELECT id, fileType AS type, uuid FROM AttachedFiles WHERE id > ? OR (id = ? AND fileType > ?) ORDER BY id, fileType LIMIT ${UUID_PAGE}`,
        [after.id, after.id, after.type],
      )
      if (rows.length === 0) return
      const last = rows.at(-1)!
      after = {id: Number(last.id), type: Number(last.type)}
      for (const row of rows) yield String(row.uuid)
    }
  }

  async hasInstance(id: string): Promise<boolean> {
    return (await this.connection.all('SELECT 1 AS found FROM Resources WHERE publicId = ? AND resourceType = ? LIMIT 1', [id, this.schema.resourceTypes.instance])).length > 0
  }

  async close(): Promise<void> {
    await this.onClose()
  }

  private async attachmentsOf(ids: number[]): Promise<Map<number, IndexedAttachment[]>> {
    const {compressed, uncompressed} = this.schema.md5Columns
    const rows = await this.connection.all(
      'SELECT id AS internal_id, fileType AS content_type, uuid, compressionType AS compression, compressedSize AS compressed_size,'
      + ` uncompressedSize AS uncompressed_size, ${compressed} AS compressed_md5, ${uncompressed} AS uncompressed_md5`
      + ` FROM AttachedFiles WHERE id IN (${placeholders(ids)})`,
      ids,
    )
    return groupBy(rows, (row): IndexedAttachment => ({
      contentType: Number(row.content_type),
      uuid: String(row.uuid),
      compression: Number(row.compression),
      compressedSize: Number(row.compressed_size),
      compressedMd5: md5Text(row.compressed_md5),
      uncompressedSize: Number(row.uncompressed_size),
      uncompressedMd5: md5Text(row.uncompressed_md5),
    }))
  }

  private async metadataOf(ids: number[]): Promise<Map<number, Array<{type: number; value: string}>>> {
    const rows = await this.connection.all(`SELECT id AS internal_id, type, value FROM Metadata WHERE id IN (${placeholders(ids)})`, ids)
    return groupBy(rows, (row) => ({type: Number(row.type), value: row.value === null ? '' : String(row.value)}))
  }

  private async labelsOf(ids: number[]): Promise<Map<number, string[]>> {
    if (!this.schema.labels) return new Map()
    const rows = await this.connection.all(`SELECT id AS internal_id, label FROM Labels WHERE id IN (${placeholders(ids)}) ORDER BY label`, ids)
    return groupBy(rows, (row) => String(row.label))
  }
}

function placeholders(values: unknown[]): string {
  return values.map(() => '?').join(', ')
}

function groupBy<T>(rows: Row[], map: (row: Row) => T): Map<number, T[]> {
  const groups = new Map<number, T[]>()
  for (const row of rows) {
    const id = Number(row.internal_id)
    const group = groups.get(id) ?? []
    group.push(map(row))
    groups.set(id, group)
  }
  return groups
}

function textOrEmpty(value: unknown): string {
  return value === null || value === undefined ? '' : String(value)
}

function md5Text(value: unknown): string {
  return typeof value === 'string' ? value.trim().toLowerCase() : ''
}
