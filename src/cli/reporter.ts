import {open} from 'node:fs/promises'
import type {FileHandle} from 'node:fs/promises'

import {UserFacingError} from '../errors.js'
import type {JobEvent, PlanEvent, ProgressEvent} from '../transfer/progress.js'
import {formatBytes} from '../util/format.js'
import {redactedValue, unmasked} from '../util/redact.js'
import {describeProgress, ProgressLine, ProgressMeter, progressRecord} from './progress-renderer.js'
import type {ReportingFlagValues} from './reporting-flags.js'
import {renderProblem} from './summary.js'
import {withoutControls} from '../util/printable.js'

/** The log is its operator's: it names no patient, but it is nobody else's to read. */
const LOG_FILE_MODE = 0o600

export interface ReporterOptions {
  /** The command's name, for the log and for the plan's wording. */
  command: string
  version: string
  json: boolean
  flags: ReportingFlagValues
  /** Names of the flags given; their values are never logged (they may name patients). */
  flagNames: string[]
  stderr?: NodeJS.WriteStream
  /** Plans are shown with --verbose only (a mirror's passes each have one). */
  plansAsDetails?: boolean
}

/** What the end of a run logs of its summary: counters only, never lists. */
const LOGGED_COUNTERS = ['dryRun', 'transferred', 'skipped', 'failed', 'bytes', 'durationMs', 'retries', 'interrupted', 'planned', 'problemCount', 'instances', 'complete', 'valid', 'onlySource', 'onlyTarget', 'different', 'identical', 'passes', 'deleted', 'outages']

/**
 * Everything a command says while it runs, besides its result: progress (a line redrawn on a
 * terminal), the plan, notes, warnings and hints on stderr, a status line every --stats
 * interval, and the --log-file. The result goes to stdout, through the command, not here.
 *
 * Levels: --quiet leaves warnings (and errors, which the command prints) only; the default adds
 * progress, the plan, notes and hints; --verbose adds each failure and retry as it happens.
 * Under --json stderr carries no notes or hints, only warnings, and progress only if asked.
 */
export class Reporter {
  readonly progressShown: boolean
  private readonly stderr: NodeJS.WriteStream
  private readonly meter = new ProgressMeter()
  private readonly line?: ProgressLine
  private readonly statsTimer?: NodeJS.Timeout
  private summary?: Record<string, unknown>
  private closed = false
  private logged: Promise<void> = Promise.resolve()
  /** Why the log could not be written, once it could not. */
  private logFailure?: string
  private readonly started = Date.now()

  private constructor(private readonly options: ReporterOptions, private readonly log?: FileHandle) {
    this.stderr = options.stderr ?? process.stderr
    const {flags} = options
    this.progressShown = flags.progress ?? (!flags.quiet && !options.json && Boolean(this.stderr.isTTY))
    if (this.progressShown) this.line = new ProgressLine(this.stderr)
    if (flags.stats) this.statsTimer = setInterval(() => this.printStats(), flags.stats).unref()
  }

  /** Opens the log file (private to its owner), and logs the start. */
  static async open(options: ReporterOptions): Promise<Reporter> {
    const path = options.flags['log-file']
    let log: FileHandle | undefined
    if (path) {
      try {
        log = await open(path, 'a', LOG_FILE_MODE)
        // An existing file keeps its mode on open: it is made private too. A device or a pipe
        // (/dev/stderr, /dev/null) is the user's choice, and never changed: run as root, a chmod
        // of /dev/null would shut every other user of the machine out of it.
        if ((await log.stat()).isFile()) await log.chmod(LOG_FILE_MODE)
      } catch (error) {
        await log?.close()
        throw new UserFacingError(`--log-file ${path} cannot be written (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`, 'Give --log-file a file in a folder that exists and that you can write.', 'usage', 'unwritable-log-file')
      }
    }

    const reporter = new Reporter(options, log)
    await reporter.logLine({event: 'start', command: options.command, version: options.version, pid: process.pid, flags: options.flagNames})
    return reporter
  }

  private get quiet(): boolean {
    return this.options.flags.quiet === true
  }

  /** For the library's `onProgress`. */
  readonly onProgress = (event: ProgressEvent): void => {
    this.meter.update(event)
    if (!this.line) return
    const snapshot = this.meter.snapshot()!
    this.line.draw(describeProgress(snapshot), event.total !== undefined && event.done === event.total)
  }

  /** For the library's `onEvent`: the plan, each failure and retry. */
  readonly onEvent = (event: JobEvent): void => {
    if (event.type === 'plan') {
      void this.logLine({event: 'plan', ...withoutType(event)})
      if (this.options.plansAsDetails) this.detail(describePlan(this.options.command, event))
      else this.note(describePlan(this.options.command, event))
    } else if (event.type === 'failure') {
      // The path may be a file whose name says who the patient is: the log keeps the instance ID, kind and reason.
      void this.logLine({event: 'failure', id: event.problem.id, kind: event.problem.kind, reason: event.problem.reason})
      this.detail(`failed: ${renderProblem(event.problem)}`)
    } else {
      void this.logLine({event: 'retry', id: event.id, attempt: event.attempt, reason: event.reason})
      this.detail(withoutControls(`retry ${event.attempt}: ${event.id}: ${event.reason}`))
    }
  }

  /** For the HTTP client's `onRetry`: a request sent again. */
  readonly onHttpRetry = (retry: {request: string; attempt: number; reason: string}): void => {
    this.onEvent({type: 'retry', id: retry.request, attempt: retry.attempt, reason: retry.reason})
  }

  /** Something a person watching wants to know (the plan, a pass of a mirror); not with --quiet or --json. */
  note(text: string): void {
    if (!this.quiet && !this.options.json) this.writeLine(text)
  }

  /** What to do next; not with --quiet or --json. */
  hint(text: string): void {
    if (!this.quiet && !this.options.json) this.writeLine(text)
  }

  /** Something went wrong but the run goes on (an outage waited out): always on stderr. */
  warn(text: string): void {
    this.writeLine(`Warning: ${text}`)
  }

  /** Only with --verbose. */
  detail(text: string): void {
    if (this.options.flags.verbose) this.writeLine(text)
  }

  /** The summary the run returns: its counters go into the log's end line. */
  result(summary: object): void {
    this.summary = summary as Record<string, unknown>
  }

  /** Takes the progress line off the terminal (it is drawn again at the next update). */
  clearProgress(): void {
    this.line?.clear()
  }

  /** Clears the progress line, stops the status timer, and logs the end. Safe to call twice. */
  async close(end: {exitCode: number; error?: string}): Promise<void> {
    if (this.closed) return
    this.closed = true
    clearInterval(this.statsTimer)
    this.line?.clear()
    const counters = Object.fromEntries(LOGGED_COUNTERS.filter((key) => this.summary?.[key] !== undefined).map((key) => [key, this.summary![key]]))
    await this.logLine({event: 'end', exitCode: end.exitCode, durationMs: Date.now() - this.started, ...counters, ...(end.error ? {error: end.error} : {})})
    await this.log?.close()
  }

  private printStats(): void {
    const snapshot = this.meter.snapshot()
    if (!snapshot) return
    const time = new Date().toISOString()
    if (this.options.json) unmasked(() => this.writeLine(JSON.stringify(redactedValue({time, ...progressRecord(snapshot)}))))
    else this.writeLine(`${time} ${describeProgress(snapshot)}`)
  }

  private writeLine(text: string): void {
    if (this.line) this.line.writeAbove(text)
    else this.stderr.write(`${text}\n`)
  }

  private logLine(record: Record<string, unknown>): Promise<void> {
    const log = this.log
    if (!log || (this.closed && record.event !== 'end')) return this.logged
    // Every secret the program learned is masked here too, as on stdout and stderr.
    const line = `${JSON.stringify(redactedValue({time: new Date().toISOString(), ...record}))}\n`
    // One append per line, one after another: the lines of a run stay whole and in order. A log
    // that cannot be written (a full disk) does not stop the job: it is said once, on stderr.
    this.logged = this.logged.then(() => log.appendFile(line)).catch((error: unknown) => this.logFailed(error))
    return this.logged
  }

  private logFailed(error: unknown): void {
    if (this.logFailure) return
    this.logFailure = (error as NodeJS.ErrnoException).code ?? (error as Error).message
    this.line?.clear()
    this.stderr.write(`Warning: --log-file ${this.options.flags['log-file']} cannot be written (${this.logFailure}): the log is incomplete from here on; the job goes on.\n`)
  }
}

function withoutType<T extends {type: string}>(event: T): Omit<T, 'type'> {
  const {type: _type, ...rest} = event
  return rest
}

const PLAN_VERBS: Record<string, string> = {export: 'to export', import: 'to import', sync: 'to send', verify: 'to check'}

/** The plan in one or two lines, before anything moves. */
export function describePlan(command: string, plan: PlanEvent): string {
  let line = `Plan: ${plan.instances} instance(s) (${formatBytes(plan.bytes)}) ${PLAN_VERBS[command] ?? 'to transfer'}`
  if (plan.volumes !== undefined) line += ` in ${plan.volumes} volume(s)${plan.volumesDone ? `, ${plan.volumesDone} of them finished by an earlier run` : ''}`
  if (plan.present !== undefined) line += `, ${plan.present} already there`
  line += '.'
  if (plan.studies) line += `\nStudies on the target: ${plan.studies.complete} complete, ${plan.studies.partial} partial, ${plan.studies.missing} missing.`
  if (plan.onlyOnTarget) line += ` ${plan.onlyOnTarget} instance(s) only on the target.`
  if (plan.undeclaredUserMetadata?.length) line += `\n${describeUndeclared(plan.undeclaredUserMetadata)}`
  return line
}

/** User metadata a target will refuse, said before anything moves. */
export function describeUndeclared(names: string[]): string {
  return `Not carried: the target does not declare user metadata ${names.map((name) => `"${name}"`).join(', ')} in its UserMetadata; values under ${names.length === 1 ? 'that name' : 'those names'} will be left out (declare them there first to keep them).`
}
