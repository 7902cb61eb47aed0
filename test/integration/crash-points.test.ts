import {execFile, spawn} from 'node:child_process'
import {mkdtemp, readdir, readFile, rm, stat} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'
import {promisify} from 'node:util'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {type FixtureRecord, generateStudySet} from '../../fixtures/generate.js'
import {CRASH_POINTS, type CrashPoint} from '../../src/util/crash-points.js'
import {parseJson, repoRoot, runCli} from '../helpers/cli.js'
import {startFaultProxy} from '../helpers/fault-proxy.js'
import {volumeFiles} from '../helpers/corpus.js'
import {instanceMd5s, type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'

const run = promisify(execFile)

/**
 * The crash-point matrix: each run dies as a power cut would (SIGKILL) at a named point of
 * export, import, sync and --follow; the same command run again must finish with the exact
 * content, side data included, and a summary that claims nothing that did not happen.
 */

const CONFIG = {userMetadata: {Reviewed: 1030}, userContentType: {Report: 1040}}
const KILLED = 128

describe('crash points', () => {
  let work: string
  let records: FixtureRecord[]
  let source: OrthancServer
  let annotated: string[]
  const reached = new Set<CrashPoint>()

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'crash-points-'))
    records = await generateStudySet(join(work, 'fixtures'), {patients: 2, studiesPerPatient: 1, seriesPerStudy: 2, instancesPerSeries: 3, pixelBytes: 5000, seed: 'crash'})
    source = await startOrthanc({name: 'crash-source', ...CONFIG})
    await uploadFiles(source, records.map((record) => record.path))
    annotated = records.slice(0, 3).map((record) => record.orthancId)
    for (const id of annotated) {
      await source.api(`/instances/${id}/metadata/Reviewed`, {method: 'PUT', body: `reviewed ${id}`})
      await source.api(`/instances/${id}/attachments/Report`, {method: 'PUT', body: `report ${id}\n`})
    }
  })
  afterAll(async () => {
    await source?.dispose()
    await rm(work, {recursive: true, force: true})
  })

  const crashAt = (point: string) => ({env: {ORTHANC_REPLICATE_CRASH_AT: point}})

  /** The target holds exactly the source's instances, with their side data. */
  const expectExact = async (target: OrthancServer) => {
    expect(await instanceMd5s(target)).toEqual(await instanceMd5s(source))
    for (const id of annotated) {
      expect(await (await target.api(`/instances/${id}/metadata/Reviewed`)).text()).toBe(`reviewed ${id}`)
      expect(await (await target.api(`/instances/${id}/attachments/Report/data`)).text()).toBe(`report ${id}\n`)
    }
  }

  const archivedIds = async (output: string) => (await Promise.all((await volumeFiles(output)).map(async (volume) => (await run('tar', ['-tf', volume])).stdout)))
    .join('').split('\n').filter((line) => line.endsWith('.dcm')).map((line) => line.split('/').at(-1)!.replace('.dcm', '')).sort()

  const exportPoints = ['export:plan-saved', 'export:entry-written#4', 'export:volume-closed', 'export:volume-synced', 'export:volume-renamed', 'export:volume-renamed#2', 'file:temporary-written', 'file:renamed#2']
  // With --state elsewhere too: whatever a kill leaves in that folder, the folder check must take as
  // an export's state (planning empties a --state folder, so it refuses one holding anything else).
  const exportRuns = exportPoints.flatMap((point) => [{point, state: 'state in the output'}, {point, state: '--state elsewhere'}])
  it.each(exportRuns)('export killed at $point $state: the same command finishes it, every instance once, verify passes', async ({point, state}) => {
    const elsewhere = state === '--state elsewhere'
    const name = `export-${point.replace(/[:#]/g, '-')}${elsewhere ? '-state' : ''}`
    const output = join(work, name)
    const stateDir = join(work, `${name}.state`)
    const args = ['export', '--source', source.url, '--output', output, '--max-volume-size', '70000', '--json', ...(elsewhere ? ['--state', stateDir] : [])]
    const killed = await runCli(args, crashAt(point))
    expect(killed.code, killed.stderr).toBe(KILLED)
    reached.add(point.split('#')[0] as CrashPoint)
    const resumed = await runCli(args)
    expect(resumed.code, resumed.stderr).toBe(0)
    const summary = parseJson<{transferred: number; skipped: number; failed: number}>(resumed)
    expect(summary.failed).toBe(0)
    // Nothing is claimed twice: what this run wrote and what an earlier run finished add up to the export.
    expect(summary.transferred + summary.skipped).toBe(records.length)
    expect(await archivedIds(output)).toEqual(records.map((record) => record.orthancId).sort())
    expect((await runCli(['verify', output])).code).toBe(0)
    // Elsewhere means elsewhere: the output holds the volumes and nothing of the state.
    if (elsewhere) expect((await readdir(output)).filter((file) => !file.endsWith('.tar'))).toEqual([])
  })

  describe('import and sync', () => {
    let volumes: string
    beforeAll(async () => {
      volumes = join(work, 'import-volumes')
      expect((await runCli(['export', '--source', source.url, '--output', volumes, '--max-volume-size', '70000'])).code).toBe(0)
    })

    // One instance per upload, and instances sharing ZIP uploads: a kill after the third instance
    // is answered lands inside a ZIP (the first small instance goes alone, the next ones together),
    // which leaves the rest of it stored on the target, unconfirmed, without side data. Through a
    // proxy that counts the uploads, so that the ZIP runs show the kill landed that way.
    const uploadModes = [{uploads: 'one per request', flags: ['--no-zip-uploads']}, {uploads: 'in ZIPs', flags: ['--zip-uploads']}]
    const zipPoints = ['store:uploaded#3', 'store:side-data-restored#3']
    const runsOf = (points: string[]) => points.flatMap((point) => uploadModes.map((mode) => ({point, ...mode})))
      .filter(({point, uploads}) => uploads === 'one per request' || zipPoints.includes(point))
    const killThroughCounter = async (target: OrthancServer, args: (url: string) => string[], point: string, zipped: boolean) => {
      const proxy = await startFaultProxy(target.port)
      try {
        const killed = await runCli(args(proxy.url), crashAt(point))
        expect(killed.code, killed.stderr).toBe(KILLED)
        reached.add(point.split('#')[0] as CrashPoint)
        // Several instances came in fewer requests: the kill found a ZIP's instances stored and not all confirmed.
        if (zipped) expect(proxy.log.filter((line) => line === 'POST /instances').length).toBeLessThan((await target.json<string[]>('/instances')).length)
      } finally {
        await proxy.close()
      }
    }

    const importPoints = ['store:uploaded', 'store:side-data-restored', 'store:uploaded#3', 'store:side-data-restored#3', 'import:receipt-written']
    it.each(runsOf(importPoints))('import killed at $point, uploads $uploads: the same command finishes it, exact, side data included', async ({point, uploads, flags}) => {
      const target = await startOrthanc({name: 'crash-import', ...CONFIG})
      try {
        const receipt = (n: number) => join(work, `receipt-${point.replace(/[:#]/g, '-')}-${uploads.replace(/ /g, '-')}-${n}.jsonl`)
        await killThroughCounter(target, (url) => ['import', '--target', url, '--receipt', receipt(1), ...flags, volumes], point, uploads === 'in ZIPs')
        const resumed = await runCli(['import', '--target', target.url, '--json', '--receipt', receipt(2), ...flags, volumes])
        expect(resumed.code, resumed.stderr).toBe(0)
        await expectExact(target)
      } finally {
        await target.dispose()
      }
    })

    it.each(runsOf(['store:uploaded', 'store:side-data-restored', 'store:uploaded#3', 'store:side-data-restored#3']))('sync killed at $point, uploads $uploads: the same command finishes it, exact, side data included', async ({point, uploads, flags}) => {
      const target = await startOrthanc({name: 'crash-sync', ...CONFIG})
      try {
        await killThroughCounter(target, (url) => ['sync', '--source', source.url, '--target', url, ...flags], point, uploads === 'in ZIPs')
        const resumed = await runCli(['sync', '--source', source.url, '--target', target.url, '--json', ...flags])
        expect(resumed.code, resumed.stderr).toBe(0)
        const summary = parseJson<{transferred: number; skipped: number}>(resumed)
        expect(summary.transferred + summary.skipped).toBe(records.length)
        await expectExact(target)
      } finally {
        await target.dispose()
      }
    })

    // A replacement deletes the target's copy before it stores the source's: what the target kept
    // of its own beside it (the instance's, and its series' when it was the last instance there)
    // must survive a kill in between. The journal in the user's state folder carries it over.
    it('sync --checksum killed between the deletion of a differing copy and its write-back: the next run writes the target\'s own back', async () => {
      const target = await startOrthanc({name: 'crash-replace', ...CONFIG})
      const stateHome = join(work, 'replace-state-home')
      const env = {XDG_STATE_HOME: stateHome}
      try {
        expect((await runCli(['sync', '--source', source.url, '--target', target.url])).code).toBe(0)
        const victim = records.find((record) => !annotated.includes(record.orthancId))!
        const altered = Buffer.from(await readFile(victim.path))
        altered[altered.length - 1] = altered[altered.length - 1]! ^ 0x55
        await target.api(`/instances/${victim.orthancId}`, {method: 'DELETE'})
        await target.api('/instances', {method: 'POST', body: new Uint8Array(altered)})
        const series = (await target.json<{ParentSeries: string}>(`/instances/${victim.orthancId}`)).ParentSeries
        await target.api(`/instances/${victim.orthancId}/metadata/1031`, {method: 'PUT', body: 'the target\'s own note'})
        await target.api(`/instances/${victim.orthancId}/attachments/1041`, {method: 'PUT', body: 'the target\'s own attachment'})
        await target.api(`/series/${series}/metadata/1032`, {method: 'PUT', body: 'the target\'s own series note'})

        const killed = await runCli(['sync', '--source', source.url, '--target', target.url, '--checksum'], {env: {...env, ORTHANC_REPLICATE_CRASH_AT: 'replace:deleted'}})
        expect(killed.code, killed.stderr).toBe(KILLED)
        reached.add('replace:deleted')
        expect((await target.api(`/instances/${victim.orthancId}`)).status).toBe(404)
        // Kept on the disk, privately, until a run writes it back.
        const journal = join(stateHome, 'orthanc-replicate', 'replacements')
        const [perTarget] = await readdir(journal)
        const [runFolder] = (await readdir(join(journal, perTarget!))).filter((name) => name.startsWith('run-'))
        const entries = (await readdir(join(journal, perTarget!, runFolder!))).filter((name) => name.endsWith('.json'))
        expect(entries).toEqual([expect.stringMatching(new RegExp(`^${victim.orthancId}\\.[0-9a-f]{12}\\.json$`))])
        expect((await stat(join(journal, perTarget!, runFolder!, entries[0]!))).mode & 0o777).toBe(0o600)
        expect((await stat(join(journal, perTarget!, runFolder!))).mode & 0o777).toBe(0o700)

        // The series stayed (other instances hold it): what the user does to it meanwhile is not undone.
        await target.api(`/series/${series}/metadata/1032`, {method: 'DELETE'})
        const resumed = await runCli(['sync', '--source', source.url, '--target', target.url, '--checksum', '--json'], {env})
        expect(resumed.code, resumed.stdout + resumed.stderr).toBe(0)
        expect(parseJson<{leftoversWrittenBack?: number}>(resumed).leftoversWrittenBack).toBe(1)
        await expectExact(target)
        expect(await (await target.api(`/instances/${victim.orthancId}/metadata/1031`)).text()).toBe('the target\'s own note')
        expect(await (await target.api(`/instances/${victim.orthancId}/attachments/1041/data`)).text()).toBe('the target\'s own attachment')
        expect((await target.api(`/series/${series}/metadata/1032`)).status).toBe(404)
        // Written back, the run's folder is gone; the note of which server the folder is for stays.
        expect(await readdir(join(journal, perTarget!))).toEqual(['target.txt'])
      } finally {
        await target.dispose()
      }
    })

    it.each(['follow:pass-done', 'follow:state-saved', 'file:temporary-written', 'store:uploaded#2'])('--follow killed at %s: started again, it mirrors exactly', async (point) => {
      const target = await startOrthanc({name: 'crash-follow', ...CONFIG})
      const state = join(work, `follow-${point.replace(/[:#]/g, '-')}.json`)
      const follow = (env: Record<string, string> = {}) => spawn(process.execPath, [join(repoRoot, 'bin/run.js'), 'sync', '--source', source.url, '--target', target.url, '--follow', '--interval', '1', '--state', state, '--json'], {stdio: ['ignore', 'pipe', 'pipe'], env: {...process.env, ...env}})
      try {
        const crashing = follow({ORTHANC_REPLICATE_CRASH_AT: point})
        const code = await new Promise<number | null>((resolve) => crashing.once('close', (exit, signal) => resolve(exit ?? (signal === 'SIGKILL' ? KILLED : null))))
        expect(code).toBe(KILLED)
        reached.add(point.split('#')[0] as CrashPoint)
        const mirror = follow()
        let stdout = ''
        mirror.stdout.on('data', (chunk: Buffer) => (stdout += chunk))
        const deadline = Date.now() + 30_000
        while ((await target.json<string[]>('/instances')).length < records.length && Date.now() < deadline) await sleep(200)
        // One more pass, so that side data written after the last upload is in place.
        await sleep(1500)
        mirror.kill('SIGTERM')
        expect(await new Promise<number | null>((resolve) => mirror.once('close', resolve))).toBe(130)
        expect(JSON.parse(stdout)).toMatchObject({failed: 0, interrupted: true})
        await expectExact(target)
      } finally {
        await target.dispose()
      }
    })
  })

  it('every named crash point was reached by a test above', () => {
    expect(CRASH_POINTS.filter((point) => !reached.has(point))).toEqual([])
  })
})
