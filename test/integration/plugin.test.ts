import {execFile} from 'node:child_process'
import {mkdir, mkdtemp, rm, symlink, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {promisify} from 'node:util'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {repoRoot} from '../helpers/cli.js'
import {startOrthanc, type OrthancServer} from '../helpers/orthanc.js'

const run = promisify(execFile)

/**
 * Another oclif CLI ("host-cli") that lists orthanc-replicate in its package.json plugins,
 * the way a site's own tooling would embed it.
 */
describe('as an oclif plugin', () => {
  let hostDir: string
  let server: OrthancServer

  beforeAll(async () => {
    hostDir = await mkdtemp(join(tmpdir(), 'host-cli-'))
    await mkdir(join(hostDir, 'node_modules', '@oclif'), {recursive: true})
    await symlink(repoRoot, join(hostDir, 'node_modules', 'orthanc-replicate'), 'dir')
    await symlink(join(repoRoot, 'node_modules', '@oclif', 'core'), join(hostDir, 'node_modules', '@oclif', 'core'), 'dir')
    await mkdir(join(hostDir, 'commands'))
    await writeFile(join(hostDir, 'package.json'), JSON.stringify({
      name: 'host-cli',
      version: '1.0.0',
      type: 'module',
      // oclif loads only the plugins that are also dependencies of the host.
      dependencies: {'@oclif/core': '^4', 'orthanc-replicate': '*'},
      oclif: {bin: 'host-cli', commands: './commands', plugins: ['orthanc-replicate'], topicSeparator: ' '},
    }))
    await writeFile(join(hostDir, 'commands', 'hello.js'), `import {Command} from '@oclif/core'
export default class Hello extends Command {
  static summary = "the host CLI's own command"
  async run() { this.log('hello from host') }
}
`)
    await writeFile(join(hostDir, 'run.js'), `import {execute} from '@oclif/core'\nawait execute({dir: import.meta.url})\n`)
    server = await startOrthanc({name: 'plugin-host-target'})
  })

  afterAll(async () => {
    await server?.dispose()
    if (hostDir) await rm(hostDir, {recursive: true, force: true})
  })

  it('adds its commands to the host CLI, beside the host\'s own', async () => {
    const {stdout} = await run(process.execPath, [join(hostDir, 'run.js'), '--help'], {cwd: hostDir})
    expect(stdout).toMatch(/hello\s+the host CLI's own command/)
    expect(stdout).toMatch(/info\s+Check a server URL/)
  })

  it('brings its help and completion along: `help COMMAND` and `autocomplete` work in the host', async () => {
    const {stdout} = await run(process.execPath, [join(hostDir, 'run.js'), 'help', 'export'], {cwd: hostDir})
    expect(stdout).toMatch(/--max-volume-size=<value>\s+\[default: 4032MiB\]/)
    const {stdout: commands} = await run(process.execPath, [join(hostDir, 'run.js'), '--help'], {cwd: hostDir})
    expect(commands).toMatch(/autocomplete\s+Display autocomplete installation instructions/)
  })

  it('bin/dev.js runs the commands straight from the TypeScript sources', async () => {
    const {stdout, stderr} = await run(process.execPath, [join(repoRoot, 'bin/dev.js'), 'info', '--server', server.url, '--json'], {cwd: repoRoot, env: {...process.env, DEBUG: 'oclif:config:ts-path'}})
    expect(JSON.parse(stdout)).toMatchObject({name: 'plugin-host-target'})
    // oclif says where it found the commands: the commands/ folder of sources, not dist/.
    expect(stderr).toMatch(/Found source directory for .*\/dist\/commands at .*\/commands\n/)
    expect(stderr).not.toMatch(/Warning|Falling back to compiled source/)
  })

  it('runs a plugin command through the host CLI against a real server', async () => {
    const {stdout} = await run(process.execPath, [join(hostDir, 'run.js'), 'info', '--server', server.url, '--json'], {cwd: hostDir})
    expect(JSON.parse(stdout)).toMatchObject({name: 'plugin-host-target', version: '1.10.1'})
  })
})
