import {type ChildProcess, spawn} from 'node:child_process'
import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'

import {afterAll, describe, expect, it} from 'vitest'

import {runCli} from '../helpers/cli.js'

import {OrthancClient} from '../../src/orthanc/client.js'
import {resolveEndpoint} from '../../src/orthanc/endpoint.js'
import {syncServers} from '../../src/sync/sync.js'

const simulator = fileURLToPath(new URL('../helpers/simulated-orthanc.ts', import.meta.url))
const children: ChildProcess[] = []

/** Starts a simulated server with `instances` instances in another process, so it weighs nothing here. */
async function simulatedServer(instances: number): Promise<OrthancClient> {
  const child = spawn(process.execPath, ['--import', 'tsx', simulator, String(instances)], {stdio: ['ignore', 'pipe', 'inherit']})
  children.push(child)
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.once('data', (chunk: Buffer) => resolve(Number(chunk.toString().trim())))
    child.once('exit', (code) => reject(new Error(`simulated server exited with ${code}`)))
  })
  return new OrthancClient(resolveEndpoint({url: `http://127.0.0.1:${port}`, env: {}}), {connections: 8})
}

/** Runs `job` while sampling the heap; returns the time taken and the peak growth over the starting heap. */
async function measured(job: () => Promise<void>): Promise<{ms: number; peakHeapGrowth: number}> {
  globalThis.gc?.()
  const before = process.memoryUsage().heapUsed
  let peak = before
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().heapUsed)
  }, 25)
  const started = performance.now()
  try {
    await job()
  } finally {
    clearInterval(sampler)
  }

  peak = Math.max(peak, process.memoryUsage().heapUsed)
  return {ms: performance.now() - started, peakHeapGrowth: peak - before}
}

const MiB = 1024 * 1024

describe('a server with a million instances, simulated', () => {
  afterAll(() => {
    for (const child of children) child.kill()
  })

  it('lists instance IDs and reads the change log in bounded memory and linear time', async () => {
    const results: Record<number, {list: {ms: number; peakHeapGrowth: number}; changes: {ms: number; peakHeapGrowth: number}}> = {}
    for (const size of [250_000, 1_000_000]) {
      const server = await simulatedServer(size)
      let listed = 0
      const list = await measured(async () => {
        for await (const _id of server.listInstanceIds()) listed++
      })
      let changes = 0
      const changeLog = await measured(async () => {
        for await (const _change of server.changesSince(0)) changes++
      })
      expect(listed).toBe(size)
      expect(changes).toBe(size)
      results[size] = {list, changes: changeLog}
      await server.close()
    }

    process.stderr.write(`listing: ${JSON.stringify(results)}\n`)
    for (const phase of ['list', 'changes'] as const) {
      const small = results[250_000]![phase]
      const large = results[1_000_000]![phase]
      // Four times the instances: no more than about four times the time (a quadratic walk would
      // take sixteen), and no more memory. No lower bound: the counts above prove the work was
      // done, and a small run slowed by the machine made the ratio fall to 1.3 in CI.
      expect(large.ms / small.ms, `${phase} time ratio`).toBeLessThan(7)
      expect(large.peakHeapGrowth, `${phase} heap`).toBeLessThan(64 * MiB)
    }
  }, 240_000)

  it('plans a sync (what the target lacks, per study) in bounded memory and linear time', async () => {
    const results: Record<number, {ms: number; peakHeapGrowth: number}> = {}
    for (const size of [250_000, 1_000_000]) {
      const source = await simulatedServer(size)
      // The target holds the first half of the source's studies.
      const target = await simulatedServer(size / 2)
      let missing = 0
      results[size] = await measured(async () => {
        const summary = await syncServers({source, target, filters: {}, checksum: false, dryRun: true, concurrency: 8})
        missing = summary.plan.missing
        expect(summary.plan.present).toBe(size / 2)
      })
      expect(missing).toBe(size / 2)
      await Promise.all([source.close(), target.close()])
    }

    process.stderr.write(`sync planning: ${JSON.stringify(results)}\n`)
    const ratio = results[1_000_000]!.ms / results[250_000]!.ms
    expect(ratio).toBeLessThan(7)
    expect(results[1_000_000]!.peakHeapGrowth).toBeLessThan(96 * MiB)
  }, 300_000)

  it('an export whose planning fails more instances than a summary lists counts them all, and so does its resume', async () => {
    // The simulated server answers 404 to every side-data read: planning fails each instance.
    const server = await simulatedServer(1500)
    const output = await mkdtemp(join(tmpdir(), 'orthanc-replicate-planning-failures-'))
    try {
      for (const run of ['first run', 'resumed']) {
        const result = await runCli(['export', '--source', server.display, '--output', join(output, 'export'), '--json'])
        expect(result.code, run).toBe(10)
        const summary = JSON.parse(result.stdout) as {failed: number; failures: unknown[]}
        expect([summary.failed, summary.failures.length], run).toEqual([1500, 1000])
      }
    } finally {
      await server.close()
      await rm(output, {recursive: true, force: true})
    }
  }, 120_000)
})
