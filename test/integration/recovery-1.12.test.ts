import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {type FixtureRecord, generateStudySet} from '../../fixtures/generate.js'
import {parseJson, runCli} from '../helpers/cli.js'
import {instanceMd5s, type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'

interface ImportJson {
  transferred: number
  skipped: number
  failed: number
  notCarried: Array<{level: string; kind: string; count: number}>
  recovery: Array<{route: string; candidates: number; recovered: number; index?: {schema: string}; resourceSideData: {resources: number; userMetadata: number; attachments: number; labels: number; protectedPatients: number}}>
}

const userConfig = {userMetadata: {Reviewed: 1024}, userContentType: {Report: 1030}}

/** An Orthanc 1.12.7 index, with the Labels table it makes itself, recovered into a 1.12.7 target: labels come back. */
describe('recovery of a stopped Orthanc 1.12.7, labels included', () => {
  let work: string
  let corpus: FixtureRecord[]
  let sourceMd5s: Map<string, string>
  let labelled: {instance: string; study: string; series: string}
  let dead: OrthancServer
  let target: OrthancServer
  let summary: ImportJson

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'recovery-112-'))
    corpus = await generateStudySet(join(work, 'fixtures'), {patients: 2, studiesPerPatient: 1, seriesPerStudy: 2, instancesPerSeries: 2, pixelBytes: 4000, seed: 'recovery-112'})
    dead = await startOrthanc({version: '1.12', name: 'dead-112', storageCompression: true, ...userConfig, dir: join(work, 'dead')})
    const ids = await uploadFiles(dead, corpus.map((record) => record.path))
    const instance = await dead.json<{ParentSeries: string}>(`/instances/${ids[0]}`)
    const series = await dead.json<{ParentStudy: string}>(`/series/${instance.ParentSeries}`)
    labelled = {instance: ids[0]!, series: instance.ParentSeries, study: series.ParentStudy}
    const put = async (path: string, body = '') => expect((await dead.api(path, {method: 'PUT', body})).ok, path).toBe(true)
    await put(`/instances/${labelled.instance}/labels/reviewed`)
    await put(`/instances/${labelled.instance}/labels/teaching`)
    await put(`/instances/${labelled.instance}/metadata/Reviewed`, 'yes')
    await put(`/instances/${labelled.instance}/attachments/Report`, 'report body')
    await put(`/studies/${labelled.study}/labels/research`)
    await put(`/series/${labelled.series}/metadata/Reviewed`, 'series note')
    sourceMd5s = await instanceMd5s(dead)
    await dead.kill()

    target = await startOrthanc({version: '1.12', name: 'target-112', ...userConfig})
    const result = await runCli(['import', '--target', target.url, '--json', '--no-receipt', '--storage-folder', dead.storageDir, '--index', join(dead.dir, 'index')])
    expect(result.code, result.stderr).toBe(0)
    summary = parseJson<ImportJson>(result)
  })

  afterAll(async () => {
    await target?.dispose()
    await dead?.dispose()
    await rm(work, {recursive: true, force: true})
  })

  it('recovers every instance with identical MD5s from the index 1.12.7 wrote', async () => {
    expect(summary).toMatchObject({transferred: corpus.length, failed: 0})
    expect(summary.recovery[0]).toMatchObject({route: 'sqlite-index', candidates: corpus.length, recovered: corpus.length, index: {schema: expect.stringMatching(/with labels/)}})
    expect(await instanceMd5s(target)).toEqual(sourceMd5s)
  })

  it('brings back labels, user metadata and attachments', async () => {
    expect(summary.notCarried.filter((entry) => entry.kind === 'labels')).toEqual([])
    expect(await target.json<string[]>(`/instances/${labelled.instance}/labels`)).toEqual(['reviewed', 'teaching'])
    expect(await (await target.api(`/instances/${labelled.instance}/metadata/Reviewed`)).text()).toBe('yes')
    expect(await (await target.api(`/instances/${labelled.instance}/attachments/Report/data`)).text()).toBe('report body')
  })

  it('restores the study label and the series metadata it read from the index', async () => {
    expect(summary.recovery[0]!.resourceSideData).toEqual({resources: 2, userMetadata: 1, attachments: 0, labels: 1, protectedPatients: 0})
    expect(await target.json<string[]>(`/studies/${labelled.study}/labels`)).toEqual(['research'])
    expect(await (await target.api(`/series/${labelled.series}/metadata/Reviewed`)).text()).toBe('series note')
  })

  it('a second run transfers nothing and adds no label twice', async () => {
    const again = await runCli(['import', '--target', target.url, '--json', '--no-receipt', '--storage-folder', dead.storageDir, '--index', join(dead.dir, 'index')])
    expect(again.code, again.stderr).toBe(0)
    expect(parseJson<ImportJson>(again)).toMatchObject({transferred: 0, skipped: corpus.length, failed: 0})
    expect(await target.json<string[]>(`/instances/${labelled.instance}/labels`)).toEqual(['reviewed', 'teaching'])
  })
})
