import {setMaxListeners} from 'node:events'

import {type Problem, problemKindOf} from '../problems.js'
import type {ProgressListener} from './progress.js'
import {ByteBudget} from '../util/concurrency.js'
import {emptyStats, recordFailure, type TransferStats} from './stats.js'

export type Outcome = {kind: 'transferred'; bytes: number} | {kind: 'skipped'; bytes?: number}

export interface TransferJob<Item, Payload> {
  items: AsyncIterable<Item>
  /** Items in flight at once; with `control`, where it asks instead. */
  concurrency: number
  /** A number of items in flight that changes as the job runs (adaptive concurrency). */
  control?: InFlightControl
  signal?: AbortSignal
  /** Names an item in failure reports: its instance ID, and the file or archive entry it came from. */
  describe(item: Item): {id: string; path?: string}
  /** The parallel step: download, check, upload. */
  work(item: Item, signal: AbortSignal): Promise<Payload>
  /**
   * The serial step, run in the items' order: writing to an archive. When absent, the
   * work step's result is the outcome and items complete in any order.
   */
  commit?(item: Item, payload: Payload): Promise<Outcome>
  /**
   * Bytes an item holds in memory while it is in flight (its file). With it, no new item is
   * taken while the items in flight hold MAX_BYTES_IN_FLIGHT or more: a few very large
   * instances cannot add up to more memory than the machine has.
   */
  sizeOf?(item: Item): number
  /** Overrides MAX_BYTES_IN_FLIGHT. */
  maxBytesInFlight?: number
  /** Attempts per item for failures that may pass (a reset mid-body), on top of the HTTP retries. */
  attempts?: number
  onProgress?: ProgressListener
  /** Told of each item that failed, as it fails (the stats keep the first ones too). */
  /** Told once per item that failed for good: after its last attempt, never for one tried again. */
  onFailure?(failure: Problem, item: Item): void
  /** Told of each item tried again after a transient failure. */
  onRetry?(item: {id: string; path?: string}, attempt: number, error: unknown): void
  /** Told once per item after its last attempt, whatever came of it (done, failed, stopped). */
  afterAttempts?(item: Item): void
  phase?: string
  total?: number
  totalBytes?: number
}

/**
 * A number of items in flight that may change while a job runs. The engine asks `inFlight()`
 * before it takes each item, and tells `completed` about every item's work step.
 */
export interface InFlightControl {
  inFlight(): number
  /** `starved`: fewer items were in flight than allowed (the source was slower, or the byte budget full). */
  completed(completion: {ms: number; bytes: number; congested: boolean; starved: boolean}): void
  /** The items ran out: the rest of the job is its tail. */
  drained(): void
}

/** How long instances in flight may take to finish their chain after an interruption. */
const GRACE_MS = 10_000

/** What the files of the items in flight may add up to before the engine waits to take another. */
export const MAX_BYTES_IN_FLIGHT = 128 * 1024 * 1024

/**
 * Instances a job keeps in flight per upload at once: twice as many, so that while each upload
 * runs, the next instance is being fetched and the previous one confirmed. When small instances
 * may share an upload (a ZIP), eight: enough wait for each upload to carry several.
 */
export function inFlightPerUpload(zipUploads = false): number {
  return zipUploads ? 8 : 2
}

/**
 * What the engine asks of an error; the error knows, the engine does not need to know where it
 * came from. `fatal`: no other item will escape it either (the server is gone, the credentials
 * are refused), so it stops the whole job. `transient`: the same item may well succeed if tried
 * again (the connection broke while the body was moving).
 */
export interface ErrorTraits {
  fatal?: boolean
  transient?: boolean
}

/** What the local disk says when no later item can fare better: the job stops there. */
const DISK_FAILURES = new Set(['ENOSPC', 'EDQUOT', 'EFBIG', 'EIO', 'EROFS'])

/** Errors that stop the whole job; everything else fails one item. */
export function isJobFatal(error: unknown): boolean {
  return (error as ErrorTraits | undefined)?.fatal === true
    // Node's own: a full disk, a file that cannot grow, a failing or read-only drive, an aborted signal.
    || DISK_FAILURES.has((error as NodeJS.ErrnoException | undefined)?.code ?? '')
    || (error as Error | undefined)?.name === 'AbortError'
}

/** Worth another attempt of the same item. */
function isTransient(error: unknown): boolean {
  return (error as ErrorTraits | undefined)?.transient === true
}

/**
 * The transfer engine: moves items with bounded concurrency and per-item retries, counts
 * outcomes, and stops everything on a fatal error. Memory stays bounded by `concurrency`
 * items: with a commit step, at most that many payloads wait for their turn.
 */
export async function runTransfer<Item, Payload>(job: TransferJob<Item, Payload>): Promise<TransferStats> {
  const stats = emptyStats()
  const started = Date.now()
  // Two signals: `intake` stops taking new items, `controller` stops the work in flight. A fatal
  // error stops both at once. An interruption (Ctrl-C) stops the intake at once and lets the
  // instances in flight finish their chain for up to GRACE_MS (uploaded, side data restored,
  // confirmed), so that what the target holds and what the summary counts agree; an ordered job
  // (writing an archive, whose volume is left unfinished anyway) stops everything at once.
  const intake = new AbortController()
  const controller = new AbortController()
  // Every in-flight request listens on this signal; with high concurrency that is many listeners by design.
  setMaxListeners(0, controller.signal)
  const grace = job.commit ? 0 : GRACE_MS
  let graceTimer: NodeJS.Timeout | undefined
  const stopOnOuterAbort = () => {
    intake.abort(job.signal?.reason)
    if (grace === 0) controller.abort(job.signal?.reason)
    else graceTimer = setTimeout(() => controller.abort(job.signal?.reason), grace).unref()
  }
  if (job.signal?.aborted) stopOnOuterAbort()
  job.signal?.addEventListener('abort', stopOnOuterAbort)
  let fatal: unknown
  let done = 0

  const report = () => job.onProgress?.({phase: job.phase ?? 'transfer', done, total: job.total, bytes: stats.bytes, totalBytes: job.totalBytes})
  const count = (outcome: Outcome) => {
    if (outcome.kind === 'transferred') stats.transferred++
    else stats.skipped++
    stats.bytes += outcome.bytes ?? 0
    done++
    report()
  }

  const fail = (item: Item, error: unknown) => {
    // Cut short by the interruption: neither done nor failed, the next run takes it again.
    if (job.signal?.aborted && (error as Error | undefined)?.name === 'AbortError') return
    if (isJobFatal(error)) {
      fatal ??= error
      intake.abort(error)
      controller.abort(error)
      return
    }

    const failure: Problem = {...job.describe(item), kind: problemKindOf(error), reason: (error as Error).message ?? String(error)}
    recordFailure(stats, failure)
    job.onFailure?.(failure, item)
    done++
    report()
  }

  const attempt = async (item: Item, note: {retried: boolean}): Promise<Payload> => {
    const attempts = job.attempts ?? 3
    try {
      for (let index = 1; ; index++) {
        try {
          return await job.work(item, controller.signal)
        } catch (error) {
          if (controller.signal.aborted || index >= attempts || !isTransient(error)) throw error
          stats.retries++
          job.onRetry?.(job.describe(item), index + 1, error)
          note.retried = true
        }
      }
    } finally {
      job.afterAttempts?.(item)
    }
  }

  try {
    if (job.commit) await runOrdered(job, attempt, count, fail, intake.signal)
    else await runUnordered(job, attempt, count, fail, intake.signal)
  } finally {
    job.signal?.removeEventListener('abort', stopOnOuterAbort)
    clearTimeout(graceTimer)
  }

  stats.durationMs = Date.now() - started
  if (fatal) throw Object.assign(fatal as Error, {stats})
  // Interrupted from outside: what was done stands, and the caller reports it as such.
  stats.interrupted = job.signal?.aborted === true
  return stats
}

type Attempt<Item, Payload> = (item: Item, note: {retried: boolean}) => Promise<Payload>

/** Items in flight allowed now: the job's fixed number, or what its control says. */
function inFlightLimit(job: TransferJob<unknown, unknown>): number {
  return Math.max(1, job.control ? job.control.inFlight() : job.concurrency)
}

/**
 * Runs `attempt` on one item and tells the control how it went: the time it took, the bytes it
 * moved, and whether it met trouble that more concurrency would make worse.
 */
async function settleOne<Item, Payload>(
  job: TransferJob<Item, Payload>, attempt: Attempt<Item, Payload>, item: Item, inFlight: () => number,
): Promise<{ok: true; payload: Payload} | {ok: false; error: unknown}> {
  const started = performance.now()
  const note = {retried: false}
  const bytes = job.sizeOf?.(item) ?? 0
  const completed = (completion: {bytes: number; congested: boolean}) => job.control?.completed({
    ...completion, ms: performance.now() - started, starved: inFlight() < inFlightLimit(job),
  })
  try {
    const payload = await attempt(item, note)
    completed({bytes, congested: note.retried})
    return {ok: true, payload}
  } catch (error) {
    completed({bytes: 0, congested: note.retried || isTransient(error)})
    return {ok: false, error}
  }
}

/**
 * Takes items one at a time while fewer than the limit are in flight and the byte budget has
 * room, so the budget is never overdrawn by more than one item; each item's chain runs on its
 * own, overlapping the others'. The limit may change between two items.
 */
async function runUnordered<Item, Payload>(
  job: TransferJob<Item, Payload>, attempt: Attempt<Item, Payload>, count: (outcome: Outcome) => void,
  fail: (item: Item, error: unknown) => void, signal: AbortSignal,
): Promise<void> {
  const iterator = job.items[Symbol.asyncIterator]()
  const budget = new ByteBudget(job.maxBytesInFlight ?? MAX_BYTES_IN_FLIGHT)
  const running = new Set<Promise<void>>()
  let wake: (() => void) | undefined
  const oneSettled = () => new Promise<void>((resolve) => {
    wake = resolve
  })

  const start = (item: Item) => {
    const size = job.sizeOf?.(item) ?? 0
    budget.take(size)
    const task = settleOne(job, attempt, item, () => running.size).then((result) => {
      if (result.ok) count(result.payload as Outcome)
      else fail(item, result.error)
    }).finally(() => {
      budget.release(size)
      running.delete(task)
      const waiting = wake
      wake = undefined
      waiting?.()
    })
    running.add(task)
  }

  try {
    for (;;) {
      while (running.size > 0 && (running.size >= inFlightLimit(job) || !budget.hasRoom())) await oneSettled()
      if (signal.aborted) break
      const next = await iterator.next()
      if (next.done) break
      start(next.value)
    }

    job.control?.drained()
    while (running.size > 0) await Promise.all(running)
  } finally {
    await iterator.return?.()
  }
}

async function runOrdered<Item, Payload>(
  job: TransferJob<Item, Payload>, attempt: Attempt<Item, Payload>, count: (outcome: Outcome) => void,
  fail: (item: Item, error: unknown) => void, signal: AbortSignal,
): Promise<void> {
  const window: Array<{item: Item; result: Promise<{ok: true; payload: Payload} | {ok: false; error: unknown}>}> = []

  const budget = new ByteBudget(job.maxBytesInFlight ?? MAX_BYTES_IN_FLIGHT)
  const commitHead = async () => {
    const head = window.shift()!
    try {
      const result = await head.result
      if (signal.aborted) return
      if (!result.ok) {
        fail(head.item, result.error)
        return
      }

      count(await job.commit!(head.item, result.payload))
    } catch (error) {
      fail(head.item, error)
    } finally {
      budget.release(job.sizeOf?.(head.item) ?? 0)
    }
  }

  const iterator = job.items[Symbol.asyncIterator]()
  try {
    for (;;) {
      // Payloads wait in the window until committed in order: they count until then.
      while (window.length > 0 && !budget.hasRoom()) await commitHead()
      if (signal.aborted) break
      const next = await iterator.next()
      if (next.done) break
      budget.take(job.sizeOf?.(next.value) ?? 0)
      window.push({item: next.value, result: settleOne(job, attempt, next.value, () => window.length)})
      while (window.length >= inFlightLimit(job)) await commitHead()
    }
  } finally {
    await iterator.return?.()
  }

  job.control?.drained()

  while (window.length > 0 && !signal.aborted) await commitHead()
  // Let abandoned downloads finish failing before returning, so nothing runs on after us.
  await Promise.all(window.map((entry) => entry.result))
}
