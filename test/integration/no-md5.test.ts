import {createHash} from 'node:crypto'
import {mkdtemp, readFile, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {type FixtureRecord, generateStudySet} from '../../fixtures/generate.js'
import {parseJson, runCli} from '../helpers/cli.js'
import {type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'

/** Servers that run with StoreMD5ForAttachments off record '' for every MD5: nothing may be taken as compared. */
describe('servers that record no MD5s', () => {
  let work: string
  let source: OrthancServer
  let target: OrthancServer
  let records: FixtureRecord[]
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'no-md5-'))
    const extra = {StoreMD5ForAttachments: false}
    ;[source, target] = await Promise.all([startOrthanc({name: 'no-md5-source', extra}), startOrthanc({name: 'no-md5-target', extra})])
    records = await generateStudySet(join(work, 'fixtures'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 3, pixelBytes: 500, seed: 'no-md5'})
    await uploadFiles(source, records.map((record) => record.path))
    // The same IDs on the target, one of them with other bytes.
    await uploadFiles(target, records.slice(1).map((record) => record.path))
    const altered = Buffer.from(await readFile(records[0]!.path))
    altered[altered.length - 1] = altered[altered.length - 1]! ^ 0x55
    await target.api('/instances', {method: 'POST', body: new Uint8Array(altered)})
  })
  afterAll(async () => {
    await Promise.all([source?.dispose(), target?.dispose()])
    await rm(work, {recursive: true, force: true})
  })

  it('diff: instances on both are "not compared", never identical (exit 10)', async () => {
    const result = await runCli(['diff', '--source', source.url, '--target', target.url, '--json'])
    expect(result.code).toBe(10)
    expect(parseJson<{identical: number; notCompared: number; different: number}>(result)).toMatchObject({identical: 0, notCompared: 3, different: 0})
    const told = await runCli(['diff', '--source', source.url, '--target', target.url])
    expect(told.stdout).toMatch(/^not compared: +3 \(on both; a server records no MD5 for them/m)
    expect(told.stdout).not.toContain('The servers hold the same instances.')
  })

  it('diff --side-data: a user attachment on both is not compared either, and said so (exit 10, not counted as a difference)', async () => {
    const id = records[1]!.orthancId
    for (const server of [source, target]) await server.api(`/instances/${id}/attachments/1040`, {method: 'PUT', body: 'a report'})
    try {
      const result = await runCli(['diff', '--source', source.url, '--target', target.url, '--side-data', '--json'])
      // Not compared is no difference: exit 10 (not all compared), not 14 (the servers differ).
      expect(result.code, result.stdout).toBe(10)
      const {sideData} = parseJson<{sideData: {differences: number; notCompared: number; items: Array<{reason: string}>}}>(result)
      expect(sideData).toMatchObject({differences: 0, notCompared: 1})
      expect(sideData.items).toContainEqual(expect.objectContaining({notCompared: true, reason: expect.stringMatching(/^attachment "1040" not compared: the source records no MD5 for it/)}))
      // Only the attachment not compared (the instance compared by its bytes elsewhere is not the point): never "the same".
      const alone = await runCli(['diff', '--source', source.url, '--target', target.url, '--side-data', '--orthanc-id', id])
      expect(alone.stdout).toMatch(/attachment\(s\) not compared/)
      expect(alone.stdout).not.toMatch(/The servers differ/)
      expect(alone.stdout).toMatch(/could not be compared by MD5, nor 1 of their attachments\.$/m)
    } finally {
      for (const server of [source, target]) await server.api(`/instances/${id}/attachments/1040`, {method: 'DELETE'})
    }
  })

  it('diff --per-study counts them per study too', async () => {
    const result = await runCli(['diff', '--source', source.url, '--target', target.url, '--per-study', '--json'])
    expect(parseJson<{studies: Array<{notCompared: number}>}>(result).studies).toEqual([expect.objectContaining({notCompared: 3})])
  })

  it('a target that records no MD5s: sync and import read each copy back to confirm it (exit 0), and verify --target does the same', async () => {
    const normal = await startOrthanc({name: 'with-md5-source'})
    try {
      const more = await generateStudySet(join(work, 'more'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 2, pixelBytes: 700, seed: 'no-md5-target'})
      await uploadFiles(normal, more.map((record) => record.path))
      const synced = await runCli(['sync', '--source', normal.url, '--target', target.url, '--json'])
      expect(synced.code, synced.stdout).toBe(0)
      expect(parseJson<{transferred: number; failed: number}>(synced)).toMatchObject({transferred: 2, failed: 0})
      // Again, with everything there: the read-back of a found instance has no MD5 to hold it to, and fails nothing.
      const again = await runCli(['sync', '--source', normal.url, '--target', target.url, '--json'])
      expect(again.code, again.stdout).toBe(0)
      expect(parseJson<{skipped: number; failed: number}>(again)).toMatchObject({skipped: 2, failed: 0})
      for (const record of more) {
        const onTarget = Buffer.from(await (await target.api(`/instances/${record.orthancId}/file`)).arrayBuffer())
        expect(createHash('md5').update(onTarget).digest('hex')).toBe(createHash('md5').update(await readFile(record.path)).digest('hex'))
      }
      const archive = join(work, 'with-md5')
      expect((await runCli(['export', '--source', normal.url, '--output', archive])).code).toBe(0)
      const verified = await runCli(['verify', '--target', target.url, '--json', archive])
      expect(verified.code, verified.stdout).toBe(0)
      expect(parseJson<{target: {confirmed: number; differentCount: number}}>(verified).target).toMatchObject({confirmed: 2, differentCount: 0})
      for (const record of more) await target.api(`/instances/${record.orthancId}`, {method: 'DELETE'})
      const imported = await runCli(['import', '--target', target.url, '--no-receipt', '--json', archive])
      expect(imported.code, imported.stdout).toBe(0)
      expect(parseJson<{transferred: number}>(imported).transferred).toBe(2)
    } finally {
      await normal.dispose()
    }
  })

  it('sync --checksum says what it could not compare, and does not exit 0', async () => {
    const result = await runCli(['sync', '--source', source.url, '--target', target.url, '--checksum', '--json'])
    expect(result.code).toBe(10)
    expect(parseJson<{plan: {md5Unrecorded: number; different: number}}>(result).plan).toMatchObject({md5Unrecorded: 3, different: 0})
  })

  it('export fails each instance with the way out, not as an MD5 mismatch', async () => {
    const result = await runCli(['export', '--source', source.url, '--output', join(work, 'export'), '--json'])
    expect(result.code).toBe(10)
    const {failures} = parseJson<{failures: Array<{reason: string}>}>(result)
    expect(failures).toHaveLength(3)
    for (const failure of failures) expect(failure.reason).toMatch(/records no MD5 for it \(it runs with StoreMD5ForAttachments off\).*import --storage-folder/)
  })
})
