import type {ProgressEvent} from '../transfer/progress.js'
import {formatBytes, formatDuration} from '../util/format.js'

/** Where a phase stands: the last event, and the rate and time left worked out from the recent ones. */
export interface ProgressSnapshot {
  event: ProgressEvent
  /** Bytes per second over the last few seconds; absent for phases that move no bytes. */
  bytesPerSecond?: number
  /** Time left, when a total is known and something was done. */
  etaMs?: number
  /** Since the phase began. */
  elapsedMs: number
}

/** Rates are measured over this much recent time, so that a slow start does not weigh on the ETA for ever. */
const WINDOW_MS = 10_000

/**
 * Turns progress events into rates and ETAs. Each phase is measured from its own start: a
 * planning phase's counts never make a transfer's rate. Phases that report no bytes (planning,
 * comparing) get no rate: a count of instances per second would read like a throughput.
 */
export class ProgressMeter {
  private phase?: string
  private phaseStarted = 0
  private samples: Array<{at: number; done: number; bytes: number}> = []
  private last?: ProgressEvent

  constructor(private readonly now: () => number = Date.now) {}

  update(event: ProgressEvent): void {
    const at = this.now()
    if (event.phase !== this.phase) {
      this.phase = event.phase
      this.phaseStarted = at
      this.samples = [{at, done: 0, bytes: 0}]
    }

    this.last = event
    this.samples.push({at, done: event.done, bytes: event.bytes ?? 0})
    while (this.samples.length > 2 && this.samples[1]!.at < at - WINDOW_MS) this.samples.shift()
  }

  snapshot(): ProgressSnapshot | undefined {
    const event = this.last
    if (!event) return undefined
    const at = this.now()
    const first = this.samples[0]!
    const seconds = (at - first.at) / 1000
    const snapshot: ProgressSnapshot = {event, elapsedMs: at - this.phaseStarted}
    if (event.bytes !== undefined && seconds > 0.2) snapshot.bytesPerSecond = Math.max(0, ((event.bytes ?? 0) - first.bytes) / seconds)
    if (event.totalBytes !== undefined && event.bytes !== undefined && snapshot.bytesPerSecond) {
      snapshot.etaMs = (Math.max(0, event.totalBytes - event.bytes) / snapshot.bytesPerSecond) * 1000
    } else if (event.total !== undefined && event.done > first.done && seconds > 0.2) {
      snapshot.etaMs = ((event.total - event.done) / ((event.done - first.done) / seconds)) * 1000
    }

    return snapshot
  }
}

/** One line for a person: "sync: 45/120 instances  12.1 MiB/45.2 MiB  3.2 MiB/s  ETA 10.4 s". */
export function describeProgress(snapshot: ProgressSnapshot): string {
  const {event} = snapshot
  const parts = [`${event.phase}: ${event.total === undefined ? event.done : `${event.done}/${event.total}`} ${event.unit ?? 'instances'}`]
  if (event.bytes !== undefined) parts.push(event.totalBytes === undefined ? formatBytes(event.bytes) : `${formatBytes(event.bytes)}/${formatBytes(event.totalBytes)}`)
  if (snapshot.bytesPerSecond !== undefined) parts.push(`${formatBytes(snapshot.bytesPerSecond)}/s`)
  if (snapshot.etaMs !== undefined && event.done !== event.total) parts.push(`ETA ${formatDuration(snapshot.etaMs)}`)
  return parts.join('  ')
}

/** The same as a JSON line, for --stats under --json: numbers, not text. */
export function progressRecord(snapshot: ProgressSnapshot): Record<string, unknown> {
  const {event} = snapshot
  return {
    phase: event.phase,
    unit: event.unit ?? 'instances',
    done: event.done,
    ...(event.total === undefined ? {} : {total: event.total}),
    ...(event.bytes === undefined ? {} : {bytes: event.bytes}),
    ...(event.totalBytes === undefined ? {} : {totalBytes: event.totalBytes}),
    ...(snapshot.bytesPerSecond === undefined ? {} : {bytesPerSecond: Math.round(snapshot.bytesPerSecond)}),
    ...(snapshot.etaMs === undefined ? {} : {etaMs: Math.round(snapshot.etaMs)}),
    elapsedMs: Math.round(snapshot.elapsedMs),
  }
}

/**
 * One self-overwriting line on a terminal. Other lines (notes, warnings) are written above it:
 * the line is cleared, the text written, and the line drawn again at the next update.
 */
export class ProgressLine {
  private drawn = false
  private lastDraw = 0

  constructor(private readonly stream: NodeJS.WritableStream, private readonly intervalMs = 150) {}

  /** Draws `text`, at most every intervalMs unless `force` (the last update of a phase). */
  draw(text: string, force = false): void {
    const now = Date.now()
    if (!force && now - this.lastDraw < this.intervalMs) return
    this.lastDraw = now
    this.stream.write(`\r\u001B[2K${text}`)
    this.drawn = true
  }

  /** Writes a whole line above the progress line. */
  writeAbove(line: string): void {
    this.clear()
    this.stream.write(`${line}\n`)
  }

  clear(): void {
    if (!this.drawn) return
    this.stream.write('\r\u001B[2K')
    this.drawn = false
    // Drawn again at the next update, whatever the interval.
    this.lastDraw = 0
  }
}
