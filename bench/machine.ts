import {execFileSync, spawnSync} from 'node:child_process'
import {availableParallelism, loadavg, totalmem} from 'node:os'

import {repoRoot} from './tool.js'

function output(command: string, args: string[]): string {
  const result = spawnSync(command, args, {encoding: 'utf8'})
  return result.status === 0 ? result.stdout.trim() : ''
}

export interface Machine {
  cpus: number
  cpuModel: string
  memory: string
  node: string
  curl: string
  commit: string
  /** The 1, 5 and 15 minute load averages when the bench started: figures taken under load are noisier. */
  load: string
}

/** What the figures were measured on, for the report's header. */
export function describeMachine(): Machine {
  const model = /^Model name:\s*(.+)$/m.exec(output('lscpu', []))?.[1]?.trim() ?? 'unknown'
  const head = output('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD'])
  const dirty = output('git', ['-C', repoRoot, 'status', '--porcelain', '--', 'src', 'commands', 'bin', 'package.json']) !== ''
  return {
    cpus: availableParallelism(),
    cpuModel: model,
    memory: `${(totalmem() / 1024 ** 3).toFixed(1)} GiB`,
    node: process.version,
    curl: output('curl', ['--version']).split('\n')[0] ?? 'missing',
    commit: head ? `${head}${dirty ? ' with uncommitted changes in the tool' : ''}` : 'unknown',
    load: loadavg().map((value) => value.toFixed(2)).join(' / '),
  }
}

/** The build the bench measures: always rebuilt from the sources, so the figures match the code. */
export function buildTool(): void {
  execFileSync('npm', ['run', 'build'], {cwd: repoRoot, stdio: ['ignore', 'ignore', 'inherit']})
}
