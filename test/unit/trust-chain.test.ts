import {mkdtemp, readdir, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {Readable} from 'node:stream'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {BAG_INFO_FILE, CONTENTS_FILE, MANIFEST_FILE, PAYLOAD_MANIFEST_FILE, TAG_MANIFEST_FILE} from '../../src/archive/format.js'
import type {InstanceInTransit} from '../../src/model.js'
import type {Problem} from '../../src/problems.js'
import {archiveFile, archiveStream, type ArchiveReadReport, readArchives} from '../../src/sources/archive-source.js'
import {ALL_LAYERS, editJson, packTar, reseal, type TarFile, testInstance, unpackTar, writeTestVolume} from '../helpers/volumes.js'

interface Read {
  units: InstanceInTransit[]
  problems: Problem[]
  report: ArchiveReadReport
}

let dir: string
let spoolDir: string
let counter = 0

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'trust-chain-'))
  spoolDir = await mkdtemp(join(tmpdir(), 'trust-chain-spool-'))
})
afterAll(async () => {
  await rm(dir, {recursive: true, force: true})
  await rm(spoolDir, {recursive: true, force: true})
})

/** Reads archive bytes as import does: from a volume file, or from a stream like stdin. */
async function read(bytes: Buffer | Buffer[], how: 'file' | 'stream', name?: string): Promise<Read> {
  const volumes = Array.isArray(bytes) ? bytes : [bytes]
  const inputs = await Promise.all(volumes.map(async (volume, index) => {
    if (how === 'stream') return archiveStream('stdin', Readable.from([volume]))
    const path = join(dir, `${counter++}`, `${name ?? `test-${String(index + 1).padStart(4, '0')}-of-${String(volumes.length).padStart(4, '0')}`}.tar`)
    await import('node:fs/promises').then(({mkdir}) => mkdir(join(path, '..'), {recursive: true}))
    await writeFile(path, volume)
    return archiveFile(path)
  }))
  const result: Read = {units: [], problems: [], report: {bags: [], missingVolumes: []}}
  for await (const unit of readArchives(inputs, {onSkip() {}, onProblem: (problem) => result.problems.push(problem)}, result.report, {spoolDir})) result.units.push(unit)
  return result
}

const a = testInstance('a', 700, [Buffer.from('%PDF-1.4 report of a\n')])
const b = testInstance('b', 1300)
const c = testInstance('c', 900)

async function volume(): Promise<{bytes: Buffer; bag: string; files: TarFile[]}> {
  const {bytes, bag} = await writeTestVolume({instances: [a, b, c]})
  return {bytes, bag, files: await unpackTar(bytes)}
}

const kinds = (result: Read) => [...new Set(result.problems.map((problem) => problem.kind))].sort()

describe.each(['file', 'stream'] as const)('the trust chain, read as a %s', (how) => {
  it('an intact volume: every instance with its attachments, no problem, proven and complete', async () => {
    const {bytes} = await volume()
    const result = await read(bytes, how)
    expect(result.problems).toEqual([])
    expect(result.units.map((unit) => unit.instanceId)).toEqual([a.record.id, b.record.id, c.record.id])
    expect(result.units[0]!.attachments!.get(1030)!.equals(a.attachments[0]!)).toBe(true)
    expect(result.units[1]!.dicom.equals(b.dicom)).toBe(true)
    expect(result.report.bags).toMatchObject([{proven: true, complete: true, entriesAccepted: 4, instancesPlanned: 3}])
  })

  it('a flipped payload byte: that instance is refused by name, the others still come', async () => {
    const {files, bag} = await volume()
    const victim = files.find((file) => file.name === `${bag}/${b.record.path}`)!
    victim.data[600] = victim.data[600]! ^ 0xff
    const result = await read(await packTar(files), how)
    expect(result.units.map((unit) => unit.instanceId)).toEqual([a.record.id, c.record.id])
    expect(result.problems).toEqual([expect.objectContaining({id: `${bag}/${b.record.path}`, kind: 'checksum'})])
  })

  it('altered DICOM with contents, manifests and bag-info recomputed but a stale tag manifest: nothing at all is used', async () => {
    const {files, bag} = await volume()
    const victim = files.find((file) => file.name === `${bag}/${b.record.path}`)!
    victim.data[600] = victim.data[600]! ^ 0xff
    reseal(files, bag, ['contents', 'manifest', 'payload-manifest', 'bag-info'])
    const result = await read(await packTar(files), how)
    expect(result.units).toEqual([])
    expect(result.report.bags).toMatchObject([{proven: false, instancesPlanned: 3}])
    expect(result.problems.some((problem) => problem.kind === 'checksum' && problem.id.endsWith(CONTENTS_FILE))).toBe(true)
  })

  it('only contents.json edited to match altered DICOM: nothing is used', async () => {
    const {files, bag} = await volume()
    const victim = files.find((file) => file.name === `${bag}/${b.record.path}`)!
    victim.data[600] = victim.data[600]! ^ 0xff
    reseal(files, bag, ['contents'])
    const result = await read(await packTar(files), how)
    expect(result.units).toEqual([])
    expect(kinds(result)).toContain('checksum')
  })

  it('an emptied tag manifest is damage: nothing is used', async () => {
    const {files, bag} = await volume()
    files.find((file) => file.name === `${bag}/${TAG_MANIFEST_FILE}`)!.data = Buffer.alloc(0)
    const result = await read(await packTar(files), how)
    expect(result.units).toEqual([])
    expect(result.problems).toEqual([expect.objectContaining({id: `${bag}/${TAG_MANIFEST_FILE}`, kind: 'damaged', reason: 'is empty'})])
  })

  it('a tag manifest cut short: what it no longer lists is damage, nothing is used', async () => {
    const {files, bag} = await volume()
    const tagManifest = files.find((file) => file.name === `${bag}/${TAG_MANIFEST_FILE}`)!
    tagManifest.data = Buffer.from(tagManifest.data.toString().split('\n').slice(0, 2).join('\n'))
    const result = await read(await packTar(files), how)
    expect(result.units).toEqual([])
    expect(kinds(result)).toEqual(['unlisted'])
  })

  it('a volume cut before its tag manifest: nothing is used, and it says so', async () => {
    const {files} = await volume()
    const result = await read(await packTar(files.slice(0, -1)), how)
    expect(result.units).toEqual([])
    expect(result.problems).toEqual([expect.objectContaining({kind: 'missing', reason: expect.stringMatching(/cut short/)})])
    expect(result.report.bags[0]).toMatchObject({proven: false, instancesPlanned: 3})
  })

  it('manifest.json that contradicts contents.json, sealed consistently: refused as a contradiction', async () => {
    const {files, bag} = await volume()
    editJson(files, `${bag}/${MANIFEST_FILE}`, (manifest) => {
      manifest.changeCursor = 7
    })
    reseal(files, bag, ['tag-manifest'])
    const result = await read(await packTar(files), how)
    expect(result.units).toEqual([])
    expect(result.problems).toEqual([expect.objectContaining({kind: 'contradiction', reason: expect.stringMatching(/changeCursor differs/)})])
  })

  it('an instance dropped from manifest.json, everything resealed: planned but neither written nor failed', async () => {
    const {files, bag} = await volume()
    editJson(files, `${bag}/${MANIFEST_FILE}`, (manifest) => {
      (manifest.instances as unknown[]).pop()
    })
    reseal(files, bag, ALL_LAYERS)
    const result = await read(await packTar(files), how)
    expect(result.units).toEqual([])
    expect(result.problems.map((problem) => problem.reason)).toEqual(expect.arrayContaining([expect.stringMatching(/neither written nor failed/)]))
  })

  it('bag-info that does not match the manifests is a contradiction', async () => {
    const {files, bag} = await volume()
    const info = files.find((file) => file.name === `${bag}/${BAG_INFO_FILE}`)!
    info.data = Buffer.from(info.data.toString().replace(/Payload-Oxum: \d+/, 'Payload-Oxum: 12'))
    reseal(files, bag, ['tag-manifest'])
    const result = await read(await packTar(files), how)
    expect(result.units).toEqual([])
    expect(result.problems).toEqual([expect.objectContaining({id: `${bag}/${BAG_INFO_FILE}`, kind: 'contradiction'})])
  })

  it.each([
    ['a size given as a string', (contents: Record<string, unknown>) => {
      (contents.instances as Array<Record<string, unknown>>)[0]!.size = '3590'
    }, /size is the string "3590", expected a whole number/],
    ['labels that are not a list', (contents: Record<string, unknown>) => {
      (contents.instances as Array<Record<string, unknown>>)[0]!.labels = 'urgent'
    }, /labels is the string "urgent", expected an array/],
    ['a content type of Orthanc\'s own (1)', (contents: Record<string, unknown>) => {
      ((contents.instances as Array<Record<string, unknown>>)[0]!.attachments as Array<Record<string, unknown>>)[0]!.contentType = 1
    }, /contentType is 1, expected a whole number from 1024 to 65535/],
    ['a volume count of a billion', (contents: Record<string, unknown>) => {
      contents.volumeCount = 1e9
    }, /volumeCount is 1000000000, expected a whole number from 1 to 999999/],
    ['a field nobody writes', (contents: Record<string, unknown>) => {
      contents.comment = 'hello'
    }, /field comment is not part of this format/],
    ['a field whose name holds terminal escapes and runs on', (contents: Record<string, unknown>) => {
      contents[`\u001b[2J${'x'.repeat(5000)}`] = 1
      // eslint-disable-next-line no-control-regex -- no escape character may reach the message
    }, /^[^\u001b]*field "\\u001b\[2Jx{36}\.\.\." is not part of this format[^\u001b]{0,300}$/],
    ['an instance ID that is a path', (contents: Record<string, unknown>) => {
      (contents.instances as Array<Record<string, unknown>>)[0]!.id = '../../system'
    }, /instances\[0\]\.id is the string "..\/..\/system", expected an Orthanc ID/],
  ])('%s in contents.json, with every checksum recomputed: one sentence naming the file and the field, nothing used', async (_what, edit, reason) => {
    const {files, bag} = await volume()
    editJson(files, `${bag}/${CONTENTS_FILE}`, edit)
    editJson(files, `${bag}/${MANIFEST_FILE}`, edit)
    reseal(files, bag, ['tag-manifest'])
    const result = await read(await packTar(files), how)
    expect(result.units).toEqual([])
    const named = result.problems.find((problem) => problem.id === `${bag}/${CONTENTS_FILE}`)
    expect(named).toMatchObject({kind: 'damaged', reason: expect.stringMatching(reason)})
  })

  it('a newer format version is refused as such, not as damage', async () => {
    const {files, bag} = await volume()
    for (const name of [CONTENTS_FILE, MANIFEST_FILE]) {
      editJson(files, `${bag}/${name}`, (value) => {
        value.formatVersion = 99
      })
    }
    reseal(files, bag, ['tag-manifest'])
    const result = await read(await packTar(files), how)
    expect(result.units).toEqual([])
    expect(kinds(result)).toEqual(['unsupported'])
    expect(result.problems[0]!.reason).toMatch(/version 99 is newer than this program reads .* upgrade orthanc-replicate/)
  })

  // Format 5: what a filtered incremental export left out of a study as the far side's.
  it('farSideInstances: taken in format 5 when the counts agree; a contradiction when they cannot; unknown to format 4', async () => {
    const withFarSide = async (version: number, farSide: number, onSource: number) => {
      const {files, bag} = await volume()
      for (const name of [CONTENTS_FILE, MANIFEST_FILE]) {
        editJson(files, `${bag}/${name}`, (value) => {
          value.formatVersion = version
          for (const study of Object.values(value.studies as Record<string, Record<string, unknown>>)) Object.assign(study, {farSideInstances: farSide, instancesOnSource: onSource})
        })
      }
      reseal(files, bag, ['tag-manifest'])
      return read(await packTar(files), how)
    }
    const taken = await withFarSide(5, 2, 100)
    expect(taken.problems).toEqual([])
    expect(taken.units.length).toBeGreaterThan(0)
    const contradicted = await withFarSide(5, 2, 1)
    expect(contradicted.units).toEqual([])
    expect(contradicted.problems).toContainEqual(expect.objectContaining({kind: 'contradiction', reason: expect.stringMatching(/left out as the far side's, more than the 1 on the source/)}))
    const older = await withFarSide(4, 2, 100)
    expect(older.units).toEqual([])
    expect(kinds(older)).toContain('damaged')
  })

  it('an instance the export failed is named by its ID as not in the archive; one that vanished from the volume, by its entry', async () => {
    const {bytes, bag} = await writeTestVolume({instances: [a, b], failed: [c]})
    const intact = await read(bytes, how)
    const failedByExport = expect.objectContaining({id: c.record.id, kind: 'missing', reason: expect.stringMatching(/not in the archive: its export failed it/)})
    expect(intact.problems).toEqual([failedByExport])
    expect(intact.units.map((unit) => unit.instanceId)).toEqual([a.record.id, b.record.id])
    expect(intact.report.bags[0]).toMatchObject({proven: true, complete: false})

    const files = (await unpackTar(bytes)).filter((file) => file.name !== `${bag}/${b.record.path}`)
    const cut = await read(await packTar(files), how)
    expect(cut.units.map((unit) => unit.instanceId)).toEqual([a.record.id])
    expect(cut.problems).toEqual([expect.objectContaining({id: `${bag}/${b.record.path}`, kind: 'missing'}), failedByExport])
    expect(cut.report.bags[0]).toMatchObject({proven: true, complete: false})
  })

  it('a payload entry given twice: the second is refused as a duplicate', async () => {
    const {files, bag} = await volume()
    const copy = files.find((file) => file.name === `${bag}/${b.record.path}`)!
    files.splice(files.indexOf(copy) + 1, 0, {...copy, data: Buffer.from(copy.data)})
    const result = await read(await packTar(files), how)
    expect(result.units.map((unit) => unit.instanceId)).toEqual([a.record.id, b.record.id, c.record.id])
    expect(result.problems).toEqual([expect.objectContaining({id: `${bag}/${b.record.path}`, kind: 'duplicate'})])
  })

  it('two payload files swapped under each other\'s names: both refused', async () => {
    const {files, bag} = await volume()
    const first = files.find((file) => file.name === `${bag}/${b.record.path}`)!
    const second = files.find((file) => file.name === `${bag}/${c.record.path}`)!
    ;[first.data, second.data] = [second.data, first.data]
    const result = await read(await packTar(files), how)
    expect(result.units.map((unit) => unit.instanceId)).toEqual([a.record.id])
    expect(result.problems.map((problem) => problem.kind)).toEqual(['checksum', 'checksum'])
  })

  it('empty input is not an archive', async () => {
    const result = await read(Buffer.alloc(0), how)
    expect(result.units).toEqual([])
    expect(kinds(result)).toEqual(['not-archive'])
  })
})

describe('across volumes', () => {
  it('a missing volume is named; a count of a million missing ones is one line, not a million', async () => {
    const {bytes} = await writeTestVolume({instances: [a], volume: 1, volumeCount: 3})
    const result = await read([bytes], 'file', 'test-0001-of-0003')
    expect(result.units).toHaveLength(1)
    expect(result.report.missingVolumes).toEqual([{group: expect.any(String), from: 2, to: 3, volumeCount: 3}])
    expect(result.problems).toEqual([expect.objectContaining({id: 'volumes 2 to 3 of 3', kind: 'missing'})])
  })

  it('a stream of two bags: each is proven on its own, and a broken one costs only itself', async () => {
    const first = await writeTestVolume({instances: [a, b], volume: 1, volumeCount: 2})
    const second = await writeTestVolume({instances: [c], volume: 2, volumeCount: 2})
    const secondFiles = await unpackTar(second.bytes)
    const victim = secondFiles.find((file) => file.name.endsWith(c.record.path))!
    victim.data[10] = victim.data[10]! ^ 1
    reseal(secondFiles, second.bag, ['contents', 'manifest', 'payload-manifest'])
    // One tar stream, as export --output - writes it: the bags follow one another.
    const stream = await packTar([...await unpackTar(first.bytes), ...secondFiles])
    const result = await read(stream, 'stream')
    expect(result.units.map((unit) => unit.instanceId)).toEqual([a.record.id, b.record.id])
    expect(result.report.bags.map((bag) => bag.proven)).toEqual([true, false])
  })

  it('the spool is private while it lasts and gone afterwards', async () => {
    const {bytes} = await volume()
    const result = await read(bytes, 'stream')
    expect(result.units).toHaveLength(3)
    expect(await readdir(spoolDir)).toEqual([])
  })

  it('a second bag inside one volume file is not read', async () => {
    const {bytes} = await volume()
    const other = await writeTestVolume({instances: [c], prefix: 'intruder'})
    const files = [...await unpackTar(bytes), ...await unpackTar(other.bytes)]
    const result = await read(await packTar(files), 'file', 'test-0001-of-0001')
    expect(result.units.map((unit) => unit.instanceId)).toEqual([a.record.id, b.record.id, c.record.id])
    expect(result.problems).toEqual([expect.objectContaining({id: 'intruder-0001-of-0001', kind: 'unlisted'})])
  })
})

describe('names in problems', () => {
  it('say which file a payload entry came from', async () => {
    const {files, bag} = await volume()
    const victim = files.find((file) => file.name === `${bag}/${a.record.path}`)!
    victim.data[200] = victim.data[200]! ^ 1
    const result = await read(await packTar(files), 'file')
    expect(result.problems[0]).toMatchObject({id: `${bag}/${a.record.path}`, path: expect.stringMatching(/\.tar$/)})
    expect(PAYLOAD_MANIFEST_FILE).toBe('manifest-sha256.txt')
  })
})
