import {execFile} from 'node:child_process'
import {mkdir, mkdtemp, readdir, rm, symlink, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {promisify} from 'node:util'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {generateStudySet} from '../../fixtures/generate.js'
import {repoRoot} from '../helpers/cli.js'
import {type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'

const run = promisify(execFile)

/**
 * The package as npm would deliver it: `npm pack`, unpacked into another folder's node_modules
 * (no network: its dependencies are linked from this checkout's), then imported by an ES module
 * and type-checked by a TypeScript file of that folder, as another project would use it.
 */
describe('the packed package', () => {
  let work: string
  let consumer: string
  let files: string[]
  let server: OrthancServer

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'package-test-'))
    const {stdout} = await run('npm', ['pack', '--pack-destination', work, '--json'], {cwd: repoRoot})
    const [packed] = JSON.parse(stdout) as Array<{filename: string; files: Array<{path: string}>}>
    files = packed!.files.map((file) => file.path)
    consumer = join(work, 'consumer')
    const installed = join(consumer, 'node_modules', 'orthanc-replicate')
    await mkdir(installed, {recursive: true})
    await run('tar', ['-xzf', join(work, packed!.filename), '-C', installed, '--strip-components=1'])
    // The dependencies, as `npm install` would have hoisted them, linked from this checkout.
    for (const name of await readdir(join(repoRoot, 'node_modules'))) {
      if (name.startsWith('.') || name === 'orthanc-replicate') continue
      await symlink(join(repoRoot, 'node_modules', name), join(consumer, 'node_modules', name), 'dir')
    }

    await writeFile(join(consumer, 'package.json'), JSON.stringify({name: 'consumer', version: '1.0.0', type: 'module', dependencies: {'orthanc-replicate': '*'}}))
    server = await startOrthanc({name: 'package-source'})
    const studies = await generateStudySet(join(work, 'fixtures'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 3, pixelBytes: 2000, seed: 'package'})
    await uploadFiles(server, studies.map((record) => record.path))
  })

  afterAll(async () => {
    await server?.dispose()
    if (work) await rm(work, {recursive: true, force: true})
  })

  it('ships the licence, the README, the docs it links, the built library with its types, and no tests', () => {
    expect(files).toEqual(expect.arrayContaining(['LICENSE', 'README.md', 'docs/archive-format.md', 'bin/run.js', 'oclif.manifest.json', 'dist/src/index.js', 'dist/src/index.d.ts']))
    expect(files.filter((file) => file.startsWith('test/') || file.startsWith('dist/test/'))).toEqual([])
  })

  it('imports as a library and runs its jobs: export, verify, diff, describe', async () => {
    await writeFile(join(consumer, 'use.mjs'), `
import {connect, describeServer, diffServers, exportArchive, importInputs, serversDiffer, syncServers, verifyArchive, verifyOutcome, OrthancClient, UserFacingError} from 'orthanc-replicate'
const client = connect(process.argv[2])
try {
  const events = []
  const exported = await exportArchive({source: client, output: process.argv[3], onEvent: (event) => events.push(event.type)})
  const verified = await verifyArchive(process.argv[3])
  const diff = await diffServers(client, client)
  const report = await describeServer(client)
  console.log(JSON.stringify({
    kinds: [typeof importInputs, typeof syncServers, client instanceof OrthancClient, typeof UserFacingError],
    exported: exported.transferred, source: exported.source, events, verdict: verifyOutcome(verified), differ: serversDiffer(diff), name: report.server.name,
  }))
} finally {
  await client.close()
}
`)
    const {stdout} = await run(process.execPath, [join(consumer, 'use.mjs'), server.url, join(work, 'volumes')], {cwd: consumer})
    expect(JSON.parse(stdout)).toEqual({
      kinds: ['function', 'function', true, 'function'],
      exported: 3,
      source: {url: server.url, name: 'package-source', version: '1.10.1'},
      events: ['plan'],
      verdict: 'ok',
      differ: false,
      name: 'package-source',
    })
  })

  it('has types a TypeScript project checks against', async () => {
    await writeFile(join(consumer, 'check.ts'), `
import {connect, syncServers, type SyncSummary, type Problem, type Endpoint} from 'orthanc-replicate'
const source = connect({url: 'http://old:8042', password: 'not-used'})
const target = connect('http://new:8042')
const run: Promise<SyncSummary> = syncServers({source, target, dryRun: true, onProgress: (event) => event.done})
const first = (summary: SyncSummary): Problem | undefined => summary.failures[0]
const url = (endpoint: Endpoint): string => endpoint.url
void run.then((summary) => [first(summary), url(summary.target), summary.planned.instances])
`)
    await writeFile(join(consumer, 'tsconfig.json'), JSON.stringify({compilerOptions: {module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', strict: true, noEmit: true, skipLibCheck: true, types: ['node']}, files: ['check.ts']}))
    await run(process.execPath, [join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', consumer], {cwd: consumer})
  })
})
