import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {type FixtureRecord, generateStudySet} from '../../fixtures/generate.js'
import {orthancPatientId, orthancSeriesId, orthancStudyId} from '../../src/dicom/orthanc-id.js'
import type {InstanceFilters} from '../../src/model.js'
import {OrthancClient} from '../../src/orthanc/client.js'
import {resolveEndpoint} from '../../src/orthanc/endpoint.js'
import {shardOfStudy} from '../../src/sources/orthanc-selection.js'
import {type FollowEvent, followSource} from '../../src/sync/follow.js'
import {instanceMd5s, type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'

/**
 * A filtered mirror (sync --follow with filters) receives, pass after pass, exactly what the same
 * filters select from the source, and nothing else: each kind of filter is checked on new
 * arrivals of three shapes (a new instance in an existing series, a new series in an existing
 * study, a new study of an existing patient), copied by the incremental pass from /changes.
 */

const LABEL = 'mirror-me'

interface Lineage {
  record: FixtureRecord
  patient: number
  study: number
  series: number
  instance: number
}

describe('sync --follow with filters', () => {
  let work: string
  let source: OrthancServer
  let target: OrthancServer
  let lineages: Lineage[]
  let firstWave: Lineage[]
  let secondWave: Lineage[]

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'orthanc-replicate-follow-filters-'))
    const records = await generateStudySet(join(work, 'fixtures'), {
      patients: 2, studiesPerPatient: 3, seriesPerStudy: 2, instancesPerSeries: 2, pixelBytes: 256, seed: 'follow-filters', modalities: ['CT', 'MR', 'US'],
    })
    lineages = numberLineages(records)
    // Before the mirror starts: the first study whole, and one instance of the second.
    firstWave = lineages.filter((entry) => entry.study === 0 || (entry.study === 1 && entry.series === 0 && entry.instance === 0))
    secondWave = lineages.filter((entry) => !firstWave.includes(entry))
    ;[source, target] = await Promise.all([startOrthanc({name: 'follow-source', version: '1.12'}), startOrthanc({name: 'follow-target', version: '1.12'})])
    await uploadFiles(source, firstWave.map((entry) => entry.record.path))
    // A labelled study that existed before the mirror started; another gets its label with the second wave.
    await labelStudy(source, studyOf(0, 1))
  }, 120_000)

  afterAll(async () => {
    await Promise.all([source?.dispose(), target?.dispose()])
    if (work) await rm(work, {recursive: true, force: true})
  })

  const studyOf = (patient: number, study: number) => lineages.find((entry) => entry.patient === patient && entry.study === study)!.record
  const orthancStudyOf = (record: FixtureRecord) => orthancStudyId(record.patientId, record.studyInstanceUid)

  const cases: Array<{kind: string; filters: () => InstanceFilters; keeps: (record: FixtureRecord) => boolean}> = [
    {
      kind: 'patient IDs',
      filters: () => ({patientIds: [studyOf(1, 0).patientId]}),
      keeps: (record) => record.patientId === studyOf(1, 0).patientId,
    },
    {
      kind: 'Study Instance UIDs',
      // One study with new instances and series, one that arrives whole.
      filters: () => ({studyInstanceUids: [studyOf(0, 1).studyInstanceUid, studyOf(1, 2).studyInstanceUid]}),
      keeps: (record) => [studyOf(0, 1).studyInstanceUid, studyOf(1, 2).studyInstanceUid].includes(record.studyInstanceUid),
    },
    {
      kind: 'Orthanc IDs (a patient and a series)',
      filters: () => ({orthancIds: [orthancPatientId(studyOf(0, 0).patientId), seriesIdOf(studyOf(1, 1))]}),
      keeps: (record) => record.patientId === studyOf(0, 0).patientId || (record.studyInstanceUid === studyOf(1, 1).studyInstanceUid && record.seriesInstanceUid === studyOf(1, 1).seriesInstanceUid),
    },
    {
      kind: 'a study date range',
      filters: () => dateRange(),
      keeps: (record) => record.studyDate >= dateRange().studyDateFrom! && record.studyDate <= dateRange().studyDateTo!,
    },
    {
      kind: 'modalities',
      filters: () => ({modalities: ['mr']}),
      keeps: (record) => record.modality === 'MR',
    },
    {
      kind: 'labels',
      filters: () => ({labels: [LABEL]}),
      keeps: (record) => [studyOf(0, 1).studyInstanceUid, studyOf(1, 2).studyInstanceUid].includes(record.studyInstanceUid),
    },
    {
      kind: 'a shard',
      filters: () => ({shard: {index: 2, count: 2}}),
      keeps: (record) => shardOfStudy(orthancStudyOf(record), 2) === 2,
    },
  ]

  /** The middle of the six study dates onwards, to the second-latest: some studies of each wave in, some out. */
  function dateRange(): InstanceFilters {
    const dates = [...new Set(lineages.map((entry) => entry.record.studyDate))].sort()
    return {studyDateFrom: dates[1], studyDateTo: dates[dates.length - 2]}
  }

  function seriesIdOf(record: FixtureRecord): string {
    return orthancSeriesId(record.patientId, record.studyInstanceUid, record.seriesInstanceUid)
  }

  for (const {kind, filters, keeps} of cases) {
    it(`${kind}: the first full pass and the following incremental pass copy exactly what the filters select`, async () => {
      await resetSecondWave()
      const wanted = (entries: Lineage[]) => entries.filter((entry) => keeps(entry.record)).map((entry) => entry.record)
      // The case must exercise both outcomes on new arrivals, or it proves nothing.
      expect(wanted(secondWave).length, 'second-wave instances the filter keeps').toBeGreaterThan(0)
      expect(wanted(secondWave).length, 'second-wave instances the filter leaves out').toBeLessThan(secondWave.length)

      const stateFile = join(work, `state-${kind.replace(/\W+/g, '-')}.json`)
      const first = await followOnce(filters(), stateFile)
      expect(first.event).toMatchObject({type: 'pass', full: true})
      expect(await instanceMd5s(target)).toEqual(md5sOf(wanted(firstWave)))

      await uploadFiles(source, secondWave.map((entry) => entry.record.path))
      await labelStudy(source, studyOf(1, 2))
      const second = await followOnce(filters(), stateFile)
      expect(second.event, 'the new arrivals come from /changes, not from a full pass').toMatchObject({type: 'pass', full: false})
      expect(second.summary).toMatchObject({transferred: wanted(secondWave).length, failed: 0})
      expect(await instanceMd5s(target)).toEqual(md5sOf(wanted(lineages)))
    }, 60_000)
  }

  /** Runs the mirror until its first pass that copied something, or that was full; returns that pass. */
  async function followOnce(filters: InstanceFilters, stateFile: string) {
    const sourceClient = new OrthancClient(resolveEndpoint({url: source.url}))
    const targetClient = new OrthancClient(resolveEndpoint({url: target.url}))
    const controller = new AbortController()
    const deadline = setTimeout(() => controller.abort(), 30_000)
    let event: FollowEvent | undefined
    try {
      const summary = await followSource({
        source: sourceClient, target: targetClient, filters, checksum: false, concurrency: 2, stateFile,
        intervalMs: 50, fullEveryMs: 3_600_000, deleteExtras: false, maxDeleteFraction: 0.5, signal: controller.signal,
        onEvent: (reported) => {
          event = reported
          controller.abort()
        },
      })
      return {event, summary}
    } finally {
      clearTimeout(deadline)
      await Promise.all([sourceClient.close(), targetClient.close()])
    }
  }

  /** Source back to the first wave (with its label), target empty. */
  async function resetSecondWave(): Promise<void> {
    for (const entry of secondWave) await source.api(`/instances/${entry.record.orthancId}`, {method: 'DELETE'}).then((response) => response.arrayBuffer())
    for (const patient of await target.json<string[]>('/patients')) await target.api(`/patients/${patient}`, {method: 'DELETE'}).then((response) => response.arrayBuffer())
    expect((await source.json<string[]>('/instances')).sort()).toEqual(firstWave.map((entry) => entry.record.orthancId).sort())
  }

  async function labelStudy(server: OrthancServer, record: FixtureRecord): Promise<void> {
    const response = await server.api(`/studies/${orthancStudyOf(record)}/labels/${LABEL}`, {method: 'PUT', body: ''})
    expect(response.status).toBe(200)
    await response.arrayBuffer()
  }
})

function md5sOf(records: FixtureRecord[]): Map<string, string> {
  return new Map(records.map((record) => [record.orthancId, record.md5]))
}

/** Each record's place in the set: patient, study, series and instance numbers from 0, in generation order. */
function numberLineages(records: FixtureRecord[]): Lineage[] {
  const patients: string[] = []
  const studies = new Map<string, string[]>()
  const series = new Map<string, string[]>()
  const instances = new Map<string, string[]>()
  const placeIn = (list: string[], value: string) => (list.includes(value) ? list.indexOf(value) : list.push(value) - 1)
  const listOf = (map: Map<string, string[]>, key: string) => map.get(key) ?? map.set(key, []).get(key)!
  return records.map((record) => ({
    record,
    patient: placeIn(patients, record.patientId),
    study: placeIn(listOf(studies, record.patientId), record.studyInstanceUid),
    series: placeIn(listOf(series, record.studyInstanceUid), record.seriesInstanceUid),
    instance: placeIn(listOf(instances, record.seriesInstanceUid), record.sopInstanceUid),
  }))
}
