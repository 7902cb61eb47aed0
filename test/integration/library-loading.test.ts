import {execFileSync} from 'node:child_process'
import {mkdtemp, readdir, readFile, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {ExitCode} from '../../src/cli/exit-codes.js'
import {InvalidAgeRecipientError} from '../../src/crypto/age.js'
import {connect, exportArchive} from '../../src/index.js'
import {newIdentity} from '../helpers/age.js'
import {runCli} from '../helpers/cli.js'
import {makeCorpus} from '../helpers/corpus.js'
import {freePort} from '../helpers/ports.js'
import {testInstance, writeTestVolume} from '../helpers/volumes.js'

describe('the library API', () => {
  it('loads none of the command line: no oclif, no flag parsing', () => {
    // In a fresh process, as a program that imports the package would: which files did it load?
    const built = fileURLToPath(new URL('../../dist/src/index.js', import.meta.url))
    const loaded = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e',
      `import(${JSON.stringify(built)}).then(async () => { const {createRequire} = await import('node:module'); console.log(JSON.stringify(Object.keys(createRequire(${JSON.stringify(built)}).cache))) })`,
    ], {encoding: 'utf8'})) as string[]
    expect(loaded.length).toBeGreaterThan(0)
    expect(loaded.filter((file) => file.includes('/node_modules/@oclif/'))).toEqual([])
  })

  it('refuses an export to a recipient that is not one before it contacts the server or writes a byte', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'library-export-'))
    const source = connect(`http://127.0.0.1:${await freePort()}`)
    try {
      const output = join(dir, 'volumes')
      await expect(exportArchive({source, output, encryption: {recipients: ['age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq']}})).rejects.toThrow(InvalidAgeRecipientError)
      expect(await readdir(dir)).toEqual([])
      expect(source.http.stats.requests).toBe(0)
    } finally {
      await source.close()
      await rm(dir, {recursive: true, force: true})
    }
  })
})

describe('start-up', () => {
  const recorder = fileURLToPath(new URL('../helpers/module-recorder.mjs', import.meta.url))
  const ageLibrary = (url: string) => /\/node_modules\/(age-encryption|@noble)\//.test(url)
  let dir: string
  let corpus: string
  let nobody: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'start-up-'))
    corpus = join(dir, 'corpus')
    await makeCorpus(corpus)
    // A port nothing listens on: each command fails at its first request, after loading what it runs with.
    nobody = `http://127.0.0.1:${await freePort()}`
  })
  afterAll(async () => {
    await rm(dir, {recursive: true, force: true})
  })

  /** The modules a command loaded through the ES module loader, as URLs, and its exit code. */
  async function modulesLoadedBy(name: string, args: string[], stdin?: Buffer): Promise<{code: number; loaded: string[]}> {
    const record = join(dir, `${name}.modules`)
    const result = await runCli(args, {env: {NODE_OPTIONS: `--import=${recorder}`, RECORD_MODULES_TO: record}, stdin})
    return {code: result.code, loaded: (await readFile(record, 'utf8')).split('\n').filter(Boolean)}
  }

  it('starts the command line from its bundle: oclif and the command in tens of files, not hundreds', async () => {
    // Resolving and reading files was most of what a command cost before its first request
    // (scripts/bundle-cli.js): 0.59 -> 0.43 s of CPU per start on the machine measured.
    const {code, loaded} = await modulesLoadedBy('sync', ['sync', '--source', nobody, '--target', nobody])
    expect(code).toBe(ExitCode.unreachable)
    expect(loaded.filter((url) => url.includes('/node_modules/'))).toEqual([])
    expect(loaded.filter((url) => url.startsWith('file:')).length).toBeLessThan(80)
  })

  it('import, export and verify load the age library (145 ms of CPU) only when they meet encryption', async () => {
    // A real plain volume: read whole by verify, and through the age sniffing of archive inputs (a file, and stdin).
    const {bytes, bag} = await writeTestVolume({instances: [testInstance('start-up', 2000)]})
    const volume = join(dir, `${bag}.tar`)
    await writeFile(volume, bytes)
    const plain = {
      'import of a folder': await modulesLoadedBy('import-folder', ['import', '--target', nobody, '--no-receipt', corpus]),
      'import of a volume': await modulesLoadedBy('import-volume', ['import', '--target', nobody, '--no-receipt', volume]),
      'import of a stream': await modulesLoadedBy('import-stream', ['import', '--target', nobody, '--no-receipt', '-'], bytes),
      export: await modulesLoadedBy('export', ['export', '--source', nobody, '--output', join(dir, 'export')]),
      verify: await modulesLoadedBy('verify', ['verify', volume]),
    }
    for (const [run, {code, loaded}] of Object.entries(plain)) {
      // Each ran its command (the recorder saw it), and only verify had nothing to fail on.
      expect(code, run).toBe(run === 'verify' ? 0 : ExitCode.unreachable)
      expect(loaded.some((url) => url.endsWith(`/dist/commands/${run.split(' ')[0]}.js`)), run).toBe(true)
      expect(loaded.filter(ageLibrary), run).toEqual([])
    }
    const encrypted = await modulesLoadedBy('encrypted-export', ['export', '--source', nobody, '--output', join(dir, 'encrypted'), '--recipient', (await newIdentity()).recipient])
    expect(encrypted.code).toBe(ExitCode.unreachable)
    expect(encrypted.loaded.filter(ageLibrary).length).toBeGreaterThan(0)
  })
})
