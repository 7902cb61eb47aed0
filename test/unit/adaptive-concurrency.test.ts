import {describe, expect, it} from 'vitest'

import {AdaptiveConcurrency, type Decision} from '../../src/transfer/adaptive-concurrency.js'

/**
 * A simulated link and server, in simulated time: each item spends `rttMs × roundTrips` on the
 * network (its chain of requests) and `serviceMs` on one of `workers` server threads, first come
 * first served. Throughput is capped by the server (workers / serviceMs); until that cap, more
 * items in flight hide more of the round trips. Deterministic: service times vary by ±10% from
 * a seeded generator.
 */
interface Server {
  rttMs: number
  roundTrips: number
  workers: number
  serviceMs: number | ((at: number) => number)
  /** Items in flight beyond this many meet a 503 (answered, retried, slower). */
  congestionAbove?: number
}

interface Run {
  decisions: Decision[]
  /** The concurrency at the end of the items. */
  settled: number
  durationMs: number
  concurrencyOverTime: Array<{at: number; concurrency: number}>
}

const ITEMS_PER_UNIT = 2

function simulate(server: Server, items: number, seed = 1): Run {
  let random = seed
  const next = () => {
    random = (random * 1_103_515_245 + 12_345) % 2_147_483_648
    return random / 2_147_483_648
  }

  let now = 0
  const controller = new AdaptiveConcurrency({itemsPerUnit: ITEMS_PER_UNIT, now: () => now})
  const over: Run['concurrencyOverTime'] = [{at: 0, concurrency: controller.current}]
  controller.onChange((concurrency) => over.push({at: now, concurrency}))
  const workers = Array.from({length: server.workers}, () => 0)
  const completions: Array<{at: number; started: number; congested: boolean}> = []
  let started = 0
  let inFlight = 0
  const start = () => {
    const congested = server.congestionAbove !== undefined && inFlight >= server.congestionAbove
    const network = server.rttMs * server.roundTrips
    const arrival = now + network / 2 + (congested ? server.rttMs + 50 : 0)
    const worker = workers.indexOf(Math.min(...workers))
    const service = (typeof server.serviceMs === 'function' ? server.serviceMs(now) : server.serviceMs) * (0.9 + 0.2 * next())
    const begin = Math.max(arrival, workers[worker]!)
    workers[worker] = begin + service
    completions.push({at: begin + service + network / 2, started: now, congested})
    completions.sort((a, b) => a.at - b.at)
    started++
    inFlight++
  }

  for (;;) {
    while (started < items && inFlight < controller.current * ITEMS_PER_UNIT) start()
    const done = completions.shift()
    if (!done) break
    now = done.at
    inFlight--
    controller.record({ms: done.at - done.started, bytes: 130_000, congested: done.congested})
    if (started === items) controller.finish()
  }

  return {decisions: controller.decisions, settled: controller.current, durationMs: now, concurrencyOverTime: over}
}

/** The time-weighted concurrency over the second half of a run: where it spent its time. */
function laterConcurrency(run: Run): number {
  const from = run.durationMs / 2
  let weighted = 0
  for (const [index, point] of run.concurrencyOverTime.entries()) {
    const end = run.concurrencyOverTime[index + 1]?.at ?? run.durationMs
    const overlap = Math.max(0, end - Math.max(point.at, from))
    weighted += overlap * point.concurrency
  }

  return weighted / (run.durationMs - from)
}

/** The fastest fixed concurrency's time, for comparison. */
function bestFixed(server: Server, items: number): number {
  let best = Number.POSITIVE_INFINITY
  for (let concurrency = 1; concurrency <= 32; concurrency *= 2) {
    const fixed = simulateFixed(server, items, concurrency)
    best = Math.min(best, fixed)
  }

  return best
}

function simulateFixed(server: Server, items: number, concurrency: number): number {
  const workers = Array.from({length: server.workers}, () => 0)
  const completions: number[] = []
  let now = 0
  let started = 0
  let inFlight = 0
  for (;;) {
    while (started < items && inFlight < concurrency * ITEMS_PER_UNIT) {
      const network = server.rttMs * server.roundTrips
      const congested = server.congestionAbove !== undefined && inFlight >= server.congestionAbove
      const worker = workers.indexOf(Math.min(...workers))
      const service = typeof server.serviceMs === 'function' ? server.serviceMs(now) : server.serviceMs
      const begin = Math.max(now + network / 2 + (congested ? server.rttMs + 50 : 0), workers[worker]!)
      workers[worker] = begin + service
      completions.push(begin + service + network / 2)
      completions.sort((a, b) => a - b)
      started++
      inFlight++
    }

    const done = completions.shift()
    if (done === undefined) break
    now = done
    inFlight--
  }

  return now
}

describe('AdaptiveConcurrency against a simulated server', () => {
  it('rises while throughput rises: across 40 ms of round trip it goes to its maximum', () => {
    const server: Server = {rttMs: 40, roundTrips: 3, workers: 2, serviceMs: 2}
    const run = simulate(server, 3000)
    expect(run.decisions.slice(0, 2).map((decision) => `${decision.from}->${decision.to} ${decision.reason}`)).toEqual(['8->16 slow start', '16->32 slow start'])
    expect(run.settled).toBeGreaterThanOrEqual(24)
    // Within a tenth of the best fixed concurrency, ramp included.
    expect(run.durationMs).toBeLessThan(bestFixed(server, 3000) * 1.1)
  })

  it('stays low where the server, not the round trips, is the limit', () => {
    const server: Server = {rttMs: 0.2, roundTrips: 3, workers: 2, serviceMs: 4}
    const run = simulate(server, 3000)
    expect(run.decisions[0]).toMatchObject({from: 8, to: 16, reason: 'slow start'})
    expect(run.decisions[1]).toMatchObject({from: 16, to: 8, reason: 'doubling did not pay'})
    // Two items in flight keep both server threads busy: probes down find that fewer do as well.
    expect(laterConcurrency(run)).toBeLessThanOrEqual(6)
    expect(run.durationMs).toBeLessThan(bestFixed(server, 3000) * 1.1)
  })

  it('settles between the extremes at 10 ms of round trip, near the best fixed concurrency', () => {
    const server: Server = {rttMs: 10, roundTrips: 3, workers: 2, serviceMs: 2}
    const run = simulate(server, 3000)
    // Capacity 1000/s, about 32 ms per item unloaded: some 32 items in flight, concurrency 16.
    expect(laterConcurrency(run)).toBeGreaterThanOrEqual(12)
    expect(laterConcurrency(run)).toBeLessThanOrEqual(24)
    expect(run.durationMs).toBeLessThan(bestFixed(server, 3000) * 1.1)
  })

  it('backs off on congestion (503s beyond 20 items in flight), halving once per turnover', () => {
    const server: Server = {rttMs: 40, roundTrips: 3, workers: 2, serviceMs: 1, congestionAbove: 20}
    const run = simulate(server, 3000)
    const congestion = run.decisions.filter((decision) => decision.reason === 'congestion')
    expect(congestion.length).toBeGreaterThan(0)
    for (const decision of congestion) expect(decision.to).toBe(Math.floor(decision.from / 2))
    // 20 items in flight is concurrency 10: it spends its time at or below that.
    expect(laterConcurrency(run)).toBeLessThanOrEqual(11)
  })

  it('steps down when the target slows down and latency rises without throughput', () => {
    // A CPU-bound target that becomes four times slower after 3 s (another job started on it).
    const server: Server = {rttMs: 10, roundTrips: 3, workers: 2, serviceMs: (at) => (at < 3000 ? 1 : 4)}
    const run = simulate(server, 6000)
    const before = run.concurrencyOverTime.filter((point) => point.at < 3000).at(-1)!.concurrency
    expect(before).toBeGreaterThanOrEqual(16)
    expect(run.decisions.some((decision) => decision.at > 3000 && decision.to < decision.from)).toBe(true)
    expect(run.settled).toBeLessThan(before)
  })

  it('judges a doubling by Little\'s law too: a burst of completions in a short epoch does not make the level before look faster', () => {
    // Measured at 40 ms of round trip: the epoch at 16 caught the completions of items started
    // together (16 within 100 ms), a measured rate that 32 could not beat by 10 %, though 32 kept
    // twice the items in flight at 1.6 times the latency: 25 % more throughput by Little's law.
    const climb = (latencyAt32: number) => {
      let now = 0
      const controller = new AdaptiveConcurrency({itemsPerUnit: 2, now: () => now})
      const feed = (count: number, gapMs: number, latencyMs: number) => {
        for (let index = 0; index < count; index++) {
          now += gapMs
          controller.record({ms: latencyMs, bytes: 130_000, congested: false})
        }
      }

      feed(8, 20, 300) // the epoch at 8
      feed(16, 10, 300) // the items started at 8 finish
      feed(16, 6.25, 250) // the epoch at 16: a burst
      feed(32, 5, 250) // the items started at 16 finish
      // The epoch at 32: 64 items in flight, completions evenly spread by Little's law.
      feed(32, latencyAt32 / 64, latencyAt32)
      return controller
    }

    const rewarded = climb(400)
    expect(rewarded.decisions.map((decision) => `${decision.from}->${decision.to} ${decision.reason}`)).toEqual(['8->16 slow start', '16->32 slow start'])
    expect(rewarded.current).toBe(32)
    // Twice the latency for twice the items in flight is no more throughput: back to 16.
    const unrewarded = climb(500)
    expect(unrewarded.decisions.at(-1)).toMatchObject({from: 32, to: 16, reason: 'doubling did not pay'})
    expect(unrewarded.current).toBe(16)
  })

  it('keeps a step down only if Little\'s law agrees: fewer items in flight at the same latency is less throughput, however the completions fell', () => {
    // At 32, held; then a probe down to 28. `latencyAt28`: the latency the probe's epoch saw, its
    // completions spread as they were at 32 (the measured rate the same).
    const probeDown = (latencyAt28: number) => {
      let now = 0
      const controller = new AdaptiveConcurrency({itemsPerUnit: 2, now: () => now, initial: 32})
      const feed = (count: number, latencyMs: number) => {
        for (let index = 0; index < count; index++) {
          now += 400 / 64
          controller.record({ms: latencyMs, bytes: 130_000, congested: false})
        }
      }

      // Slow start at its maximum, then hold epochs until the probe down; then the items started
      // at 32 finish, and the probe's epoch.
      while (!controller.decisions.some((decision) => decision.reason === 'probe down')) feed(1, 400)
      feed(64, 400)
      feed(56, latencyAt28)
      return controller
    }

    // Across a link: the same latency with an eighth fewer in flight. Back to 32.
    const linkBound = probeDown(400)
    expect(linkBound.decisions.at(-1)).toMatchObject({from: 28, to: 32, reason: 'probe down reverted'})
    expect(linkBound.current).toBe(32)
    // Server-bound: the latency fell with the items in flight: as fast with fewer, kept.
    const serverBound = probeDown(350)
    expect(serverBound.decisions.at(-1)).toMatchObject({from: 32, to: 28, reason: 'probe down kept'})
    expect(serverBound.current).toBe(28)
  })

  // The summary reported a doubling decided on one of the last completions, never measured and
  // never filled (16 reported, at most 9 items in flight).
  it('settles on the level it measured, not on a doubling the items ran out before it was measured', () => {
    let now = 0
    const controller = new AdaptiveConcurrency({itemsPerUnit: 1, now: () => now})
    for (let index = 0; index < 8; index++) {
      now += 20
      controller.record({ms: 10, bytes: 1000, congested: false})
    }

    expect(controller.current).toBe(16)
    controller.finish()
    expect(controller.settled).toBe(8)
    // Congestion: the level fallen back to is the one in use.
    const congested = new AdaptiveConcurrency({itemsPerUnit: 1, now: () => now})
    congested.record({ms: 10, bytes: 1000, congested: true})
    expect(congested.settled).toBe(4)
  })

  it('decides the same way given the same completions', () => {
    const server: Server = {rttMs: 10, roundTrips: 3, workers: 2, serviceMs: 2}
    expect(simulate(server, 2000, 7).decisions).toEqual(simulate(server, 2000, 7).decisions)
  })

  it('stops adapting when the items run out: the tail is no measure of the link', () => {
    let now = 0
    const controller = new AdaptiveConcurrency({itemsPerUnit: 2, now: () => now})
    controller.finish()
    for (let index = 0; index < 100; index++) {
      now += 1000
      controller.record({ms: 1000, bytes: 1, congested: index % 2 === 0})
    }

    expect(controller.current).toBe(8)
    expect(controller.decisions).toEqual([])
  })

  it('decides nothing while the source does not keep the items in flight full (a pipe): it would only learn the source\'s pace', () => {
    let now = 0
    const controller = new AdaptiveConcurrency({itemsPerUnit: 2, now: () => now})
    // An import reading a pipe: one item every 10 ms, whatever the concurrency, each done in 5 ms.
    for (let index = 0; index < 2000; index++) {
      now += 10
      controller.record({ms: 5, bytes: 130_000, congested: false, starved: true})
    }

    expect(controller.decisions).toEqual([])
    expect(controller.current).toBe(8)
    // Congestion still counts.
    controller.record({ms: 5, bytes: 130_000, congested: true, starved: true})
    expect(controller.current).toBe(4)
  })

  it('adapts again when more items come after it finished (the next volume of an export)', () => {
    let now = 0
    const controller = new AdaptiveConcurrency({itemsPerUnit: 1, now: () => now})
    controller.finish()
    controller.resume()
    for (let index = 0; index < 40; index++) {
      now += 10
      controller.record({ms: 5, bytes: 1000, congested: index === 20})
    }

    expect(controller.decisions.map((decision) => decision.reason)).toContain('congestion')
  })

  it('keeps within its bounds', () => {
    let now = 0
    const controller = new AdaptiveConcurrency({itemsPerUnit: 1, initial: 2, min: 2, max: 3, now: () => now})
    for (let index = 0; index < 200; index++) {
      now += index < 100 ? 1 : 50
      controller.record({ms: 10, bytes: 1000, congested: index === 150})
      expect(controller.current).toBeGreaterThanOrEqual(2)
      expect(controller.current).toBeLessThanOrEqual(3)
    }
  })
})
