import {setTimeout as sleep} from 'node:timers/promises'

import {describe, expect, it} from 'vitest'

import {besideFirst, mapOrdered, readAhead} from '../../src/util/concurrency.js'
import {inFlightPerUpload, runTransfer} from '../../src/transfer/engine.js'

describe('inFlightPerUpload', () => {
  it('keeps twice as many instances in flight as uploads, so the next one is ready; eight when they may share an upload', () => {
    expect(inFlightPerUpload()).toBe(2)
    expect(inFlightPerUpload(true)).toBe(8)
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

describe('runTransfer tells its control when the source does not keep up', () => {
  it('marks completions starved while fewer items than allowed are in flight', async () => {
    const completions: boolean[] = []
    await runTransfer({
      items: (async function* () {
        for (let index = 0; index < 20; index++) {
          await sleep(5)
          yield index
        }
      })(),
      concurrency: 1,
      control: {inFlight: () => 8, completed: (completion) => completions.push(completion.starved), drained() {}},
      describe: (index) => ({id: String(index)}),
      async work() {
        await sleep(1)
        return {kind: 'transferred' as const, bytes: 1}
      },
    })
    expect(completions).toHaveLength(20)
    expect(completions.every(Boolean)).toBe(true)
  })
})

describe('readAhead', () => {
  async function* numbers(count: number, log: number[], failAt?: number): AsyncGenerator<number> {
    for (let index = 0; index < count; index++) {
      if (index === failAt) throw new Error(`source failed at ${index}`)
      log.push(index)
      yield index
    }
  }

  it('passes every item on in order, pulling ahead of the consumer up to its count', async () => {
    const pulled: number[] = []
    const seen: number[] = []
    for await (const item of readAhead(numbers(50, pulled), 10)) {
      await sleep(1)
      // The source is ahead of the consumer, but never by more than the count (plus the one it is handing over).
      expect(pulled.length - item).toBeLessThanOrEqual(12)
      seen.push(item)
    }

    expect(seen).toEqual(Array.from({length: 50}, (_, index) => index))
    expect(pulled.length).toBe(50)
  })

  it('hands on the items read before a failure, then the failure', async () => {
    const seen: number[] = []
    await expect((async () => {
      for await (const item of readAhead(numbers(50, [], 7), 100)) seen.push(item)
    })()).rejects.toThrow('source failed at 7')
    expect(seen).toEqual([0, 1, 2, 3, 4, 5, 6])
  })

  it('stops pulling and closes the source when the consumer stops', async () => {
    let closed = false
    async function* endless(): AsyncGenerator<number> {
      try {
        for (let index = 0; ; index++) yield index
      } finally {
        closed = true
      }
    }

    for await (const item of readAhead(endless(), 5)) if (item === 3) break
    expect(closed).toBe(true)
  })
})

describe('runTransfer with a control', () => {
  it('keeps as many items in flight as the control says at each take, tells it every completion, and that the items ran out', async () => {
    let limit = 2
    let running = 0
    const overLimit: number[] = []
    const completions: Array<{bytes: number; congested: boolean; starved: boolean}> = []
    let drained = 0
    const stats = await runTransfer({
      items: (async function* () {
        for (let index = 0; index < 60; index++) yield index
      })(),
      concurrency: 1,
      control: {
        inFlight: () => limit,
        completed: (completion) => {
          completions.push(completion)
          // The control changes its mind as the job runs.
          if (completions.length === 10) limit = 6
          if (completions.length === 40) limit = 1
        },
        drained: () => drained++,
      },
      sizeOf: () => 100,
      describe: (index) => ({id: String(index)}),
      async work(index) {
        running++
        if (running > limit) overLimit.push(running)
        await sleep(1 + (index % 3))
        running--
        if (index === 13) throw Object.assign(new Error('reset'), {transient: false})
        return {kind: 'transferred' as const, bytes: 100}
      },
    })
    expect(stats.transferred).toBe(59)
    expect(stats.failed).toBe(1)
    expect(completions).toHaveLength(60)
    expect(completions.filter((completion) => completion.bytes === 100)).toHaveLength(59)
    expect(drained).toBe(1)
    // A source that keeps up: the items in flight stay as many as allowed.
    expect(completions.slice(0, 50).filter((completion) => completion.starved).length).toBeLessThan(10)
    // Only a lowered limit can be exceeded, by the items already in flight when it fell.
    expect(overLimit.every((value) => value <= 6)).toBe(true)
  })
})

describe('mapOrdered', () => {
  async function* numbers(count: number, log: number[]): AsyncGenerator<number> {
    for (let index = 0; index < count; index++) {
      log.push(index)
      yield index
    }
  }

  const delays = [30, 5, 20, 1, 15, 2, 25, 3, 10, 4]

  it('yields every result in the input order, with at most `limit` calls in flight', async () => {
    let inFlight = 0
    let peak = 0
    const seen: number[] = []
    for await (const value of mapOrdered(delays.entries(), 3, async ([index, ms]) => {
      inFlight++
      peak = Math.max(peak, inFlight)
      await sleep(ms)
      inFlight--
      return index
    })) seen.push(value)
    expect(seen).toEqual(delays.map((_, index) => index))
    expect(peak).toBe(3)
  })

  it('overlaps the calls: the next ones start before the first answers (no clock involved)', async () => {
    const started: number[] = []
    const answers = new Map<number, () => void>()
    const results = mapOrdered(Array.from({length: 10}, (_, index) => index), 4, (index) => new Promise<number>((resolve) => {
      started.push(index)
      answers.set(index, () => resolve(index))
    }))
    const settle = () => new Promise((resolve) => setImmediate(resolve))
    const first = results.next()
    await settle()
    // Four calls are out before any has answered: a link's round trip is paid once for the four.
    expect(started).toEqual([0, 1, 2, 3])
    // Answers in any order come out in the input's.
    for (const index of [3, 2, 1, 0]) answers.get(index)!()
    const seen = [(await first).value]
    for (;;) {
      await settle()
      for (const answer of answers.values()) answer()
      const next = await results.next()
      if (next.done) break
      seen.push(next.value)
    }

    expect(seen).toEqual(Array.from({length: 10}, (_, index) => index))
  })

  it('takes items from an async source one at a time, as results are handed over', async () => {
    const pulled: number[] = []
    const seen: number[] = []
    for await (const value of mapOrdered(numbers(20, pulled), 2, async (item) => item * 2)) {
      seen.push(value)
      expect(pulled.length).toBeLessThanOrEqual(seen.length + 2)
    }

    expect(seen).toEqual(Array.from({length: 20}, (_, index) => index * 2))
  })

  it('a failure comes out in its place, after the results before it, and nothing is left unhandled', async () => {
    const seen: number[] = []
    const run = async () => {
      for await (const value of mapOrdered([1, 2, 3, 4, 5], 3, async (item) => {
        if (item === 3 || item === 4) throw new Error(`lookup ${item} failed`)
        return item
      })) seen.push(value)
    }

    await expect(run()).rejects.toThrow('lookup 3 failed')
    expect(seen).toEqual([1, 2])
  })
})

describe('besideFirst', () => {
  const later = <T>(ms: number, value: T) => new Promise<T>((resolve) => setTimeout(() => resolve(value), ms))

  it('starts the work before the first answer and hands both back', async () => {
    const order: string[] = []
    const {first, work} = await besideFirst(async () => {
      order.push('first asked')
      await later(30, undefined)
      order.push('first answered')
      return 'system'
    }, async () => {
      order.push('work started')
      return 'plan'
    })
    expect(first).toBe('system')
    expect(await work).toBe('plan')
    expect(order.indexOf('work started')).toBeLessThan(order.indexOf('first answered'))
  })

  it('when the first fails, stops the work, waits for it to end, and throws the first\'s error, not the work\'s', async () => {
    let workEnded = false
    let workSawAbort = false
    const failing = besideFirst(async () => {
      await later(30, undefined)
      throw new Error('not an Orthanc server')
    }, async (signal) => {
      try {
        // The work meets a failure of its own first (it read the same server), and a slow end.
        await new Promise((resolve) => signal.addEventListener('abort', resolve, {once: true}))
        workSawAbort = signal.aborted
        await later(20, undefined)
        throw new Error('answer is not JSON')
      } finally {
        workEnded = true
      }
    })
    await expect(failing).rejects.toThrow('not an Orthanc server')
    expect(workSawAbort).toBe(true)
    expect(workEnded).toBe(true)
  })

  it('leaves a work that failed early to the caller, without an unhandled rejection', async () => {
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown) => unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    try {
      const {work} = await besideFirst(() => later(30, 'system'), async () => {
        throw new Error('listing refused')
      })
      // A turn of the event loop for an unhandled rejection to be reported, were there one.
      await later(10, undefined)
      expect(unhandled).toEqual([])
      await expect(work).rejects.toThrow('listing refused')
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })

  it('passes the caller\'s interruption on to the work', async () => {
    const interrupt = new AbortController()
    const {work} = await besideFirst(async () => 'system', (signal) => new Promise((_, reject) => {
      signal.addEventListener('abort', () => reject(signal.reason), {once: true})
    }), interrupt.signal)
    interrupt.abort(new DOMException('interrupted', 'AbortError'))
    await expect(work).rejects.toThrow('interrupted')
  })
})
