import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {type FixtureRecord, generateStudySet} from '../../fixtures/generate.js'
import {type FaultProxy, startFaultProxy} from '../helpers/fault-proxy.js'
import {type OrthancServer, type OrthancVersion, startOrthanc, uploadFiles} from '../helpers/orthanc.js'
import {OrthancClient} from '../../src/orthanc/client.js'
import {resolveEndpoint} from '../../src/orthanc/endpoint.js'
import type {SideData} from '../../src/model.js'
import {SideDataReader} from '../../src/sources/side-data.js'

const OPTIONS = {userMetadata: {Note: 1100}, userContentType: {Report: 1100}}

/**
 * Side data read a study at a time where the server can (1.12's /tools/find with ResponseContent)
 * must be exactly what reading each instance gives, and an older server, which would ignore
 * ResponseContent, must never be asked that way.
 */
describe.each<OrthancVersion>(['1.12', '1.10'])('side data of a whole study on Orthanc %s', (version) => {
  let server: OrthancServer
  let proxy: FaultProxy
  let work: string
  let records: FixtureRecord[]
  let ids: string[]
  let study: {id: string; uid: string}
  let seriesId: string

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'side-data-'))
    records = await generateStudySet(join(work, 'study'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 2, instancesPerSeries: 4, pixelBytes: 2000, seed: `side-${version}`, modalities: ['CT']})
    server = await startOrthanc({...OPTIONS, version})
    ids = await uploadFiles(server, records.map((record) => record.path))
    const put = async (path: string, body: string) => expect((await server.api(path, {method: 'PUT', body})).status, path).toBe(200)
    await put(`/instances/${ids[0]}/metadata/Note`, 'checked')
    await put(`/instances/${ids[1]}/metadata/4000`, 'numbered')
    await put(`/instances/${ids[2]}/attachments/Report`, 'a report')
    await put(`/instances/${ids[3]}/attachments/2000`, '')
    if (version === '1.12') await put(`/instances/${ids[4]}/labels/teaching`, '')
    const instance = await server.json<{ParentSeries: string}>(`/instances/${ids[0]}`)
    const series = await server.json<{ParentStudy: string}>(`/series/${instance.ParentSeries}`)
    study = {id: series.ParentStudy, uid: records[0]!.studyInstanceUid}
    seriesId = instance.ParentSeries
    const {ParentPatient: patientId} = await server.json<{ParentPatient: string}>(`/studies/${study.id}`)
    await put(`/patients/${patientId}/metadata/4001`, 'patient note')
    await put(`/studies/${study.id}/metadata/Note`, 'study note')
    await put(`/series/${seriesId}/metadata/4002`, 'series note')
    if (version === '1.12') await put(`/studies/${study.id}/labels/research`, '')
    proxy = await startFaultProxy(server.port)
  })

  afterAll(async () => {
    await proxy?.close()
    await server?.dispose()
    await rm(work, {recursive: true, force: true})
  })

  async function readAll(prefetch: boolean): Promise<{side: SideData[]; requests: string[]}> {
    const client = new OrthancClient(resolveEndpoint({url: proxy.url, env: {}}))
    try {
      await client.system()
      const before = proxy.log.length
      const reader = new SideDataReader(client)
      if (prefetch) reader.prefetch(ids, undefined, study)
      const side = await Promise.all(ids.map((id) => reader.read(id)))
      return {side, requests: proxy.log.slice(before)}
    } finally {
      await client.close()
    }
  }

  it('reads the same side data as instance by instance, in fewer requests where the server can', async () => {
    const one = await readAll(false)
    const batched = await readAll(true)
    expect(batched.side).toEqual(one.side)
    expect(one.side[0]!.userMetadata).toEqual({Note: 'checked'})
    expect(one.side[1]!.userMetadata).toEqual({4000: 'numbered'})
    expect(one.side[2]!.attachments.map((attachment) => [attachment.name, attachment.contentType])).toEqual([['Report', 1100]])
    expect(one.side[3]!.attachments.map((attachment) => [attachment.name, attachment.size])).toEqual([['2000', 0]])
    const finds = batched.requests.filter((line) => line.startsWith('POST /tools/find'))
    if (version === '1.12') {
      expect(one.side[4]!.labels).toEqual(['teaching'])
      expect(finds).toHaveLength(1)
      // The study in one request; only the two instances with user attachments listed on their own (and their attachments' info).
      expect(batched.requests.filter((line) => line.includes('/attachments')).map((line) => line.split('/')[2])).toEqual(expect.arrayContaining([ids[2], ids[3]]))
      expect(batched.requests.filter((line) => /^GET \/instances\/[^/]+\/(metadata|labels|attachments)$/.test(line.split('?')[0]!))).toHaveLength(2)
    } else {
      // 1.10.1 would answer ResponseContent with bare IDs: it is not asked, and the metadata comes in one bulk request.
      expect(finds).toHaveLength(0)
      expect(batched.requests.filter((line) => line.startsWith('POST /tools/bulk-content'))).toHaveLength(1)
    }

    expect(batched.requests.length).toBeLessThan(one.requests.length)
  })

  it('reads a study\'s, its patient\'s and its series\' metadata ahead in bulk, as the same records as one by one', async () => {
    const read = async (ahead: boolean) => {
      const client = new OrthancClient(resolveEndpoint({url: proxy.url, env: {}}))
      try {
        await client.system()
        const before = proxy.log.length
        const reader = new SideDataReader(client)
        if (ahead) reader.prefetchResources([study.id], [seriesId])
        const records = await reader.resourcesOf({studyId: study.id, seriesId})
        return {records, requests: proxy.log.slice(before)}
      } finally {
        await client.close()
      }
    }

    const one = await read(false)
    const bulk = await read(true)
    expect(bulk.records).toEqual(one.records)
    expect(one.records.map((record) => [record.level, record.userMetadata, record.labels])).toEqual([
      ['patient', {4001: 'patient note'}, []],
      ['study', {Note: 'study note'}, version === '1.12' ? ['research'] : []],
      ['series', {4002: 'series note'}, []],
    ])
    // Neither the study (for its patient's ID) nor any resource's metadata is asked one by one.
    expect(bulk.requests.filter((line) => /^GET \/(studies|patients|series)\/[^/?]+(\/metadata\S*)?$/.test(line))).toEqual([])
    expect(bulk.requests.filter((line) => line.startsWith('POST /tools/bulk-content'))).toHaveLength(3)
  })
})
