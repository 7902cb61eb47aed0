import {mkdtemp, readFile, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {generateFramingSet, generateIdentifierSet, type FixtureRecord, type IdentifierCase} from '../../fixtures/generate.js'
import {orthancInstanceId} from '../../src/dicom/orthanc-id.js'
import {readDicomIdentifiers} from '../../src/dicom/parse.js'
import {parseJson, runCli} from '../helpers/cli.js'
import {startFaultProxy} from '../helpers/fault-proxy.js'
import {type OrthancServer, startOrthanc} from '../helpers/orthanc.js'

interface UploadAnswer {
  ID: string
  Status: string
}

interface ImportJson {
  transferred: number
  skipped: number
  failed: number
}

/**
 * Orthanc derives its IDs from identifiers as it reads them. Where this tool must know an ID
 * before uploading (to skip what the target has), it reads them the same way; these cases check
 * every rule against the real server. Where it cannot know, the target's answer decides.
 */
describe('instance IDs as Orthanc 1.10.1 gives them', () => {
  let work: string
  let server: OrthancServer
  let cases: IdentifierCase[]
  let framed: FixtureRecord[]

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'recovery-ids-'))
    cases = await generateIdentifierSet(join(work, 'identifiers'))
    framed = await generateFramingSet(join(work, 'framing'))
    server = await startOrthanc({name: 'ids'})
  })
  afterAll(async () => {
    await server?.dispose()
    await rm(work, {recursive: true, force: true})
  })

  const upload = (bytes: Buffer) => server.json<UploadAnswer>('/instances', {method: 'POST', body: new Uint8Array(bytes), headers: {'content-type': 'application/dicom'}})
  const predicted = (bytes: Buffer) => {
    const identifiers = readDicomIdentifiers(bytes)
    return orthancInstanceId(identifiers.patientId, identifiers.studyInstanceUid, identifiers.seriesInstanceUid, identifiers.sopInstanceUid)
  }

  it('predicts the ID of every awkward identifier: padding, NULs, VR UN, several values, character sets', async () => {
    const wrong: string[] = []
    for (const entry of cases) {
      const bytes = await readFile(entry.path)
      const answer = await upload(bytes)
      expect(answer.Status, entry.label).toBe('Success')
      if (answer.ID !== predicted(bytes)) wrong.push(`${entry.label} (${entry.about})`)
    }
    expect(wrong).toEqual([])
  })

  it('where the prediction holds, what the target has is skipped without an upload', async () => {
    // The first test stored every case on this server.
    const proxy = await startFaultProxy(server.port)
    try {
      const result = await runCli(['import', '--target', proxy.url, '--json', '--no-receipt', '--dicom-folder', join(work, 'identifiers')])
      expect(result.code, result.stderr).toBe(0)
      expect(parseJson<ImportJson>(result)).toMatchObject({transferred: 0, skipped: cases.length, failed: 0})
      expect(proxy.log.filter((line) => line.startsWith('POST /instances'))).toEqual([])
    } finally {
      await proxy.close()
    }
  })

  it('stores bare data sets and meta groups without preamble as they came, under the predicted ID', async () => {
    for (const record of framed) {
      const bytes = await readFile(record.path)
      const answer = await upload(bytes)
      expect(answer, record.label).toEqual(expect.objectContaining({ID: record.orthancId, Status: 'Success'}))
      const stored = Buffer.from(await (await server.api(`/instances/${answer.ID}/file`)).arrayBuffer())
      expect(stored.equals(bytes), record.label).toBe(true)
    }
  })

  it('where the prediction cannot hold, the answer decides: receipts name the target\'s ID, a rerun transfers nothing', async () => {
    // Without Specific Character Set a target decodes with its own DefaultEncoding: this one's is
    // not Orthanc's default, so the Latin-1 reading of these files predicts the wrong IDs.
    const target = await startOrthanc({name: 'utf8-default', extra: {DefaultEncoding: 'Utf8'}})
    try {
      const folder = join(work, 'identifiers')
      const receipt = join(work, 'receipt.jsonl')
      const first = await runCli(['import', '--target', target.url, '--json', '--receipt', receipt, '--dicom-folder', folder])
      expect(first.code, first.stderr).toBe(0)
      expect(parseJson<ImportJson>(first)).toMatchObject({transferred: cases.length, skipped: 0, failed: 0})

      const answered = new Set(await target.json<string[]>('/instances'))
      const lines = (await readFile(receipt, 'utf8')).trim().split('\n').slice(1).map((line) => JSON.parse(line) as {id: string; status: string})
      expect(lines).toHaveLength(cases.length)
      for (const line of lines) expect(answered.has(line.id), line.id).toBe(true)
      const mispredicted = await Promise.all(cases.filter((entry) => entry.label.endsWith('without-charset')).map(async (entry) => predicted(await readFile(entry.path))))
      expect(mispredicted.length).toBeGreaterThan(0)
      for (const id of mispredicted) expect(answered.has(id)).toBe(false)

      const second = await runCli(['import', '--target', target.url, '--json', '--no-receipt', '--dicom-folder', folder])
      expect(second.code, second.stderr).toBe(0)
      expect(parseJson<ImportJson>(second)).toMatchObject({transferred: 0, skipped: cases.length, failed: 0})

      // Server to server, the same: the target stores these under other IDs than the source gives
      // them, and its answer stands (the bytes are the same instance's, the same UIDs), not failed.
      for (const entry of cases) await upload(await readFile(entry.path))
      const synced = await runCli(['sync', '--source', server.url, '--target', target.url, '--json'])
      expect(synced.code, synced.stderr).toBe(0)
      expect(parseJson<ImportJson>(synced).failed).toBe(0)
    } finally {
      await target.dispose()
    }
  })
})
