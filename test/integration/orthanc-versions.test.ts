import {createHash} from 'node:crypto'
import {mkdtemp, readFile, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {type FixtureRecord, generateAwkwardSet, generateStudySet} from '../../fixtures/generate.js'
import {availableOrthancVersions, type OrthancOptions, type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'

interface SystemInfo {
  Version: string
  ApiVersion: number
  DatabaseVersion: number
  HasLabels?: boolean
}

interface StudyInfo {
  ID: string
  Labels?: string[]
}

const USERS = {replicator: 'c0rrect-h0rse'}
const SERVER_OPTIONS: OrthancOptions = {users: USERS, userMetadata: {Note: 1100}, userContentType: {Report: 1100}}
const LEVELS = ['patients', 'studies', 'series', 'instances'] as const

function md5(bytes: Buffer): string {
  return createHash('md5').update(bytes).digest('hex')
}

async function text(server: OrthancServer, path: string): Promise<string> {
  const response = await server.api(path)
  expect(response.status, path).toBe(200)
  return response.text()
}

async function statusOf(server: OrthancServer, method: string, path: string, body?: string): Promise<number> {
  const response = await server.api(path, {method, body})
  await response.arrayBuffer()
  return response.status
}

describe('Orthanc versions the suite runs', () => {
  let fixtureDir: string
  let studySet: FixtureRecord[]
  let awkward: FixtureRecord[]
  let v110: OrthancServer
  let v112: OrthancServer

  beforeAll(async () => {
    fixtureDir = await mkdtemp(join(tmpdir(), 'orthanc-versions-'))
    studySet = await generateStudySet(join(fixtureDir, 'studies'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 2, pixelBytes: 4096, seed: 'versions'})
    awkward = await generateAwkwardSet(join(fixtureDir, 'awkward'), {largeBytes: 300_000, seed: 'versions'})
    ;[v110, v112] = await Promise.all([startOrthanc({...SERVER_OPTIONS, name: 'old'}), startOrthanc({...SERVER_OPTIONS, name: 'new', version: '1.12'})])
  })

  afterAll(async () => {
    await Promise.all([v110?.dispose(), v112?.dispose()])
    if (fixtureDir) await rm(fixtureDir, {recursive: true, force: true})
  })

  it('has both versions available, each answering with its own version', async () => {
    expect(availableOrthancVersions()).toEqual(['1.10', '1.12'])
    const [oldSystem, newSystem] = await Promise.all([v110.json<SystemInfo>('/system'), v112.json<SystemInfo>('/system')])
    expect(oldSystem).toMatchObject({Version: '1.10.1', ApiVersion: 16, DatabaseVersion: 6})
    expect(oldSystem.HasLabels).toBeUndefined()
    expect(newSystem).toMatchObject({Version: '1.12.7', ApiVersion: 27, DatabaseVersion: 6, HasLabels: true})
    expect([v110.version, v112.version]).toEqual(['1.10', '1.12'])
  })

  it('requires authentication on both', async () => {
    for (const server of [v110, v112]) {
      const response = await fetch(`${server.url}/system`)
      await response.arrayBuffer()
      expect(response.status).toBe(401)
    }
  })

  it('stores every fixture on 1.12.7 and gives back the same bytes', async () => {
    const records = [...studySet, ...awkward]
    const ids = await uploadFiles(v112, records.map((record) => record.path))
    expect(ids).toEqual(records.map((record) => record.orthancId))
    for (const record of records) {
      expect(await text(v112, `/instances/${record.orthancId}/attachments/dicom/md5`), record.label).toBe(record.md5)
      const response = await v112.api(`/instances/${record.orthancId}/file`)
      expect(md5(Buffer.from(await response.arrayBuffer())), record.label).toBe(record.md5)
    }

    // Character set conversion runs on the prefix's own libraries (DCMTK, Boost.Locale, ICU).
    const latin1 = awkward.find((record) => record.label === 'charset-latin1')!
    const tags = await v112.json<{PatientName: string}>(`/instances/${latin1.orthancId}/simplified-tags`)
    expect(tags.PatientName).toBe('Gómez^Renée')
  })

  it('puts, lists, finds and removes labels at every level on 1.12.7', async () => {
    const [record] = studySet
    const answer = await v112.json<{ParentPatient: string; ParentStudy: string; ParentSeries: string}>('/instances', {
      method: 'POST',
      body: await readFile(record!.path),
      headers: {'content-type': 'application/dicom'},
    })
    const paths = [`/patients/${answer.ParentPatient}`, `/studies/${answer.ParentStudy}`, `/series/${answer.ParentSeries}`, `/instances/${record!.orthancId}`]
    for (const path of paths) {
      expect(await statusOf(v112, 'PUT', `${path}/labels/to-replicate`), path).toBe(200)
      expect(await v112.json(`${path}/labels`), path).toEqual(['to-replicate'])
    }

    expect(await statusOf(v112, 'PUT', `/studies/${answer.ParentStudy}/labels/not%20valid`)).toBe(400)
    expect(await v112.json('/tools/labels')).toEqual(['to-replicate'])
    expect((await v112.json<StudyInfo>(`/studies/${answer.ParentStudy}`)).Labels).toEqual(['to-replicate'])
    const found = await v112.json<string[]>('/tools/find', {method: 'POST', body: JSON.stringify({Level: 'Study', Query: {}, Labels: ['to-replicate']})})
    expect(found).toEqual([answer.ParentStudy])

    for (const path of paths) expect(await statusOf(v112, 'DELETE', `${path}/labels/to-replicate`), path).toBe(200)
    expect(await v112.json('/tools/labels')).toEqual([])
  })

  it('has no labels on 1.10.1, whose /tools/find ignores a Labels filter instead of refusing it', async () => {
    const [record] = await uploadFiles(v110, [studySet[0]!.path])
    expect(await statusOf(v110, 'GET', `/instances/${record}/labels`)).toBe(404)
    expect(await statusOf(v110, 'PUT', `/instances/${record}/labels/to-replicate`)).toBe(404)
    expect(await statusOf(v110, 'GET', '/tools/labels')).toBe(404)
    const found = await v110.json<string[]>('/tools/find', {method: 'POST', body: JSON.stringify({Level: 'Instance', Query: {}, Labels: ['no-such-label']})})
    expect(found).toEqual([record])
  })

  it('keeps user metadata and attachments on patients, studies, series and instances on both versions', async () => {
    for (const server of [v110, v112]) {
      const [record] = await uploadFiles(server, [studySet[1]!.path])
      const instance = await server.json<{ParentSeries: string}>(`/instances/${record}`)
      const series = await server.json<{ParentStudy: string}>(`/series/${instance.ParentSeries}`)
      const study = await server.json<{ParentPatient: string}>(`/studies/${series.ParentStudy}`)
      const ids = {patients: study.ParentPatient, studies: series.ParentStudy, series: instance.ParentSeries, instances: record!}
      for (const level of LEVELS) {
        const path = `/${level}/${ids[level]}`
        expect(await statusOf(server, 'PUT', `${path}/metadata/Note`, `note on ${level}`), path).toBe(200)
        expect(await statusOf(server, 'PUT', `${path}/metadata/4000`, 'unnamed'), path).toBe(200)
        // Only user metadata (>= 1024, or a declared name) can be written.
        expect(await statusOf(server, 'PUT', `${path}/metadata/1023`, 'x'), path).toBe(403)
        expect(await statusOf(server, 'PUT', `${path}/metadata/Undeclared`, 'x'), path).toBe(404)
        expect(await statusOf(server, 'PUT', `${path}/attachments/Report`, `report on ${level}`), path).toBe(200)

        const metadata = await server.json<Record<string, string>>(`${path}/metadata?expand`)
        expect(metadata, `${server.version} ${path}`).toMatchObject({Note: `note on ${level}`, 4000: 'unnamed'})
        expect(await text(server, `${path}/attachments/Report/md5`)).toBe(md5(Buffer.from(`report on ${level}`)))
      }
    }
  })

  it('refuses to start 1.12 without its prefix, and names the install script', async () => {
    const emptyRoot = await mkdtemp(join(tmpdir(), 'no-orthanc-112-'))
    const saved = process.env.ORTHANC_112_ROOT
    process.env.ORTHANC_112_ROOT = emptyRoot
    try {
      expect(availableOrthancVersions()).not.toContain('1.12')
      await expect(startOrthanc({version: '1.12'})).rejects.toThrow(/scripts\/install-orthanc-1\.12\.sh/)
    } finally {
      if (saved === undefined) delete process.env.ORTHANC_112_ROOT
      else process.env.ORTHANC_112_ROOT = saved
      await rm(emptyRoot, {recursive: true, force: true})
    }
  })
})
