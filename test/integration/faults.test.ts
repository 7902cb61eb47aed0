import {execFile, spawn} from 'node:child_process'
import {copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'
import {promisify} from 'node:util'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {generateStudySet} from '../../fixtures/generate.js'
import type {FixtureRecord} from '../../fixtures/generate.js'
import {type CliResult, parseJson, repoRoot, runCli} from '../helpers/cli.js'
import {listFiles, volumeFiles} from '../helpers/corpus.js'
import {instanceMd5s, type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'
import {startFaultProxy} from '../helpers/fault-proxy.js'
import {damageStoredFile, flipByteInEntry} from '../helpers/tamper.js'
import {readVolumeManifest} from '../../src/export/since.js'

const run = promisify(execFile)

interface Summary {
  transferred: number
  skipped: number
  failed: number
  interrupted: boolean
  failures: Array<{id: string; kind: string; reason: string}>
  receipt?: string
  error?: {code: string; exitCode: number; message: string}
}

/**
 * Interrupted, failing and changing runs (issue: runs that never lie). Each test names the
 * defect it guards; all share one source server and a small corpus.
 */
describe('faults: interrupted, failing and changing runs never lie', () => {
  let source: OrthancServer
  let work: string
  let records: FixtureRecord[]

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'faults-'))
    records = await generateStudySet(join(work, 'fixtures'), {patients: 2, studiesPerPatient: 1, seriesPerStudy: 2, instancesPerSeries: 3, pixelBytes: 6000, seed: 'faults-run'})
    source = await startOrthanc({name: 'faults-source'})
    await uploadFiles(source, records.map((record) => record.path))
  })
  afterAll(async () => {
    await source?.dispose()
    await rm(work, {recursive: true, force: true})
  })

  const exportTo = (output: string, ...args: string[]) => runCli(['export', '--source', source.url, '--output', output, '--json', ...args])
  const archivedIds = async (output: string) => (await Promise.all((await volumeFiles(output)).map(async (volume) => (await run('tar', ['-tf', volume])).stdout)))
    .join('').split('\n').filter((line) => line.endsWith('.dcm')).map((line) => line.split('/').at(-1)!.replace('.dcm', '')).sort()

  it('a resumed export retries what failed, and only claims what the archive holds', async () => {
    const output = join(work, 'retry')
    const victims = records.slice(0, 2).map((record) => record.orthancId)
    const undo = await Promise.all(victims.map((id) => damageStoredFile(source, id)))
    const first = await exportTo(output, '--max-volume-size', '70000')
    expect(first.code, first.stderr).toBe(10)
    expect(parseJson<Summary>(first)).toMatchObject({failed: 2})
    // What the next run does is said as it is: a volume with a failed instance is written again whole.
    const told = await runCli(['export', '--source', source.url, '--output', join(work, 'retry-told'), '--max-volume-size', '70000'])
    expect(told.code).toBe(10)
    expect(told.stdout).toContain('Run the same command again to retry what failed; a volume that holds a failed instance is written again whole, the other volumes are kept.')
    expect(told.stdout).not.toContain('what succeeded is not redone')
    // The archive as it stands lacks them: verify and import say so by name, never pass it.
    const verified = await runCli(['verify', '--json', output])
    expect(verified.code).toBe(11)
    const missingIn = (result: CliResult) => parseJson<{problems: Array<{id: string; kind: string}>}>(result).problems.filter((problem) => problem.kind === 'missing').map((problem) => problem.id).sort()
    expect(missingIn(verified)).toEqual([...victims].sort())
    const target = await startOrthanc({name: 'faults-failed-in-archive'})
    try {
      const imported = await runCli(['import', '--target', target.url, '--json', '--no-receipt', output])
      expect(imported.code).toBe(11)
      expect(missingIn(imported)).toEqual([...victims].sort())
    } finally {
      await target.dispose()
    }
    for (const restore of undo) await restore()

    const second = await exportTo(output, '--max-volume-size', '70000')
    expect(second.code, second.stderr).toBe(0)
    const summary = parseJson<Summary>(second)
    expect(summary.failed).toBe(0)
    expect(summary.transferred + summary.skipped).toBe(records.length)
    expect(summary.transferred).toBeGreaterThanOrEqual(2)
    expect(await archivedIds(output)).toEqual(records.map((record) => record.orthancId).sort())
    expect((await runCli(['verify', output])).code).toBe(0)
  })

  it('two exports each short of the same instance, verified together: never complete (each export is held to its own plan)', async () => {
    const victim = records[0]!.orthancId
    const proxy = await startFaultProxy(source.port)
    const outputs = [join(work, 'short-1'), join(work, 'short-2')]
    try {
      for (const output of outputs) {
        proxy.faults.push(...Array.from({length: 20}, () => ({match: new RegExp(`^GET /instances/${victim}/`), fault: 'status-503' as const})))
        const exported = await runCli(['export', '--source', proxy.url, '--output', output, '--json', '--retries', '0'])
        expect(exported.code, exported.stderr).toBe(10)
        proxy.faults.length = 0
      }
    } finally {
      await proxy.close()
    }
    const verified = await runCli(['verify', '--json', ...outputs])
    expect(verified.code, verified.stdout).toBe(11)
    const summary = parseJson<{complete: boolean; studies: Array<{studyId: string; expected: number; valid: number}>}>(verified)
    expect(summary.complete).toBe(false)
    const short = records.filter((record) => record.studyInstanceUid === records[0]!.studyInstanceUid).length
    expect(summary.studies.find((study) => study.valid < study.expected)).toMatchObject({expected: short, valid: short - 1})
    expect(summary).toMatchObject({exports: 2, instances: 2 * (records.length - 1)})
    expect((await runCli(['verify', ...outputs])).stdout).toContain(`Instances: ${2 * (records.length - 1)} valid (across 2 exports: an instance in more than one counts once in each).`)
  })

  it('verify given some volumes of an export: the studies line says it counts only what the proven volumes name', async () => {
    const output = join(work, 'some-volumes')
    expect((await exportTo(output, '--max-volume-instances', '3')).code).toBe(0)
    const [first] = await volumeFiles(output)
    const result = await runCli(['verify', first!])
    expect(result.code).toBe(11)
    expect(result.stdout).toMatch(/^Studies: \d+ of \d+ complete and valid \(of the studies the proven volumes name; an unproven or missing volume may hold others\)\.$/m)
  })

  it('an instance deleted after planning fails as vanished on every run until it is back, never skipped', async () => {
    const output = join(work, 'vanished')
    const planned = await runCli(['export', '--source', source.url, '--output', output, '--json'], {env: {ORTHANC_REPLICATE_CRASH_AT: 'export:plan-saved'}})
    expect(planned.code).not.toBe(0)
    const victim = records[3]!
    await source.api(`/instances/${victim.orthancId}`, {method: 'DELETE'})
    try {
      for (let attempt = 0; attempt < 2; attempt++) {
        const result = await exportTo(output)
        expect(result.code, result.stderr).toBe(10)
        expect(parseJson<Summary>(result).failures).toEqual([expect.objectContaining({id: victim.orthancId, reason: expect.stringMatching(/no longer on the source/)})])
      }
    } finally {
      await uploadFiles(source, [victim.path])
    }

    const healed = await exportTo(output)
    expect(healed.code, healed.stderr).toBe(0)
    expect(await archivedIds(output)).toEqual(records.map((record) => record.orthancId).sort())
  })

  it('a finished volume cut short on the drive since: the export run again writes it again, and verify passes', async () => {
    const output = join(work, 'cut-after')
    expect((await exportTo(output, '--max-volume-size', '70000')).code).toBe(0)
    const volumes = await volumeFiles(output)
    expect(volumes.length).toBeGreaterThan(2)
    const victim = volumes[1]!
    const whole = (await stat(victim)).size
    await writeFile(victim, (await readFile(victim)).subarray(0, Math.floor(whole / 2)))
    expect((await runCli(['verify', output])).code).toBe(11)

    const again = await exportTo(output, '--max-volume-size', '70000')
    expect(again.code, again.stderr).toBe(0)
    expect(parseJson<Summary & {volumesWritten: number}>(again).volumesWritten).toBe(1)
    expect((await stat(victim)).size).toBe(whole)
    expect((await runCli(['verify', output])).code).toBe(0)
  })

  it('two exports at once into one folder: the second is refused at once (exit 2), and the first finishes whole', async () => {
    const output = join(work, 'two-at-once')
    // Slowed down, so that it is still running when the second starts.
    const first = exportTo(output, '--bwlimit', '20K')
    for (let waited = 0; !(await readdir(output).catch(() => [] as string[])).includes('.orthanc-replicate.lock') && waited < 200; waited++) await sleep(25)
    const second = await exportTo(output)
    expect(second.code).toBe(2)
    expect(parseJson<Summary>(second).error?.message).toMatch(/export folder .* is in use by another run \(process \d+/)
    const finished = await first
    expect(finished.code, finished.stderr).toBe(0)
    expect(parseJson<Summary>(finished)).toMatchObject({transferred: records.length, failed: 0})
    expect((await runCli(['verify', output])).code).toBe(0)
    // The lock goes with the run: the same export run again resumes (nothing left to write).
    expect(await readdir(output)).not.toContain('.orthanc-replicate.lock')
    expect((await exportTo(output)).code).toBe(0)
    // The default state folder named as --state, as the hints name it: the same export, not another run.
    const named = await exportTo(output, '--state', join(output, '.orthanc-replicate'))
    expect(named.code, named.stderr).toBe(0)
  })

  it('an export state whose volume list is shorter than its plan is refused as damaged (exit 11), never written as a volume that looks whole', async () => {
    const output = join(work, 'damaged-state')
    expect((await runCli(['export', '--source', source.url, '--output', output, '--json'], {env: {ORTHANC_REPLICATE_CRASH_AT: 'export:plan-saved'}})).code).not.toBe(0)
    const list = join(output, '.orthanc-replicate', 'volume-0001.jsonl')
    const lines = (await readFile(list, 'utf8')).split('\n').filter((line) => line !== '')
    await writeFile(list, `${lines[0]}\n`)
    const result = await exportTo(output)
    expect(result.code).toBe(11)
    expect(parseJson<Summary>(result).error?.message).toMatch(new RegExp(`volume 1's list .* holds 1 instance\\(s\\), its plan ${lines.length}`))
    expect((await volumeFiles(output)).length).toBe(0)
  })

  it('--patient-index: an export stopped once its plan is saved writes its index when resumed', async () => {
    const output = join(work, 'index-resumed')
    const planned = await runCli(['export', '--source', source.url, '--output', output, '--patient-index'], {env: {ORTHANC_REPLICATE_CRASH_AT: 'export:plan-saved'}})
    expect(planned.code).not.toBe(0)
    const resumed = await exportTo(output, '--patient-index')
    expect(resumed.code, resumed.stderr).toBe(0)
    const rows = (await readFile(join(output, 'index.csv'), 'utf8')).trim().split('\r\n')
    // A header, then a row per study, each naming its patient and its volume.
    const studies = new Set(records.map((record) => record.studyInstanceUid))
    expect(rows).toHaveLength(studies.size + 1)
    for (const record of records) expect(rows.some((row) => row.includes(record.studyInstanceUid) && row.includes(record.patientId) && row.includes('.tar'))).toBe(true)

    // A run killed while it wrote the index leaves its temporary copy, names and all: the next run
    // removes it, though it has its index already and writes none.
    await writeFile(join(output, 'index.csv.tmp'), rows.join('\r\n'), {mode: 0o600})
    expect((await exportTo(output, '--patient-index')).code).toBe(0)
    expect(await readdir(output)).not.toContain('index.csv.tmp')
  })

  it('an instance that could not be planned: failed on every resume, named with the way out, and taken by an export --since', async () => {
    const proxy = await startFaultProxy(source.port)
    const victim = records[2]!.orthancId
    try {
      // Its file's description cannot be read while the export is planned; the rest can.
      for (let index = 0; index < 4; index++) proxy.faults.push({match: new RegExp(`^GET /instances/${victim}/attachments/dicom/info$`), fault: 'status-503'})
      const output = join(work, 'not-planned')
      const exportThrough = (...args: string[]) => runCli(['export', '--source', proxy.url, '--output', output, '--retries', '0', ...args])
      for (const run of ['first run', 'resumed']) {
        const result = await exportThrough('--json')
        expect(result.code, run).toBe(10)
        expect(parseJson<Summary & {notPlanned: number}>(result)).toMatchObject({notPlanned: 1, failed: 1, failures: [expect.objectContaining({id: victim})]})
      }
      const human = await exportThrough()
      expect(human.stderr).toMatch(/1 instance\(s\) could not be planned.*--since/s)
      // Not told both ways: "run the same command again to retry" was printed beside "running it again does not try them".
      expect(human.stdout).not.toMatch(/Run the same command again to retry/)
      expect(await archivedIds(output)).toEqual(records.map((record) => record.orthancId).filter((id) => id !== victim).sort())

      const rest = join(work, 'not-planned-rest')
      const since = await exportTo(rest, '--since', output)
      expect(since.code, since.stderr).toBe(0)
      expect(await archivedIds(rest)).toEqual([victim])
    } finally {
      await proxy.close()
    }
  })

  it('a run killed while a bag waits in its spool leaves the spool behind; the next run in that place removes it first', async () => {
    const exported = await runCli(['export', '--source', source.url, '--output', '-'])
    expect(exported.code, exported.stderr).toBe(0)
    const stream = exported.stdoutBytes
    const spools = await mkdtemp(join(work, 'spools-'))
    const child = spawn(process.execPath, [join(repoRoot, 'bin/run.js'), 'verify', '--spool-dir', spools, '-'], {stdio: ['pipe', 'ignore', 'ignore']})
    const closed = new Promise((resolve) => child.once('close', resolve))
    // Half the stream: its bag waits in the spool for a tag manifest that does not come.
    child.stdin!.write(stream.subarray(0, Math.floor(stream.length / 2)))
    // Until the spool holds its payload file: its folder and owner file come a moment before it.
    const payloadThere = async () => (await Promise.all((await readdir(spools)).map(async (name) => readdir(join(spools, name)).catch(() => [] as string[])))).some((names) => names.includes('payload'))
    for (let waited = 0; !(await payloadThere()) && waited < 200; waited++) await sleep(50)
    child.kill('SIGKILL')
    await closed
    const abandoned = await readdir(spools)
    expect(abandoned).toHaveLength(1)
    expect((await readdir(join(spools, abandoned[0]!))).sort()).toEqual(['owner.pid', 'payload'])

    const next = await runCli(['verify', '--spool-dir', spools, '-'], {stdin: stream})
    expect(next.code, next.stderr).toBe(0)
    expect(await readdir(spools)).toEqual([])
  })

  it('a proxy refusing a study\'s listings with 404: export, sync and diff fail and say so, never leave the study out', async () => {
    // A study that answers 404 because it was deleted is skipped; one that is still there must
    // not be: skipping it would drop its instances from the plan, and the run would exit 0.
    const target = await startOrthanc({name: 'faults-404-target'})
    const proxy = await startFaultProxy(source.port)
    try {
      const study = ((await (await source.api('/studies')).json()) as string[])[0]!
      const refuse = (route: 'series' | 'instances') => proxy.faults.push({match: new RegExp(`^GET /studies/${study}/${route}$`), fault: 'status-404'})
      const runs = {
        export: () => runCli(['export', '--source', proxy.url, '--output', join(work, 'refused-404'), '--json']),
        sync: () => runCli(['sync', '--source', proxy.url, '--target', target.url, '--json']),
        diff: () => runCli(['diff', '--source', proxy.url, '--target', target.url, '--json']),
      }
      for (const [command, start] of Object.entries(runs)) {
        for (const route of ['series', 'instances'] as const) {
          proxy.faults.length = 0
          refuse(route)
          const result = await start()
          expect(result.code, `${command}, ${route}: ${result.stdout}${result.stderr}`).not.toBe(0)
          // Not the exit code of servers that merely differ: the run itself failed.
          expect(result.code, `${command}, ${route}`).not.toBe(14)
          expect(`${result.stdout}${result.stderr}`, `${command}, ${route}`).toMatch(/404/)
        }
      }
      // Nothing was planned without the study: the sync moved nothing at all.
      expect(await (await target.api('/instances')).json()).toEqual([])
    } finally {
      await proxy.close()
      await target.dispose()
    }
  })

  it('a proxy before the target refusing one route with 404: verify --target and diff fail naming it, never report the instance missing (exit 14)', async () => {
    const target = await startOrthanc({name: 'faults-404-before-target'})
    const proxy = await startFaultProxy(target.port)
    const archive = join(work, 'before-target-404')
    try {
      expect((await exportTo(archive)).code).toBe(0)
      expect((await runCli(['import', '--target', target.url, '--no-receipt', archive])).code).toBe(0)
      const instance = records[0]!.orthancId
      const {ParentSeries: series} = await target.json<{ParentSeries: string}>(`/instances/${instance}`)
      const {ParentStudy: study} = await target.json<{ParentStudy: string}>(`/series/${series}`)
      const cases = [
        {route: new RegExp(`^GET /instances/${instance}/attachments/dicom/info$`), run: () => runCli(['verify', '--target', proxy.url, '--json', archive])},
        {route: new RegExp(`^GET /instances/${instance}/attachments/dicom/info$`), run: () => runCli(['diff', '--source', source.url, '--target', proxy.url, '--json'])},
        {route: new RegExp(`^GET /studies/${study}/instances$`), run: () => runCli(['diff', '--source', source.url, '--target', proxy.url, '--json'])},
        {route: new RegExp(`^GET /studies/${study}/statistics$`), run: () => runCli(['import', '--target', proxy.url, '--no-receipt', '--json', archive])},
      ]
      for (const {route, run} of cases) {
        proxy.faults.length = 0
        proxy.faults.push(...Array.from({length: 10}, () => ({match: route, fault: 'status-404' as const})))
        const result = await run()
        const said = `${result.stdout}${result.stderr}`
        expect(result.code, said).not.toBe(0)
        expect(result.code, said).not.toBe(14)
        expect(said).toMatch(/HTTP 404 \(yet \/(instances|studies)\/[0-9a-f-]+ is there: something before the server refuses this route/)
      }
    } finally {
      await proxy.close()
      await target.dispose()
    }
  })

  it('--since a drive whose state was moved off, with a volume cut short: what that volume was to hold goes again', async () => {
    const drive = join(work, 'since-cut')
    expect((await exportTo(drive, '--max-volume-instances', '1')).code).toBe(0)
    // As the README suggests once an export is complete: its state off the drive.
    await rm(join(drive, '.orthanc-replicate'), {recursive: true})
    const volumes = await volumeFiles(drive)
    const cut = volumes[2]!
    const [lost] = (await run('tar', ['-tf', cut])).stdout.split('\n').filter((line) => line.endsWith('.dcm')).map((line) => line.split('/').at(-1)!.replace('.dcm', ''))
    await writeFile(cut, (await readFile(cut)).subarray(0, Math.floor((await stat(cut)).size / 2)))

    const next = join(work, 'since-cut-next')
    const result = await exportTo(next, '--since', drive)
    expect(result.code, result.stderr).toBe(0)
    expect(await archivedIds(next)).toEqual([lost])
  })

  it('--since follows a chain: the newest export of a chain leaves out everything the chain holds', async () => {
    const first = join(work, 'chain-1')
    expect((await exportTo(first)).code).toBe(0)
    const batchTwo = await generateStudySet(join(work, 'chain-b2'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 3, pixelBytes: 2000, seed: 'chain-two'})
    const batchThree = await generateStudySet(join(work, 'chain-b3'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 2, pixelBytes: 2000, seed: 'chain-three'})
    try {
      await uploadFiles(source, batchTwo.map((record) => record.path))
      const second = join(work, 'chain-2')
      expect((await exportTo(second, '--since', first)).code).toBe(0)
      expect(await archivedIds(second)).toEqual(batchTwo.map((record) => record.orthancId).sort())

      await uploadFiles(source, batchThree.map((record) => record.path))
      const third = join(work, 'chain-3')
      const result = await exportTo(third, '--since', second)
      expect(result.code, result.stderr).toBe(0)
      expect(await archivedIds(third)).toEqual(batchThree.map((record) => record.orthancId).sort())

      // The chain imported in one go counts each instance once: what the target gained.
      const target = await startOrthanc({name: 'chain-target'})
      try {
        const imported = await runCli(['import', '--target', target.url, '--json', '--no-receipt', first, second, third])
        expect(imported.code, imported.stderr).toBe(0)
        const total = records.length + batchTwo.length + batchThree.length
        expect(parseJson<Summary>(imported)).toMatchObject({transferred: total, skipped: 0, failed: 0})
        expect((await instanceMd5s(target)).size).toBe(total)
      } finally {
        await target.dispose()
      }
    } finally {
      for (const record of [...batchTwo, ...batchThree]) await source.api(`/instances/${record.orthancId}`, {method: 'DELETE'})
    }
  })

  it('an incremental export imported without the export it adds to: the study it added to is incomplete (exit 10), named; with it, complete', async () => {
    const base = join(work, 'adds-to-base')
    expect((await exportTo(base)).code).toBe(0)
    // One more instance in a study the base export holds.
    const stem = records[0]!
    const added = await source.api(`/instances/${stem.orthancId}/modify`, {method: 'POST', body: JSON.stringify({Replace: {SOPInstanceUID: `${stem.sopInstanceUid}.9`}, Keep: ['SeriesInstanceUID', 'StudyInstanceUID'], Force: true})})
    expect(added.status).toBe(200)
    const {ID: addedId} = await source.json<{ID: string}>('/instances', {method: 'POST', body: Buffer.from(await added.arrayBuffer())})
    const inStudy = records.filter((record) => record.studyInstanceUid === stem.studyInstanceUid).length + 1
    const target = await startOrthanc({name: 'adds-to-target'})
    try {
      const next = join(work, 'adds-to-next')
      expect((await exportTo(next, '--since', base)).code).toBe(0)
      expect(await archivedIds(next)).toEqual([addedId])
      const alone = await runCli(['import', '--target', target.url, '--json', '--no-receipt', next])
      expect(alone.code, alone.stderr).toBe(10)
      const {studies} = parseJson<{studies: {incomplete: Array<{studyInstanceUid: string; expected: number; present: number; leftOut: number}>}}>(alone)
      // The study it added to, and the base's other studies, left out whole: the target has none of them.
      const baseStudies = [...new Set(records.map((record) => record.studyInstanceUid))]
      expect(studies.incomplete).toHaveLength(baseStudies.length)
      expect(studies.incomplete).toContainEqual(expect.objectContaining({studyInstanceUid: stem.studyInstanceUid, expected: inStudy, present: 1, leftOut: inStudy - 1}))
      expect((await runCli(['import', '--target', target.url, '--no-receipt', next])).stdout).toMatch(/left out of this archive as the far side's already: import first the export it adds to/)
      // verify --target agrees with import.
      const checked = await runCli(['verify', '--json', '--target', target.url, next])
      expect(checked.code).toBe(14)
      expect(parseJson<{target: {studiesShort: Array<{studyInstanceUid: string}>}}>(checked).target.studiesShort).toContainEqual(expect.objectContaining({studyInstanceUid: stem.studyInstanceUid}))

      const both = await runCli(['import', '--target', target.url, '--json', '--no-receipt', base, next])
      expect(both.code, both.stderr).toBe(0)
      expect((await runCli(['verify', '--target', target.url, next])).code).toBe(0)
    } finally {
      await target.dispose()
      await source.api(`/instances/${addedId}`, {method: 'DELETE'})
    }
  })

  // A re-run counted a finished volume damaged in place (same size) done, exit 0: the way to have
  // it written anew is to delete it, which verify says.
  it('a finished volume damaged in place: verify names it and says to delete it; the same export then writes it anew', async () => {
    const output = join(work, 'damaged-in-place')
    expect((await exportTo(output, '--max-volume-instances', '4')).code).toBe(0)
    const [, second] = await volumeFiles(output)
    await flipByteInEntry(second!, '.dcm')
    const checked = await runCli(['verify', output])
    expect(checked.code).toBe(11)
    expect(checked.stderr + checked.stdout).toContain('delete each volume named above as damaged or cut short, and run the same export command again')
    await rm(second!)
    const again = await exportTo(output, '--max-volume-instances', '4')
    expect(again.code, again.stdout).toBe(0)
    expect(parseJson<{volumesWritten: number}>(again).volumesWritten).toBe(1)
    const healed = await runCli(['verify', output])
    expect(healed.code, healed.stdout).toBe(0)
    expect(healed.stderr + healed.stdout).not.toContain('delete each volume')
  })

  // With filters the volumes recorded nothing of what --since left out of a study (instancesOnSource
  // counts what the filters left out too): imported alone, and under verify --target, a study of
  // which the target held 1 of 4 instances passed, exit 0.
  it('a filtered incremental export imported without the export it adds to: the study it added to is incomplete too (exit 10)', async () => {
    const stem = records[0]!
    const filter = ['--patient-id', stem.patientId]
    const base = join(work, 'filtered-adds-to-base')
    expect((await exportTo(base, ...filter)).code).toBe(0)
    const added = await source.api(`/instances/${stem.orthancId}/modify`, {method: 'POST', body: JSON.stringify({Replace: {SOPInstanceUID: `${stem.sopInstanceUid}.8`}, Keep: ['SeriesInstanceUID', 'StudyInstanceUID'], Force: true})})
    const {ID: addedId} = await source.json<{ID: string}>('/instances', {method: 'POST', body: Buffer.from(await added.arrayBuffer())})
    const inStudy = records.filter((record) => record.studyInstanceUid === stem.studyInstanceUid).length + 1
    const target = await startOrthanc({name: 'filtered-adds-to-target'})
    try {
      const next = join(work, 'filtered-adds-to-next')
      expect((await exportTo(next, '--since', base, ...filter)).code).toBe(0)
      expect(await archivedIds(next)).toEqual([addedId])
      // Only such a volume declares the format that records it: an older reader takes the others.
      const declared = async (folder: string) => Promise.all((await volumeFiles(folder)).map(async (file) => (await readVolumeManifest(file)).formatVersion))
      expect(await declared(next)).toEqual([5])
      expect(await declared(base)).toEqual([3])
      const alone = await runCli(['import', '--target', target.url, '--json', '--no-receipt', next])
      expect(alone.code, alone.stdout).toBe(10)
      const {studies} = parseJson<{studies: {incomplete: Array<{studyInstanceUid: string; expected: number; present: number; leftOut: number}>}}>(alone)
      expect(studies.incomplete).toContainEqual(expect.objectContaining({studyInstanceUid: stem.studyInstanceUid, expected: inStudy, present: 1, leftOut: inStudy - 1}))
      const checked = await runCli(['verify', '--json', '--target', target.url, next])
      expect(checked.code, checked.stdout).toBe(14)
      expect((await runCli(['import', '--target', target.url, '--no-receipt', base, next])).code).toBe(0)
      expect((await runCli(['verify', '--target', target.url, next])).code).toBe(0)
    } finally {
      await target.dispose()
      await source.api(`/instances/${addedId}`, {method: 'DELETE'})
    }
  })

  it('an incremental export of new studies only, imported without the export it adds to: the studies it left out whole are named (exit 10); with it, complete', async () => {
    const base = join(work, 'new-only-base')
    expect((await exportTo(base)).code).toBe(0)
    const added = await generateStudySet(join(work, 'new-only'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 2, pixelBytes: 2000, seed: 'new-only'})
    await uploadFiles(source, added.map((record) => record.path))
    const target = await startOrthanc({name: 'new-only-target'})
    try {
      const next = join(work, 'new-only-next')
      expect((await exportTo(next, '--since', base)).code).toBe(0)
      expect((await archivedIds(next)).sort()).toEqual(added.map((record) => record.orthancId).sort())
      // Before, this said every study complete and exited 0: the archive holds nothing of the base's studies.
      const alone = await runCli(['import', '--target', target.url, '--json', '--no-receipt', next])
      expect(alone.code, alone.stderr).toBe(10)
      const {studies} = parseJson<{studies: {complete: number; incomplete: Array<{studyInstanceUid: string; expected: number; present: number; leftOut: number}>}}>(alone)
      const perStudy = new Map<string, number>()
      for (const record of records) perStudy.set(record.studyInstanceUid, (perStudy.get(record.studyInstanceUid) ?? 0) + 1)
      expect(studies.complete).toBe(1)
      expect(studies.incomplete.map(({studyInstanceUid, expected, present, leftOut}) => ({studyInstanceUid, expected, present, leftOut})).sort((a, b) => a.studyInstanceUid.localeCompare(b.studyInstanceUid)))
        .toEqual([...perStudy].map(([studyInstanceUid, inStudy]) => ({studyInstanceUid, expected: inStudy, present: 0, leftOut: inStudy})).sort((a, b) => a.studyInstanceUid.localeCompare(b.studyInstanceUid)))
      expect((await runCli(['verify', '--target', target.url, next])).code).toBe(14)

      const both = await runCli(['import', '--target', target.url, '--json', '--no-receipt', base, next])
      expect(both.code, both.stderr).toBe(0)
      // Complete counts the studies the archives hold, not those only named as left out.
      expect(parseJson<{studies: {complete: number; incomplete: unknown[]}}>(both).studies).toEqual({complete: perStudy.size + 1, incomplete: []})
      expect((await runCli(['verify', '--target', target.url, next])).code).toBe(0)

      // One of those studies deleted on the far side since (a retention rule): no reason to fail the next import.
      const baseStudy = (await target.json<Array<{ID: string; MainDicomTags: {StudyInstanceUID: string}}>>('/studies?expand')).find((study) => perStudy.has(study.MainDicomTags.StudyInstanceUID))!
      await target.api(`/studies/${baseStudy.ID}`, {method: 'DELETE'})
      const again = await runCli(['import', '--target', target.url, '--json', '--no-receipt', next])
      expect(again.code, again.stderr).toBe(0)
      // But verify, run before the source's copy may be deleted, names it: it passed as a few short.
      const checked = await runCli(['verify', '--target', target.url, '--json', next])
      expect(checked.code, checked.stdout).toBe(14)
      expect(parseJson<{target: {studiesShort: Array<{studyInstanceUid: string}>}}>(checked).target.studiesShort).toEqual([expect.objectContaining({studyInstanceUid: baseStudy.MainDicomTags.StudyInstanceUID})])
      // Or one instance of one of them (an image removed there): no reason either.
      expect((await runCli(['import', '--target', target.url, '--json', '--no-receipt', base])).code).toBe(0)
      const other = (await target.json<Array<{ID: string; MainDicomTags: {StudyInstanceUID: string}}>>('/studies?expand')).find((study) => perStudy.has(study.MainDicomTags.StudyInstanceUID))!
      await target.api(`/instances/${(await target.json<Array<{ID: string}>>(`/studies/${other.ID}/instances`))[0]!.ID}`, {method: 'DELETE'})
      const partly = await runCli(['import', '--target', target.url, '--json', '--no-receipt', next])
      expect(partly.code, partly.stdout).toBe(0)
    } finally {
      await target.dispose()
      for (const record of added) await source.api(`/instances/${record.orthancId}`, {method: 'DELETE'})
    }
  })

  // Each instance is stored by exactly one of two runs at once; the other finds it there (AlreadyStored, or present before it asked).
  const addsUpTwiceAtOnce = async (name: string, runOnce: (targetUrl: string) => Promise<CliResult>) => {
    const target = await startOrthanc({name})
    // A slow link, so that both runs find the target empty and both send every instance.
    const proxy = await startFaultProxy(target.port)
    proxy.delayMs = 60
    try {
      const runs = await Promise.all([runOnce(proxy.url), runOnce(proxy.url)])
      for (const result of runs) expect(result.code, result.stderr).toBe(0)
      const [a, b] = runs.map((result) => parseJson<Summary>(result))
      expect(a!.transferred + b!.transferred).toBe(records.length)
      expect(a!.transferred + a!.skipped).toBe(records.length)
      expect(b!.transferred + b!.skipped).toBe(records.length)
      expect(await instanceMd5s(target)).toEqual(new Map(records.map((record) => [record.orthancId, record.md5])))
    } finally {
      await proxy.close()
      await target.dispose()
    }
  }

  it('two imports of one archive at once into one target add up to what the target gained', async () => {
    const output = join(work, 'twice-at-once')
    expect((await exportTo(output)).code).toBe(0)
    await addsUpTwiceAtOnce('twice-target', (targetUrl) => runCli(['import', '--target', targetUrl, '--json', '--no-receipt', '--concurrency', '1', output]))
  })

  it('two syncs at once into one target add up to what the target gained: what one found stored on upload is skipped, not lost', async () => {
    await addsUpTwiceAtOnce('sync-twice-target', (targetUrl) => runCli(['sync', '--source', source.url, '--target', targetUrl, '--json', '--concurrency', '1']))
  })

  it('a sync whose present instances cannot be compared counts them failed, not also skipped', async () => {
    const target = await startOrthanc({name: 'sync-present-target'})
    await uploadFiles(target, records.map((record) => record.path))
    const proxy = await startFaultProxy(source.port)
    try {
      // Every instance is on the target; reading their attachment lists on the source fails.
      for (let index = 0; index < 100; index++) proxy.faults.push({match: /^GET \/instances\/[^/]+\/attachments$/, fault: 'status-404'})
      const result = await runCli(['sync', '--source', proxy.url, '--target', target.url, '--json', '--retries', '0'])
      expect(result.code).not.toBe(0)
      const summary = parseJson<Summary>(result)
      expect(summary).toMatchObject({transferred: 0, skipped: 0, failed: records.length})
    } finally {
      await proxy.close()
      await target.dispose()
    }
  })

  describe('output paths and pipes', () => {
    it('export -o - | head -c 1000: a quiet stop with its own exit code, no stack trace', async () => {
      const child = spawn(process.execPath, [join(repoRoot, 'bin/run.js'), 'export', '--source', source.url, '--output', '-'], {stdio: ['ignore', 'pipe', 'pipe']})
      let received = 0
      let stderr = ''
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk))
      child.stdout.on('data', (chunk: Buffer) => {
        received += chunk.length
        if (received >= 1000) child.stdout.destroy()
      })
      const code = await new Promise<number>((resolve) => child.once('close', (exit) => resolve(exit ?? 1)))
      expect(code).toBe(15)
      expect(stderr).toMatch(/closed by its reader/)
      expect(stderr).not.toMatch(/\n\s+at |EPIPE/)
    })

    it('export -o - > /dev/full: exit 13 in one sentence', async () => {
      const result = await run('sh', ['-c', `"${process.execPath}" "${join(repoRoot, 'bin/run.js')}" export --source ${source.url} --output - > /dev/full`]).then(() => ({code: 0, stderr: ''}), (error: {code: number; stderr: string}) => error)
      expect(result.code).toBe(13)
      expect(result.stderr).toMatch(/no space left/)
      // One sentence and its suggestion; the plan said before it is not part of the error.
      expect(result.stderr.trim().split('\n').filter((line) => !line.startsWith('Plan: '))).toHaveLength(2)
    })

    it.each([
      ['an existing file', async () => {
        const file = join(work, 'a-file')
        await writeFile(file, 'x')
        return file
      }, /is a file, not a folder/],
      ['an existing volume', async () => {
        const file = join(work, 'orthanc-export-0001-of-0001.tar')
        await writeFile(file, 'x')
        return file
      }, /is a volume file, not a folder/],
      ['an empty name', async () => '', /--output was given an empty value/],
    ])('--output that is %s: exit 2 in one sentence', async (_what, make, message) => {
      const result = await runCli(['export', '--source', source.url, '--output', await make()])
      expect(result.code).toBe(2)
      expect(result.stderr).toMatch(message)
      expect(result.stderr).not.toMatch(/unexpected error|\n\s+at /)
    })

    it('--output on a read-only filesystem: exit 2, before anything is asked of the server', async () => {
      const mountPoint = await mkdtemp(join(tmpdir(), 'read-only-'))
      await run('mount', ['-t', 'tmpfs', '-o', 'ro,size=64k', 'tmpfs', mountPoint])
      try {
        const result = await runCli(['export', '--source', source.url, '--output', join(mountPoint, 'out')])
        expect(result.code).toBe(2)
        expect(result.stderr).toMatch(/read-only/)
      } finally {
        await run('umount', [mountPoint]).catch(() => {})
        await rm(mountPoint, {recursive: true, force: true})
      }
    })

    it('an export that matched nothing leaves no folder behind', async () => {
      const output = join(work, 'nothing-matched')
      const result = await exportTo(output, '--patient-id', 'NOBODY')
      expect(result.code).toBe(12)
      await expect(stat(output)).rejects.toThrow()
    })

    it('volumes, plans and indexes are private files', async () => {
      const output = join(work, 'private')
      expect((await exportTo(output, '--patient-index')).code).toBe(0)
      for (const file of await listFiles(output)) expect(((await stat(file)).mode & 0o077).toString(8), file).toBe('0')
      expect(((await stat(join(output, '.orthanc-replicate'))).mode & 0o077).toString(8)).toBe('0')
      expect(((await stat(output)).mode & 0o077).toString(8), 'the folder the export created').toBe('0')
    })

    it('--file-group: volumes, plans, index, receipts 0640 and folders 0750, under that group', async () => {
      const group = sharingGroup()
      // Folders the export makes on the way are the group's to walk through too.
      const parent = join(work, 'shared-site')
      const output = join(parent, 'drive', 'shared')
      expect((await exportTo(output, '--patient-index', '--file-group', String(group))).code).toBe(0)
      const target = await startOrthanc({name: 'shared-target'})
      try {
        const receipt = join(output, 'receipt.jsonl')
        const imported = await runCli(['import', '--target', target.url, '--json', '--receipt', receipt, '--file-group', String(group), output])
        expect(imported.code, imported.stderr).toBe(0)
      } finally {
        await target.dispose()
      }

      const files = await listFiles(output)
      expect(files.some((file) => file.endsWith('receipt.jsonl')) && files.some((file) => file.endsWith('index.csv'))).toBe(true)
      for (const path of [...files, output, join(output, '.orthanc-replicate'), parent, join(parent, 'drive')]) {
        const info = await stat(path)
        expect((info.mode & 0o777).toString(8), path).toBe(info.isDirectory() ? '750' : '640')
        expect(info.gid, path).toBe(group)
      }
    })

    it('--file-group naming no group: exit 2 in one sentence, nothing written', async () => {
      const output = join(work, 'no-group')
      const result = await exportTo(output, '--file-group', 'no-such-group-here')
      expect(result.code).toBe(2)
      expect(parseJson<Summary>(result).error?.message).toMatch(/--file-group "no-such-group-here" is no group/)
      await expect(stat(output)).rejects.toThrow()
    })
  })

  describe('on a small disk', () => {
    let mountPoint: string
    beforeAll(async () => {
      mountPoint = await mkdtemp(join(tmpdir(), 'faults-disk-'))
      await run('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', mountPoint])
    })
    afterAll(async () => {
      await run('umount', [mountPoint]).catch(() => {})
      await rm(mountPoint, {recursive: true, force: true})
    })

    it('a disk that is full while the plan is written: exit 13 with JSON, no unhandled error', async () => {
      // Fill the disk to a few KiB, so that the plan's own files do not fit.
      await writeFile(join(mountPoint, 'filler'), Buffer.alloc(250 * 1024)).catch(() => {})
      try {
        const result = await runCli(['export', '--source', source.url, '--output', join(mountPoint, 'out'), '--json'])
        expect(result.code, result.stderr).toBe(13)
        expect(parseJson<Summary>(result).error).toMatchObject({code: 'no-space', exitCode: 13})
        expect(result.stderr).not.toMatch(/\n\s+at |Unhandled/)
      } finally {
        await rm(join(mountPoint, 'filler'), {force: true})
        await rm(join(mountPoint, 'out'), {recursive: true, force: true})
      }
    })

    // The lock file, made but not written on a full disk, stayed empty: the next run, with space
    // again, was told another run held the folder (for the 90 s of the lease), and the first exit 2.
    it('a disk too full for the lock file: exit 13, and no empty lock left to hold off the next run', async () => {
      const output = join(mountPoint, 'locked-out')
      await mkdir(output)
      await writeFile(join(mountPoint, 'filler'), Buffer.alloc(300 * 1024)).catch(() => {})
      try {
        const result = await runCli(['export', '--source', source.url, '--output', output, '--json'])
        expect(result.code, result.stdout).toBe(13)
        expect(parseJson<Summary>(result).error).toMatchObject({code: 'lock-unwritable', exitCode: 13})
        expect((await readdir(output)).filter((name) => name.endsWith('.lock'))).toEqual([])
        await rm(join(mountPoint, 'filler'), {force: true})
        const again = await runCli(['export', '--source', source.url, '--output', output, '--json', '--dry-run'])
        expect(again.stdout).not.toMatch(/in use by another run/)
      } finally {
        await rm(join(mountPoint, 'filler'), {force: true})
        await rm(output, {recursive: true, force: true})
      }
    })

    it('a leftover .partial of our own does not count against the free space when resuming', async () => {
      const output = join(mountPoint, 'resume')
      // A run killed mid-volume leaves a .partial; the disk is then nearly full because of it.
      const killed = await runCli(['export', '--source', source.url, '--output', output, '--max-volume-size', '100000'], {env: {ORTHANC_REPLICATE_CRASH_AT: 'export:entry-written#3'}})
      expect(killed.code).not.toBe(0)
      const partials = (await readdir(output)).filter((name) => name.endsWith('.partial'))
      expect(partials).toHaveLength(1)
      const {size} = await stat(join(output, partials[0]!))
      const free = await run('df', ['-B1', '--output=avail', mountPoint]).then(({stdout}) => Number(stdout.trim().split('\n')[1]))
      const needed = 100_000
      await writeFile(join(mountPoint, 'filler'), Buffer.alloc(Math.max(0, free - needed + size - 20 * 1024)))
      try {
        const resumed = await runCli(['export', '--source', source.url, '--output', output, '--max-volume-size', '100000', '--json'])
        expect(resumed.stderr).not.toMatch(/not enough free space/)
      } finally {
        await rm(join(mountPoint, 'filler'), {force: true})
        await rm(output, {recursive: true, force: true})
      }
    })
  })

  describe('receipts', () => {
    let target: OrthancServer
    let volumes: string
    beforeAll(async () => {
      target = await startOrthanc({name: 'receipt-target'})
      volumes = join(work, 'receipt-volumes')
      expect((await exportTo(volumes)).code).toBe(0)
    })
    afterAll(async () => target?.dispose())

    it('two imports in the same second write two receipts, beside the archive, named in the summary', async () => {
      const [a, b] = await Promise.all([
        runCli(['import', '--target', target.url, '--json', volumes]),
        runCli(['import', '--target', target.url, '--json', volumes]),
      ])
      const receipts = [parseJson<Summary>(a).receipt!, parseJson<Summary>(b).receipt!]
      expect(receipts[0]).not.toBe(receipts[1])
      for (const receipt of receipts) {
        expect(receipt.startsWith(volumes)).toBe(true)
        expect((await readFile(receipt, 'utf8')).trim().split('\n')).toHaveLength(records.length + 1)
        expect(((await stat(receipt)).mode & 0o077).toString(8)).toBe('0')
      }
      // Both runs together stored each instance once: transferred adds up to what the target gained.
      expect(parseJson<Summary>(a).transferred + parseJson<Summary>(b).transferred).toBe(records.length)
    })

    it('--receipt pointing at an input volume is refused and the volume is left whole', async () => {
      const [volume] = await volumeFiles(volumes)
      const before = await readFile(volume!)
      const result = await runCli(['import', '--target', target.url, '--receipt', volume!, volumes])
      expect(result.code).toBe(2)
      expect(result.stderr).toMatch(/is one of the inputs|exists already/)
      expect((await readFile(volume!)).equals(before)).toBe(true)
    })

    it('a receipt in a read-only folder: exit 2 in one sentence, nothing imported', async () => {
      const mountPoint = await mkdtemp(join(tmpdir(), 'receipt-ro-'))
      await run('mount', ['-t', 'tmpfs', '-o', 'ro,size=64k', 'tmpfs', mountPoint])
      try {
        const result = await runCli(['import', '--target', target.url, '--receipt', join(mountPoint, 'r.jsonl'), volumes])
        expect(result.code).toBe(2)
        expect(result.stderr).toMatch(/cannot be written/)
        expect(result.stderr).not.toMatch(/\n\s+at /)
      } finally {
        await run('umount', [mountPoint]).catch(() => {})
        await rm(mountPoint, {recursive: true, force: true})
      }
    })

    it('a receipt goes to the current folder when the archive\'s folder is read-only', async () => {
      const readOnly = await mkdtemp(join(tmpdir(), 'volumes-ro-'))
      for (const volume of await volumeFiles(volumes)) await copyFile(volume, join(readOnly, volume.split('/').at(-1)!))
      await run('mount', ['-o', 'bind,ro', readOnly, readOnly])
      const cwd = await mkdtemp(join(tmpdir(), 'receipt-cwd-'))
      try {
        const result = await runCli(['import', '--target', target.url, '--json', readOnly], {cwd})
        expect(result.code, result.stderr).toBe(0)
        expect(parseJson<Summary>(result).receipt!.startsWith(cwd)).toBe(true)
      } finally {
        await run('umount', [readOnly]).catch(() => {})
        await rm(readOnly, {recursive: true, force: true})
        await rm(cwd, {recursive: true, force: true})
      }
    })
  })

  describe('signals', () => {
    let target: OrthancServer
    beforeAll(async () => {
      target = await startOrthanc({name: 'signal-target'})
    })
    afterAll(async () => target?.dispose())

    it.each(['SIGTERM', 'SIGINT'] as const)('%s in the first instant: exit 130 with the counts in JSON', async (signal) => {
      // A password in the URL makes the program rewrite its command line as soon as its own code
      // runs, right after it starts catching signals and before it loads anything else: the
      // moment to send the signal, whatever the machine's load.
      const marker = 'm4rker-pw'
      const child = spawn(process.execPath, [join(repoRoot, 'bin/run.js'), 'sync', '--source', source.url.replace('http://', `http://u:${marker}@`), '--target', target.url, '--json'], {stdio: ['ignore', 'pipe', 'pipe']})
      let stdout = ''
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk))
      const deadline = Date.now() + 20_000
      while (Date.now() < deadline && (await readFile(`/proc/${child.pid}/cmdline`, 'latin1').catch(() => '')).includes(marker)) await sleep(1)
      child.kill(signal)
      const code = await new Promise<number | null>((resolve) => child.once('close', (exit) => resolve(exit)))
      expect(code).toBe(130)
      expect(JSON.parse(stdout)).toMatchObject({interrupted: true, transferred: expect.any(Number), skipped: expect.any(Number), failed: expect.any(Number)})
    })

    it('an import interrupted mid-way says how far it got, and the same command finishes it', async () => {
      const volumes = join(work, 'signal-volumes')
      expect((await exportTo(volumes)).code).toBe(0)
      // A slow link to the target, so that the signal comes while instances are on their way.
      const proxy = await startFaultProxy(target.port)
      proxy.delayMs = 150
      const child = spawn(process.execPath, [join(repoRoot, 'bin/run.js'), 'import', '--target', proxy.url, '--json', '--no-receipt', '--concurrency', '1', volumes], {stdio: ['ignore', 'pipe', 'pipe']})
      let stdout = ''
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk))
      const deadline = Date.now() + 20_000
      while ((await target.json<string[]>('/instances')).length < 2 && Date.now() < deadline) await sleep(5)
      child.kill('SIGINT')
      expect(await new Promise<number | null>((resolve) => child.once('close', resolve))).toBe(130)
      await proxy.close()
      const partial = JSON.parse(stdout) as Summary
      expect(partial.interrupted).toBe(true)
      expect(partial.transferred).toBeGreaterThanOrEqual(1)
      const finished = await runCli(['import', '--target', target.url, '--json', '--no-receipt', volumes])
      expect(finished.code).toBe(0)
      expect(partial.transferred + parseJson<Summary>(finished).transferred).toBe(records.length)
      expect(await instanceMd5s(target)).toEqual(await instanceMd5s(source))
    })
  })
})

/** A group this process may give its files: another of its groups where it has one (any group as root), else its own. */
function sharingGroup(): number {
  if (process.getuid?.() === 0) return 1
  return process.getgroups?.().find((gid) => gid !== process.getgid?.()) ?? process.getgid!()
}
