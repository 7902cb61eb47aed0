/**
 * Ctrl-C and SIGTERM, caught from the first instant of the process: bin/run.js installs this
 * before anything else loads, so that a signal during start-up still ends the way every
 * interruption does (the job stops cleanly, the summary says so, exit code 130), never with
 * the shell's default 143. A second signal stops the process at once.
 */

const KEY = Symbol.for('orthanc-replicate.interrupt')
const INTERRUPTED = 130

type Holder = {[KEY]?: AbortController}

export function installInterruptHandlers(): AbortController {
  const holder = globalThis as Holder
  if (holder[KEY]) return holder[KEY]
  const controller = new AbortController()
  holder[KEY] = controller
  const onSignal = (signal: NodeJS.Signals) => {
    process.exitCode = INTERRUPTED
    if (controller.signal.aborted) process.exit(INTERRUPTED)
    controller.abort(new DOMException(`interrupted by ${signal}`, 'AbortError'))
  }

  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  return controller
}

/** The signal every job of this process listens to; installs the handlers if nobody did (a plugin's host CLI). */
export function interruptSignal(): AbortSignal {
  return installInterruptHandlers().signal
}
