import {chmod, mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {stopMeasuredProcesses, stopProcessesUsing} from './processes.js'

type Disposer = () => Promise<void>

export class InterruptedError extends Error {
  constructor() {
    super('interrupted')
    this.name = 'InterruptedError'
  }
}

/**
 * Everything the bench starts or creates, undone in reverse order: servers, clusters, temporary
 * folders. Runs on success, on error and on Ctrl-C, so a bench never leaves a server behind.
 */
export class Cleanup {
  private readonly stack: Array<{name: string; dispose: Disposer}> = []
  private readonly retired: string[] = []
  private interrupted = false

  /** After an interruption nothing new may start: what arrives late is undone at once, and the caller stops. */
  defer(name: string, dispose: Disposer): void {
    if (this.interrupted) {
      void dispose().catch(() => {})
      throw new InterruptedError()
    }

    this.stack.push({name, dispose})
  }

  interrupt(): void {
    this.interrupted = true
  }

  /** Runs one resource's disposer now (a per-run target server), instead of at the end. */
  async release(name: string): Promise<void> {
    let index = this.stack.length - 1
    while (index >= 0 && this.stack[index]!.name !== name) index--
    if (index < 0) return
    const [entry] = this.stack.splice(index, 1)
    await entry!.dispose()
  }

  /**
   * Leaves a finished run's folder (a target's storage, an export) in place until `sweep()`.
   * Deleting it at once slowed the next run down: with the small corpus, the ingest ceiling took
   * 1.4-1.8 s (5 runs) when the earlier targets' folders were kept, and 1.5-3.1 s, its Orthanc
   * using half as much CPU again, when each was deleted just before the next run.
   */
  retire(dir: string): void {
    const index = this.stack.findIndex((entry) => entry.name === dir)
    if (index >= 0) this.stack.splice(index, 1)
    this.retired.push(dir)
  }

  /** Deletes the retired folders: between sections, where no run is timed. */
  async sweep(): Promise<void> {
    for (const dir of this.retired.splice(0)) await rm(dir, {recursive: true, force: true})
  }

  async tempDir(prefix: string): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), `${prefix}-`))
    this.defer(dir, () => rm(dir, {recursive: true, force: true}))
    return dir
  }

  async run(): Promise<void> {
    while (this.stack.length > 0) {
      const {name, dispose} = this.stack.pop()!
      try {
        await dispose()
      } catch (error) {
        console.error(`cleanup of ${name} failed: ${(error as Error).message}`)
      }
    }
  }
}

/**
 * Runs `body`, then cleans up whatever it left, also when interrupted by SIGINT or SIGTERM.
 * Everything temporary, the test harness's server folders included, goes under one folder
 * (TMPDIR points there meanwhile): whatever an interruption catches half-made is still found
 * and removed with it.
 */
export async function withCleanup<T>(body: (cleanup: Cleanup) => Promise<T>): Promise<T> {
  const root = await mkdtemp(join(tmpdir(), 'orthanc-replicate-bench-'))
  // PostgreSQL runs as its own user and must get through this folder to its cluster.
  await chmod(root, 0o755)
  const previousTmpdir = process.env.TMPDIR
  process.env.TMPDIR = root
  const cleanup = new Cleanup()
  cleanup.defer(root, async () => {
    await stopProcessesUsing(root)
    await rm(root, {recursive: true, force: true})
    if (previousTmpdir === undefined) delete process.env.TMPDIR
    else process.env.TMPDIR = previousTmpdir
  })

  let interrupted = false
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) return
    interrupted = true
    console.error(`\n${signal}: stopping servers and deleting temporary folders...`)
    cleanup.interrupt()
    stopMeasuredProcesses()
    void cleanup.run().finally(() => process.exit(130))
  }

  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  try {
    return await body(cleanup)
  } finally {
    if (!interrupted) await cleanup.run()
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}
