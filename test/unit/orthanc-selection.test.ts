import {MockAgent} from 'undici'
import {describe, expect, it} from 'vitest'

import {OrthancClient} from '../../src/orthanc/client.js'
import {resolveEndpoint} from '../../src/orthanc/endpoint.js'
import {selectInstances, type SelectedStudy} from '../../src/sources/orthanc-selection.js'

const origin = 'http://orthanc.test'

/**
 * A mocked Orthanc holding `count` studies of one instance each, counting the requests for a
 * study's own record (GET /studies/{id}). `gone` studies are listed but deleted since: their
 * series and instances answer 404.
 */
function serverOfStudies(count: number, gone: string[] = []) {
  const agent = new MockAgent()
  agent.disableNetConnect()
  const pool = agent.get(origin)
  const ids = Array.from({length: count}, (_, index) => `study-${String(index).padStart(5, '0')}`)
  const study = (ID: string) => ({ID, Type: 'Study', MainDicomTags: {StudyInstanceUID: `1.2.${ID.slice(6)}`}, PatientMainDicomTags: {PatientID: 'P'}, Series: [`series-${ID}`]})
  const studyReads: string[] = []
  pool.intercept({path: '/studies?expand', method: 'GET'}).reply(200, ids.map(study)).persist()
  pool.intercept({path: (path) => /^\/studies\/study-\d+$/.test(path), method: 'GET'}).reply(({path}) => {
    studyReads.push(path)
    return {statusCode: 200, data: study(path.split('/')[2]!)}
  }).persist()
  pool.intercept({path: (path) => /^\/studies\/study-\d+\/(series|instances)$/.test(path), method: 'GET'}).reply(({path}) => {
    const [, , id, what] = path.split('/')
    if (gone.includes(id!)) return {statusCode: 404, data: {HttpError: 'Not Found'}}
    const data = what === 'series'
      ? [{ID: `series-${id}`, Type: 'Series', MainDicomTags: {SeriesInstanceUID: `1.3.${id}`, Modality: 'CR'}}]
      : [{ID: `instance-${id}`, Type: 'Instance', ParentSeries: `series-${id}`, MainDicomTags: {SOPInstanceUID: `1.4.${id}`}, FileSize: 100}]
    return {statusCode: 200, data}
  }).persist()
  const client = new OrthancClient(resolveEndpoint({url: origin, env: {}}), {dispatcher: agent, retry: {retries: 0, minDelayMs: 1, maxDelayMs: 1}})
  return {client, ids, studyReads}
}

async function selectAll(client: OrthancClient): Promise<SelectedStudy[]> {
  const studies: SelectedStudy[] = []
  for await (const study of selectInstances(client, {})) studies.push(study)
  return studies
}

describe('selectInstances', () => {
  it('takes each study from the listing instead of reading it again', async () => {
    // Studies of one instance (CR, DX): a read per study is a request per instance, and a
    // round trip before the first study's instances are even listed.
    const {client, ids, studyReads} = serverOfStudies(5)
    const studies = await selectAll(client)
    expect(studies.map((study) => study.studyId)).toEqual(ids)
    expect(studies[0]!.instances.map((instance) => instance.sopInstanceUid)).toEqual(['1.4.study-00000'])
    expect(studies[0]!.studyInstanceUid).toBe('1.2.00000')
    expect(studyReads).toEqual([])
  })

  it('keeps no more than 2,000 listed studies: beyond that, each is read when its turn comes', async () => {
    const {client, ids, studyReads} = serverOfStudies(2001)
    const studies = await selectAll(client)
    expect(studies).toHaveLength(2001)
    expect(studyReads).toHaveLength(ids.length)
  })

  it('skips a study deleted since it was listed, as it skips one that no longer reads', async () => {
    const {client, ids} = serverOfStudies(3, ['study-00001'])
    const studies = await selectAll(client)
    expect(studies.map((study) => study.studyId)).toEqual([ids[0], ids[2]])
  })
})
