import type {InFlightControl} from './engine.js'

/**
 * Finds the concurrency that the link and the target reward, while a job runs. No setting is
 * right everywhere: on loopback two cores are full with 4 uploads at once, across 40 ms of round
 * trip 32 are needed to hide the waiting, and a busy PACS may want fewer.
 *
 * It raises the concurrency while the throughput rises, and backs off on congestion (errors,
 * 503s, timeouts) and on rising latency that brings no throughput. Time comes from an injected
 * clock and decisions only from the completions it is told about, so a simulated server drives
 * it deterministically in the tests.
 *
 * How it decides, in measurement epochs of at least one turnover of the items in flight:
 * - slow start: double while an epoch's throughput beats the previous level's by GAIN, measured
 *   or as Little's law gives it (items in flight over their mean latency); when a doubling does
 *   not pay, go back to the level that did, and hold there;
 * - steady: hold epochs alternate with probes one step up (a quarter) or down (an eighth); a probe
 *   up stays if it beats the level held by PROBE_GAIN, a probe down if it loses less than
 *   PROBE_LOSS, measured and by Little's law; after each probe that did not pay, twice as many
 *   hold epochs pass before the next (up to 8);
 * - congestion halves the concurrency at once (once per turnover), then holds;
 * - a hold epoch whose latency rose by LATENCY_RISE while its throughput fell by THROUGHPUT_FALL
 *   steps down: the target is slower, and more requests waiting there would only queue;
 * - an epoch in which the job mostly had fewer items in flight than allowed (the source did not
 *   keep up: a pipe, a slow listing) decides nothing.
 */

export interface AdaptiveOptions {
  /** Where it starts (default ADAPTIVE_INITIAL). */
  initial?: number
  min?: number
  /** Where it stops rising (default 32). */
  max?: number
  /** Items the job keeps in flight per unit of concurrency: how many completions a turnover takes. */
  itemsPerUnit?: number
  /** Milliseconds, any origin: a simulated clock in tests. */
  now?: () => number
}

/** One item's work step, as the engine saw it. */
export interface Completion {
  /** Time from taking the item to its outcome. */
  ms: number
  bytes: number
  /** It met congestion on the way: a 503 or 429, a timeout, a reset, a retry. */
  congested: boolean
  /**
   * Fewer items were in flight than the concurrency allows when it finished: the source did not
   * keep up (a pipe, a slow listing) or memory was full. Such a completion says nothing of what
   * more or less concurrency would do.
   */
  starved?: boolean
}

export interface Decision {
  at: number
  from: number
  to: number
  reason: 'slow start' | 'doubling did not pay' | 'probe up' | 'probe up kept' | 'probe up reverted' | 'probe down' | 'probe down kept' | 'probe down reverted' | 'congestion' | 'latency rose'
}

/** Where an adaptive concurrency starts, and where it stops rising. */
// 8: on two cores and loopback 8 uploads did as well as 4 (BENCHMARKS.md), and across a network it is one doubling nearer.
export const ADAPTIVE_INITIAL = 8
export const ADAPTIVE_MAX = 32

/**
 * Connections to open at most to one server for a job of this concurrency (undefined: adaptive, up
 * to ADAPTIVE_MAX): enough for the requests around each upload, within Orthanc's 50 HTTP threads.
 */
export function connectionsFor(concurrency: number | undefined): number {
  return Math.min(48, 2 * (concurrency ?? ADAPTIVE_MAX) + 2)
}

/** Doubling pays when the throughput rises by this much. */
export const GAIN = 0.1
/** A step up stays when the throughput rises by this much over the level held. */
export const PROBE_GAIN = 0.05
/** A step down stays when the throughput falls by less than this. */
export const PROBE_LOSS = 0.03
export const LATENCY_RISE = 1.5
export const THROUGHPUT_FALL = 0.15
/** Each item counts as this many bytes of work besides its own: the requests around it. */
const ITEM_WORK_BYTES = 32 * 1024
const MIN_SAMPLES = 8
const MIN_EPOCH_MS = 100
const MAX_EPOCH_MS = 3000
const MAX_HOLDS_PER_PROBE = 8

interface Level {
  concurrency: number
  /** Work done over the epoch's time (bytes, items counted as ITEM_WORK_BYTES each, per ms). */
  rate: number
  latency: number
  /**
   * Items per ms by Little's law: the items kept in flight over their mean latency. A short epoch's
   * measured rate swings with how the completions of items started together happen to fall in it;
   * this does not, as long as the items in flight were kept full (starved epochs decide nothing).
   */
  steadyRate: number
}

/**
 * The engine's side of an adaptive concurrency: items in flight for the concurrency of the moment
 * (`itemsPerUnit` per unit), and each item's completion passed on, marked congested when the
 * transport met congestion meanwhile (`congestion`: a counter of 503s, timeouts and resets that
 * only grows).
 */
export function adaptiveInFlight(controller: AdaptiveConcurrency, options: {itemsPerUnit: number; congestion?: () => number}): InFlightControl {
  let seen = options.congestion?.() ?? 0
  return {
    inFlight: () => controller.current * options.itemsPerUnit,
    completed(completion) {
      const now = options.congestion?.() ?? 0
      controller.record({...completion, congested: completion.congested || now > seen})
      seen = now
    },
    drained: () => controller.finish(),
  }
}

export class AdaptiveConcurrency {
  readonly min: number
  readonly max: number
  readonly decisions: Decision[] = []
  private value: number
  private readonly itemsPerUnit: number
  private readonly now: () => number
  private readonly listeners: Array<(concurrency: number) => void> = []
  private phase: 'slow start' | 'steady' | 'done' = 'slow start'
  /** Slow start: the best level so far. Steady: the level held, and its throughput. */
  private held?: Level
  private probe?: {from: number; direction: 1 | -1}
  private nextProbe: 1 | -1 = 1
  /** Hold epochs between two probes: doubles after each probe that did not pay, so a level that holds is left alone. */
  private holdsPerProbe = 1
  private holds = 0
  /** Completions to pass over after a change: the items that started under the old concurrency. */
  private skip = 0
  /** Congestion is acted on once per turnover: until this many more completions, it is not again. */
  private calm = 0
  private epoch = {start: 0, count: 0, bytes: 0, latency: 0, starved: 0}

  constructor(options: AdaptiveOptions = {}) {
    this.min = Math.max(1, options.min ?? 1)
    this.max = Math.max(this.min, options.max ?? ADAPTIVE_MAX)
    this.value = Math.min(this.max, Math.max(this.min, options.initial ?? ADAPTIVE_INITIAL))
    this.itemsPerUnit = Math.max(1, options.itemsPerUnit ?? 1)
    this.now = options.now ?? (() => performance.now())
    this.epoch.start = this.now()
  }

  /** The concurrency to use now. */
  get current(): number {
    return this.value
  }

  /**
   * What the summary reports: the level measured and held. A doubling (or probe) decided on one
   * of the last completions was never measured, and the items may have run out before it was
   * even filled: it is not where the job settled. After congestion, the level it fell back to.
   */
  get settled(): number {
    return this.held?.concurrency ?? this.value
  }

  /** Called with the new concurrency after every change. */
  onChange(listener: (concurrency: number) => void): void {
    this.listeners.push(listener)
  }

  /** The source has no more items: what follows is the tail of the job, not a measure of the link. */
  finish(): void {
    this.phase = 'done'
  }

  /** More items after all (the next volume of an export): adapting goes on from where it was. */
  resume(): void {
    if (this.phase !== 'done') return
    this.phase = this.held ? 'steady' : 'slow start'
    this.probe = undefined
    this.skip = 0
    this.restartEpoch()
  }

  record(completion: Completion): void {
    if (this.phase === 'done') return
    if (this.calm > 0) this.calm--
    if (completion.congested && this.calm === 0) {
      this.change(Math.max(this.min, Math.floor(this.value / 2)), 'congestion')
      // The items already in flight may meet the same congestion: one halving is enough for them.
      this.calm = Math.max(this.skip, this.turnover())
      this.phase = 'steady'
      this.held = undefined
      this.probe = undefined
      this.holds = 0
      return
    }

    if (this.skip > 0) {
      this.skip--
      if (this.skip === 0) this.restartEpoch()
      return
    }

    const epoch = this.epoch
    epoch.count++
    epoch.bytes += completion.bytes
    epoch.latency += completion.ms
    if (completion.starved) epoch.starved++
    const elapsed = this.now() - epoch.start
    // Slow start measures half a turnover, to climb fast; the steady state a whole one, to judge finer steps.
    const samples = this.phase === 'slow start' ? this.turnover() / 2 : this.turnover()
    const enough = epoch.count >= Math.max(MIN_SAMPLES, samples) && elapsed >= MIN_EPOCH_MS
    if (!enough && !(elapsed >= MAX_EPOCH_MS && epoch.count > 0)) return
    const latency = epoch.latency / epoch.count
    const level: Level = {concurrency: this.value, rate: (epoch.bytes + epoch.count * ITEM_WORK_BYTES) / Math.max(1, elapsed), latency, steadyRate: this.turnover() / Math.max(1e-3, latency)}
    this.restartEpoch()
    // Mostly waiting for the source: the throughput is the source's, whatever the concurrency.
    if (epoch.starved * 2 > epoch.count) return
    if (this.phase === 'slow start') this.slowStart(level)
    else this.steady(level)
  }

  private slowStart(level: Level): void {
    // Twice the items in flight at less than twice the latency is more throughput (Little's law),
    // whatever a short epoch measured while the new items filled the pipe, or the last one while
    // a burst of completions of items started together fell in it (which made 16 at 40 ms of
    // round trip look faster than 32, the fastest fixed concurrency there).
    const held = this.held
    const pays = !held || level.rate > held.rate * (1 + GAIN) || level.steadyRate > held.steadyRate * (1 + GAIN)
    if (pays) {
      this.held = level
      if (this.value < this.max) this.change(Math.min(this.max, this.value * 2), 'slow start')
      else this.phase = 'steady'
      return
    }

    this.phase = 'steady'
    this.change(held.concurrency, 'doubling did not pay')
  }

  private steady(level: Level): void {
    const held = this.held
    if (this.probe) {
      const {from, direction} = this.probe
      this.probe = undefined
      // A step down must keep the throughput both as measured and by Little's law: a measured rate
      // swings with how bursts of completions fall in an epoch, and could keep a step down whose
      // latency did not fall with the items in flight (an eighth less moved, across a link).
      const kept = direction === 1
        ? level.rate > held!.rate * (1 + PROBE_GAIN)
        : level.rate >= held!.rate * (1 - PROBE_LOSS) && level.steadyRate >= held!.steadyRate * (1 - PROBE_LOSS)
      if (kept) {
        this.held = level
        this.holdsPerProbe = 1
        this.decisions.push({at: this.now(), from, to: this.value, reason: direction === 1 ? 'probe up kept' : 'probe down kept'})
      } else {
        this.holdsPerProbe = Math.min(MAX_HOLDS_PER_PROBE, this.holdsPerProbe * 2)
        this.change(from, direction === 1 ? 'probe up reverted' : 'probe down reverted')
      }

      this.holds = 0
      return
    }

    // A hold epoch: the level's throughput measured again, then a probe from it.
    if (held && held.concurrency === this.value && level.latency > held.latency * LATENCY_RISE && level.rate < held.rate * (1 - THROUGHPUT_FALL)) {
      this.held = level
      // The level that paid before may be too much now: probe down soon again.
      this.holdsPerProbe = 1
      this.holds = 0
      this.nextProbe = -1
      this.change(Math.max(this.min, this.value - this.step(1)), 'latency rose')
      return
    }

    this.held = held && held.concurrency === this.value ? {...level, rate: (held.rate + level.rate) / 2} : level
    if (++this.holds < this.holdsPerProbe) return
    const direction = this.nextProbe
    this.nextProbe = direction === 1 ? -1 : 1
    const to = Math.min(this.max, Math.max(this.min, this.value + direction * this.step(direction)))
    if (to === this.value) return
    this.probe = {from: this.value, direction}
    this.change(to, direction === 1 ? 'probe up' : 'probe down')
  }

  /** A quarter up, an eighth down: a probe down that costs throughput costs less. */
  private step(direction: 1 | -1): number {
    return Math.max(1, Math.round(this.value / (direction === 1 ? 4 : 8)))
  }

  /** Completions for all the items in flight to be replaced once. */
  private turnover(): number {
    return this.value * this.itemsPerUnit
  }

  private change(to: number, reason: Decision['reason']): void {
    const from = this.value
    this.decisions.push({at: this.now(), from, to, reason})
    if (to === from) {
      this.restartEpoch()
      return
    }

    this.skip = from * this.itemsPerUnit
    this.value = to
    this.restartEpoch()
    for (const listener of this.listeners) listener(to)
  }

  private restartEpoch(): void {
    this.epoch = {start: this.now(), count: 0, bytes: 0, latency: 0, starved: 0}
  }
}

/** A job's concurrency, fixed by the user or adaptive: what the engine, a sink and the summary need of it. */
export interface JobConcurrency {
  /** The concurrency to start with. */
  initial: number
  /** For the engine: the items in flight when fixed, and the control when adaptive. */
  inFlight: number
  control?: InFlightControl
  /** Called with each new concurrency (never when fixed). */
  onChange(listener: (concurrency: number) => void): void
  /** The items ran out before, and more come now: adapt again. */
  resume(): void
  /** What the summary reports: the fixed number, or the one it settled on (when the items ran out). */
  settled(): {concurrency: number; concurrencyAdaptive: boolean}
}

export function jobConcurrency(fixed: number | undefined, options: {itemsPerUnit: number; congestion?: () => number}): JobConcurrency {
  if (fixed !== undefined) {
    return {initial: fixed, inFlight: fixed * options.itemsPerUnit, onChange() {}, resume() {}, settled: () => ({concurrency: fixed, concurrencyAdaptive: false})}
  }

  const controller = new AdaptiveConcurrency({itemsPerUnit: options.itemsPerUnit})
  return {
    initial: controller.current,
    inFlight: controller.current * options.itemsPerUnit,
    control: adaptiveInFlight(controller, options),
    onChange: (listener) => controller.onChange(listener),
    resume: () => controller.resume(),
    settled: () => ({concurrency: controller.settled, concurrencyAdaptive: true}),
  }
}
