/** Maps items with at most `limit` calls in flight, keeping the input order in the result. */
export async function mapConcurrent<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const index = next++
      results[index] = await fn(items[index]!)
    }
  }

  await Promise.all(Array.from({length: Math.min(limit, items.length)}, worker))
  return results
}

/**
 * Maps the items of a (possibly async) iterable with up to `limit` calls in flight, yielding the
 * results in the input order: each result waits for those before it, and the next item is taken
 * as soon as a result is handed over. For lookups that cost a round trip each (a study's listing
 * on both servers), so that a link's latency is paid once per `limit` items, not once per item.
 * A failure comes out in its place, after the results before it; calls already started for later
 * items are left to finish, unseen.
 */
export async function* mapOrdered<T, R>(items: Iterable<T> | AsyncIterable<T>, limit: number, fn: (item: T) => Promise<R>): AsyncGenerator<R> {
  const window: Array<Promise<R>> = []
  for await (const item of items) {
    const result = fn(item)
    // Awaited below, in order; until then a failure must not count as unhandled.
    result.catch(() => {})
    window.push(result)
    if (window.length >= Math.max(1, limit)) yield await window.shift()!
  }

  while (window.length > 0) yield await window.shift()!
}

/** Runs `fn` on each item of an async iterable, at most `limit` at a time, pulling items only as slots free up. */
export async function forEachConcurrent<T>(items: AsyncIterable<T>, limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  const iterator = items[Symbol.asyncIterator]()
  let failure: unknown
  const worker = async () => {
    for (;;) {
      if (failure !== undefined) return
      const next = await iterator.next()
      if (next.done) return
      try {
        await fn(next.value)
      } catch (error) {
        failure ??= error
      }
    }
  }

  await Promise.all(Array.from({length: Math.max(1, limit)}, worker))
  if (failure !== undefined) throw failure
}

/**
 * Counts the bytes that items in flight hold in memory: there is room for one more item while
 * the count is under `limit`. The item taken last may push the count past the limit, so when
 * items are taken one at a time at most `limit` plus one item are held, and an item larger than
 * the limit still runs.
 */
export class ByteBudget {
  private held = 0
  private holders = 0

  constructor(private readonly limit: number) {}

  take(bytes: number): void {
    this.held += bytes
    this.holders++
  }

  release(bytes: number): void {
    this.held -= bytes
    this.holders--
  }

  /** Room for another item: the count is under the limit, or nothing is held. */
  hasRoom(): boolean {
    return this.holders === 0 || this.held < this.limit
  }
}

/**
 * Pulls up to `count` items of `items` ahead of the consumer, in the background: a source whose
 * next item may take a round trip or three (the next study's listing, across a network) keeps
 * the consumer fed meanwhile. Items come out in order; a failure of the source comes out after
 * the items read before it. Stopping early stops the pulling and closes the source.
 */
export async function* readAhead<T>(items: AsyncIterable<T>, count: number): AsyncGenerator<T> {
  const iterator = items[Symbol.asyncIterator]()
  const buffer: T[] = []
  let finished = false
  let stopped = false
  let failure: {error: unknown} | undefined
  let wakeConsumer: (() => void) | undefined
  let wakeProducer: (() => void) | undefined
  const wake = (which: 'consumer' | 'producer') => {
    const waiting = which === 'consumer' ? wakeConsumer : wakeProducer
    if (which === 'consumer') wakeConsumer = undefined
    else wakeProducer = undefined
    waiting?.()
  }

  const producer = (async () => {
    try {
      while (!stopped) {
        if (buffer.length >= count) {
          await new Promise<void>((resolve) => {
            wakeProducer = resolve
          })
          continue
        }

        const next = await iterator.next()
        if (next.done) break
        buffer.push(next.value)
        wake('consumer')
      }
    } catch (error) {
      failure = {error}
    } finally {
      finished = true
      wake('consumer')
    }
  })()

  try {
    for (;;) {
      if (buffer.length > 0) {
        const item = buffer.shift()!
        wake('producer')
        yield item
        continue
      }

      if (finished) {
        if (failure) throw failure.error
        return
      }

      await new Promise<void>((resolve) => {
        wakeConsumer = resolve
      })
    }
  } finally {
    stopped = true
    wake('producer')
    await producer
    await iterator.return?.()
  }
}

/**
 * Starts `work` beside `first` instead of after it (across a link, a round trip or more sooner),
 * while `first` still decides: if it fails, `work` is stopped through its signal and awaited, so
 * that nothing is left running, and `first`'s error is the one thrown. The servers' own answers
 * (GET /system: a wrong URL, a server that is not Orthanc, a refused password) are reported as
 * such, not as whatever the work met meanwhile. Returns `first`'s result and the work still under
 * way; its failure is the caller's to see (caught meanwhile, so not an unhandled rejection).
 */
export async function besideFirst<F, W>(first: () => Promise<F>, work: (signal: AbortSignal) => Promise<W>, signal?: AbortSignal): Promise<{first: F; work: Promise<W>}> {
  const stop = new AbortController()
  const working = work(signal ? AbortSignal.any([signal, stop.signal]) : stop.signal)
  working.catch(() => {})
  try {
    return {first: await first(), work: working}
  } catch (error) {
    stop.abort()
    await working.catch(() => {})
    throw error
  }
}
