import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {generateStudySet} from '../../fixtures/generate.js'
import {runCli} from '../helpers/cli.js'
import {type FaultProxy, startFaultProxy} from '../helpers/fault-proxy.js'
import {type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'
import {runInTerminal} from '../helpers/terminal.js'

const INSTANCES = 16

/** What a terminal showed, update by update: each redraw of the progress line is one entry. */
const updates = (screen: string) => screen.split(/[\r\n]+/).map((line) => line.trim()).filter(Boolean)

/**
 * Progress in a real pseudo-terminal, command by command: phases named, the plan first, totals,
 * bytes, rate and ETA where a total is known; none in a pipe unless asked, none with --no-progress.
 */
describe('progress on a terminal', () => {
  let work: string
  let source: OrthancServer
  let target: OrthancServer
  // Slow answers, so that the lines are drawn more than once.
  let slowSource: FaultProxy
  let volumes: string

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'progress-test-'))
    const studies = await generateStudySet(join(work, 'fixtures'), {patients: 1, studiesPerPatient: 2, seriesPerStudy: 2, instancesPerSeries: INSTANCES / 4, pixelBytes: 20_000, seed: 'progress'})
    ;[source, target] = await Promise.all([startOrthanc({name: 'progress-source'}), startOrthanc({name: 'progress-target'})])
    await uploadFiles(source, studies.map((record) => record.path))
    slowSource = await startFaultProxy(source.port)
    slowSource.delayMs = 40
    volumes = join(work, 'volumes')
  })

  afterAll(async () => {
    await slowSource?.close()
    await Promise.all([source?.dispose(), target?.dispose()])
    await rm(work, {recursive: true, force: true})
  })

  it('export: planning (a count, no rate), the plan, then instances and bytes against their totals, rate and ETA', async () => {
    const {code, screen} = await runInTerminal(['export', '--source', slowSource.url, '--output', volumes, '--concurrency', '1'])
    expect(code, screen).toBe(0)
    const lines = updates(screen)
    expect(lines).toContainEqual(expect.stringMatching(/^planning: \d+ instances$/))
    const plan = lines.findIndex((line) => /^Plan: 16 instance\(s\) \(.+\) to export in 1 volume\(s\)\.$/.test(line))
    const firstExport = lines.findIndex((line) => line.startsWith('export: '))
    expect(plan).toBeGreaterThan(-1)
    expect(firstExport).toBeGreaterThan(plan)
    expect(lines).toContainEqual(expect.stringMatching(/^export: \d+\/16 instances {2}[\d.]+ KiB\/[\d.]+ KiB {2}[\d.]+ (B|KiB|MiB)\/s {2}ETA [\d.]+ s$/))
    expect(lines).toContainEqual(expect.stringMatching(/^export: 16\/16 instances {2}([\d.]+ KiB)\/\1/))
    // The result comes after the progress line is cleared, never on the same line.
    expect(lines).toContainEqual(expect.stringMatching(/^Exported 16 instances into 1 volume\(s\)/))
  })

  it('verify: the plan, then hashing against the totals; verifying with a target', async () => {
    const offline = await runInTerminal(['verify', volumes])
    expect(offline.code, offline.screen).toBe(0)
    expect(updates(offline.screen)).toContainEqual(expect.stringMatching(/^Plan: 16 instance\(s\) \(.+\) to check\.$/))
    expect(updates(offline.screen)).toContainEqual(expect.stringMatching(/^hashing: 16\/16 instances {2}([\d.]+ KiB)\/\1/))
    const online = await runInTerminal(['verify', volumes, '--target', slowSource.url])
    expect(online.code, online.screen).toBe(0)
    expect(updates(online.screen)).toContainEqual(expect.stringMatching(/^verifying: 16\/16 instances/))
  })

  it('import: the plan from the volumes, then instances and bytes against their totals', async () => {
    const slowTarget = await startFaultProxy(target.port)
    slowTarget.delayMs = 20
    try {
      const {code, screen} = await runInTerminal(['import', '--target', slowTarget.url, '--no-receipt', '--concurrency', '1', volumes])
      expect(code, screen).toBe(0)
      const lines = updates(screen)
      expect(lines).toContainEqual(expect.stringMatching(/^Plan: 16 instance\(s\) \(.+\) to import\.$/))
      expect(lines).toContainEqual(expect.stringMatching(/^import: 16\/16 instances {2}([\d.]+ KiB)\/\1/))
      expect(lines).toContainEqual(expect.stringMatching(/^Imported into .*: 16 transferred/))
    } finally {
      await slowTarget.close()
    }

    for (const id of await target.json<string[]>('/instances')) await target.api(`/instances/${id}`, {method: 'DELETE'})
  })

  it('sync: comparing against the source\'s count, the plan before anything moves, then the transfer against its totals', async () => {
    const {code, screen} = await runInTerminal(['sync', '--source', slowSource.url, '--target', target.url, '--concurrency', '1'])
    expect(code, screen).toBe(0)
    const lines = updates(screen)
    const compared = lines.findIndex((line) => line === 'comparing: 16/16 instances')
    const plan = lines.findIndex((line) => /^Plan: 16 instance\(s\) \(.+\) to send, 0 already there\.$/.test(line))
    const firstSync = lines.findIndex((line) => line.startsWith('sync: '))
    expect(compared).toBeGreaterThan(-1)
    expect(plan).toBeGreaterThan(compared)
    expect(firstSync).toBeGreaterThan(plan)
    expect(lines).toContainEqual(expect.stringMatching(/^sync: 16\/16 instances {2}([\d.]+ KiB)\/\1/))
  })

  it('diff: comparing against the source\'s count', async () => {
    const {code, screen} = await runInTerminal(['diff', '--source', slowSource.url, '--target', target.url])
    expect(code, screen).toBe(0)
    expect(updates(screen)).toContainEqual('comparing: 16/16 instances')
  })

  it('--no-progress keeps a terminal quiet; --progress draws it into a pipe', async () => {
    const quiet = await runInTerminal(['verify', volumes, '--no-progress'])
    expect(quiet.code).toBe(0)
    expect(quiet.screen).not.toMatch(/hashing:/)
    const piped = await runCli(['verify', volumes, '--progress'])
    expect(piped.code).toBe(0)
    expect(piped.stderr).toMatch(/hashing: 16\/16 instances/)
    const json = await runCli(['verify', volumes, '--json'])
    expect(json.stderr).toBe('')
  })
})
