import {setTimeout as sleep} from 'node:timers/promises'

import {describe, expect, it} from 'vitest'

import {runTransfer, type TransferJob} from '../../src/transfer/engine.js'
import type {ProgressEvent} from '../../src/transfer/progress.js'

/** The engine's contract, without servers: order of commits, retries, what stops a job and what does not. */

async function* items(count: number): AsyncGenerator<number> {
  for (let item = 0; item < count; item++) yield item
}

/** An error as the library raises them: its traits say what the engine should do. */
function failure(message: string, traits: {fatal?: boolean; transient?: boolean} = {}): Error {
  return Object.assign(new Error(message), traits)
}

const job = <Payload>(overrides: Partial<TransferJob<number, Payload>>): TransferJob<number, Payload> => ({
  items: items(10),
  concurrency: 3,
  describe: (item) => ({id: `item-${item}`}),
  work: async () => ({kind: 'transferred', bytes: 1}) as Payload,
  ...overrides,
})

describe('the transfer engine', () => {
  it('commits in the order of the items, whatever order the work finishes in', async () => {
    const committed: number[] = []
    const stats = await runTransfer(job<number>({
      concurrency: 4,
      // Later items finish first.
      work: async (item) => {
        await sleep((10 - item) * 3)
        return item
      },
      commit: async (item, payload) => {
        expect(payload).toBe(item)
        committed.push(item)
        return {kind: 'transferred', bytes: 10}
      },
    }))
    expect(committed).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    expect(stats).toMatchObject({transferred: 10, skipped: 0, failed: 0, bytes: 100, interrupted: false})
  })

  it('never has more than `concurrency` items in work at once', async () => {
    let running = 0
    let most = 0
    for (const ordered of [false, true]) {
      most = 0
      await runTransfer(job({
        items: items(30),
        concurrency: 3,
        work: async () => {
          running++
          most = Math.max(most, running)
          await sleep(2)
          running--
          return {kind: 'transferred', bytes: 0}
        },
        commit: ordered ? async () => ({kind: 'transferred', bytes: 0}) : undefined,
      }))
      expect(most, ordered ? 'ordered' : 'unordered').toBeLessThanOrEqual(3)
      expect(most).toBeGreaterThan(1)
    }
  })

  it('counts skipped items apart from transferred ones, with their bytes', async () => {
    const stats = await runTransfer(job({work: async (item) => (item % 2 === 0 ? {kind: 'transferred', bytes: 5} : {kind: 'skipped'})}))
    expect(stats).toMatchObject({transferred: 5, skipped: 5, bytes: 25})
  })

  it('tries a transient failure again, up to `attempts`, and counts each retry', async () => {
    const tries = new Map<number, number>()
    const stats = await runTransfer(job({
      attempts: 3,
      work: async (item) => {
        tries.set(item, (tries.get(item) ?? 0) + 1)
        // Item 2 recovers on its second attempt; item 5 never does.
        if ((item === 2 && tries.get(item) === 1) || item === 5) throw failure('connection reset mid-body', {transient: true})
        return {kind: 'transferred', bytes: 1}
      },
    }))
    expect(tries.get(2)).toBe(2)
    expect(tries.get(5)).toBe(3)
    expect(stats.retries).toBe(1 + 2)
    expect(stats).toMatchObject({transferred: 9, failed: 1})
    expect(stats.failures).toEqual([{id: 'item-5', kind: 'failed', reason: 'connection reset mid-body'}])
  })

  it('does not try again what cannot pass, and goes on with the other items', async () => {
    const tries = new Map<number, number>()
    const stats = await runTransfer(job({
      work: async (item) => {
        tries.set(item, (tries.get(item) ?? 0) + 1)
        if (item === 4) throw Object.assign(failure('MD5 differs from the source\'s'), {problemKind: 'checksum'})
        return {kind: 'transferred', bytes: 1}
      },
    }))
    expect(tries.get(4)).toBe(1)
    expect(stats).toMatchObject({transferred: 9, failed: 1, retries: 0})
    expect(stats.failures).toEqual([{id: 'item-4', kind: 'checksum', reason: 'MD5 differs from the source\'s'}])
  })

  it('a fatal error stops the whole job: no new item is taken, and it is thrown with the counts so far', async () => {
    for (const ordered of [false, true]) {
      const started: number[] = []
      const error = await runTransfer(job({
        items: items(100),
        concurrency: 2,
        work: async (item, signal) => {
          started.push(item)
          if (item === 5) throw failure('the server went away', {fatal: true})
          await sleep(5, undefined, {signal})
          return {kind: 'transferred', bytes: 1}
        },
        commit: ordered ? async () => ({kind: 'transferred', bytes: 1}) : undefined,
      })).then(() => undefined, (thrown: Error & {stats?: {transferred: number; failed: number}}) => thrown)
      expect(error?.message, ordered ? 'ordered' : 'unordered').toBe('the server went away')
      expect(error?.stats?.transferred).toBeGreaterThan(0)
      expect(error?.stats?.transferred).toBeLessThan(10)
      // The fatal error is not one item's failure.
      expect(error?.stats?.failed).toBe(0)
      expect(Math.max(...started)).toBeLessThan(10)
    }
  })

  it('an interruption stops the intake and returns what was done, marked interrupted', async () => {
    const controller = new AbortController()
    const stats = await runTransfer(job({
      items: items(1000),
      signal: controller.signal,
      work: async (item) => {
        if (item === 20) controller.abort(new DOMException('interrupted', 'AbortError'))
        await sleep(1)
        return {kind: 'transferred', bytes: 1}
      },
    }))
    expect(stats.interrupted).toBe(true)
    expect(stats.transferred).toBeGreaterThanOrEqual(20)
    expect(stats.transferred).toBeLessThan(30)
    expect(stats.failed).toBe(0)
  })

  it('reports progress after each item, with the job\'s totals', async () => {
    const events: ProgressEvent[] = []
    await runTransfer(job({items: items(4), phase: 'copy', total: 4, totalBytes: 4, onProgress: (event) => events.push(event)}))
    expect(events.map((event) => event.done)).toEqual([1, 2, 3, 4])
    expect(events.at(-1)).toEqual({phase: 'copy', done: 4, total: 4, bytes: 4, totalBytes: 4})
  })
})
