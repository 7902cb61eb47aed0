import {spawn} from 'node:child_process'
import {fileURLToPath} from 'node:url'

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url))
const runScript = fileURLToPath(new URL('../../bin/run.js', import.meta.url))

export interface CliResult {
  code: number
  stdout: string
  /** stdout as bytes, for binary output (an archive on stdout). */
  stdoutBytes: Buffer
  stderr: string
}

export interface CliOptions {
  env?: Record<string, string | undefined>
  /** Bytes to write on stdin, or a stream's worth of them. */
  stdin?: Buffer | string
  timeoutMs?: number
  /** The folder the command runs in (default: the repository). */
  cwd?: string
  /** Options for node itself, before the script (V8 flags a test needs). */
  nodeArgs?: string[]
}

/** Runs the built CLI (`node bin/run.js`) as a user would, and collects its output and exit code. */
export async function runCli(args: string[], options: CliOptions = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = {...process.env, ...options.env}
    for (const [key, value] of Object.entries(env)) if (value === undefined) delete env[key]
    const child = spawn(process.execPath, [...(options.nodeArgs ?? []), runScript, ...args], {env, cwd: options.cwd ?? repoRoot, stdio: ['pipe', 'pipe', 'pipe']})
    const stdout: Buffer[] = []
    const stderr: Buffer[] = []
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk))
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk))
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000)
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(stdout).toString('utf8'), stdoutBytes: Buffer.concat(stdout), stderr: Buffer.concat(stderr).toString('utf8')})
    })
    child.stdin.on('error', () => {})
    child.stdin.end(options.stdin ?? '')
  })
}

export function parseJson<T = Record<string, unknown>>(result: CliResult): T {
  try {
    return JSON.parse(result.stdout) as T
  } catch {
    throw new Error(`stdout is not JSON (exit ${result.code}):\n${result.stdout}\nstderr:\n${result.stderr}`)
  }
}
