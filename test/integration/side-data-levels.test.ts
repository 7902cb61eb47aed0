import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {type FixtureRecord, generateStudySet} from '../../fixtures/generate.js'
import {parseJson, runCli} from '../helpers/cli.js'
import {instanceMd5s, type OrthancOptions, type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'

/**
 * Side data at every level (labels, user metadata, user attachments on patients, studies,
 * series and instances) through every route, on a real Orthanc 1.12.7 and across versions:
 * this file is the suite's cross-version slice (1.12.7 as source and target, 1.10.1 both ways).
 */

const CONFIG: OrthancOptions = {userMetadata: {Note: 1100}, userContentType: {Report: 1100}}
const LEVELS = ['patients', 'studies', 'series', 'instances'] as const
type Level = (typeof LEVELS)[number]

interface Ids {
  patient: string
  study: string
  series: string
  instance: string
}

interface Summary {
  transferred: number
  skipped: number
  failed: number
  notCarried: Array<{level: string; kind: string; name?: string; count: number; reason: string}>
}

/** Labels, a named and a numbered user metadata, and a user attachment on each level of one instance's lineage. */
async function annotate(server: OrthancServer, ids: Ids, withLabels: boolean): Promise<void> {
  for (const level of LEVELS) {
    const id = idOf(ids, level)
    await put(server, `/${level}/${id}/metadata/Note`, `note on the ${level}`)
    await put(server, `/${level}/${id}/metadata/2000`, `numbered on the ${level}`)
    await put(server, `/${level}/${id}/attachments/Report`, `report of the ${level}\n`)
    if (withLabels) await put(server, `/${level}/${id}/labels/on-${level}`, '')
  }
}

function idOf(ids: Ids, level: Level): string {
  return level === 'patients' ? ids.patient : level === 'studies' ? ids.study : level === 'series' ? ids.series : ids.instance
}

async function put(server: OrthancServer, path: string, body: string): Promise<void> {
  const response = await server.api(path, {method: 'PUT', body})
  expect(response.status, path).toBe(200)
  await response.arrayBuffer()
}

/** What a server keeps beside each level of the lineage, in a comparable form. */
async function sideDataOf(server: OrthancServer, ids: Ids): Promise<Record<string, unknown>> {
  const result: Record<string, unknown> = {}
  for (const level of LEVELS) {
    const id = idOf(ids, level)
    const metadata = await server.json<Record<string, string>>(`/${level}/${id}/metadata?expand`)
    const report = await server.api(`/${level}/${id}/attachments/Report/data`)
    const labels = server.version === '1.12' ? await server.json<string[]>(`/${level}/${id}/labels`) : []
    result[level] = {note: metadata.Note, numbered: metadata['2000'], report: report.ok ? await report.text() : `HTTP ${report.status}`, labels}
  }

  return result
}

async function lineageOf(server: OrthancServer, instanceId: string): Promise<Ids> {
  const instance = await server.json<{ParentSeries: string}>(`/instances/${instanceId}`)
  const series = await server.json<{ParentStudy: string}>(`/series/${instance.ParentSeries}`)
  const study = await server.json<{ParentPatient: string}>(`/studies/${series.ParentStudy}`)
  return {patient: study.ParentPatient, study: series.ParentStudy, series: instance.ParentSeries, instance: instanceId}
}

describe('side data at every level', () => {
  let work: string
  let records: FixtureRecord[]
  let source: OrthancServer
  let ids: Ids
  let expected: Record<string, unknown>

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'side-data-levels-'))
    records = await generateStudySet(join(work, 'fixtures'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 2, instancesPerSeries: 2, pixelBytes: 3000, seed: 'levels'})
    source = await startOrthanc({...CONFIG, name: 'levels-source', version: '1.12'})
    await uploadFiles(source, records.map((record) => record.path))
    ids = await lineageOf(source, records[0]!.orthancId)
    await annotate(source, ids, true)
    expected = await sideDataOf(source, ids)
  })
  afterAll(async () => {
    await source?.dispose()
    await rm(work, {recursive: true, force: true})
  })

  it('sync 1.12 → 1.12: every level arrives; diff --side-data then finds nothing', async () => {
    const target = await startOrthanc({...CONFIG, name: 'levels-sync', version: '1.12'})
    try {
      const result = await runCli(['sync', '--source', source.url, '--target', target.url, '--json'])
      expect(result.code, result.stderr).toBe(0)
      expect(await sideDataOf(target, ids)).toEqual(expected)
      expect(await instanceMd5s(target)).toEqual(await instanceMd5s(source))
      const diff = await runCli(['diff', '--source', source.url, '--target', target.url, '--side-data', '--json'])
      expect(diff.code, diff.stdout).toBe(0)

      // A study label deleted on the target: diff names it, sync puts it back, diff is quiet again.
      await target.api(`/studies/${ids.study}/labels/on-studies`, {method: 'DELETE'})
      const changed = await runCli(['diff', '--source', source.url, '--target', target.url, '--side-data', '--json'])
      expect(changed.code).toBe(14)
      expect(parseJson<{sideData: {items: Array<{id: string; kind: string; reason: string}>}}>(changed).sideData.items).toEqual([
        {id: `study ${ids.study}`, level: 'study', kind: 'labels', reason: 'label "on-studies" only on the source'},
      ])
      const again = await runCli(['sync', '--source', source.url, '--target', target.url, '--json'])
      expect(again.code, again.stderr).toBe(0)
      expect(parseJson<Summary>(again).transferred).toBe(0)
      expect(await sideDataOf(target, ids)).toEqual(expected)
      expect((await runCli(['diff', '--source', source.url, '--target', target.url, '--side-data'])).code).toBe(0)
    } finally {
      await target.dispose()
    }
  })

  it('sync restores side data of instances already on the target (their files arrived some other way)', async () => {
    const target = await startOrthanc({...CONFIG, name: 'levels-present', version: '1.12'})
    try {
      await uploadFiles(target, records.map((record) => record.path))
      const result = await runCli(['sync', '--source', source.url, '--target', target.url, '--json'])
      expect(result.code, result.stderr).toBe(0)
      expect(parseJson<Summary>(result)).toMatchObject({transferred: 0, skipped: records.length})
      expect(await sideDataOf(target, ids)).toEqual(expected)
    } finally {
      await target.dispose()
    }
  })

  it.each(['volumes', 'pipe'] as const)('export and import through %s: every level arrives', async (route) => {
    const target = await startOrthanc({...CONFIG, name: `levels-${route}`, version: '1.12'})
    try {
      if (route === 'volumes') {
        const output = join(work, 'levels-volumes')
        const exported = await runCli(['export', '--source', source.url, '--output', output, '--max-volume-size', '70000'])
        expect(exported.code, exported.stderr).toBe(0)
        const imported = await runCli(['import', '--target', target.url, '--json', '--no-receipt', output])
        expect(imported.code, imported.stderr).toBe(0)
        expect(parseJson<Summary>(imported).notCarried.filter((entry) => entry.kind !== 'system-metadata')).toEqual([])
      } else {
        const exported = await runCli(['export', '--source', source.url, '--output', '-'])
        expect(exported.code, exported.stderr).toBe(0)
        const imported = await runCli(['import', '--target', target.url, '--json', '--no-receipt', '-'], {stdin: exported.stdoutBytes})
        expect(imported.code, imported.stderr).toBe(0)
      }
      expect(await sideDataOf(target, ids)).toEqual(expected)
      expect(await instanceMd5s(target)).toEqual(await instanceMd5s(source))
    } finally {
      await target.dispose()
    }
  })

  it('1.12 → 1.10.1: metadata and attachments at every level arrive; labels are named as not carried, by level and count', async () => {
    const target = await startOrthanc({...CONFIG, name: 'levels-old-target'})
    try {
      const result = await runCli(['sync', '--source', source.url, '--target', target.url, '--json'])
      expect(result.code, result.stderr).toBe(0)
      const withoutLabels = Object.fromEntries(Object.entries(expected).map(([level, value]) => [level, {...(value as object), labels: []}]))
      expect(await sideDataOf(target, ids)).toEqual(withoutLabels)
      const labels = parseJson<Summary>(result).notCarried.filter((entry) => entry.kind === 'labels')
      expect(labels.map((entry) => [entry.level, entry.count]).sort()).toEqual([['instance', 1], ['patient', 1], ['series', 1], ['study', 1]])
      const human = await runCli(['sync', '--source', source.url, '--target', target.url])
      expect(human.stdout).toMatch(/Not carried: labels of 1 study\(s\): the target is older than Orthanc 1\.12/)
      // A mirror made with --label can be compared with --label: the target, without labels, has nothing the filter selects there.
      const diffed = await runCli(['diff', '--source', source.url, '--target', target.url, '--label', 'on-studies', '--json'])
      expect(diffed.code, diffed.stdout).toBe(0)
      expect(parseJson<{identical: number; onlyTarget: number}>(diffed)).toMatchObject({identical: records.length, onlyTarget: 0})
    } finally {
      await target.dispose()
    }
  })

  it('two of the source\'s metadata the target keeps in one place (its Note is the source\'s unnamed 2000): the named one is written, the other named as not carried, and a second run changes nothing', async () => {
    const target = await startOrthanc({userMetadata: {Note: 2000}, userContentType: {Report: 1100}, name: 'levels-one-place', version: '1.12'})
    try {
      for (const run of [1, 2]) {
        const result = await runCli(['sync', '--source', source.url, '--target', target.url, '--json'])
        expect(result.code, `run ${run}: ${result.stderr}`).toBe(0)
        const carried = await sideDataOf(target, ids)
        for (const level of LEVELS) expect(carried[level], `run ${run}`).toMatchObject({note: `note on the ${level}`})
        const notes = parseJson<Summary>(result).notCarried.filter((entry) => entry.kind === 'user-metadata')
        expect(notes.map((entry) => [entry.level, entry.name]).sort(), `run ${run}`).toEqual([['instance', '2000'], ['patient', '2000'], ['series', '2000'], ['study', '2000']])
        expect(notes[0]!.reason).toMatch(/one place/)
      }
    } finally {
      await target.dispose()
    }
  })

  it('1.10.1 → 1.12: metadata and attachments at every level arrive; a name the target does not declare is named', async () => {
    const old = await startOrthanc({...CONFIG, name: 'levels-old-source'})
    const target = await startOrthanc({userContentType: {Report: 1100}, name: 'levels-new-target', version: '1.12'})
    try {
      await uploadFiles(old, records.map((record) => record.path))
      await annotate(old, ids, false)
      const result = await runCli(['sync', '--source', old.url, '--target', target.url, '--json'])
      expect(result.code, result.stderr).toBe(0)
      const carried = await sideDataOf(target, ids)
      for (const level of LEVELS) expect(carried[level]).toMatchObject({numbered: `numbered on the ${level}`, report: `report of the ${level}\n`, note: undefined})
      const notes = parseJson<Summary>(result).notCarried.filter((entry) => entry.kind === 'user-metadata')
      expect(notes.map((entry) => [entry.level, entry.name, entry.count]).sort()).toEqual([['instance', 'Note', 1], ['patient', 'Note', 1], ['series', 'Note', 1], ['study', 'Note', 1]])
    } finally {
      await Promise.all([old.dispose(), target.dispose()])
    }
  })
})
