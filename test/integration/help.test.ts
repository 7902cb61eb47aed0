import {execFile} from 'node:child_process'
import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {promisify} from 'node:util'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {repoRoot, runCli} from '../helpers/cli.js'
import {runInTerminal} from '../helpers/terminal.js'

const run = promisify(execFile)

/** Help, typos and shell completion: plugin-help, plugin-autocomplete and the command line's own not-found hook (src/cli/not-found.ts). */
describe('help, typos and completion', () => {
  let cache: string
  beforeAll(async () => {
    cache = await mkdtemp(join(tmpdir(), 'completion-cache-'))
  })
  afterAll(async () => {
    await rm(cache, {recursive: true, force: true})
  })

  it('`help` lists every command, and `help COMMAND`, `COMMAND -h` and `COMMAND --help` show its flags', async () => {
    const overview = await runCli(['help'])
    expect(overview.code).toBe(0)
    for (const command of ['info', 'export', 'import', 'sync', 'diff', 'verify', 'autocomplete']) expect(overview.stdout).toMatch(new RegExp(`^  ${command}\\s`, 'm'))
    for (const args of [['help', 'export'], ['export', '-h'], ['export', '--help']]) {
      const help = await runCli(args)
      expect(help.code, args.join(' ')).toBe(0)
      expect(help.stdout).toMatch(/--max-volume-size=<value>/)
    }
  })

  it('shows sizes in help as people write them, never as a count of bytes', async () => {
    const {stdout} = await runCli(['export', '--help'])
    expect(stdout).toMatch(/--max-volume-size=<value>\s+\[default: 4032MiB\]/)
    expect(stdout).not.toMatch(/4227858432/)
  })

  it('a typo is named and, on a terminal, the nearest command is offered', async () => {
    const piped = await runCli(['exprot'])
    expect(piped.code).toBe(127)
    expect(piped.stderr).toMatch(/exprot is not an orthanc-replicate command/)
    // On a terminal the nearest command is offered; "n" declines.
    const terminal = await runInTerminal(['exprot'], {input: 'n\n'})
    expect(terminal.screen).toMatch(/Did you mean export\?/)
    expect(terminal.code).toBe(127)
  })

  it('import with nothing to import names the ways the command line has: a usage error, nothing contacted', async () => {
    const result = await runCli(['import', '--target', 'http://127.0.0.1:9'])
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/nothing to import/)
    expect(result.stderr).toContain('- for stdin, or --from-postgres')
    // The library's option names are not the command's.
    expect(result.stderr).not.toMatch(/fromPostgres|a stream,/)
  })

  it('completes commands and flags in bash', async () => {
    const env = {...process.env, XDG_CACHE_HOME: cache}
    const refreshed = await runCli(['autocomplete', '--refresh-cache'], {env})
    expect(refreshed.code, refreshed.stderr).toBe(0)
    const {stdout: setup} = await run(process.execPath, [join(repoRoot, 'bin/run.js'), 'autocomplete', 'script', 'bash'], {env})
    const complete = async (...words: string[]) => {
      const script = `${setup}\nCOMP_WORDS=(orthanc-replicate ${words.join(' ')}); COMP_CWORD=${words.length}; _orthanc-replicate_autocomplete; printf '%s\\n' "\${COMPREPLY[@]}"`
      const {stdout} = await run('bash', ['-c', script], {env})
      return stdout.split('\n').filter(Boolean)
    }

    expect(await complete('ex')).toEqual(['export'])
    expect(await complete('export', '--max-v')).toEqual(expect.arrayContaining(['--max-volume-size', '--max-volume-instances']))
  })
})
