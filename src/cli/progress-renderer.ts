import type {ProgressEvent, ProgressListener} from '../transfer/progress.js'
import {formatBytes, formatDuration} from '../util/format.js'

/**
 * Renders progress events as one self-overwriting line on stderr: instances, bytes, rate and
 * ETA. Returns undefined when nobody is watching, so that logs and pipes stay clean.
 */
export function progressRenderer(enabled: boolean, stream: NodeJS.WriteStream = process.stderr): {listener?: ProgressListener; done(): void} {
  if (!enabled) return {done() {}}
  const started = Date.now()
  let lastDraw = 0
  let drawn = false
  let phaseStarted = started
  let phase = ''
  const draw = (event: ProgressEvent) => {
    const now = Date.now()
    if (event.phase !== phase) {
      phase = event.phase
      phaseStarted = now
    }

    if (now - lastDraw < 200 && event.done !== event.total) return
    lastDraw = now
    const seconds = Math.max(0.001, (now - phaseStarted) / 1000)
    const rate = event.bytes / seconds
    const count = event.total === undefined ? `${event.done}` : `${event.done}/${event.total}`
    const size = event.totalBytes === undefined ? formatBytes(event.bytes) : `${formatBytes(event.bytes)}/${formatBytes(event.totalBytes)}`
    let eta = ''
    if (event.totalBytes && rate > 0 && event.bytes > 0) eta = `  ETA ${formatDuration(((event.totalBytes - event.bytes) / rate) * 1000)}`
    else if (event.total && event.done > 0) eta = `  ETA ${formatDuration(((event.total - event.done) / event.done) * (now - phaseStarted))}`
    stream.write(`\r\u001B[2K${event.phase}: ${count} instances  ${size}  ${formatBytes(rate)}/s${eta}`)
    drawn = true
  }

  return {
    listener: draw,
    done() {
      if (drawn) stream.write('\r\u001B[2K')
    },
  }
}
