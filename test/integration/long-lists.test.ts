import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {generateStudySet} from '../../fixtures/generate.js'
import {runCli} from '../helpers/cli.js'
import {type OrthancServer, startOrthanc} from '../helpers/orthanc.js'

/**
 * Summaries list the first 1,000 instances of a kind, so that a bad day cannot fill memory; what
 * they count must still be every one. An archive of 1,001 instances, checked against an empty
 * target, has one more missing than any list holds.
 */
describe('counts beyond the 1,000 listed', () => {
  const INSTANCES = 1001
  let work: string
  let source: OrthancServer
  let empty: OrthancServer
  let archive: string

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'orthanc-replicate-long-lists-'))
    await generateStudySet(join(work, 'fixtures'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: INSTANCES, pixelBytes: 16, seed: 'long-lists'})
    ;[source, empty] = await Promise.all([startOrthanc({name: 'long-lists-source'}), startOrthanc({name: 'long-lists-empty'})])
    const loaded = await runCli(['import', '--target', source.url, '--no-receipt', '--json', join(work, 'fixtures')])
    expect(loaded.code, loaded.stderr).toBe(0)
    archive = join(work, 'archive')
    const exported = await runCli(['export', '--source', source.url, '--output', archive])
    expect(exported.code, exported.stderr).toBe(0)
  }, 180_000)

  afterAll(async () => {
    await Promise.all([source?.dispose(), empty?.dispose()])
    if (work) await rm(work, {recursive: true, force: true})
  })

  it('verify --target counts every instance missing on the target, and lists the first 1,000', async () => {
    const result = await runCli(['verify', '--target', empty.url, '--json', archive])
    expect(result.code).toBe(14)
    const {target} = JSON.parse(result.stdout) as {target: {confirmed: number; missingCount: number; missing: string[]}}
    expect([target.confirmed, target.missingCount, target.missing.length]).toEqual([0, INSTANCES, 1000])
    const human = await runCli(['verify', '--target', empty.url, archive])
    expect(human.stdout).toMatch(new RegExp(`0 confirmed, ${INSTANCES} missing`))
    expect(human.stdout).toMatch(/missing on the target \(the first 1000\):/)
  }, 120_000)
})
