import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import pg from 'pg'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {type FixtureRecord, generateFramingSet} from '../../fixtures/generate.js'
import {type CliResult, parseJson, runCli} from '../helpers/cli.js'
import {makeCorpus} from '../helpers/corpus.js'
import {instanceMd5s, type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'
import {orthancPostgresConfig, type PostgresServer, startPostgres} from '../helpers/postgres.js'
import {resolvePostgresSource} from '../../src/recovery/postgres-index.js'
import {recoverStoppedServer} from '../../src/recovery/recover-server.js'

interface ImportJson {
  transferred: number
  skipped: number
  failed: number
  failures: Array<{id: string; path?: string; kind: string; reason: string}>
  problems: unknown[]
  recovery: Array<{route: string; source: string; candidates: number; recovered: number; failed: number; attachmentsFailed: number; notInIndex: number; index?: {schema: string}}>
}

const userConfig = {userMetadata: {Reviewed: 1024}, userContentType: {Report: 1030}}
// The reading user's password: it must never show, whatever happens.
const PASSWORD = 'Rec0very-S3cret-pw'
const READER = 'recovery_reader'

/**
 * A server whose index and files both lived in PostgreSQL (the Orthanc PostgreSQL plugins, as
 * Debian packages them), stopped. There is no storage folder to copy: the tool reads the index
 * tables and the storage large objects, as a user that may only read them.
 */
describe('recovery of a stopped server whose files live in PostgreSQL', () => {
  let work: string
  let database: PostgresServer
  let corpus: FixtureRecord[]
  let sourceMd5s: Map<string, string>
  let annotated: string
  let target: OrthancServer
  let first: CliResult
  let parents: Array<[string, string]>

  const url = (password = PASSWORD, port = database.port) => `postgresql://${READER}:${password}@${database.host}:${port}/dead_db`
  const superuser = () => new pg.Client({host: database.host, port: database.port, user: database.user, database: 'dead_db'})
  const recoverInto = (server: OrthancServer, ...args: string[]) => runCli(['import', '--target', server.url, '--no-receipt', ...args])
  const expectNoPassword = (result: CliResult) => {
    expect(result.stdout).not.toContain(PASSWORD)
    expect(result.stderr).not.toContain(PASSWORD)
  }

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'recovery-postgres-'))
    corpus = [...await makeCorpus(join(work, 'fixtures')), ...await generateFramingSet(join(work, 'framing'))]
    database = await startPostgres()
    await database.createDatabase('dead_db')
    const dead = await startOrthanc({name: 'on-postgres', storageCompression: true, ...userConfig, extra: orthancPostgresConfig(database, 'dead_db')})
    try {
      const ids = await uploadFiles(dead, corpus.map((record) => record.path))
      annotated = ids[1]!
      expect((await dead.api(`/instances/${annotated}/metadata/Reviewed`, {method: 'PUT', body: 'second-read-ok'})).ok).toBe(true)
      expect((await dead.api(`/instances/${annotated}/attachments/Report`, {method: 'PUT', body: 'report body'})).ok).toBe(true)
      // Of its series, study and patient too: read from their large objects when the target needs them.
      const instance = await dead.json<{ParentSeries: string}>(`/instances/${annotated}`)
      const series = await dead.json<{ParentStudy: string}>(`/series/${instance.ParentSeries}`)
      const study = await dead.json<{ParentPatient: string}>(`/studies/${series.ParentStudy}`)
      parents = [['series', instance.ParentSeries], ['studies', series.ParentStudy], ['patients', study.ParentPatient]]
      for (const [level, id] of parents) expect((await dead.api(`/${level}/${id}/attachments/Report`, {method: 'PUT', body: `report of ${level}`})).ok).toBe(true)
      sourceMd5s = await instanceMd5s(dead)
    } finally {
      await dead.dispose()
    }

    // A user that may read the tables and the large objects, and nothing else, with a password.
    const admin = superuser()
    await admin.connect()
    try {
      await admin.query(`CREATE ROLE ${READER} LOGIN PASSWORD '${PASSWORD}'`)
      await admin.query(`GRANT SELECT ON ALL TABLES IN SCHEMA public TO ${READER}`)
      const objects = await admin.query('SELECT oid FROM pg_largeobject_metadata')
      for (const {oid} of objects.rows as Array<{oid: number}>) await admin.query(`GRANT SELECT ON LARGE OBJECT ${oid} TO ${READER}`)
      const hba = join(database.dir, 'data', 'pg_hba.conf')
      await writeFile(hba, `host all ${READER} 127.0.0.1/32 scram-sha-256\n${await readFile(hba, 'utf8')}`)
      await admin.query('SELECT pg_reload_conf()')
    } finally {
      await admin.end()
    }

    target = await startOrthanc({name: 'recovered-from-postgres', ...userConfig})
    first = await recoverInto(target, '--json', '--from-postgres', url())
  })

  afterAll(async () => {
    await target?.dispose()
    await database?.dispose()
    await rm(work, {recursive: true, force: true})
  })

  it('recovers every instance exactly: same IDs, same MD5s, user metadata and attachments', async () => {
    expect(first.code, first.stderr).toBe(0)
    const summary = parseJson<ImportJson>(first)
    expect(summary).toMatchObject({transferred: corpus.length, skipped: 0, failed: 0, problems: []})
    expect(summary.recovery).toEqual([expect.objectContaining({route: 'postgresql', candidates: corpus.length, recovered: corpus.length, failed: 0, notInIndex: 0})])
    expect(await instanceMd5s(target)).toEqual(sourceMd5s)
    expect(await (await target.api(`/instances/${annotated}/metadata/Reviewed`)).text()).toBe('second-read-ok')
    expect(await (await target.api(`/instances/${annotated}/attachments/Report/data`)).text()).toBe('report body')
    for (const [level, id] of parents) expect(await (await target.api(`/${level}/${id}/attachments/Report/data`)).text()).toBe(`report of ${level}`)
  })

  // The connection was closed once the last unit was read, while the uploads of the last units
  // still read their parents' attachments from it: those failed, at random ("Connection terminated").
  it('the database stays open until the job is over: units read after the last one was given still read their parents\' attachments', async () => {
    const problems: unknown[] = []
    const events = {onSkip: () => {}, onProblem: (problem: unknown) => problems.push(problem), onFailed: (problem: unknown) => problems.push(problem)}
    const {units, close} = recoverStoppedServer({kind: 'postgres', path: url(), source: resolvePostgresSource(url())}, events, {includeUnindexed: false})
    try {
      const all = []
      for await (const unit of units) all.push(unit)
      const read: string[] = []
      for (const unit of all) {
        for (const resource of (await unit.resources) ?? []) {
          for (const attachment of resource.record.attachments) {
            const {attachments} = resource
            const bytes = attachments instanceof Map ? attachments.get(attachment.contentType) : await attachments(attachment.contentType)
            read.push(bytes?.toString() ?? 'unread')
          }
        }
      }
      // Each instance of the series carries its parents: read as often, each time whole.
      expect(new Set(read)).toEqual(new Set(parents.map(([level]) => `report of ${level}`)))
      expect(problems).toEqual([])
    } finally {
      await close()
    }
  })

  it('a second run transfers nothing', async () => {
    const again = await recoverInto(target, '--json', '--from-postgres', url())
    expect(again.code, again.stderr).toBe(0)
    expect(parseJson<ImportJson>(again)).toMatchObject({transferred: 0, skipped: corpus.length, failed: 0})
  })

  it('never shows the password: not in the summary, not in errors, whether it comes from the URL, a file or PGPASSWORD', async () => {
    expectNoPassword(first)
    expect(parseJson<ImportJson>(first).recovery[0]!.source).toBe(`postgresql://${READER}@${database.host}:${database.port}/dead_db`)

    const passwordFile = join(work, 'pg-password')
    await writeFile(passwordFile, `${PASSWORD}\n`, {mode: 0o600})
    const withoutPassword = `postgresql://${READER}@${database.host}:${database.port}/dead_db`
    const fromFile = await recoverInto(target, '--dry-run', '--from-postgres', withoutPassword, '--postgres-password-file', passwordFile)
    expect(fromFile.code, fromFile.stderr).toBe(0)
    const fromEnv = await runCli(['import', '--target', target.url, '--no-receipt', '--dry-run', '--from-postgres', withoutPassword], {env: {PGPASSWORD: PASSWORD}})
    expect(fromEnv.code, fromEnv.stderr).toBe(0)

    const refused = await recoverInto(target, '--from-postgres', url('not-the-password'))
    expect(refused.code).toBe(5)
    expect(refused.stderr).toMatch(/refused the credentials/)
    const unreachable = await recoverInto(target, '--json', '--from-postgres', url(PASSWORD, 1))
    expect(unreachable.code).toBe(4)
    expect(unreachable.stdout).toMatch(/cannot connect to postgresql:\/\/recovery_reader@127\.0\.0\.1:1\/dead_db/)
    const unknownDatabase = await recoverInto(target, '--from-postgres', url().replace('/dead_db', '/no_such_db'))
    expect(unknownDatabase.code).toBe(2)
    for (const result of [fromFile, fromEnv, refused, unreachable, unknownDatabase]) {
      expectNoPassword(result)
      expect(result.stderr).not.toMatch(/\n\s+at /)
    }
  })

  it('leaves the database as Orthanc left it: the server starts on it again with every instance', async () => {
    const restarted = await startOrthanc({name: 'back-on-postgres', ...userConfig, extra: orthancPostgresConfig(database, 'dead_db')})
    try {
      expect(new Set(await restarted.json<string[]>('/instances'))).toEqual(new Set(sourceMd5s.keys()))
    } finally {
      await restarted.dispose()
    }
  })

  it('reads the schema of later plugins too: labels, customData (as PrepareIndex.sql of orthanc-databases creates them)', async () => {
    const admin = superuser()
    await admin.connect()
    try {
      await admin.query('ALTER TABLE AttachedFiles ADD COLUMN customData BYTEA')
      await admin.query('CREATE TABLE Labels(id BIGINT REFERENCES Resources(internalId) ON DELETE CASCADE, label TEXT, PRIMARY KEY(id, label))')
      await admin.query(`GRANT SELECT ON Labels TO ${READER}`)
      await admin.query("INSERT INTO Labels SELECT internalId, 'reviewed' FROM Resources WHERE publicId = $1", [annotated])
      const fresh = await startOrthanc({name: 'labels-from-postgres', ...userConfig})
      try {
        const result = await recoverInto(fresh, '--json', '--from-postgres', url())
        expect(result.code, result.stderr).toBe(0)
        const summary = parseJson<ImportJson & {notCarried: Array<{level: string; kind: string; count: number}>}>(result)
        expect(summary.notCarried.filter((entry) => entry.kind === 'labels')).toEqual([expect.objectContaining({level: 'instance', count: 1})])
        expect(summary.recovery[0]!.index!.schema).toMatch(/with labels.*customdata/)
        expect(await instanceMd5s(fresh)).toEqual(sourceMd5s)
      } finally {
        await fresh.dispose()
      }
    } finally {
      await admin.query('DROP TABLE Labels')
      await admin.query('ALTER TABLE AttachedFiles DROP COLUMN customData')
      await admin.end()
    }
  })

  // Last: it damages the database.
  it('names the instance whose large object is gone, the one whose content changed, and a damaged user attachment: failed, exit 10', async () => {
    const ids = [...sourceMd5s.keys()].filter((id) => id !== annotated)
    const [gone, changed] = [ids[3]!, ids[5]!]
    const admin = superuser()
    await admin.connect()
    const uuidOf = async (id: string) => (await admin.query(
      'SELECT a.uuid FROM AttachedFiles a JOIN Resources r ON r.internalId = a.id WHERE r.publicId = $1 AND a.fileType = 1', [id],
    )).rows[0].uuid as string
    try {
      await admin.query('SELECT lo_unlink(content) FROM StorageArea WHERE uuid = $1', [await uuidOf(gone)])
      await admin.query("SELECT lo_put(content, 20, '\\xff00ff'::bytea) FROM StorageArea WHERE uuid = $1", [await uuidOf(changed)])
      // The annotated instance's Report attachment (type 1030): damaged, while its DICOM file is sound.
      await admin.query(
        "SELECT lo_put(s.content, 9, '\\x00'::bytea) FROM StorageArea s JOIN AttachedFiles a ON a.uuid = s.uuid JOIN Resources r ON r.internalId = a.id WHERE r.publicId = $1 AND a.fileType = 1030",
        [annotated],
      )
      // And its patient's, met through each of the patient's studies: named once, counted once.
      await admin.query(
        "SELECT lo_put(s.content, 9, '\\x00'::bytea) FROM StorageArea s JOIN AttachedFiles a ON a.uuid = s.uuid JOIN Resources r ON r.internalId = a.id WHERE r.publicId = $1 AND a.fileType = 1030",
        [parents[2]![1]],
      )
    } finally {
      await admin.end()
    }

    const damagedTarget = await startOrthanc({name: 'partly-recovered', ...userConfig})
    try {
      const result = await recoverInto(damagedTarget, '--json', '--from-postgres', url())
      expect(result.code).toBe(10)
      const summary = parseJson<ImportJson>(result)
      // Each instance in one count: the annotated one is on the target without its attachment, so failed, not also transferred.
      expect(summary).toMatchObject({transferred: corpus.length - 3, failed: 4})
      expect(summary.failures).toEqual(expect.arrayContaining([
        expect.objectContaining({id: gone, kind: 'missing'}),
        expect.objectContaining({id: changed, kind: 'checksum'}),
        expect.objectContaining({id: annotated, kind: 'missing', reason: expect.stringMatching(/without user attachment 1030 \(.*MD5/)}),
        expect.objectContaining({id: expect.stringMatching(/^patient of study .* attachment 1030$/), reason: expect.stringMatching(/of the patient not restored/)}),
      ]))
      expect(summary.failures).toHaveLength(4)
      expect(summary.recovery[0]).toMatchObject({failed: 3, attachmentsFailed: 2})
      // The instance itself is recovered, with its metadata; only the damaged attachment is not.
      expect(await (await damagedTarget.api(`/instances/${annotated}/metadata/Reviewed`)).text()).toBe('second-read-ok')
      expect((await damagedTarget.api(`/instances/${annotated}/attachments/Report/data`)).status).toBe(404)
      expectNoPassword(result)
      const onTarget = await instanceMd5s(damagedTarget)
      expect(onTarget).toEqual(new Map([...sourceMd5s].filter(([id]) => id !== gone && id !== changed)))
    } finally {
      await damagedTarget.dispose()
    }
  })
})
