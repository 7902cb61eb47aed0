import {execFileSync, spawn} from 'node:child_process'
import {randomUUID} from 'node:crypto'
import {existsSync} from 'node:fs'
import {readdir, readFile, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

export interface ProcessRun {
  code: number
  stdout: string
  stderr: string
  wallMs: number
  /** User + system CPU of the process and the children it waited for; undefined when unknown. */
  cpuMs?: number
  /** Peak resident set size, of the process or (through a shell) of its largest child. */
  maxRssKb?: number
}

export interface SpawnOptions {
  cwd?: string
  env?: NodeJS.ProcessEnv
  timeoutMs?: number
}

const GNU_TIME = '/usr/bin/time'

export function hasGnuTime(): boolean {
  return existsSync(GNU_TIME)
}

/**
 * Runs a command to completion and measures it: wall-clock here, CPU and peak RSS by GNU time
 * (the kernel's own accounting, children included), or by polling /proc when time is missing.
 */
export async function measureProcess(command: string, args: string[], options: SpawnOptions = {}): Promise<ProcessRun> {
  if (hasGnuTime()) {
    const report = join(tmpdir(), `orthanc-replicate-bench-time-${randomUUID()}`)
    try {
      const run = await spawnCollect(GNU_TIME, ['-f', '%U %S %M', '-o', report, command, ...args], options)
      // GNU time puts "Command exited with non-zero status N" before its figures when the command fails.
      const figures = (await readFile(report, 'utf8')).trim().split('\n').at(-1)?.split(' ').map(Number) ?? []
      const [user, system, rss] = figures
      return {...run, cpuMs: user !== undefined && system !== undefined ? (user + system) * 1000 : undefined, maxRssKb: rss}
    } finally {
      await rm(report, {force: true})
    }
  }

  return spawnCollect(command, args, options, true)
}

// Each measured command runs in its own process group, so that stopping it reaches the tool
// behind GNU time, or both sides of a pipe.
const running = new Set<number>()

/** Stops every measured command still running (an interrupted bench), by process group. */
export function stopMeasuredProcesses(): void {
  for (const pid of running) {
    try {
      process.kill(-pid, 'SIGTERM')
    } catch {
      // already gone
    }
  }
}

async function spawnCollect(command: string, args: string[], options: SpawnOptions, pollProc = false): Promise<ProcessRun> {
  return new Promise((resolve, reject) => {
    const started = performance.now()
    const child = spawn(command, args, {cwd: options.cwd, env: options.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true})
    if (child.pid !== undefined) running.add(child.pid)
    const stdout: Buffer[] = []
    const stderr: Buffer[] = []
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk))
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk))
    let maxRssKb: number | undefined
    let cpuMs: number | undefined
    const poll = pollProc && child.pid !== undefined
      ? setInterval(() => {
        void processFigures(child.pid!).then((figures) => {
          if (!figures) return
          maxRssKb = Math.max(maxRssKb ?? 0, figures.hwmKb)
          cpuMs = figures.cpuMs
        })
      }, 20)
      : undefined
    const timer = options.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), options.timeoutMs) : undefined
    child.on('error', reject)
    child.on('close', (code, signal) => {
      const wallMs = performance.now() - started
      if (child.pid !== undefined) running.delete(child.pid)
      if (poll) clearInterval(poll)
      if (timer) clearTimeout(timer)
      resolve({
        code: code ?? (signal ? 128 : 1),
        stdout: Buffer.concat(stdout).toString('utf8'),
        stderr: Buffer.concat(stderr).toString('utf8'),
        wallMs,
        cpuMs,
        maxRssKb,
      })
    })
  })
}

let ticksPerSecond: number | undefined

function clockTicks(): number {
  ticksPerSecond ??= Number(execFileSync('getconf', ['CLK_TCK'], {encoding: 'utf8'}).trim()) || 100
  return ticksPerSecond
}

/** CPU so far (user + system) and peak RSS of a live process, from /proc; undefined once it is gone. */
export async function processFigures(pid: number): Promise<{cpuMs: number; hwmKb: number} | undefined> {
  try {
    const [stat, status] = await Promise.all([readFile(`/proc/${pid}/stat`, 'utf8'), readFile(`/proc/${pid}/status`, 'utf8')])
    // The command name (field 2) may hold spaces: fields are counted after its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const ticks = Number(fields[11]) + Number(fields[12])
    const hwm = /VmHWM:\s+(\d+) kB/.exec(status)?.[1]
    return {cpuMs: (ticks / clockTicks()) * 1000, hwmKb: Number(hwm ?? 0)}
  } catch {
    return undefined
  }
}

/** The process whose command line names this file (an Orthanc started with its configuration file). */
export async function pidByArgument(argument: string): Promise<number | undefined> {
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')
    if (cmdline.split('\0').includes(argument)) return Number(entry)
  }

  return undefined
}

/**
 * Processes whose command line names something under `dir`: servers and tools the bench started
 * with their files there. An interrupted bench can leave one mid-start; this finds them by that.
 */
export async function pidsUsing(dir: string): Promise<number[]> {
  const pids: number[] = []
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')
    if (cmdline.split('\0').some((argument) => argument.includes(dir))) pids.push(Number(entry))
  }

  return pids
}

/** Stops those processes, politely first. */
export async function stopProcessesUsing(dir: string): Promise<void> {
  const signalAll = async (signal: NodeJS.Signals) => {
    const pids = await pidsUsing(dir)
    for (const pid of pids) {
      try {
        process.kill(pid, signal)
      } catch {
        // already gone
      }
    }

    return pids.length
  }

  if ((await signalAll('SIGTERM')) === 0) return
  for (let wait = 0; wait < 50 && (await pidsUsing(dir)).length > 0; wait++) await sleep(100)
  await signalAll('SIGKILL')
}

/** CPU time of a set of processes, to compare what the client spends with what the servers spend. */
export async function cpuOf(pids: Array<number | undefined>): Promise<number> {
  let total = 0
  for (const pid of pids) if (pid !== undefined) total += (await processFigures(pid))?.cpuMs ?? 0
  return total
}

/** CPU time the whole machine has spent busy since boot (all cores, idle and I/O wait excluded), from /proc/stat. */
export async function machineBusyMs(): Promise<number> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0] ?? ''
  // cpu  user nice system idle iowait irq softirq steal ...
  const [user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number)
  const ticks = [user, nice, system, irq, softirq, steal].reduce<number>((sum, value) => sum + (value ?? 0), 0)
  return (ticks / clockTicks()) * 1000
}

/**
 * Waits until the machine has been nearly idle for half a second (under 15% of one core), so a
 * run does not start while something else is busy; gives up after `maxWaitMs` and says so.
 */
export async function waitForQuiet(maxWaitMs = 120_000, onWait?: (busyShare: number) => void): Promise<boolean> {
  const deadline = performance.now() + maxWaitMs
  let warned = false
  for (;;) {
    const before = await machineBusyMs()
    await sleep(500)
    const share = ((await machineBusyMs()) - before) / 500
    if (share < 0.15) return true
    if (performance.now() > deadline) return false
    if (!warned) onWait?.(share)
    warned = true
  }
}
