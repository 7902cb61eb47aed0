import {median} from './stats.js'

/** One timed repetition of one measurement. */
export interface Sample {
  ms: number
  /** CPU of the client side: the tool, curl, or the bench process for the in-process baselines. */
  clientCpuMs?: number
  /** CPU of the Orthanc servers involved (source and/or target) during the run. */
  orthancCpuMs?: number
  rssKb?: number
  /** CPU spent meanwhile by everything else on the machine: a disturbed run shows here. */
  backgroundCpuMs?: number
  /** The tool's own durationMs from its JSON summary: the wall time without process start-up. */
  reportedMs?: number
  /** CPU of the delay proxies the run went through (latency rows). */
  proxyCpuMs?: number
  /** The concurrency the tool reported it settled on (its JSON summary's `concurrency`). */
  concurrency?: number
  /** The ZIP uploads the tool reported making (its JSON summary's `zipUploads.requests`). */
  zipRequests?: number
}

/** Samples by measurement key, in the order they were first recorded. */
export class Samples {
  private readonly byKey = new Map<string, Sample[]>()

  add(key: string, sample: Sample): void {
    const list = this.byKey.get(key) ?? []
    list.push(sample)
    this.byKey.set(key, list)
  }

  get(key: string): Sample[] {
    return this.byKey.get(key) ?? []
  }

  has(key: string): boolean {
    return this.get(key).length > 0
  }

  /** The median of one field over a measurement's runs; NaN when never measured or unknown. */
  median(key: string, field: keyof Sample = 'ms'): number {
    const values = this.get(key).map((sample) => sample[field]).filter((value): value is number => value !== undefined)
    return median(values)
  }
}
