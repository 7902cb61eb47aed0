import {waitForQuiet} from './processes.js'
import {seconds} from './stats.js'

export const benchStarted = performance.now()

/** Progress goes to stderr, so stdout carries only the report. */
export function log(message: string): void {
  console.error(`[${seconds(performance.now() - benchStarted).padStart(8)} s] ${message}`)
}

let quietWaitMs = 120_000

/** How long `quiet` waits for the machine to go idle (`--quiet-wait`); 0 does not wait at all. */
export function setQuietWait(ms: number): void {
  quietWaitMs = ms
}

/** Before each timed run: other work on a two-core machine would be measured as the tool's slowness. */
export async function quiet(): Promise<void> {
  if (quietWaitMs <= 0) return
  const idle = await waitForQuiet(quietWaitMs, (share) => log(`waiting for the machine to go quiet (${(share * 100).toFixed(0)}% of a core busy elsewhere)`))
  if (!idle) log(`the machine stayed busy for ${(quietWaitMs / 1000).toFixed(0)} s: running anyway (see the "other CPU" column)`)
}
