import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {type FixtureRecord, generateStudySet} from '../../fixtures/generate.js'
import {parseJson, runCli} from '../helpers/cli.js'
import {startFaultProxy} from '../helpers/fault-proxy.js'
import {instanceMd5s, type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'

interface Summary {
  transferred: number
  failed: number
  bytes: number
  durationMs: number
  concurrency: number
  concurrencyAdaptive: boolean
}

const MiB = 1024 * 1024

describe('--concurrency and --bwlimit against real servers', () => {
  let source: OrthancServer
  let work: string
  let corpus: FixtureRecord[]
  const targets: OrthancServer[] = []
  const freshTarget = async () => {
    const target = await startOrthanc({})
    targets.push(target)
    return target
  }

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'transfer-settings-'))
    // About 3 MiB: 24 instances of 130 kB.
    corpus = await generateStudySet(join(work, 'corpus'), {patients: 1, studiesPerPatient: 2, seriesPerStudy: 2, instancesPerSeries: 6, pixelBytes: 130_000, seed: 'pace', modalities: ['CT']})
    source = await startOrthanc({})
    await uploadFiles(source, corpus.map((record) => record.path))
  })

  afterAll(async () => {
    await Promise.all([source?.dispose(), ...targets.map((target) => target.dispose())])
    await rm(work, {recursive: true, force: true})
  })

  it('holds an import to --bwlimit within 10 %', async () => {
    const target = await freshTarget()
    const result = await runCli(['import', '--target', target.url, '--no-receipt', '--bwlimit', '1M', '--json', join(work, 'corpus')])
    const summary = parseJson<Summary>(result)
    expect(result.code, result.stderr).toBe(0)
    expect(summary.transferred).toBe(corpus.length)
    expect(summary.bytes).toBeGreaterThan(2.5 * MiB)
    const rate = summary.bytes / (summary.durationMs / 1000)
    expect(rate).toBeLessThanOrEqual(1.1 * MiB)
    expect(rate).toBeGreaterThanOrEqual(0.9 * MiB)
  })

  it('holds sync to --bwlimit in both directions, and the copy is whole', async () => {
    const target = await freshTarget()
    const result = await runCli(['sync', '--source', source.url, '--target', target.url, '--bwlimit', '1M', '--json'])
    const summary = parseJson<Summary>(result)
    expect(result.code, result.stderr).toBe(0)
    expect(summary.transferred).toBe(corpus.length)
    const rate = summary.bytes / (summary.durationMs / 1000)
    expect(rate).toBeLessThanOrEqual(1.1 * MiB)
    // Downloads and uploads are each held to 1 MiB/s and overlap; the first upload waits for the
    // first download, a few percent of these 3 seconds.
    expect(rate).toBeGreaterThanOrEqual(0.85 * MiB)
    expect(await instanceMd5s(target)).toEqual(await instanceMd5s(source))
  })

  it('paces only the direction asked for: 64K:off limits uploads, not the downloads of an export', async () => {
    const output = join(work, 'export')
    const started = performance.now()
    const result = await runCli(['export', '--source', source.url, '--output', output, '--bwlimit', '64K:off', '--json'])
    expect(result.code, result.stderr).toBe(0)
    // At 64 KiB/s the export would take close to a minute: downloads were not held back.
    expect(performance.now() - started).toBeLessThan(20_000)
  })

  it('reports the concurrency: adaptive by default, fixed with --concurrency', async () => {
    const adaptive = parseJson<Summary>(await runCli(['sync', '--source', source.url, '--target', (await freshTarget()).url, '--json']))
    expect(adaptive).toMatchObject({transferred: corpus.length, concurrencyAdaptive: true})
    expect(adaptive.concurrency).toBeGreaterThanOrEqual(1)
    const fixed = parseJson<Summary>(await runCli(['sync', '--source', source.url, '--target', (await freshTarget()).url, '--concurrency', '3', '--json']))
    expect(fixed).toMatchObject({transferred: corpus.length, concurrency: 3, concurrencyAdaptive: false})
    const person = await runCli(['sync', '--source', source.url, '--target', (await freshTarget()).url])
    expect(person.stdout).toMatch(/Concurrency: settled on \d+ uploads at once \(adaptive; --concurrency N fixes it\)\./)
  })

  it('compares beside the servers\' GET /system, not after it: a slow /system holds nothing back, and the copy is whole', async () => {
    const proxy = await startFaultProxy(source.port)
    try {
      proxy.slow.push({match: /^GET \/system$/, ms: 400})
      const target = await freshTarget()
      const summary = parseJson<Summary>(await runCli(['sync', '--source', proxy.url, '--target', target.url, '--json']))
      expect(summary).toMatchObject({transferred: corpus.length, failed: 0})
      // The source's studies were listed while its /system was still on the way.
      const listed = proxy.events.indexOf('> GET /studies?expand')
      expect(listed).toBeGreaterThanOrEqual(0)
      expect(listed).toBeLessThan(proxy.events.indexOf('< GET /system'))
      expect(await instanceMd5s(target)).toEqual(await instanceMd5s(source))
    } finally {
      await proxy.close()
    }
  })

  it('looks up on the target only the studies its listing names: none for a study new to it, the present one as before', async () => {
    // The target holds the first study already.
    const firstStudy = corpus[0]!.studyInstanceUid
    const target = await freshTarget()
    await uploadFiles(target, corpus.filter((record) => record.studyInstanceUid === firstStudy).map((record) => record.path))
    const [presentStudy] = await target.json<string[]>('/studies')
    const [sourceProxy, targetProxy] = await Promise.all([startFaultProxy(source.port), startFaultProxy(target.port)])
    try {
      // The source's listing comes late: the target's has arrived before any study is compared.
      sourceProxy.slow.push({match: /^GET \/studies\?expand$/, ms: 300})
      const result = await runCli(['sync', '--source', sourceProxy.url, '--target', targetProxy.url, '--json'])
      expect(result.code, result.stderr).toBe(0)
      const present = corpus.filter((record) => record.studyInstanceUid === firstStudy).length
      expect(parseJson<Summary & {skipped: number}>(result)).toMatchObject({transferred: corpus.length - present, skipped: present, failed: 0})
      const lookups = targetProxy.events.filter((event) => /^> GET \/studies\/[^/]+\/instances$/.test(event))
      expect(lookups).toEqual([`> GET /studies/${presentStudy}/instances`])
      expect(await instanceMd5s(target)).toEqual(await instanceMd5s(source))
    } finally {
      await Promise.all([sourceProxy.close(), targetProxy.close()])
    }
  })

  it('a study stored on the target after its listing is planned as missing, found there on upload, and not claimed as transferred', async () => {
    const lateStudy = corpus[0]!.studyInstanceUid
    const late = corpus.filter((record) => record.studyInstanceUid === lateStudy)
    const target = await freshTarget()
    const [sourceProxy, targetProxy] = await Promise.all([startFaultProxy(source.port), startFaultProxy(target.port)])
    try {
      // The target's listing (empty) answers at once; the source's comes 1.5 s later, and meanwhile another writer stores a study.
      sourceProxy.slow.push({match: /^GET \/studies\?expand$/, ms: 1500})
      const running = runCli(['sync', '--source', sourceProxy.url, '--target', targetProxy.url, '--json'])
      const listed = Date.now()
      while (!targetProxy.events.includes('< GET /studies?expand')) {
        expect(Date.now() - listed, 'the target\'s listing answered').toBeLessThan(10_000)
        await new Promise((resolve) => setTimeout(resolve, 10))
      }
      await uploadFiles(target, late.map((record) => record.path))
      expect(sourceProxy.events.includes('< GET /studies?expand'), 'stored before the source\'s listing came').toBe(false)
      const result = await running
      expect(result.code, result.stderr).toBe(0)
      expect(parseJson<Summary & {skipped: number}>(result)).toMatchObject({transferred: corpus.length - late.length, skipped: late.length, failed: 0})
      expect(targetProxy.events.filter((event) => /^> GET \/studies\/[^/]+\/instances$/.test(event))).toEqual([])
      expect(await instanceMd5s(target)).toEqual(await instanceMd5s(source))
    } finally {
      await Promise.all([sourceProxy.close(), targetProxy.close()])
    }
  })

  it('diff compares beside the servers\' GET /system too, and asks the source\'s count beside it: the answer is whole', async () => {
    const proxy = await startFaultProxy(source.port)
    try {
      proxy.slow.push({match: /^GET \/system$/, ms: 400})
      const result = await runCli(['diff', '--source', proxy.url, '--target', source.url, '--json'])
      expect(result.code, result.stderr).toBe(0)
      expect(parseJson<{identical: number; onlySource: number; onlyTarget: number; different: number}>(result))
        .toMatchObject({identical: corpus.length, onlySource: 0, onlyTarget: 0, different: 0})
      // The source's studies were listed and its count asked while its /system was still on the way.
      const answered = proxy.events.indexOf('< GET /system')
      for (const request of ['> GET /studies?expand', '> GET /statistics']) {
        expect(proxy.events.indexOf(request), request).toBeGreaterThanOrEqual(0)
        expect(proxy.events.indexOf(request), request).toBeLessThan(answered)
      }
    } finally {
      await proxy.close()
    }
  })

  it('uploads an instance without waiting for its patient\'s, study\'s and series\' side data, which is restored after', async () => {
    const [sourceProxy, targetProxy] = await Promise.all([startFaultProxy(source.port), startFaultProxy((await freshTarget()).port)])
    try {
      // One timeline for both servers.
      targetProxy.events = sourceProxy.events
      sourceProxy.slow.push({match: /^GET \/(patients|studies|series)\/[^/]+\/attachments$/, ms: 500})
      const summary = parseJson<Summary>(await runCli(['sync', '--source', sourceProxy.url, '--target', targetProxy.url, '--json']))
      expect(summary).toMatchObject({transferred: corpus.length, failed: 0})
      const events = sourceProxy.events
      const firstUpload = events.indexOf('> POST /instances')
      const firstResourceRead = events.findIndex((event) => /^< GET \/(patients|studies|series)\/[^/]+\/attachments$/.test(event))
      expect(firstUpload).toBeGreaterThanOrEqual(0)
      expect(firstResourceRead).toBeGreaterThanOrEqual(0)
      expect(firstUpload).toBeLessThan(firstResourceRead)
    } finally {
      await Promise.all([sourceProxy.close(), targetProxy.close()])
    }
  })

  it('a study\'s side data that cannot be read fails its instances even though they were uploaded first, and the next run completes them', async () => {
    const proxy = await startFaultProxy(source.port)
    const target = await freshTarget()
    try {
      // A proxy that refuses every study's attachment list: the study's side data cannot be read.
      for (let index = 0; index < 500; index++) proxy.faults.push({match: /^GET \/studies\/[^/]+\/attachments$/, fault: 'status-404'})
      const failed = await runCli(['sync', '--source', proxy.url, '--target', target.url, '--json'])
      expect(failed.code).not.toBe(0)
      const summary = parseJson<Summary>(failed)
      // None is claimed: uploaded or not, an instance whose side data was not restored failed.
      expect(summary.failed).toBe(corpus.length)
      expect(summary.transferred).toBe(0)
    } finally {
      await proxy.close()
    }

    const again = parseJson<Summary>(await runCli(['sync', '--source', source.url, '--target', target.url, '--json']))
    expect(again.failed).toBe(0)
    expect(await instanceMd5s(target)).toEqual(await instanceMd5s(source))
  })

  it('--zip-uploads: small instances go several to a request into a real Orthanc, each confirmed, the copy whole', async () => {
    const small = await generateStudySet(join(work, 'small'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 2, instancesPerSeries: 20, pixelBytes: 2000, seed: 'zip', modalities: ['MR']})
    const target = await freshTarget()
    const proxy = await startFaultProxy(target.port)
    // Slow answers keep the target busy, so that instances wait for an upload and travel together.
    proxy.delayMs = 20
    try {
      const result = await runCli(['import', '--target', proxy.url, '--no-receipt', '--zip-uploads', '--concurrency', '2', '--json', join(work, 'small')])
      expect(result.code, result.stderr).toBe(0)
      expect(parseJson<Summary>(result)).toMatchObject({transferred: small.length, failed: 0})
      const uploads = proxy.log.filter((line) => line === 'POST /instances')
      expect(uploads.length).toBeLessThan(small.length / 2)
      // Every instance confirmed on its own, by its MD5.
      expect(proxy.log.filter((line) => line.endsWith('/attachments/dicom/info'))).toHaveLength(small.length)
      const stored = await instanceMd5s(target)
      expect([...stored.values()].sort()).toEqual(small.map((record) => record.md5).sort())
    } finally {
      await proxy.close()
    }
  })

  it('refuses a bad --bwlimit or --concurrency with a usage error, and no stack trace', async () => {
    for (const args of [['--bwlimit', '10X'], ['--bwlimit', '08:00,1M 25:00,off'], ['--bwlimit', '08:00,1M Mon-08:00,off'], ['--bwlimit', '08:00'], ['--bwlimit', '10Mb'], ['--bwlimit', '0.0001'], ['--concurrency', '0'], ['--concurrency', 'many'], ['--concurrency', '65']]) {
      const result = await runCli(['sync', '--source', source.url, '--target', source.url, ...args])
      expect(result.code, args.join(' ')).toBe(2)
      expect(result.stderr).toMatch(/--(bwlimit|concurrency) "/)
      expect(result.stderr).not.toMatch(/\n\s+at /)
    }
  })
})
