import {type ChildProcess, execFile, spawn} from 'node:child_process'
import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'
import {promisify} from 'node:util'

import {type FixtureRecord, generateStudySet} from '../../fixtures/generate.js'
import {repoRoot} from '../helpers/cli.js'
import {volumeFiles} from '../helpers/corpus.js'
import {instanceMd5s, type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'

const run = promisify(execFile)

/**
 * The random kill loop: export, import, sync and sync --follow, each stopped at random moments
 * (one to three times in a row; kill -9, SIGTERM or Ctrl-C), then run to the end by the same command. After every scenario
 * the content must be exact (the archive or the target holds every instance once, with its MD5
 * and its user metadata) and the finishing run's summary truthful (exit 0, nothing failed,
 * transferred + skipped = everything, transferred = what the archive or the target gained in
 * that run). The crash-point matrix hits every named window deterministically; this loop hits
 * the moments between them.
 */

export type Scenario = 'export' | 'import' | 'sync' | 'follow'
export const SCENARIOS: Scenario[] = ['export', 'import', 'sync', 'follow']

export interface ChaosOptions {
  kills: number
  seed: number
  instances: number
  scenarios?: Scenario[]
  /** Kills in a row before a scenario is finished; drawn from 1 to 3 when not given. */
  killsInARow?: number
  /** Import, sync and --follow with --zip-uploads: kills land while instances share uploads. */
  zipUploads?: boolean
  log?: (line: string) => void
}

export interface ChaosReport {
  /** Kills that landed on a running command (a kill drawn after the command had finished is not counted). */
  kills: number
  scenarios: Record<Scenario, number>
  broken: string[]
}

interface Summary {
  transferred: number
  skipped: number
  failed: number
  interrupted?: boolean
}

const NOTE = 'Note'

export async function runChaos(options: ChaosOptions): Promise<ChaosReport> {
  const log = options.log ?? (() => {})
  const random = mulberry32(options.seed)
  const scenarios = options.scenarios ?? SCENARIOS
  const work = await mkdtemp(join(tmpdir(), 'orthanc-replicate-chaos-'))
  const config = {userMetadata: {[NOTE]: 1100}}
  const [source, target] = await Promise.all([startOrthanc({...config, name: 'chaos-source'}), startOrthanc({...config, name: 'chaos-target'})])
  const report: ChaosReport = {kills: 0, scenarios: {export: 0, import: 0, sync: 0, follow: 0}, broken: []}
  try {
    const perSeries = 4
    const records = await generateStudySet(join(work, 'fixtures'), {
      patients: 2, studiesPerPatient: 2, seriesPerStudy: 2, instancesPerSeries: perSeries, pixelBytes: 20_000, seed: 'chaos', maxInstances: options.instances,
    })
    await uploadFiles(source, records.map((record) => record.path))
    // Side data on every fourth instance: a killed run must not leave it behind either.
    const annotated = records.filter((_, index) => index % 4 === 0)
    for (const record of annotated) await putNote(source, record.orthancId)
    const uploads = options.zipUploads ? ['--zip-uploads'] : []
    const world: World = {work, source, target, records, annotated, log, random, uploads, durations: {}}
    world.archive = join(work, 'archive')
    const made = await cli(['export', '--source', source.url, '--output', world.archive, '--max-volume-size', String(volumeSize(records)), '--json'])
    if (made.code !== 0) throw new Error(`the archive to import could not be made: exit ${made.code}\n${made.stderr}`)

    // Each command once undisturbed: how long it takes is the span kills are drawn over.
    for (const scenario of scenarios) {
      const broken = await SCENARIO_RUNS[scenario](world, 0)
      report.broken.push(...broken.map((line) => `${scenario} (undisturbed): ${line}`))
      log(`${scenario}: ${world.durations[scenario]} ms undisturbed`)
    }

    let round = 0
    while (report.kills < options.kills) {
      const scenario = scenarios[round++ % scenarios.length]!
      const kills = Math.min(options.kills - report.kills, options.killsInARow ?? 1 + Math.floor(random() * 3))
      const landed = {count: 0}
      const broken = await SCENARIO_RUNS[scenario](world, kills, landed)
      report.kills += landed.count
      report.scenarios[scenario]++
      log(`${scenario} #${report.scenarios[scenario]}: ${landed.count} of ${kills} kills landed, ${broken.length === 0 ? 'exact' : 'BROKEN'}`)
      report.broken.push(...broken.map((line) => `${scenario} #${report.scenarios[scenario]}: ${line}`))
      // Kills that keep missing (a command faster than the draws) must not loop forever.
      if (round > options.kills * 4 + scenarios.length) break
    }
  } finally {
    await Promise.all([source.dispose(), target.dispose()])
    await rm(work, {recursive: true, force: true})
  }

  return report
}

interface World {
  work: string
  source: OrthancServer
  target: OrthancServer
  records: FixtureRecord[]
  annotated: FixtureRecord[]
  log: (line: string) => void
  random: () => number
  archive?: string
  /** Flags for the commands that upload (import, sync, --follow). */
  uploads: string[]
  durations: Partial<Record<Scenario, number>>
}

type ScenarioRun = (world: World, kills: number, landed?: {count: number}) => Promise<string[]>

const SCENARIO_RUNS: Record<Scenario, ScenarioRun> = {
  async export(world, kills, landed) {
    const output = join(world.work, `export-${Date.now()}`)
    const args = ['export', '--source', world.source.url, '--output', output, '--max-volume-size', String(volumeSize(world.records)), '--json']
    const stops = await killRepeatedly(world, 'export', args, kills, landed)
    const before = (await archivedIds(output)).length
    const result = await timed(world, 'export', () => cli(args))
    const broken = [...stops, ...finishingRunBroken(result, world.records.length)]
    const ids = await archivedIds(output)
    if (ids.length !== new Set(ids).size) broken.push(`the archive holds ${ids.length - new Set(ids).size} instances twice`)
    const expected = world.records.map((record) => record.orthancId).sort()
    if (JSON.stringify([...new Set(ids)].sort()) !== JSON.stringify(expected)) broken.push(`the archive holds ${new Set(ids).size} of ${expected.length} instances`)
    const summary = parsed(result)
    if (summary && summary.transferred !== ids.length - before) broken.push(`transferred ${summary.transferred}, the archive gained ${ids.length - before}`)
    const verified = await cli(['verify', '--json', output])
    if (verified.code !== 0) broken.push(`verify exit ${verified.code}: ${verified.stderr.trim().split('\n')[0]}`)
    await rm(output, {recursive: true, force: true})
    return broken
  },

  async import(world, kills, landed) {
    await emptyTarget(world.target)
    const args = ['import', '--target', world.target.url, '--json', '--no-receipt', ...world.uploads, world.archive!]
    const stops = await killRepeatedly(world, 'import', args, kills, landed)
    return [...stops, ...(await finishOnTarget(world, args))]
  },

  async sync(world, kills, landed) {
    await emptyTarget(world.target)
    const args = ['sync', '--source', world.source.url, '--target', world.target.url, '--json', ...world.uploads]
    const stops = await killRepeatedly(world, 'sync', args, kills, landed)
    return [...stops, ...(await finishOnTarget(world, args))]
  },

  async follow(world, kills, landed) {
    // Half the instances arrive on the source while the mirror runs: some through its full
    // pass, some through /changes, in whatever order the kills leave them.
    await emptyTarget(world.target)
    const late = world.records.filter((_, index) => index % 2 === 1)
    for (const record of late) await world.source.api(`/instances/${record.orthancId}`, {method: 'DELETE'}).then((response) => response.arrayBuffer())
    const state = join(world.work, `follow-${Date.now()}.json`)
    const args = ['sync', '--source', world.source.url, '--target', world.target.url, '--follow', '--interval', '1', '--state', state, '--json', ...world.uploads]
    const arrivals = (async () => {
      for (const record of late) {
        await uploadFiles(world.source, [record.path])
        if (world.annotated.includes(record)) await putNote(world.source, record.orthancId)
        await sleep(world.random() * 40)
      }
    })()
    const stops = await killRepeatedly(world, 'follow', args, kills, landed)
    await arrivals

    const before = (await instanceMd5s(world.target)).size
    const child = start(args)
    const deadline = Date.now() + 120_000
    await timed(world, 'follow', async () => {
      while (Date.now() < deadline && (await instanceMd5s(world.target)).size < world.records.length) await sleep(100)
    })
    // One more poll, so that the mirror has nothing left in flight when it is stopped.
    await sleep(1500)
    child.process.kill('SIGTERM')
    const result = await child.done
    const broken = [...stops]
    if (result.code !== 130) broken.push(`--follow stopped by SIGTERM exited ${result.code}, not 130: ${result.stderr.trim().split('\n')[0]}`)
    const summary = parsed(result)
    if (!summary) broken.push('--follow printed no JSON summary when stopped')
    else {
      if (summary.failed !== 0) broken.push(`--follow failed ${summary.failed}`)
      const gained = (await instanceMd5s(world.target)).size - before
      if (summary.transferred !== gained) broken.push(`--follow transferred ${summary.transferred}, the target gained ${gained}`)
    }

    broken.push(...(await targetBroken(world)))
    return broken
  },
}

async function finishOnTarget(world: World, args: string[]): Promise<string[]> {
  const before = (await instanceMd5s(world.target)).size
  const result = await timed(world, args[0] as Scenario, () => cli(args))
  const broken = finishingRunBroken(result, world.records.length)
  const summary = parsed(result)
  const gained = (await instanceMd5s(world.target)).size - before
  if (summary && summary.transferred !== gained) broken.push(`transferred ${summary.transferred}, the target gained ${gained}`)
  broken.push(...(await targetBroken(world)))
  return broken
}

/** Times the first, undisturbed run of each scenario's command: the span kills are drawn over. */
async function timed<T>(world: World, scenario: Scenario, action: () => Promise<T>): Promise<T> {
  const started = Date.now()
  const result = await action()
  world.durations[scenario] ??= Date.now() - started
  return result
}

/**
 * Half the stops are kill -9 (nothing of the run's own ending runs); the others are SIGTERM or
 * Ctrl-C (SIGINT), which the command handles: it stops part-way, saves what it holds to be true
 * and exits 130. What either leaves behind must let the next run finish exact.
 */
const STOPS = ['SIGKILL', 'SIGKILL', 'SIGTERM', 'SIGINT'] as const

/** Starts the command `kills` times, each stopped at a random moment of its undisturbed span; returns what a graceful stop broke. */
async function killRepeatedly(world: World, scenario: Scenario, args: string[], kills: number, landed?: {count: number}): Promise<string[]> {
  const span = Math.max(200, world.durations[scenario] ?? 2000)
  const broken: string[] = []
  for (let kill = 0; kill < kills; kill++) {
    const child = start(args)
    const delay = world.random() * span
    const signal = STOPS[Math.floor(world.random() * STOPS.length)]!
    await Promise.race([sleep(delay), child.done])
    if (child.process.exitCode === null && child.process.signalCode === null) {
      child.process.kill(signal)
      if (landed) landed.count++
      world.log(`  ${signal === 'SIGKILL' ? 'kill -9' : signal} at ${Math.round(delay)} ms`)
      const result = await child.done
      // A command stopped gracefully says so (130), unless the signal came as it was ending (0),
      // or before Node had run bin/run.js, which installs the handlers first (Node's default
      // action then ends it by the signal, as kill -9 would: no code).
      if (signal !== 'SIGKILL' && result.code !== 130 && result.code !== 0 && result.code !== null) broken.push(`stopped by ${signal}, it exited ${result.code}: ${result.stderr.trim().split('\n')[0]}`)
    }

    await child.done
  }

  // An upload the killed process had fully sent is still stored by the server after the kill:
  // the finishing run's count is compared with the target once that has settled.
  await settled(world.target)
  return broken
}

async function settled(target: OrthancServer): Promise<void> {
  let last = -1
  for (let stable = 0; stable < 3; ) {
    const count = (await target.json<string[]>('/instances')).length
    stable = count === last ? stable + 1 : 0
    last = count
    await sleep(150)
  }
}

function finishingRunBroken(result: CliRun, total: number): string[] {
  if (result.code !== 0) return [`the finishing run exited ${result.code}: ${result.stderr.trim().split('\n').slice(0, 3).join(' | ')}`]
  const summary = parsed(result)
  if (!summary) return ['the finishing run printed no JSON summary']
  const broken: string[] = []
  if (summary.failed !== 0) broken.push(`failed ${summary.failed}`)
  if (summary.transferred + summary.skipped !== total) broken.push(`transferred ${summary.transferred} + skipped ${summary.skipped} is not ${total}`)
  return broken
}

/** Every instance on the target with its MD5, nothing more, and every note in place. */
async function targetBroken(world: World): Promise<string[]> {
  const broken: string[] = []
  const onTarget = await instanceMd5s(world.target)
  const missing = world.records.filter((record) => onTarget.get(record.orthancId) !== record.md5)
  if (missing.length > 0) broken.push(`${missing.length} instances missing or altered on the target, e.g. ${missing[0]!.orthancId}`)
  if (onTarget.size !== world.records.length) broken.push(`the target holds ${onTarget.size} instances, not ${world.records.length}`)
  for (const record of world.annotated) {
    const response = await world.target.api(`/instances/${record.orthancId}/metadata/${NOTE}`)
    const note = response.ok ? await response.text() : (await response.arrayBuffer(), undefined)
    if (note !== noteOf(record.orthancId)) {
      broken.push(`the note of ${record.orthancId} is ${note === undefined ? 'missing' : 'altered'} on the target`)
      break
    }
  }

  return broken
}

async function putNote(server: OrthancServer, id: string): Promise<void> {
  const response = await server.api(`/instances/${id}/metadata/${NOTE}`, {method: 'PUT', body: noteOf(id)})
  await response.arrayBuffer()
  if (!response.ok) throw new Error(`PUT metadata on ${id}: HTTP ${response.status}`)
}

function noteOf(id: string): string {
  return `chaos note of ${id}`
}

async function emptyTarget(target: OrthancServer): Promise<void> {
  for (const patient of await target.json<string[]>('/patients')) await target.api(`/patients/${patient}`, {method: 'DELETE'}).then((response) => response.arrayBuffer())
}

/** A volume size that gives the corpus about five volumes, so that kills land between them and inside them. */
function volumeSize(records: FixtureRecord[]): number {
  return Math.max(50_000, Math.ceil(records.reduce((sum, record) => sum + record.size, 0) / 5))
}

/** The instance IDs in the finished volumes of an export folder, with repeats. */
async function archivedIds(output: string): Promise<string[]> {
  const volumes = await volumeFiles(output).catch(() => [])
  const listings = await Promise.all(volumes.map(async (volume) => (await run('tar', ['-tf', volume])).stdout))
  return listings.join('').split('\n').filter((line) => /\/data\/.*\.dcm$/.test(line)).map((line) => line.split('/').at(-1)!.replace('.dcm', ''))
}

interface CliRun {
  code: number | null
  stdout: string
  stderr: string
}

function start(args: string[]): {process: ChildProcess; done: Promise<CliRun>} {
  const child = spawn(process.execPath, [join(repoRoot, 'bin/run.js'), ...args], {stdio: ['ignore', 'pipe', 'pipe']})
  let stdout = ''
  let stderr = ''
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk))
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk))
  const done = new Promise<CliRun>((resolve) => child.once('close', (code) => resolve({code, stdout, stderr})))
  return {process: child, done}
}

async function cli(args: string[]): Promise<CliRun> {
  return start(args).done
}

function parsed(result: CliRun): Summary | undefined {
  try {
    return JSON.parse(result.stdout) as Summary
  } catch {
    return undefined
  }
}

/** A small seeded generator: the same seed draws the same kill moments. */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d_2b_79_f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296
  }
}
