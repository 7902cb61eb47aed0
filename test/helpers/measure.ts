import {spawn} from 'node:child_process'
import {readFile, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import type {Readable} from 'node:stream'
import {pipeline} from 'node:stream/promises'
import {fileURLToPath} from 'node:url'

import {type CliResult, repoRoot} from './cli.js'

const runScript = fileURLToPath(new URL('../../bin/run.js', import.meta.url))
const preload = fileURLToPath(new URL('./rss-report.mjs', import.meta.url))

export interface MeasuredRun extends CliResult {
  /** Peak resident set size of the CLI process, in MiB: VmHWM read by the process itself at exit, or the last one polled if it died first. */
  peakRssMiB: number
  /** VmHWM as the process read it in its exit hook; undefined if it died before (a crash, SIGKILL). */
  exitRssMiB?: number
  /** The highest VmHWM read from /proc/PID/status while it ran (polled every 50 ms). */
  polledRssMiB: number
  wallMs: number
}

export interface MeasureOptions {
  /** Bytes or a stream for stdin (a stream is piped, never held whole). */
  stdin?: Buffer | Readable
  timeoutMs?: number
  env?: Record<string, string>
}

/**
 * Runs the built CLI (`node bin/run.js`) and measures its peak memory and wall time. Peak RSS is
 * the kernel's high-water mark for the process (VmHWM, since its exec): read by a preloaded exit
 * hook, so that a peak in the last moments counts, and polled from /proc every 50 ms as well, so
 * that a process that dies without exit hooks is still measured.
 */
export async function runCliMeasured(args: string[], options: MeasureOptions = {}): Promise<MeasuredRun> {
  const report = join(tmpdir(), `rss-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}.json`)
  const started = Date.now()
  const child = spawn(process.execPath, ['--import', preload, runScript, ...args], {
    cwd: repoRoot,
    env: {...process.env, ...options.env, ORTHANC_REPLICATE_RSS_REPORT: report},
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  const stdout: Buffer[] = []
  const stderr: Buffer[] = []
  child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk))
  child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk))
  let polledKiB = 0
  const poll = setInterval(() => {
    readFile(`/proc/${child.pid}/status`, 'utf8').then((status) => {
      const match = /^VmHWM:\s+(\d+) kB/m.exec(status)
      if (match) polledKiB = Math.max(polledKiB, Number(match[1]))
    }, () => {})
  }, 50)
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 300_000)
  child.stdin.on('error', () => {})
  const fed = options.stdin === undefined || Buffer.isBuffer(options.stdin)
    ? Promise.resolve(child.stdin.end(options.stdin ?? ''))
    : pipeline(options.stdin, child.stdin).catch(() => {})
  const code = await new Promise<number>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (exitCode, signal) => resolve(exitCode ?? (signal ? 128 : 1)))
  })
  await fed
  clearTimeout(timer)
  clearInterval(poll)
  const wallMs = Date.now() - started
  const atExit = await readFile(report, 'utf8').then((text) => (JSON.parse(text) as {peakRssKiB: number}).peakRssKiB, () => undefined)
  await rm(report, {force: true})
  const mib = (kib: number) => Math.round(kib / 1024)
  return {
    code,
    stdout: Buffer.concat(stdout).toString('utf8'),
    stdoutBytes: Buffer.concat(stdout),
    stderr: Buffer.concat(stderr).toString('utf8'),
    peakRssMiB: mib(Math.max(atExit ?? 0, polledKiB)),
    exitRssMiB: atExit === undefined ? undefined : mib(atExit),
    polledRssMiB: mib(polledKiB),
    wallMs,
  }
}
