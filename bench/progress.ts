import {waitForQuiet} from './processes.js'
import {seconds} from './stats.js'

export const benchStarted = performance.now()

/** Progress goes to stderr, so stdout carries only the report. */
export function log(message: string): void {
  console.error(`[${seconds(performance.now() - benchStarted).padStart(8)} s] ${message}`)
}

/** Before each timed run: other work on a two-core machine would be measured as the tool's slowness. */
export async function quiet(): Promise<void> {
  const idle = await waitForQuiet(120_000, (share) => log(`waiting for the machine to go quiet (${(share * 100).toFixed(0)}% of a core busy elsewhere)`))
  if (!idle) log('the machine stayed busy for 2 minutes: running anyway (see the "other CPU" column)')
}
