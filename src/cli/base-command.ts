import {setMaxListeners} from 'node:events'
import {existsSync} from 'node:fs'

import {Command, Errors, Flags, type Interfaces} from '@oclif/core'

import type {HttpOptions} from '../orthanc/http.js'
import type {OrthancClient} from '../orthanc/client.js'
import {targetCaveats} from '../orthanc/target-caveats.js'
import {lostBy, type NotCarried} from '../sinks/orthanc-sink.js'
import {emptyStats, type TransferStats} from '../transfer/stats.js'
import {ExitCode} from './exit-codes.js'
import {describeFailure} from './failure.js'
import {filterFlags} from './filter-flags.js'
import {renderNotCarried} from './summary.js'
import {usageMessage} from './usage-message.js'
import {interruptSignal} from './interrupt.js'
import {guardOutputs, redactedValue, unmasked} from '../util/redact.js'
import {Reporter} from './reporter.js'
import type {ReportingFlagValues} from './reporting-flags.js'

/** oclif's FlagOutput and ArgOutput, which its package does not export. */
type ParsedValues = {[name: string]: any} // eslint-disable-line @typescript-eslint/no-explicit-any -- as oclif declares them

export type BaseFlags<T extends typeof Command> = Interfaces.InferredFlags<(typeof BaseCommand)['baseFlags'] & T['flags']>

/**
 * What every command shares: --json, transport tuning flags, an abort signal tied to
 * SIGINT/SIGTERM, and the mapping of errors to a short message and an exit code.
 */
export abstract class BaseCommand extends Command {
  static override enableJsonFlag = true

  static override baseFlags = {
    timeout: Flags.integer({description: 'seconds to wait for a server\'s answer before retrying', default: 120, min: 1, helpGroup: 'TRANSPORT'}),
    retries: Flags.integer({description: 'attempts after the first for a failed request', default: 5, min: 0, helpGroup: 'TRANSPORT'}),
  }

  /** Commands that move instances: their JSON carries the counts so far even when they end in an error or an interruption. */
  static transfersInstances = false
  /** Its arguments are files and folders (import, verify): see refuseUnknownPathAfterSwitch. */
  static pathArguments = false

  private readonly started = Date.now()

  /** Progress, notes, --stats and --log-file of this run, once a command has started reporting (see startReporting). */
  protected reporter?: Reporter

  /** Where the result goes for a person: stdout, unless stdout carries something else (an archive). */
  protected resultStream: NodeJS.WritableStream = process.stdout

  /** Aborted by Ctrl-C or SIGTERM, however early they came (see interrupt.ts). */
  protected get signal(): AbortSignal {
    return interruptSignal()
  }

  override async init(): Promise<void> {
    // Also here, for a host CLI that loads these commands as a plugin (bin/run.js did it already otherwise).
    guardOutputs()
    setMaxListeners(0, this.signal)
    // A signal that came while the program was still loading stops it here, the usual way.
    this.signal.throwIfAborted()
    await super.init()
  }

  /**
   * Flags given an empty value (`--log-file=`, `--password-file ""`) are refused: taken as not
   * given, they silently did something else (no log, the default receipt, no password). Filters
   * refuse theirs in their own words (see filter-flags.ts).
   */
  protected override async parse<F extends ParsedValues, B extends ParsedValues, A extends ParsedValues>(
    options?: Interfaces.Input<F, B, A>, argv?: string[],
  ): Promise<Interfaces.ParserOutput<F, B, A>> {
    const parsed = await super.parse(options, argv)
    for (const [name, value] of Object.entries(parsed.flags as Record<string, unknown>)) {
      if (name in filterFlags) continue
      if (value === '' || (Array.isArray(value) && value.includes(''))) throw new Errors.CLIError(`--${name} was given an empty value`)
    }

    if ((this.constructor as typeof BaseCommand).pathArguments) {
      const ctor = (options ?? this.constructor) as Interfaces.Input<F, B, A> & {enableJsonFlag?: boolean}
      const definitions = {...ctor.baseFlags, ...ctor.flags, ...(ctor.enableJsonFlag ? {json: Flags.boolean()} : {})}
      refuseUnknownPathAfterSwitch(definitions, argv ?? this.argv, parsed.argv.map(String))
    }
    return parsed
  }

  protected httpOptions(flags: {timeout: number; retries: number}, connections?: number): HttpOptions {
    return {
      connections,
      headersTimeoutMs: flags.timeout * 1000,
      bodyTimeoutMs: flags.timeout * 1000,
      retry: {retries: flags.retries, minDelayMs: 250, maxDelayMs: 8000},
      onRetry: this.reporter?.onHttpRetry,
    }
  }

  /**
   * Says, as soon as the target's /system answers (the job asks it anyway: one request), what its
   * configuration will do to what it is sent (targetCaveats). Never waits, never fails the job.
   */
  protected warnAboutTarget(target: OrthancClient): void {
    target.system(this.signal).then((system) => {
      for (const caveat of targetCaveats(system)) this.reporter?.warn(caveat)
    }, () => {})
  }

  /** Starts progress, --stats and --log-file for this run, from the reporting flags (see reporting-flags.ts). */
  protected async startReporting(flags: ReportingFlagValues, options: {plansAsDetails?: boolean} = {}): Promise<Reporter> {
    this.reporter = await Reporter.open({
      ...options,
      command: this.id ?? this.constructor.name.toLowerCase(),
      version: this.config.version,
      json: this.jsonEnabled(),
      flags,
      flagNames: flagNamesOf(this.argv),
    })
    return this.reporter
  }

  /**
   * The command's result: for a person, rendered on stdout (or resultStream); under --json, oclif
   * prints it as the one JSON document on stdout. Either way, its counters end the log.
   */
  protected result<T extends object>(summary: T, render: (summary: T) => string): T {
    this.reporter?.result(summary)
    // The progress line shares the terminal with stdout: it goes before the result is shown.
    this.reporter?.clearProgress()
    if (!this.jsonEnabled()) this.resultStream.write(`${render(summary).replace(/\n*$/, '')}\n`)
    return summary
  }

  /** Every JSON document on stdout: masked value by value (see redactedValue), never as text. */
  override logJson(json: unknown): void {
    unmasked(() => super.logJson(redactedValue(json)))
  }

  override async catch(error: Error & {exitCode?: number}): Promise<void> {
    // --help, --version and exit() keep oclif's handling.
    if (error instanceof Errors.ExitError) return super.catch(error)
    // A bad flag or argument: one line (one JSON object under --json), exit 2. oclif's own report
    // of it dumps its whole parse, flag values (URLs with passwords) included.
    if (error instanceof Errors.CLIError) {
      // An unknown flag's value stays out (--passphrase=hunter2): oclif's list of them has it.
      const message = usageMessage(error.message, (error as {flags?: unknown}).flags, {args: (error as {args?: unknown}).args, argv: this.argv})
      const suggestion = `See: ${this.config.bin} ${this.id ?? ''} --help`.replace(/\s+--help$/, ' --help')
      process.exitCode = ExitCode.usage
      if (this.jsonEnabled()) this.logJson({error: {code: 'usage', message, suggestion, exitCode: ExitCode.usage}})
      else process.stderr.write(`Error: ${message}\n  ${suggestion}\n`)
      return
    }

    const failure = describeFailure(error)
    process.exitCode = failure.exitCode
    if (process.env.DEBUG) process.stderr.write(`${error.stack ?? error}\n`)
    if (this.jsonEnabled()) {
      const described = {error: {code: failure.code, message: failure.message, suggestion: failure.suggestion, exitCode: failure.exitCode}}
      this.logJson((this.constructor as typeof BaseCommand).transfersInstances ? {...this.countsSoFar(error), ...described} : described)
      return
    }

    process.stderr.write(`Error: ${failure.message}\n  ${failure.suggestion}\n`)
    // What the job lost before it stopped (a replacement's, see sync/replace.ts) is said too.
    for (const line of renderNotCarried(lostBy(error))) process.stderr.write(`${line}\n`)
  }

  override async finally(error: Error | undefined): Promise<void> {
    // Interrupted is what the run was, whatever else it found on the way.
    if (this.signal.aborted) process.exitCode = ExitCode.interrupted
    const failure = error && !(error instanceof Errors.ExitError) ? describeFailure(error) : undefined
    // The error's code only: its message may name a file, and the log names no path.
    await this.reporter?.close({exitCode: typeof process.exitCode === 'number' ? process.exitCode : failure?.exitCode ?? 0, error: failure?.code})
    return super.finally(error)
  }

  /** The counts a failed or interrupted transfer reached, so that its JSON never says less than happened. */
  private countsSoFar(error: unknown): Record<string, unknown> {
    const {stats, notCarried} = (error ?? {}) as {stats?: Partial<TransferStats>; notCarried?: NotCarried[]}
    return {
      ...emptyStats(),
      durationMs: Date.now() - this.started,
      ...stats,
      ...(notCarried ? {notCarried} : {}),
      interrupted: this.signal.aborted,
    }
  }
}

/**
 * A word after a flag that takes no value is read as an argument, a path for import and verify:
 * one that names nothing may be a secret typed there (`verify --json hunter2 vols`), and is named
 * by where it stands, not shown, as an unexpected argument is (see usage-message.ts).
 */
function refuseUnknownPathAfterSwitch(flags: Record<string, {type: string; char?: string; allowNo?: boolean} | undefined>, argv: string[], args: string[]): void {
  const switches = new Set(Object.entries(flags).flatMap(([name, flag]) => (flag?.type === 'boolean' ? [`--${name}`, ...(flag.char ? [`-${flag.char}`] : []), ...(flag.allowNo ? [`--no-${name}`] : [])] : [])))
  for (const [index, word] of argv.entries()) {
    const before = argv[index - 1]
    if (before === undefined || !switches.has(before) || word === '-' || !args.includes(word) || existsSync(word)) continue
    throw new Errors.CLIError(`the word after ${before} names no file or folder (not shown: a flag that takes no value was given it, and it may be a secret)`)
  }
}

/**
 * The names of the flags on a command line, for the log: names only, since values may be patient
 * IDs, or paths that name patients. A long flag's value may follow an '='; a short flag is one
 * letter, and its value may follow it in the same word (`-o/exports/Smith_John`).
 */
export function flagNamesOf(argv: string[]): string[] {
  const names = argv.flatMap((word) => {
    if (/^--[a-z]/i.test(word)) return [word.slice(2).split('=')[0]!]
    if (/^-[a-z]/i.test(word)) return [word[1]!]
    return []
  })
  return [...new Set(names)]
}
