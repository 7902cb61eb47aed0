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

/** Lets at most `limit` tasks run at a time; the others wait their turn in arrival order. The limit may change while tasks run. */
export class Semaphore {
  private running = 0
  private readonly waiting: Array<() => void> = []

  constructor(private limit: number) {}

  /** A higher limit lets waiters in at once; a lower one takes effect as running tasks finish. */
  setLimit(limit: number): void {
    this.limit = limit
    while (this.waiting.length > 0 && this.running < Math.max(1, this.limit)) {
      this.running++
      this.waiting.shift()!()
    }
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running < Math.max(1, this.limit)) this.running++
    // A finishing task hands its place straight to the first waiter, so `running` stays counted.
    else await new Promise<void>((resolve) => this.waiting.push(resolve))
    try {
      return await task()
    } finally {
      const next = this.running <= Math.max(1, this.limit) ? this.waiting.shift() : undefined
      if (next) next()
      else this.running--
    }
  }
}

/**
 * Counts the bytes that items in flight hold in memory, and makes whoever wants to take one
 * more item wait while the count is at or over `limit`. The item taken last may push the count
 * past the limit, so when items are taken one at a time at most `limit` plus one item are held,
 * and an item larger than the limit still runs.
 */
export class ByteBudget {
  private held = 0
  private holders = 0
  private readonly waiting: Array<() => void> = []

  constructor(private readonly limit: number) {}

  /** Resolves once there is room for another item: the count is under the limit, or nothing is held. */
  async room(): Promise<void> {
    if (this.hasRoom()) return
    await new Promise<void>((resolve) => this.waiting.push(resolve))
  }

  take(bytes: number): void {
    this.held += bytes
    this.holders++
  }

  release(bytes: number): void {
    this.held -= bytes
    this.holders--
    while (this.waiting.length > 0 && this.hasRoom()) this.waiting.shift()!()
  }

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
