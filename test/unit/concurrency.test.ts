import {setTimeout as sleep} from 'node:timers/promises'

import {describe, expect, it} from 'vitest'

import {Semaphore} from '../../src/util/concurrency.js'
import {inFlightFor, runTransfer} from '../../src/transfer/engine.js'

describe('Semaphore', () => {
  it('never runs more than its limit at once, and runs every task in arrival order', async () => {
    const slots = new Semaphore(3)
    let running = 0
    let most = 0
    const started: number[] = []
    await Promise.all(Array.from({length: 20}, (_, index) => slots.run(async () => {
      started.push(index)
      running++
      most = Math.max(most, running)
      await sleep(index % 4)
      running--
    })))
    expect(most).toBe(3)
    expect(started).toEqual(Array.from({length: 20}, (_, index) => index))
  })

  it('frees the place of a task that failed', async () => {
    const slots = new Semaphore(1)
    await expect(slots.run(async () => {
      throw new Error('upload refused')
    })).rejects.toThrow('upload refused')
    expect(await slots.run(async () => 'next')).toBe('next')
  })
})

describe('inFlightFor', () => {
  it('keeps twice as many instances in flight as uploads, so the next one is ready', () => {
    expect(inFlightFor(4)).toBe(8)
    expect(inFlightFor(0)).toBe(2)
  })
})

describe('runTransfer memory bound', () => {
  /** Runs items of the given sizes, recording the bytes held from the moment an item is taken until it is done. */
  async function holdings(sizes: number[], ordered: boolean) {
    let held = 0
    let most = 0
    let mostItems = 0
    let items = 0
    async function* produce() {
      for (const [index, size] of sizes.entries()) {
        held += size
        items++
        most = Math.max(most, held)
        mostItems = Math.max(mostItems, items)
        yield {index, size}
      }
    }

    const done = (item: {size: number}) => {
      held -= item.size
      items--
    }

    const stats = await runTransfer({
      items: produce(),
      concurrency: 8,
      maxBytesInFlight: 100,
      sizeOf: (item) => item.size,
      describe: (item) => ({id: String(item.index)}),
      async work(item) {
        await sleep(1 + (item.index % 3))
        if (!ordered) done(item)
        return {kind: 'transferred' as const, bytes: item.size}
      },
      commit: ordered ? async (item, outcome) => {
        done(item)
        return outcome
      } : undefined,
    })
    return {most, mostItems, stats}
  }

  for (const ordered of [false, true]) {
    it(`takes no new item while those in flight hold the limit (${ordered ? 'ordered' : 'unordered'})`, async () => {
      const small = await holdings(Array.from({length: 40}, () => 10), ordered)
      expect(small.stats.transferred).toBe(40)
      // 100 bytes of 10-byte items: the count limit (8) binds first.
      expect(small.mostItems).toBe(8)

      const large = await holdings([60, 60, 60, 5, 5, 250, 60, 60], ordered)
      expect(large.stats.transferred).toBe(8)
      // Never more than the limit plus the one item that crossed it (all eight at once would be 560 bytes).
      expect(large.most).toBeLessThanOrEqual(100 + 250)
      expect(large.most).toBeGreaterThanOrEqual(250)
    })
  }
})
