import {setTimeout as sleep} from 'node:timers/promises'

export interface RetryPolicy {
  /** Attempts after the first one. */
  retries: number
  /** First delay; each later one doubles, up to maxDelayMs. */
  minDelayMs: number
  maxDelayMs: number
}

export const defaultRetryPolicy: RetryPolicy = {retries: 5, minDelayMs: 250, maxDelayMs: 8000}

/**
 * Exponential backoff with "equal jitter": a random delay between half the bound and the bound, so
 * that many workers hitting the same restarting server do not come back in lock-step.
 */
export function backoffDelay(policy: RetryPolicy, attempt: number, random: () => number = Math.random): number {
  const bound = Math.min(policy.maxDelayMs, policy.minDelayMs * 2 ** attempt)
  return Math.round(bound / 2 + (random() * bound) / 2)
}

export async function waitBeforeRetry(policy: RetryPolicy, attempt: number, signal?: AbortSignal, retryAfterMs?: number): Promise<void> {
  const delay = retryAfterMs === undefined ? backoffDelay(policy, attempt) : Math.min(retryAfterMs, policy.maxDelayMs * 4)
  await sleep(delay, undefined, {signal})
}

/** Retry-After is either seconds or an HTTP date. */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const header = Array.isArray(value) ? value[0] : value
  if (!header) return undefined
  const seconds = Number(header)
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000
  const date = Date.parse(header)
  return Number.isNaN(date) ? undefined : Math.max(0, date - now)
}
