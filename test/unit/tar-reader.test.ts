/**
 * The tar reader against damaged and hostile archives: what a flipped byte, a cut, a lie in a
 * header or data hidden after the end costs, and that it never costs more.
 */
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {Readable} from 'node:stream'
import {setFlagsFromString} from 'node:v8'
import {runInNewContext} from 'node:vm'

import tar from 'tar-stream'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {type ArchiveEntry, type ArchiveProblem, readArchiveEntries} from '../../src/archive/archive-stream.js'
import {DEFAULT_ENTRY_LIMITS, type EntryLimits} from '../../src/archive/entry-rules.js'
import {indexTarFile} from '../../src/archive/tar-index.js'
import {padToBlock, paxRecords, tarHeader, withChecksum} from '../helpers/bombs.js'

const limits: EntryLimits = {maxEntryBytes: 1024 ** 2, maxTagFileBytes: 1024 ** 2}

async function packTar(entries: Array<{name: string; data: Buffer}>): Promise<Buffer> {
  const pack = tar.pack()
  for (const {name, data} of entries) pack.entry({name, mtime: new Date(0)}, data)
  pack.finalize()
  const chunks: Buffer[] = []
  for await (const chunk of pack) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

function pattern(length: number, seed: number): Buffer {
  const bytes = Buffer.alloc(length)
  for (let index = 0; index < length; index++) bytes[index] = (index * 31 + seed * 17 + (index >> 8)) & 0xff
  return bytes
}

interface Read {
  entries: ArchiveEntry[]
  problems: ArchiveProblem[]
}

async function read(input: Buffer | string, entryLimits: EntryLimits = limits, chunk = 700): Promise<Read> {
  const result: Read = {entries: [], problems: []}
  const source = typeof input === 'string' ? input : Readable.from(Array.from({length: Math.ceil(input.length / chunk)}, (_, index) => input.subarray(index * chunk, (index + 1) * chunk)))
  for await (const entry of readArchiveEntries(source, entryLimits, (problem) => result.problems.push(problem))) result.entries.push(entry)
  return result
}

const names = (result: Read) => result.entries.map((entry) => entry.name)

// Six entries of assorted sizes, one with a name long enough for a pax header.
const longName = `bag/data/dicom/${'s'.repeat(70)}/${'i'.repeat(120)}.dcm`
const originals = [
  {name: 'bag/bagit.txt', data: Buffer.from('BagIt-Version: 1.0\n')},
  {name: 'bag/data/dicom/a.dcm', data: pattern(1500, 1)},
  {name: 'bag/data/dicom/b.dcm', data: pattern(512, 2)},
  {name: longName, data: pattern(3000, 3)},
  {name: 'bag/data/dicom/c.dcm', data: Buffer.alloc(0)},
  {name: 'bag/tagmanifest-sha256.txt', data: pattern(100, 4)},
]

describe('salvage: a damaged header costs only the entry it belongs to', () => {
  let archive: Buffer
  let offsets: Array<{name: string; start: number; end: number}>
  beforeAll(async () => {
    archive = await packTar(originals)
    const {entries} = await read(archive)
    expect(names({entries, problems: []})).toEqual(originals.map((one) => one.name))
    offsets = entries.map((entry, index) => ({name: entry.name, start: entry.offset, end: entries[index + 1]?.offset ?? archive.length - 1024}))
  })

  it('every byte of every header block flipped, one at a time: exactly the other entries arrive, intact, and the damage is named with its offsets', async () => {
    let variants = 0
    for (const [index, {name, start, end}] of offsets.entries()) {
      // Every block of the entry's headers: the pax header and its records too, for the long name.
      const headerBlocks = name === longName ? [start, start + 512, end - 512 - Math.ceil(3000 / 512) * 512] : [start]
      for (const block of headerBlocks) {
        for (let byte = 0; byte < 512; byte++) {
          const damaged = Buffer.from(archive)
          damaged[block + byte] = damaged[block + byte]! ^ 0x5a
          const result = await read(damaged)
          variants++
          const others = originals.filter((one) => one.name !== name)
          const label = `${name}, byte ${block - start + byte} of the block at ${block}`
          // What the flip touched is the entry between start and end; everything else arrives, intact.
          const touched = result.entries.filter((entry) => entry.offset >= start && entry.offset < end)
          const arrived = result.entries.filter((entry) => entry.offset < start || entry.offset >= end)
          expect(touched.length, label).toBeLessThanOrEqual(1)
          expect(arrived.map((entry) => entry.name), label).toEqual(others.map((one) => one.name))
          for (const [position, entry] of arrived.entries()) expect(entry.data.equals(others[position]!.data), label).toBe(true)
          // Every problem lies inside the touched entry, and a lost header is named with its region and the last good entry.
          for (const problem of result.problems) {
            expect(problem.offset, label).toBeGreaterThanOrEqual(start)
            expect(problem.end ?? problem.offset, label).toBeLessThanOrEqual(end)
          }

          const lost = result.problems.find((problem) => problem.reason.startsWith('damaged tar header'))
          if (touched.length === 0 && block === start) {
            expect(lost, label).toMatchObject({kind: 'damaged', offset: start, lastEntry: index === 0 ? undefined : offsets[index - 1]!.name})
            expect(lost!.reason).toContain(`bytes ${start} to ${lost!.end}`)
          }
        }
      }
    }

    expect(variants).toBe(512 * 8)
  }, 60_000)

  it('a zeroed header is damage, not the end of the archive', async () => {
    const damaged = Buffer.from(archive)
    damaged.fill(0, offsets[2]!.start, offsets[2]!.start + 512)
    const result = await read(damaged)
    expect(names(result)).toEqual(originals.filter((one) => one.name !== 'bag/data/dicom/b.dcm').map((one) => one.name))
    expect(result.problems).toEqual([expect.objectContaining({kind: 'damaged', offset: offsets[2]!.start, end: offsets[2]!.end, reason: expect.stringContaining('a zero block where a header should be')})])
  })

  it('damage in the last entry before the end-of-archive marker: the marker is still found', async () => {
    const last = offsets.at(-1)!
    const damaged = Buffer.from(archive)
    damaged[last.start + 3] = damaged[last.start + 3]! ^ 1
    const file = join(await mkdtemp(join(tmpdir(), 'tar-reader-')), 'last.tar')
    await writeFile(file, damaged)
    const index = await indexTarFile(file)
    expect(index.endMarker).toBe(true)
    expect(index.damage).toEqual([expect.objectContaining({kind: 'damaged', offset: last.start, end: last.end, reason: expect.stringMatching(/no valid header follows/)})])
    await rm(file)
  })

  it('an intact archive holding a tar inside an entry\'s data: the inner headers are data, never entries', async () => {
    const inner = await packTar([{name: 'bag/data/dicom/smuggled.dcm', data: Buffer.from('smuggled')}])
    const result = await read(await packTar([{name: 'bag/data/dicom/carrier.dcm', data: inner}, {name: 'bag/bagit.txt', data: Buffer.from('x')}]))
    expect(names(result)).toEqual(['bag/data/dicom/carrier.dcm', 'bag/bagit.txt'])
    expect(result.problems).toEqual([])
  })

  it('input that is not a tar at all, or nothing, is reported as such', async () => {
    const notTar = await read(pattern(5000, 9))
    expect(notTar.entries).toEqual([])
    expect(notTar.problems).toEqual([expect.objectContaining({kind: 'not-archive', reason: expect.stringMatching(/^not a tar archive: no valid tar header in its 5000 bytes/)})])
    expect((await read(Buffer.alloc(0))).problems).toEqual([expect.objectContaining({kind: 'not-archive', reason: expect.stringMatching(/empty/)})])
  })
})

describe('the end-of-archive marker', () => {
  it('ends the archive: zeros after it are fine', async () => {
    const archive = Buffer.concat([await packTar(originals), Buffer.alloc(10_240)])
    const result = await read(archive)
    expect(result.problems).toEqual([])
    expect(names(result)).toEqual(originals.map((one) => one.name))
  })

  it('anything but zeros after it is damage, and is not read: a second bag hidden there stays out', async () => {
    const honest = await packTar(originals)
    const hidden = await packTar([{name: 'other/bagit.txt', data: Buffer.from('BagIt-Version: 1.0\n')}, {name: 'other/data/dicom/x.dcm', data: pattern(900, 5)}])
    for (const padding of [0, 512, 4096]) {
      const result = await read(Buffer.concat([honest, Buffer.alloc(padding), hidden]))
      expect(names(result)).toEqual(originals.map((one) => one.name))
      expect(result.problems).toEqual([expect.objectContaining({
        kind: 'damaged', offset: honest.length + padding,
        reason: `data after the end-of-archive marker (at byte ${honest.length - 1024}): a non-zero byte at byte ${honest.length + padding}; nothing after the marker is read`,
      })])
    }
  })

  it('one stray byte far after it is found too, by the index as well', async () => {
    const honest = await packTar(originals)
    const tail = Buffer.alloc(100_000)
    tail[77_777] = 1
    const file = join(await mkdtemp(join(tmpdir(), 'tar-reader-')), 'stray.tar')
    await writeFile(file, Buffer.concat([honest, tail]))
    expect((await read(file)).problems).toEqual([expect.objectContaining({kind: 'damaged', offset: honest.length + 77_777})])
    const index = await indexTarFile(file)
    expect(index).toMatchObject({endMarker: true, afterEndMarker: true})
    await rm(file)
  })

  it('a stream that never ends after it (a pipe from /dev/zero, a device) is read only so far: the archive ends, and reading stops', async () => {
    const honest = await packTar(originals)
    let served = 0
    const endlessZeros = new Readable({
      read() {
        served += 65_536
        this.push(Buffer.alloc(65_536))
      },
    })
    const endless = Readable.from((async function * () {
      yield honest
      yield * endlessZeros
    })())
    const result: Read = {entries: [], problems: []}
    for await (const entry of readArchiveEntries(endless, limits, (problem) => result.problems.push(problem))) result.entries.push(entry)
    expect(names(result)).toEqual(originals.map((one) => one.name))
    expect(result.problems).toEqual([])
    expect(served).toBeLessThan(64 * 1024 ** 2)
  }, 20_000)

  it('half a marker is a truncated archive', async () => {
    const honest = await packTar(originals)
    const result = await read(honest.subarray(0, honest.length - 512))
    expect(names(result)).toEqual(originals.map((one) => one.name))
    expect(result.problems).toEqual([expect.objectContaining({kind: 'truncated', reason: expect.stringMatching(/inside its end-of-archive marker/)})])
  })
})

describe('headers that lie', () => {
  const end = Buffer.alloc(1024)
  const memoryNow = () => process.memoryUsage().arrayBuffers

  it.each([
    ['a size field between 4 and 8 GiB (octal)', 6 * 1024 ** 3, 'hostile'],
    ['a GNU base-256 size of 9 GiB', 9 * 1024 ** 3, 'hostile'],
    ['a size under the 4 GiB cap, 3 GiB', 3 * 1024 ** 3, undefined],
  ] as const)('%s followed by 10 bytes: nothing allocated from the claim, the cut named with its real position', async (_, claimed, refusal) => {
    const name = 'bag/data/dicom/liar.dcm'
    const archive = Buffer.concat([tarHeader('bag/bagit.txt', 3), padToBlock(Buffer.from('abc')), tarHeader(name, claimed), Buffer.alloc(10, 0x41)])
    const before = memoryNow()
    const result = await read(archive, DEFAULT_ENTRY_LIMITS)
    expect(memoryNow() - before).toBeLessThan(64 * 1024 ** 2)
    expect(names(result)).toEqual(['bag/bagit.txt'])
    const truncated = {id: name, kind: 'truncated', offset: 1024, reason: `the archive ends at byte ${archive.length}, inside "${name}" (header at byte 1024, ${claimed} bytes of data from byte 1536): the entry is lost`}
    expect(result.problems).toEqual(refusal
      ? [expect.objectContaining({id: name, kind: refusal, reason: `size ${claimed} is over the limit of ${4 * 1024 ** 3} bytes`}), expect.objectContaining(truncated)]
      : [expect.objectContaining(truncated)])
  })

  it('a directory entry that carries data is refused as hostile, and the entries after it are read', async () => {
    const archive = Buffer.concat([tarHeader('bag/data/dicom/', 700, '5'), padToBlock(Buffer.alloc(700, 0x42)), tarHeader('bag/bagit.txt', 3), padToBlock(Buffer.from('abc')), end])
    const result = await read(archive)
    expect(names(result)).toEqual(['bag/bagit.txt'])
    expect(result.problems).toEqual([expect.objectContaining({id: 'bag/data/dicom/', kind: 'hostile', offset: 0, reason: 'a directory entry that carries 700 bytes of data'})])
  })

  it('a numeric field that is not octal, with a checksum to match, is a damaged header', async () => {
    const header = tarHeader('bag/data/dicom/x.dcm', 3)
    header.write('0000000009\0', 124, 'latin1')
    const archive = Buffer.concat([withChecksum(header), padToBlock(Buffer.from('abc')), tarHeader('bag/bagit.txt', 3), padToBlock(Buffer.from('abc')), end])
    const result = await read(archive)
    expect(names(result)).toEqual(['bag/bagit.txt'])
    expect(result.problems).toEqual([expect.objectContaining({kind: 'damaged', offset: 0, end: 1024, reason: expect.stringContaining('its size field is not a number in range')})])
  })

  it('a base-256 size beyond 2^53 is a damaged header', async () => {
    const header = tarHeader('bag/data/dicom/x.dcm', 3)
    header.fill(0xff, 125, 136)
    header[124] = 0x80
    const result = await read(Buffer.concat([withChecksum(header), tarHeader('bag/bagit.txt', 0), end]))
    expect(names(result)).toEqual(['bag/bagit.txt'])
    expect(result.problems).toEqual([expect.objectContaining({kind: 'damaged', reason: expect.stringContaining('its size field is not a number in range')})])
  })

  it('a pax header over 1 MiB is skipped unread; the entry it describes is refused; the next one is read', async () => {
    const paxBytes = 3 * 1024 * 1024
    const archive = Buffer.concat([
      tarHeader('PaxHeaders/huge', paxBytes, 'x'), padToBlock(paxRecords({comment: 'x'.repeat(paxBytes - 20)}).subarray(0, paxBytes)),
      tarHeader('bag/data/dicom/described.dcm', 3), padToBlock(Buffer.from('abc')),
      tarHeader('bag/bagit.txt', 3), padToBlock(Buffer.from('abc')), end,
    ])
    const result = await read(archive)
    expect(names(result)).toEqual(['bag/bagit.txt'])
    expect(result.problems).toEqual([
      expect.objectContaining({kind: 'damaged', offset: 0, reason: expect.stringMatching(/^extended header of 3145728 bytes at byte 0 is over the limit of 1048576 bytes: skipped unread; the entry it describes is refused/)}),
      expect.objectContaining({id: 'bag/data/dicom/described.dcm', kind: 'damaged', offset: 0}),
    ])
  })

  it('a malformed pax record: the entry it describes is refused, the next one read', async () => {
    const records = Buffer.from('99 path=bag/data/dicom/elsewhere.dcm\n')
    const archive = Buffer.concat([
      tarHeader('PaxHeaders/bad', records.length, 'x'), padToBlock(records),
      tarHeader('bag/data/dicom/described.dcm', 3), padToBlock(Buffer.from('abc')),
      tarHeader('bag/bagit.txt', 3), padToBlock(Buffer.from('abc')), end,
    ])
    const result = await read(archive)
    expect(names(result)).toEqual(['bag/bagit.txt'])
    expect(result.problems).toEqual([
      expect.objectContaining({kind: 'damaged', reason: expect.stringMatching(/its pax header at byte 0 is malformed: pax record at byte 0 claims 99 bytes/)}),
      expect.objectContaining({id: 'bag/data/dicom/described.dcm', kind: 'damaged'}),
    ])
  })

  it('pax size and path records, and GNU long names, apply to the entry they precede', async () => {
    const data = pattern(2000, 6)
    const pax = paxRecords({path: 'bag/data/dicom/from-pax.dcm', size: '2000'})
    const gnuName = Buffer.from(`bag/data/dicom/${'g'.repeat(150)}.dcm\0`)
    const archive = Buffer.concat([
      // The ustar size field says 0: only the pax size finds the data.
      tarHeader('PaxHeaders/x', pax.length, 'x'), padToBlock(pax), tarHeader('short-name', 0), padToBlock(data),
      tarHeader('././@LongLink', gnuName.length, 'L'), padToBlock(gnuName), tarHeader(`bag/data/dicom/${'g'.repeat(80)}`, 3), padToBlock(Buffer.from('abc')),
      end,
    ])
    const result = await read(archive)
    expect(result.problems).toEqual([])
    expect(names(result)).toEqual(['bag/data/dicom/from-pax.dcm', gnuName.subarray(0, -1).toString()])
    expect(result.entries[0]!.data.equals(data)).toBe(true)
  })

  it('a sparse pax entry is refused', async () => {
    const pax = paxRecords({'GNU.sparse.major': '1', 'GNU.sparse.minor': '0', 'GNU.sparse.realsize': '999999'})
    const result = await read(Buffer.concat([tarHeader('PaxHeaders/x', pax.length, 'x'), padToBlock(pax), tarHeader('bag/data/dicom/s.dcm', 3), padToBlock(Buffer.from('abc')), end]))
    expect(result.entries).toEqual([])
    expect(result.problems).toEqual([expect.objectContaining({id: 'bag/data/dicom/s.dcm', kind: 'hostile', reason: expect.stringMatching(/sparse/)})])
  })
})

describe('files read by path', () => {
  let work: string
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'tar-reader-files-'))
  })
  afterAll(async () => {
    await rm(work, {recursive: true, force: true})
  })

  it('read the same as the stream, damage and all', async () => {
    const archive = await packTar(originals)
    archive[1031] = archive[1031]! ^ 0x10
    const file = join(work, 'damaged.tar')
    await writeFile(file, archive)
    const fromFile = await read(file)
    const fromStream = await read(archive)
    expect(names(fromFile)).toEqual(names(fromStream))
    expect(fromFile.problems).toEqual(fromStream.problems)
    expect(fromFile.problems).toHaveLength(1)
  })

  it('junk cannot push a volume\'s real tag files or its bag out of the index', async () => {
    const junk: Buffer[] = []
    for (let index = 0; index < 2000; index++) junk.push(tarHeader(`junk-${index}/x`, 0))
    for (let index = 0; index < 20_000; index++) junk.push(tarHeader(`bag/junk-${index}.txt`, 0))
    for (let index = 0; index < 5; index++) junk.push(tarHeader(`bag/bagit.txt`, 0))
    junk.push(tarHeader('not-in-a-bag', 0))
    const file = join(work, 'junk.tar')
    await writeFile(file, Buffer.concat([...junk, await packTar(originals)]))
    const index = await indexTarFile(file)
    const listed = index.entries.map((entry) => entry.name)
    expect(listed).toContain('bag/tagmanifest-sha256.txt')
    expect(listed.filter((name) => name === 'bag/bagit.txt')).toHaveLength(2)
    expect(index.entries.length).toBeLessThanOrEqual(10_000 + 2 + 1)
    expect(index.bags.map((bag) => bag.name)).toContain('bag')
    // The first 1000 directories, and the bag holding the format's tag files after them.
    expect(index.bags).toHaveLength(1001)
    // Listed from its first tag file on (bagit.txt comes first in a volume), and counted from there.
    expect(index.bags.find((bag) => bag.name === 'bag')).toMatchObject({entries: 5 + originals.length, dicomEntries: 4})
    // 22,001 other entries outside data/, 10,000 listed; and four more copies of bagit.txt.
    expect(index.unlistedTagEntries).toBe(22_001 - 10_000 + 4)
  })

  it('many entries: memory does not grow with their number', async () => {
    const count = 100_000
    const blocks: Buffer[] = []
    for (let index = 0; index < count; index++) blocks.push(tarHeader(`bag/data/dicom/${index}.dcm`, 0))
    const file = join(work, 'many.tar')
    await writeFile(file, Buffer.concat([...blocks, Buffer.alloc(1024)]))
    blocks.length = 0
    setFlagsFromString('--expose-gc')
    const gc = runInNewContext('gc') as () => void
    let entries = 0
    let problems = 0
    gc()
    const heapBefore = process.memoryUsage().heapUsed
    let retained = 0
    for await (const _entry of readArchiveEntries(file, limits, () => problems++)) {
      entries++
      // Half-way, whatever the reader holds is what it keeps per entry read so far.
      if (entries === count / 2) {
        gc()
        retained = process.memoryUsage().heapUsed - heapBefore
      }
    }

    expect({entries, problems}).toEqual({entries: count, problems: 0})
    expect(retained).toBeLessThan(2 * 1024 ** 2)
    const index = await indexTarFile(file)
    expect(index).toMatchObject({entries: [], entryCount: count, payloadCount: count, endMarker: true})
  }, 30_000)
})
