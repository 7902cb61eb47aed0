import {spawn} from 'node:child_process'
import {mkdtemp, readdir, readFile, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {type FixtureRecord, generateStudySet} from '../../fixtures/generate.js'
import {parseJson, repoRoot, runCli} from '../helpers/cli.js'
import {type FaultProxy, startFaultProxy} from '../helpers/fault-proxy.js'
import {instanceMd5s, type OrthancOptions, type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'
import {startTlsProxy, type TlsProxy} from '../helpers/tls-proxy.js'

interface Summary {
  transferred: number
  failed: number
  zipUploads: {requests: number; instances: number; refusedAsTooLarge: number}
}

/**
 * A job of many small instances sent to a target across a network uses ZIPs without being asked,
 * where the tool knows beforehand what it is to send (a sync's plan, archive volumes, a DICOM
 * folder's first files), and not where it cannot (a stream), nor to a target close by, nor when
 * told not to. Each case against a real Orthanc, every instance confirmed by its MD5.
 */
describe('ZIP uploads by default for many small instances', () => {
  let work: string
  let source: OrthancServer
  let small: FixtureRecord[]
  const servers: OrthancServer[] = []
  const proxies: FaultProxy[] = []
  const tlsProxies: TlsProxy[] = []
  /**
   * A new, empty target behind a proxy that counts its requests and, unless told otherwise, holds
   * each one 10 ms: a target across a network, where round trips count.
   */
  const countedTarget = async (options: OrthancOptions = {}, delayMs = 10) => {
    const target = await startOrthanc(options)
    servers.push(target)
    const proxy = await startFaultProxy(target.port)
    proxy.delayMs = delayMs
    proxies.push(proxy)
    return {target, proxy, uploads: () => proxy.log.filter((line) => line === 'POST /instances').length}
  }

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'zip-by-default-'))
    // 260 instances of about 3 kB: past the 256 that make a job worth batching.
    small = await generateStudySet(join(work, 'small'), {patients: 1, studiesPerPatient: 2, seriesPerStudy: 2, instancesPerSeries: 65, pixelBytes: 2000, seed: 'zip-default', modalities: ['MR']})
    source = await startOrthanc({})
    servers.push(source)
    await uploadFiles(source, small.map((record) => record.path))
  })

  afterAll(async () => {
    await Promise.all(proxies.map((proxy) => proxy.close()))
    await Promise.all(tlsProxies.map((proxy) => proxy.dispose()))
    await Promise.all(servers.map((server) => server.dispose()))
    await rm(work, {recursive: true, force: true})
  })

  it('sync: many small instances go in ZIPs to a target 10 ms away, each confirmed; not with --no-zip-uploads, nor to a target close by', async () => {
    const zipped = await countedTarget()
    const result = await runCli(['sync', '--source', source.url, '--target', zipped.proxy.url, '--json'])
    expect(result.code, result.stderr).toBe(0)
    const summary = parseJson<Summary>(result)
    expect(summary).toMatchObject({transferred: small.length, failed: 0})
    expect(zipped.uploads()).toBeLessThan(small.length / 4)
    expect(summary.zipUploads.requests).toBeGreaterThan(0)
    // What the summary says went in ZIPs is what the target saw: the rest went one per request.
    expect(zipped.uploads()).toBe(summary.zipUploads.requests + small.length - summary.zipUploads.instances)
    expect(zipped.proxy.log.filter((line) => line.endsWith('/attachments/dicom/info'))).toHaveLength(small.length)
    expect(await instanceMd5s(zipped.target)).toEqual(await instanceMd5s(source))

    const plain = await countedTarget()
    const one = await runCli(['sync', '--source', source.url, '--target', plain.proxy.url, '--no-zip-uploads', '--json'])
    expect(one.code, one.stderr).toBe(0)
    expect(parseJson<Summary>(one)).toMatchObject({transferred: small.length, zipUploads: {requests: 0, instances: 0}})
    expect(plain.uploads()).toBe(small.length)
    expect(await instanceMd5s(plain.target)).toEqual(await instanceMd5s(source))

    // Close by (no proxy), one request per instance costs little, and a ZIP would hold its instances back.
    const near = await startOrthanc({})
    servers.push(near)
    const nearby = await runCli(['sync', '--source', source.url, '--target', near.url, '--json'])
    expect(nearby.code, nearby.stderr).toBe(0)
    expect(parseJson<Summary>(nearby)).toMatchObject({transferred: small.length, zipUploads: {requests: 0, instances: 0}})
    expect(await instanceMd5s(near)).toEqual(await instanceMd5s(source))
  })

  it('a target behind a proxy that refuses large bodies (nginx client_max_body_size): the refused ZIP goes again one by one, and later ZIPs are made small enough', async () => {
    const target = await startOrthanc({})
    servers.push(target)
    // A ZIP of more than about 20 of these instances is larger than 64 KiB, which nginx refuses with 413.
    const nginx = await startTlsProxy(target.port, {maxBodySize: '64k', accessLog: true})
    tlsProxies.push(nginx)
    // 8 upload slots: one request at once for small instances, so the refusals counted below are in sequence.
    const result = await runCli(['import', '--target', nginx.url, '--target-ca-file', nginx.caFile, '--zip-uploads', '--concurrency', '8', '--no-receipt', '--json', join(work, 'small')])
    expect(result.code, result.stderr).toBe(0)
    const summary = parseJson<Summary>(result)
    expect(summary).toMatchObject({transferred: small.length, failed: 0})
    expect(await instanceMd5s(target)).toEqual(await instanceMd5s(source))
    const uploads = (await nginx.requests()).filter((line) => line.startsWith('POST /instances '))
    const refused = uploads.filter((line) => line.endsWith(' 413'))
    // ZIPs were refused (the premise), a refusal per halving, not one per ZIP: at most about 200 kB
    // (64 instances), halved to 100 kB, then to 50 kB, under the limit.
    expect(refused.length).toBeGreaterThan(0)
    expect(refused.length).toBeLessThanOrEqual(2)
    expect(summary.zipUploads.refusedAsTooLarge).toBe(refused.length)
    expect(summary.zipUploads.requests).toBeGreaterThan(0)
    expect(uploads.length - refused.length).toBe(summary.zipUploads.requests + small.length - summary.zipUploads.instances)
    expect(uploads.length).toBeLessThan(small.length / 2)

    // An instance larger than the limit fails alone (exit 10), and says what refused it and the way out.
    const [large] = await generateStudySet(join(work, 'large'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 1, pixelBytes: 100_000, seed: 'zip-limit', modalities: ['CT']})
    const refusedLarge = await runCli(['import', '--target', nginx.url, '--target-ca-file', nginx.caFile, '--no-receipt', '--json', large!.path])
    expect(refusedLarge.code, refusedLarge.stderr).toBe(10)
    const failure = parseJson<{failed: number; failures: Array<{id: string; kind: string; reason: string}>}>(refusedLarge)
    expect(failure.failed).toBe(1)
    expect(failure.failures[0]).toMatchObject({kind: 'too-large'})
    expect(failure.failures[0]!.reason).toMatch(/HTTP 413 \(request body too large for the server or a proxy before it, such as nginx, whose client_max_body_size is 1 MiB unless set: raise that limit\)/)
  })

  it('sync --follow behind the same kind of proxy: the size refused in the first pass holds for the next ones', async () => {
    const mirrored = await startOrthanc({})
    const target = await startOrthanc({})
    servers.push(mirrored, target)
    const nginx = await startTlsProxy(target.port, {maxBodySize: '64k', accessLog: true})
    tlsProxies.push(nginx)
    const half = small.length / 2
    await uploadFiles(mirrored, small.slice(0, half).map((record) => record.path))
    const state = join(work, 'follow-state.json')
    const child = spawn(process.execPath, [join(repoRoot, 'bin/run.js'), 'sync', '--source', mirrored.url, '--target', nginx.url, '--target-ca-file', nginx.caFile,
      '--zip-uploads', '--concurrency', '8', '--follow', '--interval', '1', '--state', state, '--json'], {stdio: ['ignore', 'pipe', 'pipe']})
    let stdout = ''
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk))
    const held = async (count: number) => {
      const deadline = Date.now() + 60_000
      while ((await target.json<string[]>('/instances')).length < count && Date.now() < deadline) await sleep(200)
      expect((await target.json<string[]>('/instances')).length).toBe(count)
    }

    await held(half)
    const firstPass = (await nginx.requests()).filter((line) => line.startsWith('POST /instances '))
    expect(firstPass.filter((line) => line.endsWith(' 413')).length).toBeGreaterThan(0)
    await uploadFiles(mirrored, small.slice(half).map((record) => record.path))
    await held(small.length)
    child.kill('SIGTERM')
    expect(await new Promise<number | null>((resolve) => child.once('close', resolve))).toBe(130)
    expect(JSON.parse(stdout)).toMatchObject({following: true, transferred: small.length, failed: 0})
    const later = (await nginx.requests()).filter((line) => line.startsWith('POST /instances ')).slice(firstPass.length)
    // The later passes sent ZIPs, none refused: they started under what the first pass learned.
    expect(later.filter((line) => line.endsWith(' 413'))).toEqual([])
    expect(later.length).toBeLessThan(half / 2)
    expect(await instanceMd5s(target)).toEqual(await instanceMd5s(mirrored))
  })

  it('sync into Orthanc 1.12: its ZIP answers are read the same, every instance confirmed', async () => {
    const newer = await countedTarget({version: '1.12'})
    const result = await runCli(['sync', '--source', source.url, '--target', newer.proxy.url, '--json'])
    expect(result.code, result.stderr).toBe(0)
    const summary = parseJson<Summary>(result)
    expect(summary).toMatchObject({transferred: small.length, failed: 0})
    expect(summary.zipUploads.requests).toBeGreaterThan(0)
    expect(newer.uploads()).toBe(summary.zipUploads.requests + small.length - summary.zipUploads.instances)
    expect(await instanceMd5s(newer.target)).toEqual(await instanceMd5s(source))
  })

  it('sync interrupted while it measures how far the target is: exit 130, nothing moved, and a summary that says so', async () => {
    // Each request held 1.5 s: the probes after the plan take seconds, and the signal comes during them.
    const slow = await countedTarget({}, 1500)
    const child = spawn(process.execPath, [join(repoRoot, 'bin/run.js'), 'sync', '--source', source.url, '--target', slow.proxy.url, '--json'], {stdio: ['ignore', 'pipe', 'pipe']})
    let stdout = ''
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk))
    const deadline = Date.now() + 60_000
    // The endpoint's GET /system, then the first probe's.
    while (slow.proxy.log.filter((line) => line === 'GET /system').length < 2 && Date.now() < deadline) await sleep(20)
    child.kill('SIGINT')
    expect(await new Promise<number | null>((resolve) => child.once('close', resolve))).toBe(130)
    expect(JSON.parse(stdout)).toMatchObject({interrupted: true, transferred: 0, failed: 0, planned: {instances: small.length}})
    expect(slow.uploads()).toBe(0)
  })

  it('import: archive volumes and DICOM folders say what is coming and go in ZIPs; a stream cannot say, and goes one per request', async () => {
    const volumes = join(work, 'volumes')
    const exported = await runCli(['export', '--source', source.url, '--output', volumes, '--json'])
    expect(exported.code, exported.stderr).toBe(0)

    const fromVolumes = await countedTarget()
    const person = await runCli(['import', '--target', fromVolumes.proxy.url, '--no-receipt', volumes])
    expect(person.code, person.stderr).toBe(0)
    const line = /ZIP uploads: (\d+) small instances went in (\d+) requests, each then checked by its own MD5 like any other/.exec(person.stdout)
    expect(line, person.stdout).not.toBeNull()
    expect(fromVolumes.uploads()).toBe(Number(line![2]) + small.length - Number(line![1]))
    expect(fromVolumes.uploads()).toBeLessThan(small.length / 4)
    expect(await instanceMd5s(fromVolumes.target)).toEqual(await instanceMd5s(source))

    // A folder: its first files' sizes.
    const fromFolder = await countedTarget()
    const folder = await runCli(['import', '--target', fromFolder.proxy.url, '--no-receipt', '--json', join(work, 'small')])
    expect(folder.code, folder.stderr).toBe(0)
    const folderSummary = parseJson<Summary>(folder)
    expect(folderSummary).toMatchObject({transferred: small.length, failed: 0})
    expect(fromFolder.uploads()).toBe(folderSummary.zipUploads.requests + small.length - folderSummary.zipUploads.instances)
    expect(fromFolder.uploads()).toBeLessThan(small.length / 4)
    expect(await instanceMd5s(fromFolder.target)).toEqual(await instanceMd5s(source))

    // A stream says nothing before it is read.
    const [volume] = (await readdir(volumes)).filter((name) => name.endsWith('.tar'))
    const fromStream = await countedTarget()
    const stream = await runCli(['import', '--target', fromStream.proxy.url, '--no-receipt', '--json', '-'], {stdin: await readFile(join(volumes, volume!))})
    expect(stream.code, stream.stderr).toBe(0)
    expect(parseJson<Summary>(stream)).toMatchObject({transferred: small.length, zipUploads: {requests: 0, instances: 0}})
    expect(fromStream.uploads()).toBe(small.length)
  })
})
