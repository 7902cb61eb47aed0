import {realpathSync} from 'node:fs'
import {mkdtemp, readdir, readFile, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {type FixtureRecord, generateStudySet} from '../../fixtures/generate.js'
import {startOrthanc, type OrthancServer} from '../helpers/orthanc.js'
import {orthancPostgresConfig, orthancPostgresPlugins, startPostgres, type PostgresServer} from '../helpers/postgres.js'

interface SystemInfo {
  Version: string
  DatabaseBackendPlugin: string | null
  StorageAreaPlugin: string | null
  HasLabels?: boolean
}

describe('Orthanc on a real PostgreSQL', () => {
  let pg: PostgresServer | undefined
  let server: OrthancServer
  let server112: OrthancServer
  let fixtureDir: string | undefined
  let record: FixtureRecord

  beforeAll(async () => {
    fixtureDir = await mkdtemp(join(tmpdir(), 'postgres-harness-fixture-'))
    const records = await generateStudySet(fixtureDir, {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 1, pixelBytes: 4096})
    record = records[0]!
    pg = await startPostgres()
    await pg.createDatabase('orthanc')
    server = await startOrthanc({extra: orthancPostgresConfig(pg, 'orthanc')})
    await pg.createDatabase('orthanc112')
    server112 = await startOrthanc({version: '1.12', extra: orthancPostgresConfig(pg, 'orthanc112', '1.12')})
  })

  afterAll(async () => {
    // Orthanc first: it holds connections to the database.
    await server?.dispose()
    await server112?.dispose()
    await pg?.dispose()
    if (fixtureDir) await rm(fixtureDir, {recursive: true, force: true})
  })

  it('runs with the PostgreSQL index and storage plugins loaded', async () => {
    const plugins = orthancPostgresPlugins()
    const system = await server.json<SystemInfo>('/system')
    // Orthanc reports the file it loaded; Debian's plugin folder holds symlinks to versioned names.
    expect(system.DatabaseBackendPlugin).toBe(realpathSync(plugins.index))
    expect(system.StorageAreaPlugin).toBe(realpathSync(plugins.storage))
  })

  it('stores an instance and gives back the same bytes', async () => {
    const bytes = await readFile(record.path)
    const answer = await server.json<{ID: string; Status: string}>('/instances', {
      method: 'POST',
      body: bytes,
      headers: {'content-type': 'application/dicom'},
    })
    expect(answer.Status).toBe('Success')
    expect(answer.ID).toBe(record.orthancId)

    const response = await server.api(`/instances/${answer.ID}/file`)
    expect(response.status).toBe(200)
    expect(Buffer.from(await response.arrayBuffer()).equals(bytes)).toBe(true)
    // With the storage plugin on, nothing lands in the folder storage area.
    expect(await readdir(server.storageDir)).toEqual([])
  })

  it('keeps the instance when Orthanc restarts on the same database', async () => {
    await server.stop()
    await server.start()
    expect(await server.json<string[]>('/instances')).toEqual([record.orthancId])
    const response = await server.api(`/instances/${record.orthancId}/file`)
    expect(Buffer.from(await response.arrayBuffer()).equals(await readFile(record.path))).toBe(true)
  })

  it('runs Orthanc 1.12.7 with its own PostgreSQL plugins, labels included', async () => {
    const plugins = orthancPostgresPlugins('1.12')
    const system = await server112.json<SystemInfo>('/system')
    expect(system).toMatchObject({Version: '1.12.7', HasLabels: true})
    expect(system.DatabaseBackendPlugin).toBe(realpathSync(plugins.index))
    expect(system.StorageAreaPlugin).toBe(realpathSync(plugins.storage))

    const bytes = await readFile(record.path)
    const answer = await server112.json<{ID: string; ParentStudy: string}>('/instances', {method: 'POST', body: bytes, headers: {'content-type': 'application/dicom'}})
    expect(answer.ID).toBe(record.orthancId)
    expect((await server112.api(`/studies/${answer.ParentStudy}/labels/on-postgres`, {method: 'PUT'})).status).toBe(200)
    expect(await server112.json('/tools/labels')).toEqual(['on-postgres'])
    const response = await server112.api(`/instances/${answer.ID}/file`)
    expect(Buffer.from(await response.arrayBuffer()).equals(bytes)).toBe(true)
  })
})
