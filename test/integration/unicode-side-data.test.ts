import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {type FixtureRecord, generateStudySet} from '../../fixtures/generate.js'
import {parseJson, runCli} from '../helpers/cli.js'
import {type OrthancOptions, type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'

const CONFIG: OrthancOptions = {userMetadata: {Note: 1100}}
const LEVELS = ['patients', 'studies', 'series', 'instances'] as const

/**
 * Code points a metadata value may hold, by the ways text goes wrong: bytes against characters
 * (Latin, CJK at 3 bytes, emoji beyond the BMP at 4 and 2 UTF-16 units), what a decoder or a
 * JSON writer treats apart (a BOM, NUL and other controls, line and paragraph separators,
 * quotes and backslashes, combining marks, right-to-left text, zero-width joiners).
 */
const RANGES: Array<[from: number, to: number]> = [
  [0x20, 0x7e], [0xa0, 0x24f], [0x370, 0x3ff], [0x590, 0x6ff], [0x4e00, 0x9fff], [0xac00, 0xd7a3], [0x1f300, 0x1f6ff], [0x300, 0x36f],
]
const SPECIALS = ['\u0000', '\t', '\n', '\r', '\r\n', '\u007f', '\u0085', '\ufeff', '\u2028', '\u2029', '\u200d', '\u202e', '"', '\\', '\u00ad', '\ufffd', '\u{10ffff}']

/** A seeded generator: the same values at every run, so a failure reproduces. */
function randomValues(seed: number): (maxCodePoints: number) => string {
  let state = seed
  const next = () => {
    state = (state * 1_103_515_245 + 12_345) % 2_147_483_648
    return state / 2_147_483_648
  }

  return (maxCodePoints) => {
    const length = Math.floor(next() * maxCodePoints)
    let value = next() < 0.3 ? '\ufeff' : ''
    for (let index = 0; index < length; index++) {
      if (next() < 0.15) {
        value += SPECIALS[Math.floor(next() * SPECIALS.length)]!
        continue
      }

      const [from, to] = RANGES[Math.floor(next() * RANGES.length)]!
      value += String.fromCodePoint(from + Math.floor(next() * (to - from + 1)))
    }

    return value
  }
}

/** Every resource's user metadata, as the server answers it in JSON (`.text()` would drop a leading BOM). */
async function metadataOf(server: OrthancServer): Promise<Record<string, Record<string, string>>> {
  const result: Record<string, Record<string, string>> = {}
  for (const level of LEVELS) {
    for (const id of await server.json<string[]>(`/${level}`)) {
      const metadata = await server.json<Record<string, string>>(`/${level}/${id}/metadata?expand`)
      if (metadata.Note !== undefined) result[`${level}/${id}`] = {Note: metadata.Note}
    }
  }

  return result
}

/**
 * Side data of random Unicode goes through export, import and sync unchanged: the planner once
 * measured records in characters and the readers in bytes, so CJK values made volumes that no
 * reader took. A deterministic slice; each value is compared as the servers hold it.
 */
describe('metadata values of random Unicode', () => {
  let work: string
  let records: FixtureRecord[]
  let source: OrthancServer
  let expected: Record<string, Record<string, string>>

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'unicode-side-data-'))
    records = await generateStudySet(join(work, 'fixtures'), {patients: 2, studiesPerPatient: 1, seriesPerStudy: 2, instancesPerSeries: 3, pixelBytes: 1000, seed: 'unicode'})
    source = await startOrthanc({...CONFIG, name: 'unicode-source'})
    await uploadFiles(source, records.map((record) => record.path))
    const value = randomValues(20_261_203)
    for (const level of LEVELS) {
      for (const id of await source.json<string[]>(`/${level}`)) {
        const response = await source.api(`/${level}/${id}/metadata/Note`, {method: 'PUT', body: value(level === 'instances' ? 3000 : 300)})
        expect(response.status).toBe(200)
        await response.arrayBuffer()
      }
    }

    // One value larger than a small volume's share of records, in 3-byte characters.
    const large = await source.api(`/instances/${records[0]!.orthancId}/metadata/Note`, {method: 'PUT', body: '漢'.repeat(60_000)})
    await large.arrayBuffer()
    expected = await metadataOf(source)
    expect(Object.keys(expected)).toHaveLength(2 + 2 + 4 + records.length)
  }, 120_000)

  afterAll(async () => {
    await source?.dispose()
    await rm(work, {recursive: true, force: true})
  })

  it('export into several volumes, then import: every value arrives as it was', async () => {
    const target = await startOrthanc({...CONFIG, name: 'unicode-import-target'})
    try {
      const output = join(work, 'export')
      const exported = await runCli(['export', '--source', source.url, '--output', output, '--max-volume-instances', '3', '--json'])
      expect(exported.code, exported.stdout).toBe(0)
      expect(parseJson<{volumes: number}>(exported).volumes).toBeGreaterThan(1)
      expect((await runCli(['verify', output])).code).toBe(0)
      const imported = await runCli(['import', '--target', target.url, '--no-receipt', '--json', output])
      expect(imported.code, imported.stdout).toBe(0)
      expect(parseJson<{transferred: number; failed: number}>(imported)).toMatchObject({transferred: records.length, failed: 0})
      expect(await metadataOf(target)).toEqual(expected)
    } finally {
      await target.dispose()
    }
  })

  it('sync: every value arrives as it was, and diff --side-data finds nothing', async () => {
    const target = await startOrthanc({...CONFIG, name: 'unicode-sync-target'})
    try {
      const synced = await runCli(['sync', '--source', source.url, '--target', target.url, '--json'])
      expect(synced.code, synced.stdout).toBe(0)
      expect(await metadataOf(target)).toEqual(expected)
      const compared = await runCli(['diff', '--source', source.url, '--target', target.url, '--side-data', '--json'])
      expect(compared.code, compared.stdout).toBe(0)
    } finally {
      await target.dispose()
    }
  })
})
