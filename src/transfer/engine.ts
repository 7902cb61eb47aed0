import {setMaxListeners} from 'node:events'

import {type Problem, problemKindOf} from '../problems.js'
import type {ProgressListener} from './progress.js'
import {ByteBudget, Semaphore} from '../util/concurrency.js'
import {emptyStats, recordFailure, type TransferStats} from './stats.js'

export type Outcome = {kind: 'transferred'; bytes: number} | {kind: 'skipped'; bytes?: number}

export interface TransferJob<Item, Payload> {
  items: AsyncIterable<Item>
  concurrency: number
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
  onFailure?(failure: Problem): void
  /** Told of each item tried again after a transient failure. */
  onRetry?(item: {id: string; path?: string}, attempt: number, error: unknown): void
  phase?: string
  total?: number
  totalBytes?: number
}

/** How long instances in flight may take to finish their chain after an interruption. */
const GRACE_MS = 10_000

/** What the files of the items in flight may add up to before the engine waits to take another. */
export const MAX_BYTES_IN_FLIGHT = 128 * 1024 * 1024

/**
 * Instances a job keeps in flight for `uploads` uploads at once: twice as many, so that while
 * each upload runs, the next instance is being fetched and the previous one confirmed.
 */
export function inFlightFor(uploads: number): number {
  return 2 * Math.max(1, uploads)
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

/** Errors that stop the whole job; everything else fails one item. */
export function isJobFatal(error: unknown): boolean {
  return (error as ErrorTraits | undefined)?.fatal === true
    // Node's own: a full disk, an aborted signal.
    || (error as NodeJS.ErrnoException | undefined)?.code === 'ENOSPC'
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
    job.onFailure?.(failure)
    done++
    report()
  }

  const attempt = async (item: Item): Promise<Payload> => {
    const attempts = job.attempts ?? 3
    for (let index = 1; ; index++) {
      try {
        return await job.work(item, controller.signal)
      } catch (error) {
        if (controller.signal.aborted || index >= attempts || !isTransient(error)) throw error
        stats.retries++
        job.onRetry?.(job.describe(item), index + 1, error)
      }
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

type Attempt<Item, Payload> = (item: Item) => Promise<Payload>

async function runUnordered<Item, Payload>(
  job: TransferJob<Item, Payload>, attempt: Attempt<Item, Payload>, count: (outcome: Outcome) => void,
  fail: (item: Item, error: unknown) => void, signal: AbortSignal,
): Promise<void> {
  const iterator = job.items[Symbol.asyncIterator]()
  const budget = new ByteBudget(job.maxBytesInFlight ?? MAX_BYTES_IN_FLIGHT)
  // One worker at a time waits for room and takes the next item, so the budget is never overdrawn by more than one item.
  const taking = new Semaphore(1)
  let exhausted = false
  const next = () => taking.run(async (): Promise<IteratorResult<Item>> => {
    await budget.room()
    if (exhausted || signal.aborted) return {done: true, value: undefined}
    const result = await iterator.next()
    if (result.done) exhausted = true
    else budget.take(job.sizeOf?.(result.value) ?? 0)
    return result
  })

  const worker = async () => {
    for (let result = await next(); !result.done; result = await next()) {
      try {
        count((await attempt(result.value)) as Outcome)
      } catch (error) {
        fail(result.value, error)
      } finally {
        budget.release(job.sizeOf?.(result.value) ?? 0)
      }
    }
  }

  try {
    await Promise.all(Array.from({length: Math.max(1, job.concurrency)}, worker))
  } finally {
    await iterator.return?.()
  }
}

async function runOrdered<Item, Payload>(
  job: TransferJob<Item, Payload>, attempt: Attempt<Item, Payload>, count: (outcome: Outcome) => void,
  fail: (item: Item, error: unknown) => void, signal: AbortSignal,
): Promise<void> {
  const window: Array<{item: Item; result: Promise<{ok: true; payload: Payload} | {ok: false; error: unknown}>}> = []
  const settle = (promise: Promise<Payload>) => promise.then((payload) => ({ok: true as const, payload}), (error: unknown) => ({ok: false as const, error}))

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
      window.push({item: next.value, result: settle(attempt(next.value))})
      if (window.length >= Math.max(1, job.concurrency)) await commitHead()
    }
  } finally {
    await iterator.return?.()
  }

  while (window.length > 0 && !signal.aborted) await commitHead()
  // Let abandoned downloads finish failing before returning, so nothing runs on after us.
  await Promise.all(window.map((entry) => entry.result))
}
