import {spawn} from 'node:child_process'
import {chmod, mkdtemp, readFile, rm, stat} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {generateStudySet} from '../../fixtures/generate.js'
import {type CliResult, repoRoot, runCli} from '../helpers/cli.js'
import {volumeFiles} from '../helpers/corpus.js'
import {startFaultProxy} from '../helpers/fault-proxy.js'
import {type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'
import {flipByteInEntry, payloadEntries} from '../helpers/tamper.js'

const PASSWORD = 'contract-Secret-31'
/** The source's credentials, the way the README recommends (a password in a URL earns a warning on stderr). */
const ALICE = {ORTHANC_USERNAME: 'alice', ORTHANC_PASSWORD: PASSWORD}
const runAsAlice = (args: string[]) => runCli(args, {env: ALICE})
const INSTANCES = 24
const COUNTERS = ['transferred', 'skipped', 'failed', 'bytes', 'durationMs', 'retries'] as const

type Json = Record<string, unknown>

/** stdout holds exactly one JSON document. */
function onlyJson(result: CliResult): Json {
  try {
    return JSON.parse(result.stdout) as Json
  } catch {
    throw new Error(`stdout is not one JSON document (exit ${result.code}):\n${result.stdout}\nstderr:\n${result.stderr}`)
  }
}

/** Every endpoint in a summary has one shape: {url, name?, version?}, and no credentials. */
function expectEndpoints(summary: Json, keys: string[]): void {
  for (const key of keys) {
    const endpoint = summary[key] as Json
    expect(endpoint, key).toMatchObject({url: expect.stringMatching(/^https?:\/\/[^@]+$/)})
    for (const field of ['name', 'version'] as const) if (field in endpoint) expect(typeof endpoint[field], `${key}.${field}`).toBe('string')
  }
}

/** The counters every transfer summary carries, as integers and a boolean. */
function expectCounters(summary: Json): void {
  for (const counter of COUNTERS) expect(Number.isInteger(summary[counter]), counter).toBe(true)
  expect(typeof summary.interrupted).toBe('boolean')
  expect(typeof summary.dryRun).toBe('boolean')
  expectProblems(summary.failures)
}

/** Lists of problems have one shape: {id, path?, kind, reason}. */
function expectProblems(list: unknown): void {
  expect(Array.isArray(list)).toBe(true)
  for (const problem of list as Json[]) {
    expect(Object.keys(problem).filter((key) => !['id', 'path', 'kind', 'reason'].includes(key))).toEqual([])
    expect(problem).toMatchObject({id: expect.any(String), kind: expect.any(String), reason: expect.any(String)})
  }
}

/** The human result went to stdout; stderr holds only what people read on the side (no JSON, no summary). */
function expectHumanResult(result: CliResult, headline: RegExp): void {
  expect(result.stdout, result.stderr).toMatch(headline)
  expect(result.stderr).not.toMatch(headline)
  expect(result.stderr).not.toMatch(/^\s*[{[]/m)
  // Not a terminal: no progress line.
  expect(result.stderr).not.toMatch(/\r/)
}

/**
 * The output contract, command by command, with and without --json: the result on stdout (with
 * `export --output -`, stdout is the archive and the result goes to stderr), everything else on
 * stderr; one shape for endpoints, for lists of problems, for the counters of transfers.
 */
describe('the output contract', () => {
  let work: string
  let source: OrthancServer
  let target: OrthancServer
  let volumes: string
  let patientId: string

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'contract-test-'))
    const studies = await generateStudySet(join(work, 'fixtures'), {patients: 2, studiesPerPatient: 2, seriesPerStudy: 2, instancesPerSeries: INSTANCES / 8, pixelBytes: 1500, seed: 'contract'})
    ;[source, target] = await Promise.all([startOrthanc({name: 'contract-source', users: {alice: PASSWORD}}), startOrthanc({name: 'contract-target'})])
    await uploadFiles(source, studies.map((record) => record.path))
    patientId = studies[0]!.patientId
    volumes = join(work, 'volumes')
  })

  afterAll(async () => {
    await Promise.all([source?.dispose(), target?.dispose()])
    await rm(work, {recursive: true, force: true})
  })

  it('info', async () => {
    expectHumanResult(await runAsAlice(['info', '--server', source.url]), /^Server: +http:\/\/127\.0\.0\.1:\d+\n/)
    const json = await runAsAlice(['info', '--server', source.url, '--json'])
    const report = onlyJson(json)
    expectEndpoints(report, ['server'])
    expect(report).toMatchObject({server: {url: source.url, name: 'contract-source', version: '1.10.1'}, accepts: {labels: false, userMetadata: null, systemMetadata: false}})
    expect(json.stderr).toBe('')
  })

  it('export: the result on stdout, the plan and the next step (verify) on stderr', async () => {
    const human = await runAsAlice(['export', '--source', source.url, '--output', volumes])
    expect(human.code, human.stderr).toBe(0)
    expectHumanResult(human, /^Exported 24 instances into 1 volume\(s\)/m)
    expect(human.stderr).toMatch(/^Plan: 24 instance\(s\) \(.*\) to export in 1 volume\(s\)\.$/m)
    expect(human.stderr).toMatch(new RegExp(`^Next: .*orthanc-replicate verify ${volumes}$`, 'm'))

    const json = onlyJson(await runAsAlice(['export', '--source', source.url, '--output', join(work, 'volumes-json'), '--json']))
    expectCounters(json)
    expectEndpoints(json, ['source'])
    expect(json).toMatchObject({dryRun: false, transferred: INSTANCES, planned: {instances: INSTANCES}})

    const dry = onlyJson(await runAsAlice(['export', '--source', source.url, '--output', join(work, 'dry'), '--dry-run', '--json']))
    expect(dry).toMatchObject({dryRun: true, transferred: 0, bytes: 0, planned: {instances: INSTANCES, bytes: expect.any(Number)}})
    expect((dry.planned as Json).bytes).toBeGreaterThan(0)
  })

  it('export --output -: stdout is the archive, the result (human or JSON) goes to stderr', async () => {
    for (const json of [false, true]) {
      const result = await runAsAlice(['export', '--source', source.url, '--output', '-', ...(json ? ['--json'] : [])])
      expect(result.code, result.stderr).toBe(0)
      // A tar: the first entry's name, then "ustar" at offset 257.
      expect(result.stdoutBytes.subarray(257, 262).toString()).toBe('ustar')
      if (json) {
        const summary = JSON.parse(result.stderr) as Json
        expectCounters(summary)
        expect(summary).toMatchObject({transferred: INSTANCES, output: '-'})
      } else {
        expect(result.stderr).toMatch(/^Exported 24 instances/m)
      }
    }
  })

  it('verify: the result on stdout; problems in one shape', async () => {
    expectHumanResult(await runCli(['verify', volumes]), /^Archive complete and valid\.$/m)
    const ok = onlyJson(await runCli(['verify', volumes, '--json']))
    expect(ok).toMatchObject({complete: true, valid: true, instances: INSTANCES, problems: []})

    const damaged = join(work, 'damaged')
    await runAsAlice(['export', '--source', source.url, '--output', damaged])
    const [volume] = await volumeFiles(damaged)
    const entry = (await payloadEntries(volume!)).find((candidate) => candidate.name.endsWith('.dcm'))!
    await flipByteInEntry(volume!, entry.name)
    const bad = await runCli(['verify', damaged, '--json'])
    expect(bad.code).toBe(11)
    const summary = onlyJson(bad)
    expectProblems(summary.problems)
    expect(summary.problems).toEqual([expect.objectContaining({id: expect.stringContaining(entry.name.split('/').at(-1)!), path: volume, kind: 'checksum'})])
  })

  it('import: the result on stdout; a dry run counts what it plans, never what it transfers', async () => {
    const dry = onlyJson(await runCli(['import', '--target', target.url, '--no-receipt', '--dry-run', '--json', volumes]))
    expectCounters(dry)
    expectEndpoints(dry, ['target'])
    expect(dry).toMatchObject({dryRun: true, transferred: 0, bytes: 0, planned: {instances: INSTANCES}, target: {url: target.url, name: 'contract-target'}})
    expectProblems(dry.problems)
    expectProblems(dry.ignoredSamples)

    const human = await runCli(['import', '--target', target.url, '--no-receipt', volumes])
    expect(human.code, human.stderr).toBe(0)
    expectHumanResult(human, /^Imported into http:\/\/127\.0\.0\.1:\d+: 24 transferred, 0 skipped, 0 failed/m)
    const again = onlyJson(await runCli(['import', '--target', target.url, '--no-receipt', '--json', volumes]))
    expectCounters(again)
    expect(again).toMatchObject({transferred: 0, skipped: INSTANCES})
    for (const id of await target.json<string[]>('/instances')) await target.api(`/instances/${id}`, {method: 'DELETE'})
  })

  it('diff: lists end with "and N more", and a difference suggests the sync that mends it', async () => {
    const human = await runAsAlice(['diff', '--source', source.url, '--target', target.url])
    expect(human.code).toBe(14)
    expectHumanResult(human, /^only on the source: 24$/m)
    expect(human.stdout).toMatch(/^ {2}\.\.\. and 4 more \(see --json\)$/m)
    expect(human.stderr).toMatch(new RegExp(`^Next: .*orthanc-replicate sync --source ${source.url} --target ${target.url} --dry-run$`, 'm'))
    // The suggestion carries no credentials.
    expect(human.stderr).not.toContain(PASSWORD)
    const json = onlyJson(await runAsAlice(['diff', '--source', source.url, '--target', target.url, '--json']))
    expectEndpoints(json, ['source', 'target'])
    expect(json).toMatchObject({onlySource: INSTANCES, instances: {onlySource: expect.any(Array)}})
  })

  it('sync: the plan first (stderr), the result on stdout; the same counters and endpoints', async () => {
    const dry = onlyJson(await runAsAlice(['sync', '--source', source.url, '--target', target.url, '--dry-run', '--json']))
    expectCounters(dry)
    expectEndpoints(dry, ['source', 'target'])
    expect(dry).toMatchObject({dryRun: true, transferred: 0, bytes: 0, planned: {instances: INSTANCES}, plan: {missing: INSTANCES}})

    const human = await runAsAlice(['sync', '--source', source.url, '--target', target.url])
    expect(human.code, human.stderr).toBe(0)
    expectHumanResult(human, /^Synced http:\/\/127\.0\.0\.1:\d+ to http:\/\/127\.0\.0\.1:\d+: 24 transferred/m)
    expect(human.stderr).toMatch(/^Plan: 24 instance\(s\) \(.*\) to send, 0 already there\.$/m)
    expect(human.stdout).toMatch(/^Not carried: system-metadata of 24 instance\(s\)/m)

    const json = onlyJson(await runAsAlice(['sync', '--source', source.url, '--target', target.url, '--json']))
    expectCounters(json)
    expect(json).toMatchObject({dryRun: false, transferred: 0, skipped: INSTANCES, planned: {instances: 0, bytes: 0}, notCarried: expect.any(Array)})
  })

  it('sync --follow --json: the counters of every pass, bytes and duration included', async () => {
    for (const id of await target.json<string[]>('/instances')) await target.api(`/instances/${id}`, {method: 'DELETE'})
    const child = spawn(process.execPath, [join(repoRoot, 'bin/run.js'), 'sync', '--source', source.url, '--target', target.url, '--follow', '--interval', '1', '--state', join(work, 'follow.json'), '--json'], {stdio: ['ignore', 'pipe', 'pipe'], env: {...process.env, ...ALICE}})
    let stdout = ''
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk))
    const deadline = Date.now() + 30_000
    while ((await target.json<string[]>('/instances')).length < INSTANCES && Date.now() < deadline) await sleep(200)
    await sleep(500)
    child.kill('SIGTERM')
    const code = await new Promise<number | null>((resolve) => child.once('close', resolve))
    expect(code).toBe(130)
    const summary = JSON.parse(stdout) as Json
    expectCounters(summary)
    expectEndpoints(summary, ['source', 'target'])
    expect(summary).toMatchObject({following: true, interrupted: true, transferred: INSTANCES, passes: expect.any(Number), notCarried: expect.any(Array)})
    expect(summary.bytes).toBeGreaterThan(0)
    expect(summary.durationMs).toBeGreaterThan(0)
  })

  describe('reporting', () => {
    it('--quiet: nothing on stderr when all goes well; the result still on stdout', async () => {
      const result = await runAsAlice(['export', '--source', source.url, '--output', join(work, 'quiet'), '--quiet'])
      expect(result.code).toBe(0)
      expect(result.stderr).toBe('')
      expect(result.stdout).toMatch(/^Exported 24 instances/m)
    })

    it('--log-file: private JSON lines of start, plan, each retry and the end, with no password and no patient data', async () => {
      const proxy = await startFaultProxy(source.port)
      proxy.faults.push({match: /^GET \/instances\/.*\/attachments\/dicom\/data$/, fault: 'status-503'})
      const log = join(work, 'run.log')
      const credentialed = proxy.url.replace('//', `//alice:${PASSWORD}@`)
      try {
        const result = await runCli(['export', '--source', credentialed, '--output', join(work, 'logged'), '--log-file', log, '--patient-id', patientId, '--json', '-v'])
        expect(result.code, result.stderr).toBe(0)
        // --verbose: each retry as it happens, on stderr.
        expect(result.stderr).toMatch(/^retry 1: GET \/instances\/.*\/attachments\/dicom\/data: /m)
      } finally {
        await proxy.close()
      }

      expect((await stat(log)).mode & 0o777).toBe(0o600)
      const text = await readFile(log, 'utf8')
      const lines = text.trim().split('\n').map((line) => JSON.parse(line) as Json)
      expect(lines.map((line) => line.event)).toEqual(['start', 'plan', 'retry', 'end'])
      expect(lines[0]).toMatchObject({command: 'export', flags: expect.arrayContaining(['source', 'patient-id', 'log-file'])})
      expect(lines[1]).toMatchObject({instances: expect.any(Number), volumes: 1})
      expect(lines.at(-1)).toMatchObject({exitCode: 0, transferred: expect.any(Number), failed: 0, retries: 1})
      expect(text).not.toContain(PASSWORD)
      expect(text).not.toContain(patientId)
    })

    // A log that could not be written was dropped without a word (exit 0, an empty log), and a
    // device given as the log had its mode changed: run as root, /dev/full became 0600 for everyone.
    it('--log-file that cannot be written: said once on stderr, the job goes on; a device given as the log keeps its mode', async () => {
      const device = '/dev/full'
      const before = (await stat(device)).mode
      try {
        const result = await runAsAlice(['export', '--source', source.url, '--output', join(work, 'log-full'), '--log-file', device, '--dry-run', '--json'])
        expect(result.code, result.stderr).toBe(0)
        expect(result.stderr.match(/^Warning: --log-file \/dev\/full cannot be written \(ENOSPC\): the log is incomplete from here on/gm)).toHaveLength(1)
        expect((await stat(device)).mode).toBe(before)
      } finally {
        await chmod(device, before & 0o7777).catch(() => {})
      }
    })

    it('--stats: a status line every interval, JSON lines under --json, for cron and systemd', async () => {
      const proxy = await startFaultProxy(source.port)
      proxy.delayMs = 150
      try {
        const result = await runAsAlice(['export', '--source', proxy.url, '--output', join(work, 'stats'), '--stats', '1s', '--json', '--concurrency', '1'])
        expect(result.code, result.stderr).toBe(0)
        const stats = result.stderr.trim().split('\n').filter(Boolean).map((line) => JSON.parse(line) as Json)
        expect(stats.length).toBeGreaterThan(0)
        for (const line of stats) expect(line).toMatchObject({time: expect.any(String), phase: expect.stringMatching(/planning|export/), done: expect.any(Number)})
        expect(stats.some((line) => line.phase === 'export' && line.total === INSTANCES)).toBe(true)
        expectCounters(onlyJson(result))
      } finally {
        await proxy.close()
      }
    })
  })
})
