import {mkdtemp, readFile, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {generateStudySet} from '../../fixtures/generate.js'
import {runCli} from '../helpers/cli.js'
import {extractWithTar, listFiles, volumeFiles} from '../helpers/corpus.js'
import {startFaultProxy} from '../helpers/fault-proxy.js'
import {type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'

/**
 * A patient's Orthanc ID is a hash of the PatientID alone, which can be guessed back: it is
 * written nowhere. The requests that concern a patient's side data carry it in their path, so
 * every way a failing request is reported is searched for it: the JSON summary, the log file,
 * a volume's manifest (failures are recorded in it) and an import's receipt (carried back across
 * the gap).
 */
describe('no patient Orthanc ID in what a failed request leaves', () => {
  let work: string
  let source: OrthancServer
  let target: OrthancServer
  let patientOrthancId: string
  let archive: string

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'orthanc-replicate-patient-ids-'))
    const fixtures = await generateStudySet(join(work, 'fixtures'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 2, pixelBytes: 2000, seed: 'patient-ids'})
    ;[source, target] = await Promise.all([startOrthanc({name: 'patient-ids-source', userContentType: {Report: 1100}}), startOrthanc({name: 'patient-ids-target', userContentType: {Report: 1100}})])
    await uploadFiles(source, fixtures.map((record) => record.path))
    patientOrthancId = (await source.json<string[]>('/patients'))[0]!
    const put = await source.api(`/patients/${patientOrthancId}/attachments/1100`, {method: 'PUT', body: 'report of the patient\n'})
    expect(put.status).toBe(200)
    await put.arrayBuffer()
    archive = join(work, 'archive')
    expect((await runCli(['export', '--source', source.url, '--output', archive])).code).toBe(0)
  }, 120_000)

  afterAll(async () => {
    await Promise.all([source?.dispose(), target?.dispose()])
    if (work) await rm(work, {recursive: true, force: true})
  })

  it('export: a patient attachment that cannot be read, and a retried patient request', async () => {
    const proxy = await startFaultProxy(source.port)
    try {
      proxy.faults.push({match: /^GET \/patients\/[^/]+\/attachments$/, fault: 'status-503'})
      proxy.faults.push({match: /^GET \/patients\/[^/]+\/attachments\/[^/]+\/data/, fault: 'status-404'})
      const output = join(work, 'failing-export')
      const log = join(work, 'export.log')
      const result = await runCli(['export', '--source', proxy.url, '--output', output, '--json', '--verbose', '--log-file', log])
      // Both faults were met, and reported: the failure and the retry.
      expect(result.code).toBe(10)
      const logged = await readFile(log, 'utf8')
      expect(logged).toMatch(/"retry".*GET \/patients\/…\/attachments/)
      expect(result.stdout).toMatch(/GET \/patients\/…\/attachments\/Report\/data on .*HTTP 404/)
      const texts = [{what: 'stdout', text: result.stdout}, {what: 'stderr', text: result.stderr}, {what: 'log', text: logged}]
      const extracted = await extractWithTar(await volumeFiles(output))
      for (const file of await listFiles(extracted)) if (!file.includes('/data/')) texts.push({what: file.slice(extracted.length), text: await readFile(file, 'latin1')})
      expect(texts.filter((entry) => entry.text.includes(patientOrthancId)).map((entry) => entry.what)).toEqual([])
    } finally {
      await proxy.close()
    }
  }, 60_000)

  it('import: patient side data the target refuses', async () => {
    const proxy = await startFaultProxy(target.port)
    try {
      proxy.faults.push({match: /^PUT \/patients\/[^/]+\/attachments\//, fault: 'status-503'})
      const receipt = join(work, 'receipt.jsonl')
      const result = await runCli(['import', '--target', proxy.url, '--retries', '0', '--receipt', receipt, '--json', archive])
      expect(result.code).toBe(10)
      const written = await readFile(receipt, 'utf8')
      expect(written).toMatch(/PUT \/patients\/…\/attachments\/1100 on .*HTTP 503/)
      for (const [what, text] of [['receipt', written], ['stdout', result.stdout], ['stderr', result.stderr]]) expect(text, what).not.toContain(patientOrthancId)
    } finally {
      await proxy.close()
    }
  }, 60_000)
})
