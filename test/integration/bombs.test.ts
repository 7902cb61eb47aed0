/**
 * Hostile inputs run through the real CLI against a real Orthanc: each bomb is named, and each
 * run's peak RSS and wall time are measured and printed. The CI slice keeps every bomb to a few
 * seconds; `BOMBS=long` runs the big variants (1M tar entries, 3 GiB deflate bombs, a real 6 GiB
 * entry, a 1 GiB pax header): `BOMBS=long npx vitest run test/integration/bombs.test.ts`.
 */
import {createReadStream} from 'node:fs'
import {appendFile, copyFile, mkdir, mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {deflateSync} from 'node:zlib'

import {afterAll, beforeAll, beforeEach, describe, expect, it} from 'vitest'

import {type FixtureRecord, generateStudySet} from '../../fixtures/generate.js'
import {parseJson, runCli} from '../helpers/cli.js'
import {volumeFiles} from '../helpers/corpus.js'
import {
  deeplyNestedDicom, hugePaxHeader, insertAfterFirstPayload, manyEmptyEntries, oversizedClaim, padToBlock, RSS_CEILING_MIB, tarHeader, tarLayout,
  writeDeflatedBomb, writeSparse,
} from '../helpers/bombs.js'
import {type MeasuredRun, runCliMeasured} from '../helpers/measure.js'
import {type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'

const LONG = process.env.BOMBS === 'long'

interface ImportJson {
  transferred: number
  skipped: number
  failed: number
  problems: Array<{id: string; path?: string; kind: string; reason: string}>
  volumes: {read: number; complete: number; incomplete: string[]}
}

const measured: string[] = []

function record(bomb: string, run: MeasuredRun): void {
  const line = `${bomb}: exit ${run.code}, peak RSS ${run.peakRssMiB} MiB (VmHWM at exit ${run.exitRssMiB ?? '-'}, polled ${run.polledRssMiB}), ${(run.wallMs / 1000).toFixed(1)} s`
  measured.push(line)
  console.log(`[bomb] ${line}`)
}

function summaryOf(run: MeasuredRun): ImportJson {
  try {
    return parseJson<ImportJson>(run)
  } catch {
    throw new Error(`no JSON summary (exit ${run.code}); stderr:\n${run.stderr.slice(0, 2000)}`)
  }
}

describe('bombs and damaged archives through the CLI', () => {
  let work: string
  let server: OrthancServer
  let corpus: FixtureRecord[]
  let volume: string
  let bag: string

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'bombs-test-'))
    corpus = await generateStudySet(join(work, 'fixtures'), {patients: 2, studiesPerPatient: 1, seriesPerStudy: 2, instancesPerSeries: 3, pixelBytes: 3000, seed: 'bombs'})
    // One server: it is the export's source first, then emptied and used as every run's target.
    server = await startOrthanc({name: 'bomb-target'})
    await uploadFiles(server, corpus.map((fixture) => fixture.path))
    const exported = await runCli(['export', '--source', server.url, '--output', join(work, 'volumes'), '--json'])
    expect(exported.code, exported.stderr).toBe(0)
    const volumes = await volumeFiles(join(work, 'volumes'))
    expect(volumes).toHaveLength(1)
    volume = volumes[0]!
    bag = volume.split('/').at(-1)!.replace(/\.tar$/, '')
  }, 120_000)

  afterAll(async () => {
    await server?.dispose()
    await rm(work, {recursive: true, force: true})
    if (measured.length > 0) console.log(`[bomb] summary (ceiling ${RSS_CEILING_MIB} MiB):\n${measured.map((line) => `  ${line}`).join('\n')}`)
  })

  beforeEach(async () => {
    for (const id of await server.json<string[]>('/instances')) await server.api(`/instances/${id}`, {method: 'DELETE'})
  })

  const importMeasured = (...inputs: string[]) => runCliMeasured(['import', '--target', server.url, '--json', '--no-receipt', ...inputs])
  const importMeasuredFromStdin = (file: string) => runCliMeasured(['import', '--target', server.url, '--json', '--no-receipt', '-'], {stdin: createReadStream(file)})
  const onTarget = async () => new Set(await server.json<string[]>('/instances'))
  const everyGenuineInstanceArrived = async () => expect(await onTarget()).toEqual(new Set(corpus.map((fixture) => fixture.orthancId)))

  describe(`bombs: peak RSS under ${RSS_CEILING_MIB} MiB`, () => {
    it.each<[number, string]>(LONG ? [[1024, '1 MB'], [3 * 1024, '3 MB']] : [[1024, '1 MB']])(
      'deflated-DICOM bomb inflating to %i MiB (a %s file) in a folder: refused as hostile, the rest imported',
      async (inflatedMiB) => {
        const folder = join(work, `deflate-bomb-${inflatedMiB}`)
        await mkdir(folder, {recursive: true})
        for (const fixture of corpus) await copyFile(fixture.path, join(folder, fixture.path.split('/').at(-1)!.replace('.dcm', `-${fixture.orthancId.slice(0, 8)}.dcm`)))
        const bomb = join(folder, 'bomb.dcm')
        await writeDeflatedBomb(bomb, `deflate-${inflatedMiB}`, inflatedMiB * 1024 * 1024)
        const run = await importMeasured(folder)
        record(`deflated DICOM inflating to ${inflatedMiB} MiB`, run)
        expect(run.code, run.stderr).toBe(11)
        const summary = summaryOf(run)
        expect(summary.problems).toEqual([expect.objectContaining({id: bomb, kind: 'hostile', reason: expect.stringMatching(/inflates to more than/)})])
        expect(summary.transferred).toBe(corpus.length)
        await everyGenuineInstanceArrived()
        expect(run.peakRssMiB).toBeLessThan(RSS_CEILING_MIB)
      },
      120_000,
    )

    const entryCount = LONG ? 1_000_000 : 200_000
    it(`a tar of ${entryCount} empty entries outside any bag: the reader's memory and time do not grow with them`, async () => {
      const bombed = join(work, 'many-entries.tar')
      await insertAfterFirstPayload(volume, bombed, manyEmptyEntries(undefined, entryCount))
      // The human summary: it lists a bounded sample of the problems (--json lists every one, see below).
      const run = await runCliMeasured(['import', '--target', server.url, '--no-receipt', bombed])
      record(`tar with ${entryCount} empty entries outside any bag`, run)
      expect(run.code, run.stderr).toBe(11)
      expect(run.stdout).toContain('the entry is not inside a bag directory')
      await everyGenuineInstanceArrived()
      expect(run.peakRssMiB).toBeLessThan(RSS_CEILING_MIB)
      expect(run.wallMs).toBeLessThan(LONG ? 120_000 : 30_000)
      await rm(bombed)
    }, 600_000)

    it(`a tar of ${entryCount} empty entries in the bag's data/, --json: each refused as unlisted, the genuine entries imported`, async () => {
      const bombed = join(work, 'many-entries-in-bag.tar')
      await insertAfterFirstPayload(volume, bombed, manyEmptyEntries(bag, entryCount))
      const run = await importMeasured(bombed)
      record(`tar with ${entryCount} empty entries in the bag, --json`, run)
      expect(run.code, run.stderr).toBe(11)
      const summary = summaryOf(run)
      expect(summary.transferred).toBe(corpus.length)
      expect(summary.problems.every((problem) => problem.kind === 'unlisted')).toBe(true)
      await everyGenuineInstanceArrived()
      expect(run.peakRssMiB).toBeLessThan(RSS_CEILING_MIB)
      expect(run.wallMs).toBeLessThan(LONG ? 300_000 : 60_000)
      await rm(bombed)
    }, 600_000)

    it('a header claiming 6 GiB followed by 10 bytes: nothing allocated from the claim, the cut named with the real end of the file', async () => {
      const bombed = join(work, 'claims-6gib.tar')
      const name = `${bag}/data/dicom/bomb/claims-6gib.dcm`
      const {insertedAt} = await insertAfterFirstPayload(volume, bombed, oversizedClaim(name, 6 * 1024 ** 3, 10))
      const run = await importMeasured(bombed)
      record('header claiming 6 GiB, 10 bytes of data', run)
      expect(run.code, run.stderr).toBe(11)
      const summary = summaryOf(run)
      const size = (await readFile(bombed)).length
      expect(summary.problems).toEqual(expect.arrayContaining([
        expect.objectContaining({id: name, kind: 'truncated', reason: `the archive ends at byte ${size}, inside "${name}" (header at byte ${insertedAt}, ${6 * 1024 ** 3} bytes of data from byte ${insertedAt + 512}): the entry is lost`}),
      ]))
      // The claim swallows the rest of the volume, its tag files with it: the volume cannot be proven, and nothing of it is used.
      expect(await onTarget()).toEqual(new Set())
      expect(run.peakRssMiB).toBeLessThan(RSS_CEILING_MIB)
    })

    it(`a pax header of ${LONG ? '1 GiB' : '64 MiB'}: skipped unread, the entry it describes refused, every other entry imported`, async () => {
      const bytes = LONG ? 1024 ** 3 : 64 * 1024 ** 2
      const bombed = join(work, 'huge-pax.tar')
      await insertAfterFirstPayload(volume, bombed, hugePaxHeader(`${bag}/data/dicom/bomb/after-pax.dcm`, bytes))
      const run = await importMeasured(bombed)
      record(`pax header of ${bytes} bytes`, run)
      expect(run.code, run.stderr).toBe(11)
      const summary = summaryOf(run)
      expect(summary.problems).toEqual(expect.arrayContaining([
        expect.objectContaining({kind: 'damaged', reason: expect.stringMatching(new RegExp(`extended header of ${bytes} bytes .*over the limit`))}),
        expect.objectContaining({id: `${bag}/data/dicom/bomb/after-pax.dcm`, kind: 'damaged'}),
      ]))
      expect(summary.transferred).toBe(corpus.length)
      expect(summary.volumes.incomplete).toEqual([])
      await everyGenuineInstanceArrived()
      expect(run.peakRssMiB).toBeLessThan(RSS_CEILING_MIB)
      await rm(bombed)
    }, 300_000)

    it('a small compressed storage file announcing 2 GiB, in a storage folder: refused as hostile before anything is inflated', async () => {
      const storage = join(work, 'storage-bomb')
      // A storage folder's layout (aa/bb/uuid), as Orthanc writes it with StorageCompression.
      const uuid = '0f0f0f0f-1111-2222-3333-444455556666'
      await mkdir(join(storage, '0f', '0f'), {recursive: true})
      // 64 MiB of zeros compress to some 64 KiB; the announced size is what a bomb would claim.
      const compressed = deflateSync(Buffer.alloc(64 * 1024 * 1024), {level: 9})
      const prefix = Buffer.alloc(8)
      prefix.writeBigUInt64LE(2n * 1024n ** 3n)
      await writeFile(join(storage, '0f', '0f', uuid), Buffer.concat([prefix, compressed]))
      const run = await runCliMeasured(['import', '--target', server.url, '--json', '--no-receipt', '--storage-folder', '--ignore-index', storage])
      record('compressed storage file announcing 2 GiB', run)
      expect(run.code, run.stderr).toBe(11)
      expect(summaryOf(run).problems).toEqual([expect.objectContaining({kind: 'hostile', reason: expect.stringMatching(/announces 2147483648 bytes once inflated, more than/)})])
      expect(run.peakRssMiB).toBeLessThan(RSS_CEILING_MIB)
    })

    it.each([['of undefined length', true], ['of defined length (the reader skips them; the upload guard walks them)', false]] as const)('DICOM sequences nested 5,000 deep in a folder, %s: refused by name as hostile, nothing sent for it, the rest imported', async (_what, undefinedLength) => {
      const folder = join(work, `deep-nesting-${undefinedLength}`)
      await mkdir(folder, {recursive: true})
      for (const fixture of corpus) await copyFile(fixture.path, join(folder, `${fixture.orthancId}.dcm`))
      const deep = join(folder, 'deep.dcm')
      await writeFile(deep, deeplyNestedDicom(`deep-5000-${undefinedLength}`, 5000, undefinedLength))
      const run = await importMeasured(folder)
      record(`DICOM sequences nested 5,000 deep (${undefinedLength ? 'undefined' : 'defined'} lengths)`, run)
      expect(run.code, run.stderr).toBe(11)
      const summary = summaryOf(run) as ImportJson & {failures: Array<{id: string; path?: string; kind: string; reason: string}>}
      const refusals = [...summary.problems, ...summary.failures]
      expect(refusals).toEqual([expect.objectContaining({kind: 'hostile', reason: expect.stringMatching(/nested more than \d+ deep/)})])
      expect(JSON.stringify(refusals[0])).toContain(deep)
      expect(summary.transferred).toBe(corpus.length)
      await everyGenuineInstanceArrived()
      // The server is alive: nothing crashed it.
      expect((await server.api('/system')).status).toBe(200)
      expect(run.stderr).not.toMatch(/\n\s+at /)
      expect(run.peakRssMiB).toBeLessThan(RSS_CEILING_MIB)
    })
  })

  describe('damaged and hostile archives', () => {
    it.each(['a volume file', 'stdin'])('one flipped byte in a tar header costs only that entry: the rest of the volume is imported, the damage named with its offsets (%s)', async (from) => {
      const damaged = join(work, 'flipped-header.tar')
      await copyFile(volume, damaged)
      const payload = (await tarLayout(damaged)).filter((entry) => entry.name.includes('/data/'))
      const victim = payload[2]!
      const bytes = await readFile(damaged)
      bytes[victim.headerOffset + 20] = bytes[victim.headerOffset + 20]! ^ 0x01
      await writeFile(damaged, bytes)
      const run = from === 'stdin' ? await importMeasuredFromStdin(damaged) : await importMeasured(damaged)
      record(`one flipped header byte, from ${from}`, run)
      expect(run.code, run.stderr).toBe(11)
      const summary = summaryOf(run)
      const damage = summary.problems.find((problem) => problem.kind === 'damaged')
      expect(damage?.reason).toContain(`byte ${victim.headerOffset}`)
      expect(damage?.reason).toContain(`byte ${victim.end}`)
      expect(damage?.reason).toContain(payload[1]!.name)
      const victimId = victim.name.split('/').at(-1)!.replace('.dcm', '')
      expect(await onTarget()).toEqual(new Set(corpus.map((fixture) => fixture.orthancId).filter((id) => id !== victimId)))
      expect(summary.problems.some((problem) => problem.kind === 'missing' && problem.id.includes(victimId))).toBe(true)
    })

    it.each(['a volume file', 'stdin'])('a second bag hidden after the end-of-archive marker is reported and not read (%s)', async (from) => {
      const slug = from === 'stdin' ? 'stdin' : 'file'
      const other = await generateStudySet(join(work, `hidden-${slug}`), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 1, pixelBytes: 1000, seed: 'hidden-bag'})
      const hiddenSource = await startOrthanc({name: 'hidden-source'})
      try {
        await uploadFiles(hiddenSource, other.map((fixture) => fixture.path))
        const hiddenDir = join(work, `hidden-volumes-${slug}`)
        expect((await runCli(['export', '--source', hiddenSource.url, '--output', hiddenDir, '--name-prefix', 'hidden'])).code).toBe(0)
        const [hiddenVolume] = await volumeFiles(hiddenDir)
        const smuggled = join(work, `smuggled-${slug}.tar`)
        await copyFile(volume, smuggled)
        const honestSize = (await readFile(volume)).length
        await appendFile(smuggled, await readFile(hiddenVolume!))
        const run = from === 'stdin' ? await importMeasuredFromStdin(smuggled) : await importMeasured(smuggled)
        expect(run.code, run.stderr).toBe(11)
        const summary = summaryOf(run)
        expect(summary.problems).toEqual([expect.objectContaining({kind: 'damaged', reason: expect.stringMatching(new RegExp(`after the end-of-archive marker.*byte ${honestSize}`))})])
        expect(await onTarget()).not.toContain(other[0]!.orthancId)
        await everyGenuineInstanceArrived()
      } finally {
        await hiddenSource.dispose()
      }
    })

    it('a directory entry that carries data is refused as hostile, and the rest is imported', async () => {
      const bombed = join(work, 'directory-with-data.tar')
      const name = `${bag}/data/dicom/folder/`
      await insertAfterFirstPayload(volume, bombed, async (write) => {
        await write(tarHeader(name, 700, '5'))
        await write(padToBlock(Buffer.alloc(700, 0x42)))
      })
      const run = await importMeasured(bombed)
      expect(run.code, run.stderr).toBe(11)
      const summary = summaryOf(run)
      expect(summary.problems).toEqual([expect.objectContaining({id: name, kind: 'hostile', reason: expect.stringMatching(/directory entry that carries 700 bytes/)})])
      await everyGenuineInstanceArrived()
    })

    it('a size field between 4 and 8 GiB parses: the 5 GiB entry is refused unread and the entries after it are imported', async () => {
      const layout = await tarLayout(volume)
      const first = layout.find((entry) => entry.name.includes('/data/'))!
      const bytes = await readFile(volume)
      const size = 5 * 1024 ** 3
      const name = `${bag}/data/dicom/bomb/five-gib.dcm`
      const sparse = join(work, 'five-gib.tar')
      // A real 5 GiB entry (a hole in a sparse file), between the first payload entry and the rest.
      await writeSparse(sparse, first.end + 512 + size + (bytes.length - first.end), [
        {offset: 0, bytes: bytes.subarray(0, first.end)},
        {offset: first.end, bytes: tarHeader(name, size)},
        {offset: first.end + 512 + size, bytes: bytes.subarray(first.end)},
      ])
      // From a file the 5 GiB are skipped by seeking; through stdin (BOMBS=long) they are read and dropped as they come.
      for (const from of LONG ? ['a volume file', 'stdin'] : ['a volume file']) {
        for (const id of await server.json<string[]>('/instances')) await server.api(`/instances/${id}`, {method: 'DELETE'})
        const run = from === 'stdin' ? await importMeasuredFromStdin(sparse) : await importMeasured(sparse)
        record(`a real 5 GiB entry (size field between 4 and 8 GiB), from ${from}`, run)
        expect(run.code, run.stderr).toBe(11)
        const summary = summaryOf(run)
        expect(summary.problems).toEqual([expect.objectContaining({id: name, kind: 'hostile', reason: expect.stringMatching(/size 5368709120 is over the limit/)})])
        await everyGenuineInstanceArrived()
        expect(run.peakRssMiB).toBeLessThan(RSS_CEILING_MIB)
      }

      await rm(sparse)
    }, 300_000)
  })
})
