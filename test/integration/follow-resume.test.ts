import {execFile} from 'node:child_process'
import {writeFileSync} from 'node:fs'
import {mkdtemp, readdir, readFile, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {promisify} from 'node:util'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {type FixtureRecord, generateStudySet} from '../../fixtures/generate.js'
import {OrthancClient} from '../../src/orthanc/client.js'
import {resolveEndpoint} from '../../src/orthanc/endpoint.js'
import {type FollowEvent, type FollowOptions, type FollowState, followSource} from '../../src/sync/follow.js'
import {syncServers} from '../../src/sync/sync.js'
import {startFaultProxy} from '../helpers/fault-proxy.js'
import {damageStoredFile} from '../helpers/tamper.js'
import {instanceMd5s, type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'

const run = promisify(execFile)

/** Writes until the disk is full. */
function fill(path: string): void {
  try {
    writeFileSync(path, Buffer.alloc(1024 * 1024))
  } catch {
    // Full: what was wanted.
  }
}

/**
 * What a mirror saves between runs must hold: everything up to its cursor is on the target, or
 * named to be tried again. A pass stopped part-way (Ctrl-C, SIGTERM) saves nothing of itself, and
 * what a pass failed is tried again by the next poll, and by the next run, without waiting for
 * the next full pass (an hour by default).
 */
describe('sync --follow started again', () => {
  let work: string
  let source: OrthancServer
  let target: OrthancServer
  let records: FixtureRecord[]

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'orthanc-replicate-follow-resume-'))
    records = await generateStudySet(join(work, 'fixtures'), {patients: 2, studiesPerPatient: 2, seriesPerStudy: 2, instancesPerSeries: 3, pixelBytes: 2000, seed: 'follow-resume'})
    ;[source, target] = await Promise.all([startOrthanc({name: 'follow-resume-source'}), startOrthanc({name: 'follow-resume-target'})])
  }, 120_000)

  afterAll(async () => {
    await Promise.all([source?.dispose(), target?.dispose()])
    if (work) await rm(work, {recursive: true, force: true})
  })

  async function emptyBoth(): Promise<void> {
    for (const server of [source, target]) {
      for (const patient of await server.json<string[]>('/patients')) await server.api(`/patients/${patient}`, {method: 'DELETE'}).then((response) => response.arrayBuffer())
    }
  }

  /** Runs the mirror (one instance at a time) until `stop` says so; returns its summary. */
  async function follow(stateFile: string, stop: {afterStored?: number; afterPasses?: number; afterFirstPass?: () => Promise<void>}, fullEveryMs = 3_600_000, deleteExtras = false, whileFirstStores?: () => Promise<void>, from = source, tuning: Pick<FollowOptions, 'maxArrivalsPerPass'> = {}) {
    const sourceClient = new OrthancClient(resolveEndpoint({url: from.url}))
    const targetClient = new OrthancClient(resolveEndpoint({url: target.url}))
    const controller = new AbortController()
    const deadline = setTimeout(() => controller.abort(), 30_000)
    events = []
    let passes = 0
    let during: Promise<void> | undefined
    try {
      return await followSource({
        source: sourceClient, target: targetClient, filters: {}, checksum: false, concurrency: 1, stateFile,
        intervalMs: 50, fullEveryMs, deleteExtras, maxDeleteFraction: 0.5, signal: controller.signal, ...tuning,
        // Ctrl-C part-way through a pass.
        onProgress: (event) => {
          if (stop.afterStored !== undefined && event.phase === 'sync' && event.done >= stop.afterStored) controller.abort()
          if (whileFirstStores && event.phase === 'sync') {
            during = whileFirstStores()
            whileFirstStores = undefined
          }
        },
        onEvent: (event) => {
          events.push(event)
          if (event.type === 'pass' && passes === 0 && stop.afterFirstPass) during = stop.afterFirstPass()
          if (event.type === 'pass' && stop.afterPasses !== undefined && ++passes >= stop.afterPasses) controller.abort()
        },
      })
    } finally {
      await during
      clearTimeout(deadline)
      await Promise.all([sourceClient.close(), targetClient.close()])
    }
  }

  const everything = () => new Map(records.map((record) => [record.orthancId, record.md5]))

  /** Both servers emptied, the first `count` instances on the source, and a mirror's first full pass of them: its state file. */
  async function mirrored(count: number, name: string): Promise<string> {
    await emptyBoth()
    await uploadFiles(source, records.slice(0, count).map((record) => record.path))
    const stateFile = join(work, name)
    expect(await follow(stateFile, {afterPasses: 1})).toMatchObject({fullPasses: 1, transferred: count})
    return stateFile
  }

  /** The same instance (its UIDs kept, so its Orthanc ID) with another Instance Number, stored over the first on the source. */
  async function storeAgainWithOtherBytes(id: string, instanceNumber: string): Promise<void> {
    const modified = Buffer.from(await (await source.api(`/instances/${id}/modify`, {
      method: 'POST', body: JSON.stringify({Replace: {InstanceNumber: instanceNumber}, Keep: ['SOPInstanceUID'], Force: true}),
    })).arrayBuffer())
    expect(await source.json('/instances', {method: 'POST', body: modified, headers: {'content-type': 'application/dicom'}})).toMatchObject({ID: id})
  }

  it('a full pass stopped part-way saves no cursor past what it did not copy: started again, the mirror completes', async () => {
    await emptyBoth()
    await uploadFiles(source, records.map((record) => record.path))
    const stateFile = join(work, 'stopped-full.json')
    const stopped = await follow(stateFile, {afterStored: 2})
    expect(stopped.interrupted).toBe(true)
    expect((await instanceMd5s(target)).size).toBeLessThan(records.length)

    const again = await follow(stateFile, {afterPasses: 1})
    expect(again).toMatchObject({fullPasses: 1, failed: 0})
    expect(await instanceMd5s(target)).toEqual(everything())
  }, 60_000)

  it('an incremental pass stopped part-way saves no cursor past what it did not copy: started again, the mirror completes', async () => {
    const stateFile = await mirrored(4, 'stopped-incremental.json')
    const saved = JSON.parse(await readFile(stateFile, 'utf8')) as FollowState

    await uploadFiles(source, records.slice(4).map((record) => record.path))
    const stopped = await follow(stateFile, {afterStored: 2})
    expect(stopped).toMatchObject({interrupted: true, fullPasses: 0})
    expect((await instanceMd5s(target)).size).toBeLessThan(records.length)
    // The stopped pass left the state as the last whole pass saved it.
    expect(JSON.parse(await readFile(stateFile, 'utf8'))).toEqual(saved)

    const again = await follow(stateFile, {afterPasses: 1})
    expect(again).toMatchObject({fullPasses: 0, failed: 0, transferred: records.length - 4 - (stopped.transferred)})
    expect(await instanceMd5s(target)).toEqual(everything())
  }, 60_000)

  // The summary took the cursor reached for the cursor saved ("Cursor 144 saved" over a file
  // holding 143), and the outage said "ENOSPC" without naming the file.
  it('a state file the disk will not take: the summary says the cursor saved, not the one reached, and the outage names the file', async () => {
    await emptyBoth()
    await uploadFiles(source, records.slice(0, 2).map((record) => record.path))
    const disk = await mkdtemp(join(tmpdir(), 'follow-state-disk-'))
    await run('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', disk])
    const stateFile = join(disk, 'state.json')
    const sourceClient = new OrthancClient(resolveEndpoint({url: source.url}))
    const targetClient = new OrthancClient(resolveEndpoint({url: target.url}))
    const controller = new AbortController()
    const outages: string[] = []
    try {
      const summary = await followSource({
        source: sourceClient, target: targetClient, filters: {}, checksum: false, concurrency: 1, stateFile,
        intervalMs: 50, fullEveryMs: 3_600_000, deleteExtras: false, maxDeleteFraction: 0.5, signal: controller.signal,
        onEvent: (event) => {
          // The pass is done: the disk fills before its state is saved.
          if (event.type === 'pass') fill(join(disk, 'filler'))
          if (event.type === 'outage') {
            outages.push(event.message)
            controller.abort()
          }
        },
      })
      expect(summary).toMatchObject({interrupted: true, fullPasses: 1, transferred: 2, cursor: 0})
      expect(outages[0]).toContain(`the mirror's state file ${stateFile} cannot be written`)
      expect(await readdir(disk)).not.toContainEqual(expect.stringMatching(/^state\.json/))
    } finally {
      controller.abort()
      await Promise.all([sourceClient.close(), targetClient.close()])
      await run('umount', [disk]).catch(() => {})
      await rm(disk, {recursive: true, force: true})
    }
  }, 60_000)

  it('an instance stored again on the source with other bytes (OverwriteInstances) is copied again by the next poll, not counted as skipped', async () => {
    const original = source
    source = await startOrthanc({name: 'follow-overwrite-source', overwriteInstances: true})
    try {
      const stateFile = await mirrored(2, 'overwritten.json')
      const replaced = records[1]!.orthancId
      await storeAgainWithOtherBytes(replaced, '99')
      const sourceMd5s = await instanceMd5s(source)
      expect(sourceMd5s.get(replaced)).not.toBe(records[1]!.md5)

      const poll = await follow(stateFile, {afterPasses: 1})
      expect(poll).toMatchObject({fullPasses: 0, transferred: 1, skipped: 0, failed: 0})
      expect(await instanceMd5s(target)).toEqual(sourceMd5s)
    } finally {
      await source.dispose()
      source = original
    }
  }, 60_000)

  // A changes pass took only the instances logged as new: metadata or an attachment set on the
  // source afterwards reached the mirror only at the next full pass (an hour by default).
  it('user metadata and attachments set on the source after an instance was mirrored reach the mirror by the next poll, at every level', async () => {
    const stateFile = await mirrored(4, 'side-data-changes.json')
    const [first, second] = [records[0]!.orthancId, records[3]!.orthancId]
    const secondSeries = (await source.json<{ParentSeries: string}>(`/instances/${second}`)).ParentSeries
    const study = (await source.json<{ParentStudy: string}>(`/series/${secondSeries}`)).ParentStudy
    const put = async (path: string, body: string) => expect((await source.api(path, {method: 'PUT', body})).status).toBe(200)
    await put(`/instances/${first}/metadata/1030`, 'reviewed')
    await put(`/series/${secondSeries}/attachments/1031`, 'a series report')
    await put(`/studies/${study}/metadata/1032`, 'study status')

    const poll = await follow(stateFile, {afterPasses: 1})
    expect(poll).toMatchObject({fullPasses: 0, transferred: 0, failed: 0})
    expect(await (await target.api(`/instances/${first}/metadata/1030`)).text()).toBe('reviewed')
    expect(await (await target.api(`/series/${secondSeries}/attachments/1031/data`)).text()).toBe('a series report')
    expect(await (await target.api(`/studies/${study}/metadata/1032`)).text()).toBe('study status')
  }, 60_000)

  /** What the last mirror run told, pass by pass. */
  let events: FollowEvent[] = []
  const readState = async (file: string) => JSON.parse(await readFile(file, 'utf8')) as FollowState
  const writeState = async (file: string, state: FollowState) => writeFile(file, JSON.stringify(state))

  // A full pass due (downtime longer than --full-every) saved the cursor past the arrivals it had
  // compared by ID alone: an instance stored again with other bytes was skipped, for good.
  it('a full pass compares by MD5 what arrived since the cursor: an instance stored again with other bytes during downtime is copied', async () => {
    const original = source
    source = await startOrthanc({name: 'follow-overwrite-downtime', overwriteInstances: true})
    try {
      const stateFile = await mirrored(2, 'overwritten-downtime.json')
      await storeAgainWithOtherBytes(records[1]!.orthancId, '98')
      // Down for two hours: the next start makes a full pass first.
      await writeState(stateFile, {...await readState(stateFile), lastFullPass: new Date(Date.now() - 7_200_000).toISOString()})
      const restarted = await follow(stateFile, {afterPasses: 1})
      expect(restarted).toMatchObject({fullPasses: 1, transferred: 1, failed: 0})
      expect(await instanceMd5s(target)).toEqual(await instanceMd5s(source))
    } finally {
      await source.dispose()
      source = original
    }
  }, 60_000)

  // A pass held the ID of every instance logged as new since its cursor: after a long downtime,
  // as many as arrived, all in memory at once.
  it('a changes pass holds a bounded number of arrivals: the rest come by the next polls, every one copied', async () => {
    const stateFile = await mirrored(2, 'bounded-arrivals.json')
    const later = records.slice(2, 8)
    await uploadFiles(source, later.map((record) => record.path))
    const summary = await follow(stateFile, {afterPasses: 3}, 3_600_000, false, undefined, source, {maxArrivalsPerPass: 2})
    expect(summary).toMatchObject({fullPasses: 0, transferred: later.length, failed: 0})
    const passes = events.flatMap((event) => (event.type === 'pass' ? [event.summary.transferred] : []))
    expect(passes).toEqual([2, 2, 2])
    expect(await instanceMd5s(target)).toEqual(await instanceMd5s(source))
    expect((await readState(stateFile)).cursor).toBe((await source.json<{Last: number}>('/changes?last')).Last)
  }, 60_000)

  it('a full pass with more arrivals than a pass holds compares every instance by MD5: one stored again with other bytes is copied', async () => {
    const original = source
    source = await startOrthanc({name: 'follow-many-arrivals', overwriteInstances: true})
    try {
      const stateFile = await mirrored(2, 'many-arrivals.json')
      await storeAgainWithOtherBytes(records[1]!.orthancId, '97')
      await uploadFiles(source, records.slice(2, 4).map((record) => record.path))
      await writeState(stateFile, {...await readState(stateFile), lastFullPass: new Date(Date.now() - 7_200_000).toISOString()})
      const restarted = await follow(stateFile, {afterPasses: 1}, 3_600_000, false, undefined, source, {maxArrivalsPerPass: 1})
      expect(restarted).toMatchObject({fullPasses: 1, transferred: 3, failed: 0})
      expect(await instanceMd5s(target)).toEqual(await instanceMd5s(source))
    } finally {
      await source.dispose()
      source = original
    }
  }, 60_000)

  // Orthanc takes a deleted resource's changes out of its log, the newest too: /changes?last then
  // answers less than the cursor, which was taken for another history (a full pass comparing every
  // instance by MD5, at every other poll).
  it('the newest patient deleted on the source is no other history: the mirror goes on by changes', async () => {
    const stateFile = await mirrored(2, 'newest-deleted.json')
    const newest = records.find((record) => record.patientId !== records[0]!.patientId)!
    await uploadFiles(source, [newest.path])
    expect(await follow(stateFile, {afterPasses: 1})).toMatchObject({fullPasses: 0, transferred: 1})
    const {ID: patient} = await source.json<{ID: string}>(`/instances/${newest.orthancId}/patient`)
    await source.api(`/patients/${patient}`, {method: 'DELETE'})
    expect((await source.json<{Last: number}>('/changes?last')).Last).toBeLessThan((await readState(stateFile)).cursor)
    const after = await follow(stateFile, {afterPasses: 3})
    expect(after).toMatchObject({fullPasses: 0, failed: 0})
    expect(events.filter((event) => event.type !== 'pass')).toEqual([])
  }, 60_000)

  // The mark of the old cursor stayed beside the new cursor when the source did not answer the
  // request for the new one: the next poll took the source for another history.
  it('a source that does not answer for the mark of a new cursor is no other history at the next poll', async () => {
    await emptyBoth()
    await uploadFiles(source, records.slice(0, 2).map((record) => record.path))
    const proxy = await startFaultProxy(source.port)
    try {
      const through = {...source, url: proxy.url}
      const stateFile = join(work, 'unmarked.json')
      expect(await follow(stateFile, {afterPasses: 1}, 3_600_000, false, undefined, through)).toMatchObject({fullPasses: 1, transferred: 2})
      await uploadFiles(source, [records[2]!.path])
      const cursor = (await source.json<{Last: number}>('/changes?last')).Last
      // Once the changes pass has read the log: the request for the new cursor's mark.
      proxy.faults.push({match: new RegExp(`^GET /changes\\?since=${cursor - 1}&limit=1$`), fault: 'status-404', after: /^GET \/changes\?since=\d+&limit=\d{2,}$/})
      // One more arrives after that pass: the next poll copies it, by changes.
      const after = await follow(stateFile, {afterPasses: 2, afterFirstPass: async () => void await uploadFiles(source, [records[3]!.path])}, 3_600_000, false, undefined, through)
      expect(proxy.faults).toEqual([])
      expect(events.filter((event) => event.type === 'other-history')).toEqual([])
      expect(after).toMatchObject({fullPasses: 0, transferred: 2, failed: 0})
      expect((await readState(stateFile)).at).toMatchObject({id: expect.any(String), type: expect.any(String)})
    } finally {
      await proxy.close()
    }
  }, 60_000)

  // A time that did not read as one (NaN), or one ahead, made no full pass ever due.
  it('a last full pass that does not read as a time, or lies ahead, makes a full pass due', async () => {
    const stateFile = await mirrored(3, 'bad-stamp.json')
    for (const lastFullPass of ['yesterday', new Date(Date.now() + 365 * 86_400_000).toISOString()]) {
      // Lost on the target: no change on the source says so, only a full pass finds it.
      await target.api(`/instances/${records[0]!.orthancId}`, {method: 'DELETE'})
      await writeState(stateFile, {...await readState(stateFile), lastFullPass})
      expect(await follow(stateFile, {afterPasses: 1}), lastFullPass).toMatchObject({fullPasses: 1, transferred: 1})
    }
  }, 60_000)

  // Another server at the source's URL (replaced, restored from a backup) with a longer change log:
  // its changes after the cursor were copied as the mirror's arrivals, and with --delete a later
  // full pass found the mirror's own few and deleted them.
  it('a source of another history at the same URL is known by the change at the cursor: a held-back full pass, nothing copied or deleted', async () => {
    await emptyBoth()
    const [before, replacement] = await Promise.all([startOrthanc({name: 'follow-first-history'}), startOrthanc({name: 'follow-other-history'})])
    try {
      await uploadFiles(before, records.slice(0, 2).map((record) => record.path))
      const stateFile = join(work, 'other-history.json')
      expect(await follow(stateFile, {afterPasses: 1}, 3_600_000, true, undefined, before)).toMatchObject({fullPasses: 1, transferred: 2})
      const saved = await readState(stateFile)
      expect(saved.at).toMatchObject({type: expect.any(String), id: expect.any(String)})
      // The other server, reached as the first was: its own instances, and a longer log.
      await uploadFiles(replacement, records.slice(2).map((record) => record.path))
      expect((await replacement.json<{Last: number}>('/changes?last')).Last).toBeGreaterThan(saved.cursor)
      await writeState(stateFile, {...saved, source: replacement.url})
      const after = await follow(stateFile, {afterPasses: 3}, 3_600_000, true, undefined, replacement)
      expect(after).toMatchObject({fullPasses: 1, transferred: 0, deleted: 0, stoppedBecause: expect.stringMatching(/2 of the 2 instances the target holds/)})
      expect(new Set((await instanceMd5s(target)).keys())).toEqual(new Set(records.slice(0, 2).map((record) => record.orthancId)))
    } finally {
      await Promise.all([before.dispose(), replacement.dispose()])
    }
  }, 60_000)

  it('what a full pass failed is tried again by the next run at once, not at the next full pass', async () => {
    await emptyBoth()
    await uploadFiles(source, records.map((record) => record.path))
    const stateFile = join(work, 'failed-full.json')
    const damaged = records[0]!
    const repair = await damageStoredFile(source, damaged.orthancId)
    const first = await follow(stateFile, {afterPasses: 1})
    expect(first).toMatchObject({fullPasses: 1, failed: 1, transferred: records.length - 1})
    expect((JSON.parse(await readFile(stateFile, 'utf8')) as FollowState).retry).toEqual([damaged.orthancId])

    await repair()
    const again = await follow(stateFile, {afterPasses: 1})
    expect(again).toMatchObject({fullPasses: 0, failed: 0, transferred: 1})
    expect(await instanceMd5s(target)).toEqual(everything())
    expect((JSON.parse(await readFile(stateFile, 'utf8')) as FollowState).retry ?? []).toEqual([])
  }, 60_000)

  it('what an incremental pass failed is tried again by the next poll, while the cursor moves on', async () => {
    const stateFile = await mirrored(4, 'failed-incremental.json')

    await uploadFiles(source, records.slice(4).map((record) => record.path))
    const damaged = records[5]!
    const repair = await damageStoredFile(source, damaged.orthancId)
    const first = await follow(stateFile, {afterPasses: 1})
    expect(first).toMatchObject({fullPasses: 0, failed: 1, transferred: records.length - 5})
    const saved = JSON.parse(await readFile(stateFile, 'utf8')) as FollowState
    expect(saved.retry).toEqual([damaged.orthancId])
    expect(saved.cursor).toBe(await source.json<{Last: number}>('/changes?last').then((changes) => changes.Last))

    await repair()
    const again = await follow(stateFile, {afterPasses: 1})
    expect(again).toMatchObject({fullPasses: 0, failed: 0, transferred: 1})
    expect(await instanceMd5s(target)).toEqual(everything())
  }, 60_000)

  it('what could not be carried is counted by resource, not again at every full pass', async () => {
    await emptyBoth()
    await uploadFiles(source, records.map((record) => record.path))
    // A full pass at every poll: each meets every instance again.
    const summary = await follow(join(work, 'not-carried.json'), {afterPasses: 3}, 1)
    expect(summary).toMatchObject({fullPasses: 3, failed: 0})
    // Orthanc keeps its system metadata for itself: every instance's is named, once.
    expect(summary.notCarried).toContainEqual(expect.objectContaining({level: 'instance', kind: 'system-metadata', count: records.length}))
    for (const entry of summary.notCarried) expect(entry.count, `${entry.level} ${entry.kind}`).toBeLessThanOrEqual(records.length)
  }, 60_000)

  it('a mirror\'s summary counts once what it meets at every poll: an instance failing at every poll, a study new instances arrive in', async () => {
    await emptyBoth()
    // Labelled studies on a 1.12 source, which the 1.10 target cannot take: named as not carried.
    const labelled = await startOrthanc({name: 'follow-labelled-source', version: '1.12'})
    const labelStudies = async () => {
      for (const study of await labelled.json<string[]>('/studies')) await labelled.api(`/studies/${study}/labels/teaching`, {method: 'PUT', body: ''}).then((response) => response.arrayBuffer())
    }
    // A third of each study first; the rest in two polls, while one instance fails at every poll.
    const batches = [0, 1, 2].map((part) => records.filter((_, index) => index % 3 === part))
    await uploadFiles(labelled, batches[0]!.map((record) => record.path))
    await labelStudies()
    const damaged = batches[1]![0]!
    const sourceClient = new OrthancClient(resolveEndpoint({url: labelled.url}))
    const targetClient = new OrthancClient(resolveEndpoint({url: target.url}))
    const controller = new AbortController()
    const deadline = setTimeout(() => controller.abort(), 30_000)
    let passes = 0
    let repair: (() => Promise<void>) | undefined
    try {
      const summary = await followSource({
        source: sourceClient, target: targetClient, filters: {}, checksum: false, concurrency: 1, stateFile: join(work, 'counted-once.json'),
        // Polls far enough apart that each batch is stored (and the instance damaged) before the next: the events are not awaited.
        intervalMs: 1500, fullEveryMs: 3_600_000, deleteExtras: false, maxDeleteFraction: 0.5, signal: controller.signal,
        onEvent: async (event) => {
          if (event.type !== 'pass') return
          passes++
          if (passes <= 2) {
            await uploadFiles(labelled, batches[passes]!.map((record) => record.path))
            if (passes === 1) repair = await damageStoredFile(labelled, damaged.orthancId)
          }

          if (passes === 5) controller.abort()
        },
      })
      expect(summary).toMatchObject({fullPasses: 1, transferred: records.length - 1, failed: 1})
      expect(summary.passes).toBeGreaterThanOrEqual(5)
      expect(summary.failures.map((failure) => failure.id)).toEqual([damaged.orthancId])
      // Each study's labels are named once, though three passes met the study.
      const studies = new Set(records.map((record) => record.studyInstanceUid)).size
      expect(summary.notCarried).toContainEqual(expect.objectContaining({level: 'study', kind: 'labels', count: studies}))
      expect(summary.notCarried).toContainEqual(expect.objectContaining({level: 'instance', kind: 'system-metadata', count: records.length - 1}))
    } finally {
      clearTimeout(deadline)
      await repair?.()
      await Promise.all([sourceClient.close(), targetClient.close()])
      await labelled.dispose()
    }
  }, 60_000)

  it('each pass counts the requests it sent again, not those of the passes before it', async () => {
    await emptyBoth()
    await uploadFiles(source, records.slice(0, 3).map((record) => record.path))
    const proxy = await startFaultProxy(source.port)
    proxy.faults.push({match: /attachments\/dicom\/data/, fault: 'status-503'})
    const sourceClient = new OrthancClient(resolveEndpoint({url: proxy.url}), {retry: {retries: 2, minDelayMs: 1, maxDelayMs: 2}})
    const targetClient = new OrthancClient(resolveEndpoint({url: target.url}))
    try {
      const pass = () => syncServers({source: sourceClient, target: targetClient, filters: {}, checksum: false, concurrency: 1, dryRun: false})
      expect(await pass()).toMatchObject({transferred: 3, retries: 1})
      expect(await pass()).toMatchObject({transferred: 0, skipped: 3, retries: 0})
    } finally {
      await Promise.all([sourceClient.close(), targetClient.close(), proxy.close()])
    }
  }, 60_000)

  it('a mirror that deletes measures the fraction against what the target holds before anything moves, and stops when it would be refused', async () => {
    await emptyBoth()
    await uploadFiles(source, records.slice(2).map((record) => record.path))
    // The target's own two instances, which the source does not have: all of what it held.
    await uploadFiles(target, records.slice(0, 2).map((record) => record.path))
    const summary = await follow(join(work, 'deleting.json'), {afterPasses: 5}, 3_600_000, true)
    // The mirror stops rather than follow a source this different: nothing copied, nothing deleted.
    expect(summary).toMatchObject({fullPasses: 1, transferred: 0, failed: 0, deleted: 0, interrupted: false, stoppedBecause: expect.stringMatching(/2 of the 2 instances the target holds/)})
    expect((await instanceMd5s(target)).size).toBe(2)
  }, 60_000)

  it('a second mirror on the same state file is refused at once, while the first goes on', async () => {
    await emptyBoth()
    await uploadFiles(source, records.map((record) => record.path))
    const stateFile = join(work, 'shared-state.json')
    let secondRefusal: unknown
    const summary = await follow(stateFile, {afterPasses: 1}, 3_600_000, false, async () => {
      secondRefusal = await follow(stateFile, {afterPasses: 1}).then(() => undefined, (error: unknown) => error)
    })
    expect(secondRefusal).toMatchObject({code: 'in-use', message: expect.stringMatching(/state file .* is in use by another run \(process \d+/)})
    expect(summary).toMatchObject({fullPasses: 1, failed: 0})
    expect(await instanceMd5s(target)).toEqual(everything())
  }, 60_000)
})
