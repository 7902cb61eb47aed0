import {setMaxListeners} from 'node:events'

import {Command, Errors, Flags, type Interfaces} from '@oclif/core'

import type {HttpOptions} from '../orthanc/http.js'
import {describeFailure} from './failure.js'

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

  protected readonly abort = new AbortController()
  private readonly onSignal = () => this.abort.abort(new DOMException('interrupted', 'AbortError'))

  override async init(): Promise<void> {
    await super.init()
    setMaxListeners(0, this.abort.signal)
    process.once('SIGINT', this.onSignal)
    process.once('SIGTERM', this.onSignal)
  }

  protected httpOptions(flags: {timeout: number; retries: number}, connections?: number): HttpOptions {
    return {
      connections,
      headersTimeoutMs: flags.timeout * 1000,
      bodyTimeoutMs: flags.timeout * 1000,
      retry: {retries: flags.retries, minDelayMs: 250, maxDelayMs: 8000},
    }
  }

  /** Progress and notes go to stderr, and only for a person watching: not under --json, not into a pipe or log file. */
  protected get interactive(): boolean {
    return !this.jsonEnabled() && Boolean(process.stderr.isTTY)
  }

  override async catch(error: Error & {exitCode?: number}): Promise<void> {
    // oclif's own errors (bad flags, --help, exit()) keep oclif's handling and exit codes.
    if (error instanceof Errors.CLIError || error instanceof Errors.ExitError) {
      return super.catch(error)
    }

    const failure = describeFailure(error)
    process.exitCode = failure.exitCode
    if (process.env.DEBUG) process.stderr.write(`${error.stack ?? error}\n`)
    if (this.jsonEnabled()) {
      this.logJson({error: {code: failure.code, message: failure.message, suggestion: failure.suggestion, exitCode: failure.exitCode}})
      return
    }

    process.stderr.write(`Error: ${failure.message}\n  ${failure.suggestion}\n`)
  }

  override async finally(error: Error | undefined): Promise<void> {
    process.off('SIGINT', this.onSignal)
    process.off('SIGTERM', this.onSignal)
    return super.finally(error)
  }
}
