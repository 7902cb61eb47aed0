import {getEventListeners} from 'node:events'

import {MockAgent} from 'undici'
import {describe, expect, it} from 'vitest'

import {OrthancClient} from '../../src/orthanc/client.js'
import {resolveEndpoint} from '../../src/orthanc/endpoint.js'
import {selectInstances, type SelectedStudy} from '../../src/sources/orthanc-selection.js'
import {compareServers} from '../../src/sync/compare.js'

/** Orthanc's own 404 for a resource it does not hold. */
const UNKNOWN_RESOURCE = {HttpError: 'Not Found', HttpStatus: 404, Message: 'Unknown resource', OrthancError: 'Unknown resource', OrthancStatus: 17}

const origin = 'http://orthanc.test'

/**
 * A mocked Orthanc holding `count` studies of one instance each, counting the requests for a
 * study's own record (GET /studies/{id}). The series and instances of `gone` studies answer 404;
 * `deleted` studies answer 404 themselves too (listed, but deleted since).
 */
function serverOfStudies(count: number, gone: string[] = [], instancesDelayMs = 0, deleted: string[] = [], listingDelayMs = 0, fileSize: unknown = 100) {
  const agent = new MockAgent()
  agent.disableNetConnect()
  const pool = agent.get(origin)
  /** When the first instance list was asked for (Date.now()). */
  const sent: {instances?: number} = {}
  const ids = Array.from({length: count}, (_, index) => `study-${String(index).padStart(5, '0')}`)
  const study = (ID: string) => ({ID, Type: 'Study', ParentPatient: 'patient', MainDicomTags: {StudyInstanceUID: `1.2.${ID.slice(6)}`}, PatientMainDicomTags: {PatientID: 'P'}, Series: [`series-${ID}`]})
  const studyReads: string[] = []
  const listing = pool.intercept({path: '/studies?expand', method: 'GET'}).reply(200, ids.map(study))
  if (listingDelayMs > 0) listing.delay(listingDelayMs)
  listing.persist()
  pool.intercept({path: (path) => /^\/studies\/study-\d+$/.test(path), method: 'GET'}).reply<object>(({path}) => {
    studyReads.push(path)
    const id = path.split('/')[2]!
    return deleted.includes(id) ? {statusCode: 404, data: UNKNOWN_RESOURCE} : {statusCode: 200, data: study(id)}
  }).persist()
  const lists = pool.intercept({path: (path) => /^\/studies\/study-\d+\/(series|instances)$/.test(path), method: 'GET'}).reply<object>(({path}) => {
    const [, , id, what] = path.split('/')
    if (what === 'instances') sent.instances ??= Date.now()
    if (gone.includes(id!)) return {statusCode: 404, data: UNKNOWN_RESOURCE}
    const data = what === 'series'
      ? [{ID: `series-${id}`, Type: 'Series', ParentStudy: id, MainDicomTags: {SeriesInstanceUID: `1.3.${id}`, Modality: 'CR'}}]
      : [{ID: `instance-${id}`, Type: 'Instance', ParentSeries: `series-${id}`, MainDicomTags: {SOPInstanceUID: `1.4.${id}`}, FileSize: fileSize}]
    return {statusCode: 200, data}
  })
  if (instancesDelayMs > 0) lists.delay(instancesDelayMs)
  lists.persist()
  return {agent, client: clientOf(agent, origin), ids, studyReads, sent}
}

function clientOf(agent: MockAgent, url: string): OrthancClient {
  return new OrthancClient(resolveEndpoint({url, env: {}}), {dispatcher: agent, retry: {retries: 0, minDelayMs: 1, maxDelayMs: 1}})
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

  it('a filter list given empty selects nothing, never everything (a library caller\'s list that came out empty)', async () => {
    const {client} = serverOfStudies(3)
    for (const filters of [{patientIds: []}, {studyInstanceUids: []}, {modalities: []}, {labels: []}, {orthancIds: []}]) {
      const studies: SelectedStudy[] = []
      for await (const study of selectInstances(client, filters)) studies.push(study)
      expect(studies.flatMap((study) => study.instances), JSON.stringify(filters)).toEqual([])
    }
  })

  it('keeps no more than 2,000 listed studies: beyond that, each is read when its turn comes', async () => {
    const {client, ids, studyReads} = serverOfStudies(2001)
    const studies = await selectAll(client)
    expect(studies).toHaveLength(2001)
    expect(studyReads).toHaveLength(ids.length)
  })

  it('skips a study deleted since it was listed, as it skips one that no longer reads', async () => {
    const {client, ids} = serverOfStudies(3, ['study-00001'], 0, ['study-00001'])
    const studies = await selectAll(client)
    expect(studies.map((study) => study.studyId)).toEqual([ids[0], ids[2]])
  })

  it('a size that is not a count of bytes (a string, negative, too large) is taken as unknown, never summed as text', async () => {
    for (const [answered, taken] of [[100, 100], ['100', 0], [-5, 0], [1e300, 0], [1.5, 0]] as const) {
      const {client} = serverOfStudies(1, [], 0, [], 0, answered)
      const [study] = await selectAll(client)
      expect(study!.instances[0]!.size, String(answered)).toBe(taken)
    }
  })

  it('an instance of a series stored between the series and instance listings is selected, its series read on its own', async () => {
    const agent = new MockAgent()
    agent.disableNetConnect()
    const pool = agent.get(origin)
    const study = {ID: 'study-1', Type: 'Study', ParentPatient: 'patient', MainDicomTags: {StudyInstanceUID: '1.2'}, PatientMainDicomTags: {PatientID: 'P'}, Series: ['series-a', 'series-b']}
    pool.intercept({path: '/studies?expand', method: 'GET'}).reply(200, [study])
    pool.intercept({path: '/studies/study-1/series', method: 'GET'}).reply(200, [{ID: 'series-a', Type: 'Series', ParentStudy: 'study-1', MainDicomTags: {SeriesInstanceUID: '1.3.a'}}])
    const instance = (id: string, series: string) => ({ID: id, Type: 'Instance', ParentSeries: series, MainDicomTags: {SOPInstanceUID: `1.4.${id}`}, FileSize: 10})
    pool.intercept({path: '/studies/study-1/instances', method: 'GET'}).reply(200, [instance('i1', 'series-a'), instance('i2', 'series-b'), instance('i3', 'series-gone')])
    pool.intercept({path: '/series/series-b', method: 'GET'}).reply(200, {ID: 'series-b', Type: 'Series', ParentStudy: 'study-1', MainDicomTags: {SeriesInstanceUID: '1.3.b'}})
    pool.intercept({path: '/series/series-gone', method: 'GET'}).reply(404, UNKNOWN_RESOURCE)
    const [selected] = await selectAll(clientOf(agent, origin))
    expect(selected!.instances.map((entry) => [entry.id, entry.seriesInstanceUid])).toEqual([['i1', '1.3.a'], ['i2', '1.3.b']])
    // Deleted with its series since: neither selected nor counted as the source's.
    expect(selected!.instancesOnSource).toBe(2)
  })

  it('fails on a study whose instances answer 404 while the study itself is still there', async () => {
    // A proxy refusing a route must not make a study's instances silently left out.
    const {client} = serverOfStudies(3, ['study-00001'])
    await expect(selectAll(client)).rejects.toThrow(/404/)
  })
})

describe('compareServers', () => {
  it('looks each study up on the target while the source lists its instances, not after', async () => {
    // Across a link, waiting for the source's lists first costs every study a round trip.
    const {agent, client: source, ids, sent} = serverOfStudies(2, [], 500)
    const targetOrigin = 'http://target.test'
    const lookedUp: number[] = []
    agent.get(targetOrigin).intercept({path: (path) => /^\/studies\/study-\d+\/instances$/.test(path), method: 'GET'}).reply(() => {
      lookedUp.push(Date.now())
      return {statusCode: 404, data: UNKNOWN_RESOURCE}
    }).persist()
    // The target's listing names both studies (it would not look up a study it does not name); they are gone by the look-up.
    agent.get(targetOrigin).intercept({path: '/studies?expand', method: 'GET'}).reply(200, ids.map((ID) => ({ID, Type: 'Study', ParentPatient: 'patient', MainDicomTags: {StudyInstanceUID: `1.2.${ID.slice(6)}`}})))
    const states: string[] = []
    for await (const item of compareServers(source, clientOf(agent, targetOrigin), {filters: {}, checksum: false})) states.push(`${item.studyId} ${item.state}`)
    expect(states).toEqual(ids.map((id) => `${id} only-source`))
    // Both look-ups went out with the source's lists, well before their answers (0.5 s later).
    expect(lookedUp).toHaveLength(2)
    for (const at of lookedUp) expect(at - sent.instances!).toBeLessThan(250)
  })

  it('does not look up a study the target\'s listing, once arrived, does not name', async () => {
    // The source's listing comes 100 ms late: the target's has arrived before any study is compared.
    const {agent, client: source, ids} = serverOfStudies(3, [], 0, [], 100)
    const targetOrigin = 'http://target.test'
    const lookedUp: string[] = []
    agent.get(targetOrigin).intercept({path: (path) => /^\/studies\/study-\d+\/instances$/.test(path), method: 'GET'}).reply<object>(({path}) => {
      lookedUp.push(path)
      return {statusCode: 200, data: [{ID: `instance-${path.split('/')[2]}`, Type: 'Instance', ParentSeries: 'series', MainDicomTags: {}}]}
    }).persist()
    // The target holds the second study only.
    agent.get(targetOrigin).intercept({path: '/studies?expand', method: 'GET'}).reply(200, [{ID: ids[1], Type: 'Study', ParentPatient: 'patient', MainDicomTags: {StudyInstanceUID: '1.2.00001'}}])
    const states: string[] = []
    for await (const item of compareServers(source, clientOf(agent, targetOrigin), {filters: {}, checksum: false})) states.push(`${item.studyId} ${item.state}`)
    expect(states).toEqual([`${ids[0]} only-source`, `${ids[1]} present`, `${ids[2]} only-source`])
    expect(lookedUp).toEqual([`/studies/${ids[1]}/instances`])
  })
})

describe('compareServers: the studies only on the target', () => {
  /** A target holding `count` studies the source lacks, one instance each, counting its listings. */
  function targetOnly(agent: MockAgent, count: number) {
    const pool = agent.get('http://target.test')
    const listings: number[] = []
    const studies = Array.from({length: count}, (_, index) => ({ID: `other-${index}`, Type: 'Study', ParentPatient: 'patient', MainDicomTags: {StudyInstanceUID: `9.${index}`}}))
    pool.intercept({path: '/studies?expand', method: 'GET'}).reply(() => {
      listings.push(Date.now())
      return {statusCode: 200, data: studies}
    }).persist()
    pool.intercept({path: (path) => /^\/studies\/(study|other)-\d+\/instances$/.test(path), method: 'GET'}).reply<object>(({path}) => {
      const id = path.split('/')[2]!
      return id.startsWith('other') ? {statusCode: 200, data: [{ID: `instance-${id}`, Type: 'Instance', ParentSeries: 'series', MainDicomTags: {}}]} : {statusCode: 404, data: UNKNOWN_RESOURCE}
    }).persist()
    return {target: clientOf(agent, 'http://target.test'), listings}
  }

  async function onlyOnTarget(source: OrthancClient, target: OrthancClient): Promise<string[]> {
    const found: string[] = []
    for await (const item of compareServers(source, target, {filters: {}, checksum: false})) if (item.state === 'only-target') found.push(`${item.studyInstanceUid} ${item.id}`)
    return found
  }

  it('lists them beside the comparison, not after it', async () => {
    const {agent, client: source, sent} = serverOfStudies(2, [], 500)
    const {target, listings} = targetOnly(agent, 3)
    expect(await onlyOnTarget(source, target)).toEqual(['9.0 instance-other-0', '9.1 instance-other-1', '9.2 instance-other-2'])
    expect(listings).toHaveLength(1)
    expect(listings[0]! - sent.instances!).toBeLessThan(250)
  })

  it('lists a target of more than 10,000 studies again after the comparison, and finds them all', async () => {
    const {agent, client: source} = serverOfStudies(1)
    const {target, listings} = targetOnly(agent, 10_001)
    expect(await onlyOnTarget(source, target)).toHaveLength(10_001)
    expect(listings).toHaveLength(2)
  }, 30_000)
})

describe('compareServers with a caller\'s signal', () => {
  it('keeps its tens of requests in flight on the signal without a listener-leak warning, and leaves no listener behind', async () => {
    const warnings: string[] = []
    const onWarning = (warning: Error) => warnings.push(warning.name)
    process.on('warning', onWarning)
    try {
      const {agent, client: source} = serverOfStudies(40, [], 50)
      const target = agent.get('http://target.test')
      target.intercept({path: (path) => /^\/studies\/study-\d+\/instances$/.test(path), method: 'GET'}).reply(404, UNKNOWN_RESOURCE).delay(50).persist()
      target.intercept({path: '/studies?expand', method: 'GET'}).reply(200, [])
      const controller = new AbortController()
      let compared = 0
      for await (const item of compareServers(source, clientOf(agent, 'http://target.test'), {filters: {}, checksum: false, signal: controller.signal})) if (item.state === 'only-source') compared++
      expect(compared).toBe(40)
      // Node reports the warning on the next turn of the event loop.
      await new Promise((resolve) => setImmediate(resolve))
      expect(warnings.filter((name) => name === 'MaxListenersExceededWarning')).toEqual([])
      // With the warning's limit lifted, a real leak would go unreported: each request, answered
      // or refused, takes its listener off the signal again.
      expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0)
    } finally {
      process.off('warning', onWarning)
    }
  })
})
