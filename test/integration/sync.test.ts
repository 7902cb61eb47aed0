import {execFile, spawn} from 'node:child_process'
import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'
import {promisify} from 'node:util'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {type FixtureRecord, generateIdentifierSet, generateStudySet} from '../../fixtures/generate.js'
import {parseJson, repoRoot, runCli} from '../helpers/cli.js'
import {makeCorpus, volumeFiles} from '../helpers/corpus.js'
import {instanceMd5s, type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'
import {OrthancClient} from '../../src/orthanc/client.js'
import {resolveEndpoint} from '../../src/orthanc/endpoint.js'
import {syncServers} from '../../src/sync/sync.js'
import {InstanceReplacer} from '../../src/sync/replace.js'
import {OrthancSink} from '../../src/sinks/orthanc-sink.js'
import {damageStoredFile, flipByteInEntry, payloadEntries} from '../helpers/tamper.js'
import {startFaultProxy} from '../helpers/fault-proxy.js'

const run = promisify(execFile)
const config = {userMetadata: {Reviewed: 1024}, userContentType: {Report: 1030}}

interface SyncJson {
  transferred: number
  skipped: number
  failed: number
  bytes: number
  plan: {missing: number; different: number; present: number; md5Compared: boolean; bytesToTransfer: number; onlyOnTarget: number; studies: {complete: number; partial: number; missing: number}}
  deletion?: {candidates: number; deleted: number; refused?: string}
}

interface DiffJson {
  onlySource: number
  onlyTarget: number
  different: number
  identical: number
  instances: {onlySource: string[]; onlyTarget: string[]; different: string[]}
  studies?: Array<{studyInstanceUid: string; onlySource: number; different: number}>
}

async function emptyOf(server: OrthancServer): Promise<void> {
  for (const id of await server.json<string[]>('/instances')) await server.api(`/instances/${id}`, {method: 'DELETE'})
}

/** A file with the same identifiers (so the same Orthanc ID) but other bytes. */
async function alteredCopy(record: FixtureRecord): Promise<Buffer> {
  const bytes = Buffer.from(await readFile(record.path))
  bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 0x55
  return bytes
}

describe('sync, diff and verify', () => {
  let source: OrthancServer
  let target: OrthancServer
  let work: string
  let corpus: FixtureRecord[]
  const sync = (...args: string[]) => runCli(['sync', '--source', source.url, '--target', target.url, '--json', ...args])
  const diff = (...args: string[]) => runCli(['diff', '--source', source.url, '--target', target.url, '--json', ...args])

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'sync-test-'))
    corpus = await makeCorpus(join(work, 'fixtures'))
    ;[source, target] = await Promise.all([startOrthanc({name: 'sync-source', ...config}), startOrthanc({name: 'sync-target', ...config})])
    await uploadFiles(source, corpus.map((record) => record.path))
    await source.api(`/instances/${corpus[2]!.orthancId}/metadata/Reviewed`, {method: 'PUT', body: 'yes'})
    await source.api(`/instances/${corpus[2]!.orthancId}/attachments/Report`, {method: 'PUT', body: 'findings'})
    // An empty user attachment: Orthanc takes it, and no size total shows it (see BENCHMARKS.md,
    // the lossless floor); only the instance's attachment list does.
    expect((await source.api(`/instances/${corpus[3]!.orthancId}/attachments/1031`, {method: 'PUT', body: ''})).status).toBe(200)
  })

  /** The empty attachment came across: listed, and empty. */
  const expectEmptyAttachment = async (server: OrthancServer) => {
    expect(await server.json<string[]>(`/instances/${corpus[3]!.orthancId}/attachments`)).toContain('1031')
    expect(await server.json(`/instances/${corpus[3]!.orthancId}/attachments/1031/info`)).toMatchObject({UncompressedSize: 0, UncompressedMD5: 'd41d8cd98f00b204e9800998ecf8427e'})
  }
  afterAll(async () => {
    await Promise.all([source?.dispose(), target?.dispose()])
    await rm(work, {recursive: true, force: true})
  })

  it('--dry-run prints the plan and changes nothing', async () => {
    await emptyOf(target)
    const result = await sync('--dry-run')
    expect(result.code, result.stderr).toBe(0)
    const summary = parseJson<SyncJson>(result)
    expect(summary.plan).toMatchObject({missing: corpus.length, present: 0, different: 0})
    expect(summary.plan.bytesToTransfer).toBe(corpus.reduce((sum, record) => sum + record.size, 0))
    expect(summary.plan.studies.missing).toBe(new Set(corpus.map((record) => record.studyInstanceUid)).size)
    expect(summary).toMatchObject({dryRun: true, transferred: 0, bytes: 0, planned: {instances: corpus.length, bytes: summary.plan.bytesToTransfer}})
    expect(await target.json<string[]>('/instances')).toEqual([])
  })

  it('copies the fixture set byte-identical, with metadata and attachments', async () => {
    const result = await sync()
    expect(result.code, result.stderr).toBe(0)
    expect(parseJson<SyncJson>(result)).toMatchObject({transferred: corpus.length, skipped: 0, failed: 0})
    expect(await instanceMd5s(target)).toEqual(await instanceMd5s(source))
    expect(await (await target.api(`/instances/${corpus[2]!.orthancId}/metadata/Reviewed`)).text()).toBe('yes')
    expect(await (await target.api(`/instances/${corpus[2]!.orthancId}/attachments/Report/data`)).text()).toBe('findings')
    await expectEmptyAttachment(target)
    for (const record of corpus) {
      const bytes = Buffer.from(await (await target.api(`/instances/${record.orthancId}/file`)).arrayBuffer())
      expect(bytes.equals(await readFile(record.path)), record.label).toBe(true)
    }
  })

  it('reads metadata in bulk exactly as one instance at a time, user metadata named and numbered', async () => {
    const instanceId = corpus[2]!.orthancId
    await source.api(`/instances/${instanceId}/metadata/4242`, {method: 'PUT', body: 'numbered'})
    const client = new OrthancClient(resolveEndpoint({url: source.url, env: {}}))
    try {
      const ids = corpus.map((record) => record.orthancId)
      const bulk = await client.instancesMetadata([...ids, 'no-such-instance'])
      expect(bulk, 'Orthanc 1.10.1 reports metadata through /tools/bulk-content').toBeDefined()
      expect([...bulk!.keys()].sort()).toEqual([...ids].sort())
      for (const id of ids) expect(bulk!.get(id)).toEqual(await client.instanceMetadata(id))
      expect(bulk!.get(instanceId)).toMatchObject({Reviewed: 'yes', 4242: 'numbered'})
    } finally {
      await client.close()
      await source.api(`/instances/${instanceId}/metadata/4242`, {method: 'DELETE'})
    }
  })

  it('stopped while comparing, a sync counts nothing as skipped: what it found there was not yet checked', async () => {
    const sourceClient = new OrthancClient(resolveEndpoint({url: source.url, env: {}}))
    const targetClient = new OrthancClient(resolveEndpoint({url: target.url, env: {}}))
    const controller = new AbortController()
    try {
      const summary = await syncServers({
        source: sourceClient, target: targetClient, filters: {}, checksum: false, dryRun: false, signal: controller.signal,
        onProgress: (event) => {
          if (event.phase === 'comparing' && event.done > 0) controller.abort()
        },
      })
      expect(summary.interrupted).toBe(true)
      expect(summary.plan.present).toBeGreaterThan(0)
      expect(summary).toMatchObject({transferred: 0, skipped: 0, failed: 0})
    } finally {
      await Promise.all([sourceClient.close(), targetClient.close()])
    }
  })

  // Every instance found there at once asked the target for its MD5, for the one read-back of the run.
  it('a sync that finds everything on the target reads one instance back, asking for one MD5', async () => {
    expect((await sync()).code).toBe(0)
    const proxy = await startFaultProxy(target.port)
    try {
      const result = await runCli(['sync', '--source', source.url, '--target', proxy.url, '--json'])
      expect(result.code, result.stdout).toBe(0)
      expect(parseJson<SyncJson>(result)).toMatchObject({transferred: 0, skipped: corpus.length, failed: 0})
      // (Those whose user attachments are compared list them, the DICOM file among them, beside.)
      const listed = new Set(proxy.log.flatMap((line) => /^GET \/instances\/([^/]+)\/attachments$/.exec(line)?.[1] ?? []))
      const asked = proxy.log.filter((line) => /^GET \/instances\/([^/]+)\/attachments\/dicom\/info$/.test(line) && !listed.has(line.split('/')[2]!))
      expect(asked).toHaveLength(1)
      expect(proxy.log.filter((line) => /^GET \/instances\/[^/]+\/(file|attachments\/dicom\/data)$/.test(line))).toHaveLength(1)
    } finally {
      await proxy.close()
    }
  })

  it('a second sync after new instances arrive transfers exactly the new ones', async () => {
    const more = await generateStudySet(join(work, 'more'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 3, pixelBytes: 2000, seed: 'sync-more'})
    await uploadFiles(source, more.map((record) => record.path))
    try {
      const result = await sync()
      expect(result.code, result.stderr).toBe(0)
      expect(parseJson<SyncJson>(result)).toMatchObject({transferred: 3, skipped: corpus.length, failed: 0})
    } finally {
      for (const record of more) {
        await source.api(`/instances/${record.orthancId}`, {method: 'DELETE'})
        await target.api(`/instances/${record.orthancId}`, {method: 'DELETE'})
      }
    }
  })

  it('diff finds a deleted instance and an altered one, per study, and exits 14', async () => {
    const [deleted, altered] = [corpus[0]!, corpus[5]!]
    await target.api(`/instances/${deleted.orthancId}`, {method: 'DELETE'})
    await target.api(`/instances/${altered.orthancId}`, {method: 'DELETE'})
    await target.api('/instances', {method: 'POST', body: new Uint8Array(await alteredCopy(altered))})
    const result = await diff('--per-study')
    expect(result.code).toBe(14)
    const summary = parseJson<DiffJson>(result)
    expect(summary).toMatchObject({onlySource: 1, onlyTarget: 0, different: 1, identical: corpus.length - 2})
    expect(summary.instances.onlySource).toEqual([deleted.orthancId])
    expect(summary.instances.different).toEqual([altered.orthancId])
    expect(summary.studies!.find((study) => study.studyInstanceUid === deleted.studyInstanceUid)!.onlySource).toBe(1)

    // A plain sync restores the deleted one; only --checksum notices and replaces the altered one.
    // Without it the summary says the MD5s were not compared, never "0 different".
    expect(parseJson<SyncJson>(await sync())).toMatchObject({transferred: 1, failed: 0, plan: {different: 0, md5Compared: false}})
    const told = await runCli(['sync', '--source', source.url, '--target', target.url])
    expect(told.stdout).toMatch(/^Plan: 0 missing on the target, \d+ already there by ID \(MD5s not compared: --checksum compares them\)/m)
    expect(told.stdout).not.toMatch(/0 different/)
    expect(parseJson<DiffJson>(await diff())).toMatchObject({onlySource: 0, different: 1})
    const fixed = await sync('--checksum')
    expect(parseJson<SyncJson>(fixed)).toMatchObject({transferred: 1, failed: 0, plan: {different: 1, md5Compared: true}})
    const same = await diff()
    expect(same.code).toBe(0)
    expect(parseJson<DiffJson>(same)).toMatchObject({onlySource: 0, onlyTarget: 0, different: 0, identical: corpus.length})
  })

  /** Takes a test's patient off both servers. */
  const removePatient = (patient: string) => Promise.all([source.api(`/patients/${patient}`, {method: 'DELETE'}), target.api(`/patients/${patient}`, {method: 'DELETE'})])

  /** An instance alone in its patient, on the source, and on the target with other bytes under the same ID. */
  const loneInstanceDiffering = async (name: string) => {
    const lone = (await generateStudySet(join(work, name), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 1, pixelBytes: 500, seed: `sync-${name}`}))[0]!
    await uploadFiles(source, [lone.path])
    await target.api('/instances', {method: 'POST', body: new Uint8Array(await alteredCopy(lone))})
    const {ParentSeries: series} = await target.json<{ParentSeries: string}>(`/instances/${lone.orthancId}`)
    const {ID: patient} = await target.json<{ID: string}>(`/instances/${lone.orthancId}/patient`)
    return {lone, series, patient}
  }

  it('sync --checksum replacing the only instance of a patient keeps what the target had of its own beside it, on the instance and each parent', async () => {
    const lone = (await generateStudySet(join(work, 'lone'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 1, pixelBytes: 500, seed: 'sync-lone'}))[0]!
    await uploadFiles(source, [lone.path])
    const instance = lone.orthancId
    const altered = await target.json<{ID: string; ParentPatient: string}>('/instances', {method: 'POST', body: new Uint8Array(await alteredCopy(lone))})
    expect(altered.ID).toBe(instance)
    const {ParentSeries: series} = await target.json<{ParentSeries: string}>(`/instances/${instance}`)
    const {ParentStudy: study} = await target.json<{ParentStudy: string}>(`/series/${series}`)
    const {ParentPatient: patient} = await target.json<{ParentPatient: string}>(`/studies/${study}`)
    const own = [['instances', instance], ['series', series], ['studies', study], ['patients', patient]] as const
    // The target's own: a metadata and an attachment at every level, one metadata the source has too (the source's wins, as for any sync).
    for (const [level, id] of own) {
      await target.api(`/${level}/${id}/metadata/2002`, {method: 'PUT', body: `target's ${level}`})
      await target.api(`/${level}/${id}/attachments/1040`, {method: 'PUT', body: `target's ${level} report`})
    }
    await target.api(`/studies/${study}/metadata/Reviewed`, {method: 'PUT', body: 'by the target'})
    await source.api(`/studies/${study}/metadata/Reviewed`, {method: 'PUT', body: 'by the source'})
    // The target protects its patient from recycling: the deletion takes the patient, and the protection with it.
    await target.api(`/patients/${patient}/protected`, {method: 'PUT', body: '1'})
    try {
      const result = await sync('--checksum', '--patient-id', lone.patientId)
      expect(result.code, result.stderr).toBe(0)
      expect((await (await target.api(`/patients/${patient}/protected`)).text()).trim()).toBe('1')
      expect(parseJson<SyncJson>(result)).toMatchObject({transferred: 1, failed: 0, plan: {different: 1}})
      expect((await instanceMd5s(target)).get(instance)).toBe((await instanceMd5s(source)).get(instance))
      for (const [level, id] of own) {
        expect(await (await target.api(`/${level}/${id}/metadata/2002`)).text(), level).toBe(`target's ${level}`)
        expect(await (await target.api(`/${level}/${id}/attachments/1040/data`)).text(), level).toBe(`target's ${level} report`)
      }
      expect(await (await target.api(`/studies/${study}/metadata/Reviewed`)).text()).toBe('by the source')

      // A replacement whose upload fails for good: what the target had is gone, and the summary says so.
      await target.api(`/instances/${instance}`, {method: 'DELETE'})
      await target.api('/instances', {method: 'POST', body: new Uint8Array(await alteredCopy(lone))})
      await target.api(`/studies/${study}/metadata/2002`, {method: 'PUT', body: 'target\'s again'})
      const proxy = await startFaultProxy(target.port)
      proxy.faults.push(...Array.from({length: 10}, () => ({match: /^POST \/instances/, fault: 'status-404' as const})))
      try {
        const failed = await runCli(['sync', '--source', source.url, '--target', proxy.url, '--json', '--checksum', '--patient-id', lone.patientId])
        expect(failed.code).not.toBe(0)
        expect(parseJson<SyncJson & {notCarried: Array<{level: string; kind: string; name?: string; reason: string}>}>(failed).notCarried).toContainEqual(expect.objectContaining({
          level: 'study', kind: 'user-metadata', name: '2002', reason: expect.stringMatching(/^the target's own, deleted with the copy it replaced and not written back: the replacement failed; kept in .*orthanc-replicate\/replacements\/[0-9a-f]{16}, the next sync into this target writes it back$/),
        }))
      } finally {
        await proxy.close()
      }
    } finally {
      await removePatient(patient)
    }
  })

  // Protection was not carried: a migrated patient could be the next one a recycling target
  // (MaximumPatientCount, MaximumStorageSize) deletes to make room, after a sync and a diff said all was well.
  it('a patient protected from recycling on the source is protected on the target; diff --side-data tells a difference; the target\'s own protection stays', async () => {
    const [first, second] = await generateStudySet(join(work, 'protected'), {patients: 2, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 1, pixelBytes: 500, seed: 'sync-protected'})
    await uploadFiles(source, [first!.path, second!.path])
    const patientOf = async (server: OrthancServer, instance: string) => (await server.json<{ID: string}>(`/instances/${instance}/patient`)).ID
    const isProtected = async (server: OrthancServer, patient: string) => (await (await server.api(`/patients/${patient}/protected`)).text()).trim() === '1'
    const [protectedOne, plainOne] = [await patientOf(source, first!.orthancId), await patientOf(source, second!.orthancId)]
    await source.api(`/patients/${protectedOne}/protected`, {method: 'PUT', body: '1'})
    try {
      const result = await sync('--patient-id', first!.patientId, '--patient-id', second!.patientId)
      expect(result.code, result.stdout).toBe(0)
      expect(await isProtected(target, protectedOne)).toBe(true)
      expect(await isProtected(target, plainOne)).toBe(false)
      const same = await diff('--side-data', '--patient-id', first!.patientId, '--patient-id', second!.patientId)
      expect(same.code, same.stdout).toBe(0)

      // The target's own protection of the other patient: a difference diff names, which sync never undoes.
      await target.api(`/patients/${plainOne}/protected`, {method: 'PUT', body: '1'})
      const differs = await diff('--side-data', '--patient-id', first!.patientId, '--patient-id', second!.patientId)
      expect(differs.code).toBe(14)
      expect(parseJson<{sideData: {items: Array<{kind: string; reason: string}>}}>(differs).sideData.items).toEqual([expect.objectContaining({kind: 'protection', reason: 'protected from recycling only on the target'})])
      expect((await sync('--checksum', '--patient-id', second!.patientId)).code).toBe(0)
      expect(await isProtected(target, plainOne)).toBe(true)

      // Protected on the source after it was copied: the next sync protects it on the target too.
      const [third] = await generateStudySet(join(work, 'protected-later'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 1, pixelBytes: 500, seed: 'sync-protected-later'})
      await uploadFiles(source, [third!.path])
      const laterOne = await patientOf(source, third!.orthancId)
      expect((await sync('--patient-id', third!.patientId)).code).toBe(0)
      expect(await isProtected(target, laterOne)).toBe(false)
      await source.api(`/patients/${laterOne}/protected`, {method: 'PUT', body: '1'})
      const later = await sync('--patient-id', third!.patientId)
      expect(later.code, later.stdout).toBe(0)
      expect(await isProtected(target, laterOne)).toBe(true)
      await removePatient(laterOne)
    } finally {
      await removePatient(protectedOne)
      await removePatient(plainOne)
    }
  })

  it('sync --checksum replacing every instance of a series at once keeps the series\', study\'s and patient\'s own side data (each replacement alone leaves the series there)', async () => {
    const pair = await generateStudySet(join(work, 'pair'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 4, pixelBytes: 500, seed: 'sync-pair'})
    await uploadFiles(source, pair.map((record) => record.path))
    for (const record of pair) await target.api('/instances', {method: 'POST', body: new Uint8Array(await alteredCopy(record))})
    const {ParentSeries: series} = await target.json<{ParentSeries: string}>(`/instances/${pair[0]!.orthancId}`)
    const {ParentStudy: study} = await target.json<{ParentStudy: string}>(`/series/${series}`)
    const {ParentPatient: patient} = await target.json<{ParentPatient: string}>(`/studies/${study}`)
    const own = [['series', series], ['studies', study], ['patients', patient]] as const
    for (const [level, id] of own) await target.api(`/${level}/${id}/metadata/2003`, {method: 'PUT', body: `target's ${level}`})
    try {
      const result = await sync('--checksum', '--patient-id', pair[0]!.patientId, '--concurrency', '4')
      expect(result.code, result.stderr).toBe(0)
      expect(parseJson<SyncJson>(result)).toMatchObject({transferred: pair.length, failed: 0, plan: {different: pair.length}})
      for (const [level, id] of own) expect(await (await target.api(`/${level}/${id}/metadata/2003`)).text(), level).toBe(`target's ${level}`)
    } finally {
      await removePatient(patient)
    }
  })

  it('a replacement tried again after its store writes back only: the copy just stored is not deleted again; one whose deletion fails claims no loss', async () => {
    const {lone, series, patient} = await loneInstanceDiffering('again')
    await target.api(`/series/${series}/metadata/2004`, {method: 'PUT', body: 'target\'s own'})
    await source.api(`/series/${series}/metadata/Reviewed`, {method: 'PUT', body: 'source\'s'})
    const proxy = await startFaultProxy(target.port)
    const syncThroughProxy = () => runCli(['sync', '--source', source.url, '--target', proxy.url, '--json', '--checksum', '--retries', '0', '--patient-id', lone.patientId])
    try {
      // The deletion fails for good: the target keeps its copy and what is beside it, and no loss is claimed.
      proxy.faults.push(...Array.from({length: 5}, () => ({match: /^DELETE \/instances\//, fault: 'status-503' as const})))
      const refused = await syncThroughProxy()
      expect(refused.code).not.toBe(0)
      expect(parseJson<{notCarried: Array<{reason: string}>}>(refused).notCarried.filter((entry) => /not written back/.test(entry.reason))).toEqual([])
      expect(await (await target.api(`/series/${series}/metadata/2004`)).text()).toBe('target\'s own')
      proxy.faults.length = 0

      // The write-back fails once, after the store: the attempt after it writes back, and deletes nothing.
      proxy.faults.push({match: new RegExp(`^PUT /series/${series}/metadata/2004`), fault: 'reset-before-response'})
      proxy.log.length = 0
      const result = await syncThroughProxy()
      expect(result.code, result.stderr).toBe(0)
      expect(proxy.log.filter((line) => line.startsWith('DELETE /instances/'))).toHaveLength(1)
      expect(await (await target.api(`/series/${series}/metadata/2004`)).text()).toBe('target\'s own')
      expect(await (await target.api(`/series/${series}/metadata/Reviewed`)).text()).toBe('source\'s')
      expect((await instanceMd5s(target)).get(lone.orthancId)).toBe((await instanceMd5s(source)).get(lone.orthancId))
    } finally {
      await proxy.close()
      await removePatient(patient)
    }
  })

  it('a replacement writes back only on what its deletion took: a parent that stayed keeps what a user removed from it meanwhile', async () => {
    const three = await generateStudySet(join(work, 'stayed'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 3, pixelBytes: 500, seed: 'sync-stayed'})
    await uploadFiles(source, three.map((record) => record.path))
    // One instance differs; the other two keep the series there throughout.
    await uploadFiles(target, three.slice(1).map((record) => record.path))
    await target.api('/instances', {method: 'POST', body: new Uint8Array(await alteredCopy(three[0]!))})
    const {ParentSeries: series} = await target.json<{ParentSeries: string}>(`/instances/${three[0]!.orthancId}`)
    const {ID: patient} = await target.json<{ID: string}>(`/instances/${three[0]!.orthancId}/patient`)
    await target.api(`/series/${series}/metadata/2005`, {method: 'PUT', body: 'to be removed'})
    const proxy = await startFaultProxy(target.port)
    proxy.slow.push({match: /^POST \/instances/, ms: 1500})
    try {
      const running = runCli(['sync', '--source', source.url, '--target', proxy.url, '--json', '--checksum', '--patient-id', three[0]!.patientId])
      // While the source's copy is on its way, after the replacement read the series: a user removes its metadata.
      while (!proxy.events.some((event) => event.startsWith('> POST /instances'))) await sleep(20)
      expect((await target.api(`/series/${series}/metadata/2005`, {method: 'DELETE'})).status).toBe(200)
      const result = await running
      expect(result.code, result.stderr).toBe(0)
      expect(parseJson<SyncJson>(result)).toMatchObject({transferred: 1, failed: 0})
      expect((await target.api(`/series/${series}/metadata/2005`)).status).toBe(404)
    } finally {
      await proxy.close()
      await removePatient(patient)
    }
  })

  it('a deletion carried out whose answer is lost, and never confirmed: what went is listed as lost, in the JSON and on the terminal', async () => {
    const {lone, series, patient} = await loneInstanceDiffering('answer-lost')
    await target.api(`/series/${series}/metadata/2006`, {method: 'PUT', body: 'target\'s own'})
    const proxy = await startFaultProxy(target.port)
    // Orthanc deletes; the answer is cut on its way back, every deletion sent again is refused, and so is every look at the instance.
    const answerLost = () => {
      proxy.log.length = 0
      proxy.faults.push(
        {match: /^DELETE \/instances\//, fault: 'reset-mid-body'},
        ...Array.from({length: 8}, () => ({match: /^DELETE \/instances\//, fault: 'status-503' as const})),
        ...Array.from({length: 40}, () => ({match: new RegExp(`^GET /instances/${lone.orthancId}$`), fault: 'status-503' as const, after: /^DELETE /})),
      )
    }
    answerLost()
    const args = ['sync', '--source', source.url, '--target', proxy.url, '--checksum', '--retries', '0', '--patient-id', lone.patientId]
    try {
      const result = await runCli([...args, '--json'])
      expect(result.code).not.toBe(0)
      expect((await target.api(`/series/${series}/metadata/2006`)).status).toBe(404)
      expect(parseJson<{notCarried: Array<{level: string; name?: string; reason: string}>}>(result).notCarried).toContainEqual(expect.objectContaining({level: 'series', name: '2006', reason: expect.stringMatching(/deleted with the copy it replaced and not written back/)}))
      // The same said to a person, beside the error (the instance is copied again by the next run; what was the target's own is not).
      await target.api('/instances', {method: 'POST', body: new Uint8Array(await alteredCopy(lone))})
      await target.api(`/series/${series}/metadata/2006`, {method: 'PUT', body: 'target\'s own'})
      proxy.faults.length = 0
      answerLost()
      const told = await runCli(args)
      expect(told.code).not.toBe(0)
      expect(told.stdout + told.stderr).toMatch(/^Not carried: user-metadata "2006" of 1 series: the target's own, deleted with the copy it replaced and not written back/m)

      // The deletion answered, then the job stopped by a fatal error (the upload's connection lost): said beside the error.
      await target.api('/instances', {method: 'POST', body: new Uint8Array(await alteredCopy(lone))})
      await target.api(`/series/${series}/metadata/2006`, {method: 'PUT', body: 'target\'s own'})
      proxy.faults.length = 0
      proxy.faults.push(...Array.from({length: 8}, () => ({match: /^POST \/instances/, fault: 'reset-before-response' as const})))
      const stopped = await runCli([...args, '--json'])
      expect(JSON.parse(stopped.stdout).error).toMatchObject({code: 'connection-lost'})
      expect(JSON.parse(stopped.stdout).notCarried).toContainEqual(expect.objectContaining({level: 'series', name: '2006', reason: expect.stringMatching(/not written back/)}))
    } finally {
      await proxy.close()
      await removePatient(patient)
    }
  })

  it('a replacement holds the target\'s own bytes only while it may need them: a deletion that did not happen lets them go, and past the bound no other replacement begins, before reading anything', async () => {
    const [first, second] = [await loneInstanceDiffering('held-1'), await loneInstanceDiffering('held-2')]
    const patients: string[] = []
    for (const {lone} of [first, second]) await target.api(`/instances/${lone.orthancId}/attachments/1041`, {method: 'PUT', body: 'x'.repeat(2000)})
    const proxy = await startFaultProxy(target.port)
    const client = new OrthancClient(resolveEndpoint({url: proxy.url}))
    const replacer = new InstanceReplacer(client, new OrthancSink(client, {dryRun: false, uploads: 1}), {heldLimit: 1500})
    const neverStored = () => Promise.reject(new Error('the store is not part of this test'))
    try {
      // Refused, and the instance still there: nothing went, so nothing is held.
      proxy.faults.push({match: /^DELETE \/instances\//, fault: 'status-403'})
      await expect(replacer.replace(first.lone.orthancId, neverStored)).rejects.toThrow(/HTTP 403/)
      expect(replacer.heldBytes).toBe(0)
      // Deleted, and not stored: the bytes stay held for the next attempt or the job's end.
      await expect(replacer.replace(first.lone.orthancId, neverStored)).rejects.toThrow(/not part of this test/)
      expect(replacer.heldBytes).toBe(2000)
      // Another would hold more than the bound: it is not begun, its bytes not even read, and its copy stays as it was.
      proxy.log.length = 0
      await expect(replacer.replace(second.lone.orthancId, neverStored)).rejects.toThrow(/was not replaced in this run: keeping the target's own attachments beside it \(0\.0 MiB\) would add to the 0\.0 MiB held .* run again to replace it/)
      expect(proxy.log.filter((line) => line.startsWith('DELETE') || line.includes('/attachments/1041/data'))).toEqual([])
      expect(await (await target.api(`/instances/${second.lone.orthancId}/attachments/1041/data`)).text()).toBe('x'.repeat(2000))
      // One that keeps no bytes of its own adds nothing: it goes, bound or not.
      const plain = await loneInstanceDiffering('held-3')
      patients.push(plain.patient)
      await target.api(`/series/${plain.series}/metadata/2004`, {method: 'PUT', body: 'own'})
      await expect(replacer.replace(plain.lone.orthancId, neverStored)).rejects.toThrow(/not part of this test/)
      await replacer.finish()
      expect(replacer.heldBytes).toBe(0)
    } finally {
      await proxy.close()
      await Promise.all([first.patient, second.patient, ...patients].map((patient) => removePatient(patient)))
    }
  })

  it('bytes read for a replacement count against the bound until it holds them, while its other reads go on', async () => {
    const [first, second] = [await loneInstanceDiffering('window-1'), await loneInstanceDiffering('window-2')]
    for (const {lone} of [first, second]) await target.api(`/instances/${lone.orthancId}/attachments/1041`, {method: 'PUT', body: 'z'.repeat(1000)})
    const proxy = await startFaultProxy(target.port)
    // The first replacement's series is read slowly: its instance's bytes are in memory meanwhile.
    proxy.slow.push({match: new RegExp(`^GET /series/${first.series}/`), ms: 800})
    const client = new OrthancClient(resolveEndpoint({url: proxy.url}))
    const replacer = new InstanceReplacer(client, new OrthancSink(client, {dryRun: false, uploads: 1}), {heldLimit: 1500})
    const neverStored = () => Promise.reject(new Error('the store is not part of this test'))
    try {
      const firstOne = replacer.replace(first.lone.orthancId, neverStored).catch((error: Error) => error.message)
      while (!proxy.events.some((event) => event.startsWith(`> GET /series/${first.series}/`))) await sleep(10)
      await sleep(100)
      await expect(replacer.replace(second.lone.orthancId, neverStored)).rejects.toThrow(/was not replaced in this run/)
      expect(await firstOne).toBe('the store is not part of this test')
      expect(replacer.heldBytes).toBe(1000)
    } finally {
      await replacer.finish()
      await proxy.close()
      await Promise.all([first, second].map(({patient}) => removePatient(patient)))
    }
  })

  it('replacements of one series hold their parents\' bytes once, however many share them', async () => {
    const three = await generateStudySet(join(work, 'shared-parent'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 3, pixelBytes: 500, seed: 'sync-shared-parent'})
    await uploadFiles(source, three.map((record) => record.path))
    for (const record of three) await target.api('/instances', {method: 'POST', body: new Uint8Array(await alteredCopy(record))})
    const {ParentStudy: study} = await target.json<{ParentStudy: string}>(`/series/${(await target.json<{ParentSeries: string}>(`/instances/${three[0]!.orthancId}`)).ParentSeries}`)
    const {ID: patient} = await target.json<{ID: string}>(`/instances/${three[0]!.orthancId}/patient`)
    await target.api(`/studies/${study}/attachments/1042`, {method: 'PUT', body: 'y'.repeat(1000)})
    const client = new OrthancClient(resolveEndpoint({url: target.url}))
    const replacer = new InstanceReplacer(client, new OrthancSink(client, {dryRun: false, uploads: 1}), {heldLimit: 1500})
    try {
      const outcomes = await Promise.allSettled(three.map((record) => replacer.replace(record.orthancId, () => Promise.reject(new Error('the store is not part of this test')))))
      expect(outcomes.map((outcome) => (outcome.status === 'rejected' ? (outcome.reason as Error).message : 'stored'))).toEqual(three.map(() => 'the store is not part of this test'))
      expect(replacer.heldBytes).toBe(1000)
    } finally {
      await replacer.finish()
      await removePatient(patient)
    }
  })

  it('a deletion carried out whose answer is lost and whose resend is refused: the instance is found gone, stored, and what went with it written back (exit 0)', async () => {
    const {lone, series, patient} = await loneInstanceDiffering('resend-refused')
    await target.api(`/series/${series}/metadata/2004`, {method: 'PUT', body: 'target\'s own'})
    await target.api(`/instances/${lone.orthancId}/attachments/1041`, {method: 'PUT', body: 'own report'})
    const proxy = await startFaultProxy(target.port)
    proxy.faults.push({match: /^DELETE \/instances\//, fault: 'reset-mid-body'}, {match: /^DELETE \/instances\//, fault: 'status-403'})
    try {
      const result = await runCli(['sync', '--source', source.url, '--target', proxy.url, '--json', '--checksum', '--patient-id', lone.patientId])
      expect(result.code, result.stdout).toBe(0)
      expect(parseJson<SyncJson>(result)).toMatchObject({transferred: 1, failed: 0})
      expect((await instanceMd5s(target)).get(lone.orthancId)).toBe((await instanceMd5s(source)).get(lone.orthancId))
      expect(await (await target.api(`/series/${series}/metadata/2004`)).text()).toBe('target\'s own')
      expect(await (await target.api(`/instances/${lone.orthancId}/attachments/1041/data`)).text()).toBe('own report')
    } finally {
      await proxy.close()
      await removePatient(patient)
    }
  })

  // The journal's second write (which levels the deletion took) failed on a full disk, and the job
  // stopped there, exit 2: the target's copy deleted, the source's never stored.
  it('a journal on a full disk stops the job before the deletion (exit 13); one whose disk fills between its entry and the deletion\'s answer does not: the instance stored and what it kept written back', async () => {
    const {lone, patient} = await loneInstanceDiffering('journal-full')
    // 96 kB of the target's own: its entry (base64) fits on the disk once, not twice.
    const own = Buffer.alloc(96 * 1024, 'r')
    await target.api(`/instances/${lone.orthancId}/attachments/1041`, {method: 'PUT', body: own})
    const stateHome = await mkdtemp(join(tmpdir(), 'sync-journal-disk-'))
    await run('mount', ['-t', 'tmpfs', '-o', 'size=160k', 'tmpfs', stateHome])
    const syncInto = () => runCli(['sync', '--source', source.url, '--target', target.url, '--json', '--checksum', '--concurrency', '1', '--patient-id', lone.patientId], {env: {XDG_STATE_HOME: stateHome}})
    try {
      // Full before the entry: nothing is deleted, and the way out is space (exit 13), not usage.
      const altered = (await instanceMd5s(target)).get(lone.orthancId)
      await writeFile(join(stateHome, 'filler'), Buffer.alloc(100 * 1024))
      const full = await syncInto()
      expect(full.code, full.stdout).toBe(13)
      expect(parseJson<{error?: {code: string; message: string}}>(full).error).toMatchObject({code: 'journal-unwritable', message: expect.stringContaining('none was')})
      expect((await instanceMd5s(target)).get(lone.orthancId)).toBe(altered)
      await rm(join(stateHome, 'filler'))

      const result = await syncInto()
      expect(result.code, result.stdout).toBe(0)
      expect(parseJson<SyncJson>(result)).toMatchObject({transferred: 1, failed: 0})
      expect((await instanceMd5s(target)).get(lone.orthancId)).toBe((await instanceMd5s(source)).get(lone.orthancId))
      expect(Buffer.from(await (await target.api(`/instances/${lone.orthancId}/attachments/1041/data`)).arrayBuffer()).equals(own)).toBe(true)
      // Nothing is left in the journal: the entry went once written back, and no cut copy stayed.
      const left = await run('find', [stateHome, '-type', 'f', '-name', '*.json*'])
      expect(left.stdout).toBe('')
    } finally {
      await run('umount', [stateHome]).catch(() => {})
      await rm(stateHome, {recursive: true, force: true})
      await removePatient(patient)
    }
  })

  // Two of the source's patients the target reads as one (its DefaultEncoding decodes a PatientID
  // otherwise): the second one's metadata was dropped without a word, exit 0.
  it('two source patients that are one on the target: what one lacks of the other is merged in, a value they disagree on is named as not carried', async () => {
    const cases = await generateIdentifierSet(join(work, 'merging'))
    const [latin1, utf8] = ['latin1', 'utf8-without-charset'].map((label) => cases.find((found) => found.label === label)!)
    const [latin1Id, utf8Id] = await uploadFiles(source, [latin1!.path, utf8!.path])
    const patients = [(await source.json<{ID: string}>(`/instances/${latin1Id}/patient`)).ID, (await source.json<{ID: string}>(`/instances/${utf8Id}/patient`)).ID]
    expect(patients[0]).not.toBe(patients[1])
    await source.api(`/patients/${patients[0]}/metadata/1025`, {method: 'PUT', body: 'the latin-1 one'})
    await source.api(`/patients/${patients[1]}/metadata/1025`, {method: 'PUT', body: 'the utf-8 one'})
    await source.api(`/patients/${patients[1]}/metadata/1026`, {method: 'PUT', body: 'only the utf-8 one'})
    // The study's ID is another on the target too (a hash of the patient's ID with it): it was
    // written under the source's ID, a 404 failing the instance at every run.
    const utf8Study = (await source.json<{ID: string}>(`/instances/${utf8Id}/study`)).ID
    await source.api(`/studies/${utf8Study}/metadata/1027`, {method: 'PUT', body: 'the utf-8 study'})
    const utf8Target = await startOrthanc({name: 'utf8-target', extra: {DefaultEncoding: 'Utf8'}})
    try {
      const result = await runCli(['sync', '--source', source.url, '--target', utf8Target.url, '--json', '--orthanc-id', `${latin1Id},${utf8Id}`])
      expect(result.code, result.stdout).toBe(0)
      const onTarget = await utf8Target.json<string[]>('/patients')
      expect(onTarget).toHaveLength(1)
      expect(['the latin-1 one', 'the utf-8 one']).toContain(await (await utf8Target.api(`/patients/${onTarget[0]}/metadata/1025`)).text())
      expect(await (await utf8Target.api(`/patients/${onTarget[0]}/metadata/1026`)).text()).toBe('only the utf-8 one')
      const studyNotes = await Promise.all((await utf8Target.json<string[]>('/studies')).map(async (study) => (await utf8Target.api(`/studies/${study}/metadata/1027`)).text()))
      expect(studyNotes).toContain('the utf-8 study')
      expect(parseJson<{notCarried: Array<{level: string; kind: string; name?: string; reason: string}>}>(result).notCarried).toContainEqual({
        level: 'patient', kind: 'user-metadata', name: '1025', count: 1, reason: expect.stringContaining('two of the source\'s patients are one on the target'),
      })
    } finally {
      await utf8Target.dispose()
      for (const patient of patients) await source.api(`/patients/${patient}`, {method: 'DELETE'})
    }
  })

  // The target recorded the MD5 of every file sent and kept none: sync and diff both exited 0 over
  // a target holding no image at all.
  it('a target that keeps no DICOM files (StoreDicom false): sync, import, diff and verify --target stop with exit 2 saying so, a sync that finds everything there too', async () => {
    const keepsNothing = await startOrthanc({name: 'store-dicom-false', extra: {StoreDicom: false}})
    try {
      const synced = await runCli(['sync', '--source', source.url, '--target', keepsNothing.url, '--json', '--concurrency', '1'])
      expect(synced.code, synced.stdout).toBe(2)
      expect(parseJson<{error: {code: string; message: string}}>(synced).error).toMatchObject({code: 'target-keeps-no-files', message: expect.stringContaining('"StoreDicom": false')})
      const compared = await runCli(['diff', '--source', source.url, '--target', keepsNothing.url, '--json'])
      expect(compared.code, compared.stdout).toBe(2)
      expect(parseJson<{error: {code: string}}>(compared).error.code).toBe('target-keeps-no-files')
      const imported = await runCli(['import', '--target', keepsNothing.url, '--json', '--no-receipt', join(work, 'fixtures')])
      expect(imported.code, imported.stdout).toBe(2)
      // Already there (sent by another client): a sync with nothing to store reads one back too.
      const [there] = corpus
      await uploadFiles(keepsNothing, [there!.path])
      const found = await runCli(['sync', '--source', source.url, '--target', keepsNothing.url, '--json', '--orthanc-id', there!.orthancId])
      expect(found.code, found.stdout).toBe(2)
      expect(parseJson<{error: {code: string}}>(found).error.code).toBe('target-keeps-no-files')
      // verify --target, run before the source's copy is deleted, read nothing back either: it
      // found the instance there with the archive's MD5 and exited 0.
      const archive = join(work, 'keeps-nothing-export')
      expect((await runCli(['export', '--source', source.url, '--output', archive, '--orthanc-id', there!.orthancId])).code).toBe(0)
      const verified = await runCli(['verify', archive, '--target', keepsNothing.url, '--json'])
      expect(verified.code, verified.stdout).toBe(2)
      expect(parseJson<{error: {code: string}}>(verified).error.code).toBe('target-keeps-no-files')
      // Nor does one that records no MD5s either (StoreMD5ForAttachments off): asked all the same.
      const noMd5 = await startOrthanc({name: 'store-dicom-false-no-md5', extra: {StoreDicom: false, StoreMD5ForAttachments: false}})
      try {
        // A first sync there, storing: each instance failed with a bare 404 from reading its file back.
        const stored = await runCli(['sync', '--source', source.url, '--target', noMd5.url, '--json', '--concurrency', '1'])
        expect(stored.code, stored.stdout).toBe(2)
        expect(parseJson<{error: {code: string}}>(stored).error.code).toBe('target-keeps-no-files')
        await uploadFiles(noMd5, [there!.path])
        const unproven = await runCli(['sync', '--source', source.url, '--target', noMd5.url, '--json', '--orthanc-id', there!.orthancId])
        expect(unproven.code, unproven.stdout).toBe(2)
        expect(parseJson<{error: {code: string}}>(unproven).error.code).toBe('target-keeps-no-files')
        const verifiedNoMd5 = await runCli(['verify', archive, '--target', noMd5.url, '--json'])
        expect(verifiedNoMd5.code, verifiedNoMd5.stdout).toBe(2)
        expect(parseJson<{error: {code: string}}>(verifiedNoMd5).error.code).toBe('target-keeps-no-files')
      } finally {
        await noMd5.dispose()
      }
    } finally {
      await keepsNothing.dispose()
    }
  })

  // diff took a read-back that handed other bytes back than the target recorded for "identical".
  it('diff: a target whose stored files hand back other bytes than it recorded is no "identical" (exit non-zero, named)', async () => {
    const damagedTarget = await startOrthanc({name: 'damaged-storage'})
    try {
      const few = corpus.slice(0, 2)
      await uploadFiles(damagedTarget, few.map((record) => record.path))
      for (const record of few) await damageStoredFile(damagedTarget, record.orthancId)
      const args = few.flatMap((record) => ['--orthanc-id', record.orthancId])
      const result = await runCli(['diff', '--source', source.url, '--target', damagedTarget.url, '--json', ...args])
      expect(result.code, result.stdout).not.toBe(0)
      expect(result.stdout).toMatch(/is handed back with other bytes than the MD5 it recorded/)
    } finally {
      await damagedTarget.dispose()
    }
  })

  // A proxy's 404 on the one read-back (no Orthanc answer) was taken for a target that keeps no
  // files: the job stopped, exit 2; a 403 there failed every instance waiting for the read-back.
  it('a read-back a proxy refuses is no verdict on the target: nothing fails, the job ends exit 0', async () => {
    const fresh = await startOrthanc({name: 'read-back-refused'})
    try {
      for (const fault of ['status-404', 'status-403'] as const) {
        const proxy = await startFaultProxy(fresh.port)
        proxy.faults.push({match: /^GET \/instances\/[^/]+\/attachments\/dicom\/data/, fault})
        try {
          const result = await runCli(['sync', '--source', source.url, '--target', proxy.url, '--json'])
          expect(result.code, `${fault}: ${result.stdout}`).toBe(0)
          expect(parseJson<SyncJson>(result)).toMatchObject({failed: 0})
        } finally {
          await proxy.close()
          for (const patient of await fresh.json<string[]>('/patients')) await fresh.api(`/patients/${patient}`, {method: 'DELETE'})
        }
      }
    } finally {
      await fresh.dispose()
    }
  })

  // Nothing said before the job that a 1.12 target recycles or transcodes what it is sent: its
  // instances then failed one by one with reasons that did not point at its configuration.
  it('a 1.12 target that recycles or transcodes what it stores is named so before the job', async () => {
    const configured = await startOrthanc({name: 'recycling-transcoding', version: '1.12', extra: {MaximumPatientCount: 500, IngestTranscoding: '1.2.840.10008.1.2'}})
    try {
      const result = await runCli(['sync', '--source', source.url, '--target', configured.url, '--json', '--patient-id', corpus[0]!.patientId])
      expect(result.stderr).toMatch(/^Warning: the target recycles \(MaximumPatientCount 500\): to make room it deletes/m)
      expect(result.stderr).toMatch(/^Warning: the target transcodes what it stores \(IngestTranscoding 1\.2\.840\.10008\.1\.2\)/m)
    } finally {
      await configured.dispose()
    }
  })

  // A target that transcodes what it stores failed each such instance as "an older file: set
  // OverwriteInstances", and the summary said to run again, which changes nothing.
  it('a target that changes files as it stores them (IngestTranscoding): each named changed-by-target, with no "run again"', async () => {
    const transcoding = await startOrthanc({name: 'ingest-transcoding', extra: {IngestTranscoding: '1.2.840.10008.1.2'}})
    try {
      const json = await runCli(['sync', '--source', source.url, '--target', transcoding.url, '--json'])
      expect(json.code, json.stdout).toBe(10)
      const failures = parseJson<{failures: Array<{kind: string; reason: string}>}>(json).failures
      expect(failures.length).toBeGreaterThan(0)
      for (const failure of failures) expect(failure).toMatchObject({kind: 'changed-by-target', reason: expect.stringContaining('the target changed the file as it stored it')})
      const human = await runCli(['sync', '--source', source.url, '--target', transcoding.url, '--checksum'])
      expect(human.stdout).toMatch(/changed by the target as it stored/)
      expect(human.stdout).not.toMatch(/Run the same command again to retry/)
    } finally {
      await transcoding.dispose()
    }
  })

  it('a write-back the target refuses is a loss: listed as not written back, the instance failed (exit 10)', async () => {
    const {lone, series, patient} = await loneInstanceDiffering('refused-back')
    await target.api(`/series/${series}/metadata/2004`, {method: 'PUT', body: 'target\'s own'})
    const proxy = await startFaultProxy(target.port)
    proxy.faults.push(...Array.from({length: 5}, () => ({match: new RegExp(`^PUT /series/${series}/metadata/2004`), fault: 'status-403' as const})))
    try {
      const result = await runCli(['sync', '--source', source.url, '--target', proxy.url, '--json', '--checksum', '--patient-id', lone.patientId])
      expect(result.code).toBe(10)
      const summary = parseJson<SyncJson & {notCarried: Array<{level: string; name?: string; reason: string}>; failures: Array<{reason: string}>}>(result)
      expect(summary.notCarried).toContainEqual(expect.objectContaining({level: 'series', name: '2004', reason: 'the target\'s own, deleted with the copy it replaced and not written back: the target refuses it (HTTP 403)'}))
      expect(summary.failures).toEqual([expect.objectContaining({reason: expect.stringMatching(/was replaced, but the target refused to take back 1 of its own entries/)})])
      expect((await instanceMd5s(target)).get(lone.orthancId)).toBe((await instanceMd5s(source)).get(lone.orthancId))
    } finally {
      await proxy.close()
      await removePatient(patient)
    }
  })

  it('a parent\'s large attachment is read again by the replacements of its series that come later, not kept between them', async () => {
    // Two instances are fetched at once (--concurrency 1): the first two share one read, the third reads again.
    const pair = await generateStudySet(join(work, 'large-parent'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 3, pixelBytes: 500, seed: 'sync-large-parent'})
    await uploadFiles(source, pair.map((record) => record.path))
    for (const record of pair) await target.api('/instances', {method: 'POST', body: new Uint8Array(await alteredCopy(record))})
    const {ParentSeries: series} = await target.json<{ParentSeries: string}>(`/instances/${pair[0]!.orthancId}`)
    const {ID: patient} = await target.json<{ID: string}>(`/instances/${pair[0]!.orthancId}/patient`)
    const large = Buffer.alloc(300 * 1024, 7)
    await target.api(`/series/${series}/attachments/1042`, {method: 'PUT', body: new Uint8Array(large)})
    const proxy = await startFaultProxy(target.port)
    try {
      const result = await runCli(['sync', '--source', source.url, '--target', proxy.url, '--json', '--checksum', '--concurrency', '1', '--patient-id', pair[0]!.patientId])
      expect(result.code, result.stderr).toBe(0)
      expect(proxy.log.filter((line) => line.startsWith(`GET /series/${series}/attachments/1042/data`)).length).toBeGreaterThan(1)
      expect(Buffer.from(await (await target.api(`/series/${series}/attachments/1042/data`)).arrayBuffer()).equals(large)).toBe(true)
    } finally {
      await proxy.close()
      await removePatient(patient)
    }
  })

  it('diff --per-study counts what is only on the target, in a study both hold and in one only the target holds', async () => {
    const set = await generateStudySet(join(work, 'per-study-target'), {patients: 1, studiesPerPatient: 2, seriesPerStudy: 1, instancesPerSeries: 2, pixelBytes: 500, seed: 'per-study-target'})
    const [shared, targetOnly] = [...new Set(set.map((record) => record.studyInstanceUid))]
    const inShared = set.filter((record) => record.studyInstanceUid === shared)
    await uploadFiles(target, set.map((record) => record.path))
    await uploadFiles(source, [inShared[0]!.path])
    const {ID: patient} = await target.json<{ID: string}>(`/instances/${inShared[0]!.orthancId}/patient`)
    try {
      const result = await diff('--per-study', '--patient-id', set[0]!.patientId)
      expect(result.code).toBe(14)
      const studies = parseJson<{studies: Array<{studyInstanceUid: string; onlySource: number; onlyTarget: number; identical: number}>}>(result).studies
      expect(studies.find((study) => study.studyInstanceUid === shared)).toMatchObject({onlySource: 0, onlyTarget: 1, identical: 1})
      expect(studies.find((study) => study.studyInstanceUid === targetOnly)).toMatchObject({onlySource: 0, onlyTarget: 2, identical: 0})
      const told = await runCli(['diff', '--source', source.url, '--target', target.url, '--per-study', '--patient-id', set[0]!.patientId])
      expect(told.stdout).toContain(`${shared}: 0 only on the source, 1 only on the target, 0 different, 1 identical`)
      // A filtered comparison speaks of what it selected, not of the whole servers.
      expect(told.stdout).toMatch(/^The servers differ in the selected instances\.$/m)
      const alike = await runCli(['diff', '--source', source.url, '--target', target.url, '--orthanc-id', inShared[0]!.orthancId])
      expect(alike.code, alike.stdout).toBe(0)
      expect(alike.stdout).toMatch(/^The selected instances are the same on both servers\.$/m)
    } finally {
      await removePatient(patient)
    }
  })

  it('diff --side-data counts a patient of several studies once', async () => {
    const patients = await source.json<Array<{ID: string; Studies: string[]}>>('/patients?expand')
    const patient = patients.find((candidate) => candidate.Studies.length > 1)!
    expect(patient).toBeDefined()
    await source.api(`/patients/${patient.ID}/metadata/2001`, {method: 'PUT', body: 'only here'})
    try {
      const result = await diff('--side-data')
      expect(result.code).toBe(14)
      const {sideData} = parseJson<{sideData: {differences: number; items: Array<{level: string; reason: string}>}}>(result)
      expect(sideData.differences).toBe(1)
      expect(sideData.items).toEqual([expect.objectContaining({level: 'patient', reason: 'metadata "2001" only on the source'})])
    } finally {
      await source.api(`/patients/${patient.ID}/metadata/2001`, {method: 'DELETE'})
    }
  })

  it('filters that match nothing: sync and diff print their summary and exit 12, as export does', async () => {
    for (const run of [sync, diff]) {
      const result = await run('--patient-id', 'NO-SUCH-PATIENT')
      expect(result.code, result.stderr).toBe(12)
      expect(result.stderr).toMatch(/the filters matched no instance/)
      expect(JSON.parse(result.stdout)).toMatchObject(run === sync ? {transferred: 0, failed: 0} : {identical: 0, onlySource: 0})
    }
  })

  it('--label on servers without labels (Orthanc before 1.12): refused saying so (exit 2), never "the filters matched nothing"', async () => {
    for (const args of [['diff', '--source', source.url, '--target', target.url], ['sync', '--source', source.url, '--target', target.url], ['export', '--source', source.url, '--output', join(work, 'no-labels')]]) {
      const result = await runCli([...args, '--label', 'teaching'])
      expect(result.code, args[0]).toBe(2)
      expect(result.stderr, args[0]).toMatch(/--label selects by label, and http:\/\/127\.0\.0\.1:\d+ \(Orthanc 1\.\d+\.\d+\) has no labels: they came with Orthanc 1\.12/)
    }
    // Filters that match nothing: diff's conclusion says so, not "the same instances".
    const told = await runCli(['diff', '--source', source.url, '--target', target.url, '--patient-id', 'NO-SUCH-PATIENT'])
    expect(told.code).toBe(12)
    expect(told.stdout).toContain('The filters matched no instance on either server.')
    expect(told.stdout).not.toContain('The servers hold the same instances.')
  })

  it('diff with filters finds what they select only on the target: in a study both hold, and in one only the target holds', async () => {
    const study = await generateStudySet(join(work, 'filtered-diff'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 3, pixelBytes: 500, seed: 'filtered-diff'})
    const uid = study[0]!.studyInstanceUid
    await uploadFiles(target, study.map((record) => record.path))
    await uploadFiles(source, study.slice(0, 2).map((record) => record.path))
    try {
      const partly = await diff('--study-uid', uid)
      expect(partly.code).toBe(14)
      expect(parseJson<DiffJson>(partly)).toMatchObject({onlySource: 0, onlyTarget: 1, identical: 2})
      // The same study, and its series, named by Orthanc ID (the same on both servers: hashes of the UIDs).
      const {ID: studyId} = await source.json<{ID: string}>(`/instances/${study[0]!.orthancId}/study`)
      const {ID: seriesId} = await source.json<{ID: string}>(`/instances/${study[0]!.orthancId}/series`)
      for (const id of [studyId, seriesId]) {
        const named = await diff('--orthanc-id', id)
        expect(named.code, id).toBe(14)
        expect(parseJson<DiffJson>(named)).toMatchObject({onlySource: 0, onlyTarget: 1, identical: 2})
      }
      // An instance named: the target's other instances are not selected.
      const one = await diff('--orthanc-id', study[0]!.orthancId)
      expect(one.code).toBe(0)
      expect(parseJson<DiffJson>(one)).toMatchObject({onlySource: 0, onlyTarget: 0, identical: 1})
      for (const record of study.slice(0, 2)) await source.api(`/instances/${record.orthancId}`, {method: 'DELETE'}).then((response) => response.arrayBuffer())
      const onlyThere = await diff('--study-uid', uid)
      expect(onlyThere.code).toBe(14)
      expect(parseJson<DiffJson>(onlyThere)).toMatchObject({onlySource: 0, onlyTarget: 3, identical: 0})
    } finally {
      for (const record of study) {
        for (const server of [source, target]) await server.api(`/instances/${record.orthancId}`, {method: 'DELETE'}).then((response) => response.arrayBuffer())
      }
    }
  })

  it('--delete removes what the source no longer has, guarded against wiping the target', async () => {
    const extra = await generateStudySet(join(work, 'extra'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 2, pixelBytes: 1000, seed: 'target-only'})
    await uploadFiles(target, extra.map((record) => record.path))
    const guarded = await sync('--delete', '--max-delete-fraction', '0.01')
    expect(parseJson<SyncJson>(guarded).deletion).toMatchObject({candidates: 2, deleted: 0, refused: expect.stringMatching(/max-delete-fraction/)})
    // Asked to mirror deletions and refused: not all of it holds, so not exit 0.
    expect(guarded.code).toBe(14)
    expect(parseJson<DiffJson>(await diff()).onlyTarget).toBe(2)

    const deleted = await sync('--delete')
    expect(deleted.code, deleted.stderr).toBe(0)
    expect(parseJson<SyncJson>(deleted).deletion).toEqual({candidates: 2, deleted: 2})
    expect((await diff()).code).toBe(0)

    // A source that answers empty never empties the target.
    const empty = await startOrthanc({name: 'empty-source'})
    try {
      const result = await runCli(['sync', '--source', empty.url, '--target', target.url, '--delete', '--max-delete-fraction', '1', '--json'])
      expect(parseJson<SyncJson>(result).deletion).toMatchObject({deleted: 0, refused: expect.stringMatching(/no instances at all/)})
      expect(result.code).toBe(14)
      expect((await target.json<string[]>('/instances')).length).toBe(corpus.length)
    } finally {
      await empty.dispose()
    }
  })

  it('--delete measures its fraction against what the target holds before anything moves, and a refused pass copies nothing: another server\'s data given as the source cannot delete the originals, run once or twice', async () => {
    const originals = await generateStudySet(join(work, 'originals'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 2, pixelBytes: 1000, seed: 'mirror-originals'})
    const mirror = await startOrthanc({name: 'mirror-with-originals', ...config})
    try {
      await uploadFiles(mirror, originals.map((record) => record.path))
      // The sync adds the source's instances first; against the target after that, the two
      // originals would be a small fraction of it, within 0.5.
      // Refused, and so is the same command run again: the first copied nothing that would make
      // the originals a small part of the target the second time.
      for (let run = 0; run < 2; run++) {
        const result = await runCli(['sync', '--source', source.url, '--target', mirror.url, '--delete', '--max-delete-fraction', '0.5', '--json'])
        expect(parseJson<SyncJson>(result).deletion).toMatchObject({candidates: 2, deleted: 0, refused: expect.stringMatching(/2 of the 2 instances the target holds .*nothing copied or deleted/)})
        expect(parseJson<SyncJson>(result)).toMatchObject({transferred: 0, failed: 0})
        expect(result.code).toBe(14)
      }
      expect((await instanceMd5s(mirror)).size).toBe(originals.length)
      for (const record of originals) expect((await mirror.api(`/instances/${record.orthancId}`)).status).toBe(200)
    } finally {
      await mirror.dispose()
    }
  })

  it('another instance\'s bytes answered for an instance (a cache before the source that mixed answers up): failed by name, never counted as copied', async () => {
    const [victim, other] = [corpus[0]!, corpus[1]!]
    const proxy = await startFaultProxy(source.port)
    proxy.mixUp.push({match: new RegExp(`^GET /instances/${victim.orthancId}/(file|attachments/dicom/data)`), path: `/instances/${other.orthancId}/attachments/dicom/data`})
    const fresh = await startOrthanc({name: 'mixed-up-target', ...config})
    try {
      const result = await runCli(['sync', '--source', proxy.url, '--target', fresh.url, '--json'])
      expect(result.code, result.stderr).toBe(10)
      const summary = parseJson<SyncJson & {failures: Array<{id: string; kind: string; reason: string}>}>(result)
      expect(summary.failures).toEqual([{id: victim.orthancId, kind: 'mismatch', reason: expect.stringMatching(new RegExp(`stored the bytes that came for it as instance ${other.orthancId}`))}])
      expect(summary.transferred + summary.skipped).toBe(corpus.length - 1)
      expect((await fresh.api(`/instances/${victim.orthancId}`)).status).toBe(404)
      expect((await instanceMd5s(fresh)).get(other.orthancId)).toBe(other.md5)
    } finally {
      await proxy.close()
      await fresh.dispose()
    }
  })

  // The answers to a ZIP were taken by their place alone: a proxy before the target that
  // reordered them had each instance's metadata and attachments written onto another instance,
  // then every one failed as changed by the target ("running again changes nothing").
  it('ZIP answers out of the files\' order (a proxy reordering them): sent again one at a time, side data only on its own instance', async () => {
    const fresh = await startOrthanc({name: 'reordered-answers-target', ...config})
    const proxy = await startFaultProxy(fresh.port)
    // Slow answers keep the target busy, so that small instances wait and travel together.
    proxy.delayMs = 20
    let reordered = 0
    proxy.rewrite.push({match: /^POST \/instances$/, change: (answer) => (Array.isArray(answer) && answer.length > 1 && ++reordered ? [...answer].reverse() : answer)})
    try {
      const result = await runCli(['sync', '--source', source.url, '--target', proxy.url, '--zip-uploads', '--concurrency', '2', '--json'])
      expect(result.code, result.stdout).toBe(0)
      const summary = parseJson<SyncJson>(result)
      // Stored by the ZIP, then AlreadyStored when sent alone: counted skipped (see the README).
      expect(summary.failed).toBe(0)
      expect(summary.transferred + summary.skipped).toBe(corpus.length)
      expect(reordered).toBeGreaterThan(0)
      expect(await instanceMd5s(fresh)).toEqual(await instanceMd5s(source))
      for (const record of corpus) {
        const reviewed = await fresh.api(`/instances/${record.orthancId}/metadata/Reviewed`)
        expect(reviewed.status, record.label).toBe(record === corpus[2] ? 200 : 404)
        await reviewed.arrayBuffer()
      }
      // One upload's answer naming another instance: failed, and nothing of it written there.
      const [victim, other] = [corpus[2]!, corpus[5]!]
      await fresh.api(`/instances/${victim.orthancId}`, {method: 'DELETE'}).then((response) => response.arrayBuffer())
      proxy.rewrite.length = 0
      proxy.rewrite.push({match: /^POST \/instances$/, change: (answer) => ((answer as {ID?: string}).ID === victim.orthancId ? {...(answer as object), ID: other.orthancId} : answer)})
      const misanswered = await runCli(['sync', '--source', source.url, '--target', proxy.url, '--no-zip-uploads', '--json'])
      expect(misanswered.code, misanswered.stdout).toBe(10)
      expect(parseJson<SyncJson & {failures: Array<{kind: string}>}>(misanswered).failures).toEqual([expect.objectContaining({kind: 'mismatch'})])
      expect((await fresh.api(`/instances/${other.orthancId}/metadata/Reviewed`)).status).toBe(404)
      expect((await fresh.api(`/instances/${other.orthancId}/attachments/Report`)).status).toBe(404)
    } finally {
      await proxy.close()
      await fresh.dispose()
    }
  })

  it('a source file whose bytes no longer match its MD5 is not copied, and the run fails', async () => {
    const victim = corpus[4]!
    const restore = await damageStoredFile(source, victim.orthancId)
    const fresh = await startOrthanc({name: 'fresh-target', ...config})
    try {
      const result = await runCli(['sync', '--source', source.url, '--target', fresh.url, '--json'])
      expect(result.code).toBe(10)
      const summary = parseJson<SyncJson & {failures: Array<{id: string; kind: string; reason: string}>}>(result)
      expect(summary).toMatchObject({transferred: corpus.length - 1, failed: 1})
      expect(summary.failures).toEqual([{id: victim.orthancId, kind: 'checksum', reason: expect.stringMatching(/MD5/)}])
      expect((await fresh.api(`/instances/${victim.orthancId}`)).status).toBe(404)
    } finally {
      await restore()
      await fresh.dispose()
    }
  })

  it('export - | import - through a pipe, with no temporary files', async () => {
    const piped = await startOrthanc({name: 'pipe-target', ...config})
    try {
      const cli = `${JSON.stringify(process.execPath)} ${JSON.stringify(join(repoRoot, 'bin/run.js'))}`
      const {stdout, stderr} = await run('bash', ['-o', 'pipefail', '-c', `${cli} export --source ${source.url} --output - | ${cli} import --target ${piped.url} --no-receipt --json -`])
      expect(stderr).toMatch(/^Exported \d+ instances/m)
      expect(stderr).not.toMatch(/Error/)
      expect(JSON.parse(stdout)).toMatchObject({transferred: corpus.length, failed: 0, problems: []})
      expect(await instanceMd5s(piped)).toEqual(await instanceMd5s(source))
      expect(await (await piped.api(`/instances/${corpus[2]!.orthancId}/metadata/Reviewed`)).text()).toBe('yes')
      await expectEmptyAttachment(piped)
    } finally {
      await piped.dispose()
    }
  })

  describe('verify', () => {
    let volumes: string
    beforeAll(async () => {
      volumes = join(work, 'volumes')
      const result = await runCli(['export', '--source', source.url, '--output', volumes, '--max-volume-size', '1600000'])
      expect(result.code, result.stderr).toBe(0)
    })

    it('passes complete, valid volumes, and confirms them on a target', async () => {
      const offline = await runCli(['verify', volumes, '--json'])
      expect(offline.code, offline.stderr).toBe(0)
      expect(parseJson<{complete: boolean; valid: boolean; instances: number}>(offline)).toMatchObject({complete: true, valid: true, instances: corpus.length})
      const online = await runCli(['verify', volumes, '--target', target.url, '--json'])
      expect(online.code, online.stderr).toBe(0)
      expect(parseJson<{target: {confirmed: number}}>(online).target.confirmed).toBe(corpus.length)
    })

    it('says when the target lacks an archived instance: exit 14', async () => {
      const victim = corpus[7]!
      const bytes = Buffer.from(await (await target.api(`/instances/${victim.orthancId}/file`)).arrayBuffer())
      await target.api(`/instances/${victim.orthancId}`, {method: 'DELETE'})
      try {
        const result = await runCli(['verify', volumes, '--target', target.url, '--json'])
        expect(result.code).toBe(14)
        expect(parseJson<{target: {missing: string[]}}>(result).target.missing).toEqual([victim.orthancId])
      } finally {
        await target.api('/instances', {method: 'POST', body: new Uint8Array(bytes)})
      }
    })

    it('catches a flipped byte and a missing volume', async () => {
      const copy = join(work, 'damaged')
      await run('cp', ['-r', volumes, copy])
      const files = await volumeFiles(copy)
      const [entry] = await payloadEntries(files[0]!)
      await flipByteInEntry(files[0]!, entry!.name)
      await rm(files.at(-1)!)
      const result = await runCli(['verify', copy, '--json'])
      expect(result.code).toBe(11)
      const summary = parseJson<{complete: boolean; valid: boolean; volumes: {missing: Array<{from: number; to: number}>}; problems: Array<{id: string; kind: string; reason: string}>}>(result)
      expect(summary.valid).toBe(false)
      expect(summary.complete).toBe(false)
      expect(summary.volumes.missing).toEqual([expect.objectContaining({from: files.length, to: files.length})])
      expect(summary.problems.some((problem) => problem.id.includes(entry!.name) && problem.kind === 'checksum')).toBe(true)
      const human = await runCli(['verify', copy])
      expect(human.stdout).toMatch(/NOT complete and valid/)
    })
  })

  describe('--follow', () => {
    it('mirrors new instances, survives a target restart, and keeps its cursor across its own restart', async () => {
      const mirror = await startOrthanc({name: 'mirror', ...config})
      const stateFile = join(work, 'follow-state.json')
      const startFollowing = () => {
        const child = spawn(process.execPath, [join(repoRoot, 'bin/run.js'), 'sync', '--source', source.url, '--target', mirror.url, '--follow', '--interval', '1', '--state', stateFile, '--json', '--retries', '1'], {stdio: ['ignore', 'pipe', 'pipe']})
        let stdout = ''
        child.stdout.on('data', (chunk: Buffer) => (stdout += chunk))
        const closed = new Promise<number>((resolve) => child.once('close', (code) => resolve(code ?? 1)))
        return {child, closed, output: () => stdout}
      }

      const waitFor = async (what: () => Promise<boolean>, label: string) => {
        const deadline = Date.now() + 30_000
        while (!(await what().catch(() => false))) {
          if (Date.now() > deadline) throw new Error(`timed out waiting for ${label}`)
          await sleep(200)
        }
      }

      const onMirror = async (ids: string[]) => {
        const present = new Set(await mirror.json<string[]>('/instances'))
        return ids.every((id) => present.has(id))
      }

      const batch = async (seed: string) => {
        const records = await generateStudySet(join(work, seed), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 2, pixelBytes: 1500, seed})
        await uploadFiles(source, records.map((record) => record.path))
        return records.map((record) => record.orthancId)
      }

      const added: string[] = []
      let follower = startFollowing()
      try {
        await waitFor(async () => onMirror(await source.json<string[]>('/instances')), 'the first full pass')
        added.push(...(await batch('follow-1')))
        await waitFor(() => onMirror(added), 'instances added while following')

        await mirror.stop()
        added.push(...(await batch('follow-2')))
        await sleep(1500)
        await mirror.start()
        await waitFor(() => onMirror(added), 'catching up after the target came back')

        await source.stop()
        await sleep(1500)
        await source.start()
        added.push(...(await batch('follow-2b')))
        await waitFor(() => onMirror(added), 'catching up after the source came back')

        follower.child.kill('SIGTERM')
        // Stopped by a signal, as a mirror always is: 130, the README's code for an interruption.
        expect(await follower.closed).toBe(130)
        const saved = JSON.parse(await readFile(stateFile, 'utf8')) as {cursor: number}
        expect(saved.cursor).toBeGreaterThan(0)
        expect(JSON.parse(follower.output())).toMatchObject({following: true, failed: 0, interrupted: true, bytes: expect.any(Number), durationMs: expect.any(Number)})
        expect(JSON.parse(follower.output()).outages).toBeGreaterThan(0)

        added.push(...(await batch('follow-3')))
        follower = startFollowing()
        await waitFor(() => onMirror(added), 'instances added while it was stopped')
        follower.child.kill('SIGINT')
        expect(await follower.closed).toBe(130)
        // Restarted from its saved cursor: no full pass was needed.
        expect(JSON.parse(follower.output())).toMatchObject({fullPasses: 0, failed: 0})
        expect((JSON.parse(await readFile(stateFile, 'utf8')) as {cursor: number}).cursor).toBeGreaterThan(saved.cursor)
        expect(await instanceMd5s(mirror)).toEqual(await instanceMd5s(source))
      } finally {
        follower.child.kill('SIGKILL')
        for (const id of added) await source.api(`/instances/${id}`, {method: 'DELETE'})
        await mirror.dispose()
      }
    }, 120_000)

    it('falls back to a full comparison when its cursor is stale', async () => {
      const mirror = await startOrthanc({name: 'stale-mirror', ...config})
      const stateFile = join(work, 'stale-state.json')
      try {
        // A cursor far beyond the source's change log: the source was replaced since it was saved.
        await writeFile(stateFile, JSON.stringify({version: 1, source: source.url, target: mirror.url, cursor: 1_000_000_000, lastFullPass: new Date().toISOString()}))
        const child = spawn(process.execPath, [join(repoRoot, 'bin/run.js'), 'sync', '--source', source.url, '--target', mirror.url, '--follow', '--interval', '1', '--state', stateFile, '--json'], {stdio: ['ignore', 'pipe', 'ignore']})
        let stdout = ''
        child.stdout.on('data', (chunk: Buffer) => (stdout += chunk))
        const closed = new Promise<number>((resolve) => child.once('close', (code) => resolve(code ?? 1)))
        const deadline = Date.now() + 30_000
        while ((await mirror.json<string[]>('/instances')).length < corpus.length && Date.now() < deadline) await sleep(200)
        child.kill('SIGTERM')
        expect(await closed).toBe(130)
        expect(JSON.parse(stdout)).toMatchObject({fullPasses: 1, transferred: corpus.length, failed: 0})
        const {cursor} = JSON.parse(await readFile(stateFile, 'utf8')) as {cursor: number}
        expect(cursor).toBeLessThan(1_000_000_000)
        expect(await instanceMd5s(mirror)).toEqual(await instanceMd5s(source))
      } finally {
        await mirror.dispose()
      }
    })
  })
})

