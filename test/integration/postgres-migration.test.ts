import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import type {FixtureRecord} from '../../fixtures/generate.js'
import {parseJson, runCli} from '../helpers/cli.js'
import {makeCorpus} from '../helpers/corpus.js'
import {instanceMd5s, type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'
import {orthancPostgresConfig, type PostgresServer, startPostgres} from '../helpers/postgres.js'

/**
 * The Orthanc Book's file-copy route cannot migrate a server whose files live in PostgreSQL;
 * the REST route works whatever the back-ends, in both directions.
 */
describe('migration between database back-ends', () => {
  let pg: PostgresServer
  let work: string
  let corpus: FixtureRecord[]

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'pg-migration-'))
    corpus = await makeCorpus(join(work, 'fixtures'))
    pg = await startPostgres()
    await pg.createDatabase('source_db')
    await pg.createDatabase('target_db')
  })
  afterAll(async () => {
    await pg?.dispose()
    await rm(work, {recursive: true, force: true})
  })

  const migrate = async (from: OrthancServer, to: OrthancServer) => {
    const result = await runCli(['sync', '--source', from.url, '--target', to.url, '--json'])
    expect(result.code, result.stderr).toBe(0)
    expect(parseJson<{transferred: number; failed: number}>(result)).toMatchObject({transferred: corpus.length, failed: 0})
    expect(await instanceMd5s(to)).toEqual(await instanceMd5s(from))
    const diff = await runCli(['diff', '--source', from.url, '--target', to.url, '--json'])
    expect(diff.code, diff.stdout).toBe(0)
  }

  it('from PostgreSQL (index and storage) to SQLite', async () => {
    const source = await startOrthanc({name: 'on-postgres', extra: orthancPostgresConfig(pg, 'source_db')})
    const target = await startOrthanc({name: 'on-sqlite'})
    try {
      const system = await source.json<{DatabaseBackendPlugin: string | null; StorageAreaPlugin: string | null}>('/system')
      expect(system.DatabaseBackendPlugin).toMatch(/PostgreSQL/i)
      expect(system.StorageAreaPlugin).toMatch(/PostgreSQL/i)
      await uploadFiles(source, corpus.map((record) => record.path))
      const info = parseJson<{databaseBackend: string; storageBackend: string}>(await runCli(['info', '--server', source.url, '--json']))
      expect(info.databaseBackend).toMatch(/PostgreSQL/i)
      await migrate(source, target)
    } finally {
      await Promise.all([source.dispose(), target.dispose()])
    }
  })

  it('from SQLite to PostgreSQL', async () => {
    const source = await startOrthanc({name: 'on-sqlite'})
    const target = await startOrthanc({name: 'on-postgres', extra: orthancPostgresConfig(pg, 'target_db')})
    try {
      await uploadFiles(source, corpus.map((record) => record.path))
      await migrate(source, target)
    } finally {
      await Promise.all([source.dispose(), target.dispose()])
    }
  })
})
