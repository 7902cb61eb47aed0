import {execFile} from 'node:child_process'
import {createHash} from 'node:crypto'
import {mkdir, mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {Readable} from 'node:stream'
import {promisify} from 'node:util'

import tar from 'tar-stream'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {type ArchiveEntry, type ArchiveProblem, readArchiveEntries} from '../../src/archive/archive-stream.js'
import {BagFormatError, parseBagInfo, parseChecksumManifest, renderBagInfo, renderChecksumManifest} from '../../src/archive/bagit.js'
import {checkEntryHeader, type EntryHeader, type EntryLimits, EntryRefusedError, printable} from '../../src/archive/entry-rules.js'
import {indexTarFile, type IndexedEntry, scanTarFile} from '../../src/archive/tar-index.js'

const run = promisify(execFile)

const limits: EntryLimits = {maxEntryBytes: 1000, maxTagFileBytes: 100}

function refusal(header: EntryHeader, entryLimits = limits): EntryRefusedError {
  try {
    checkEntryHeader(header, entryLimits)
  } catch (error) {
    if (error instanceof EntryRefusedError) return error
    throw error
  }

  throw new Error(`"${header.name}" was accepted`)
}

const file = (name: string, size = 10): EntryHeader => ({name, type: 'file', size})

interface PackEntry {
  header: Partial<tar.Header> & {name: string}
  data?: Buffer
}

/** A whole tar as tar-stream writes it, with its end-of-archive blocks. */
async function packTar(entries: PackEntry[]): Promise<Buffer> {
  const pack = tar.pack()
  for (const {header, data} of entries) {
    if (data) pack.entry({mtime: new Date(0), ...header}, data)
    else pack.entry({mtime: new Date(0), ...header})
  }

  pack.finalize()
  const chunks: Buffer[] = []
  for await (const chunk of pack) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

/** Feeds a buffer in small chunks, so that entries and headers straddle chunk boundaries. */
function chunked(bytes: Buffer, size = 700): Readable {
  const chunks: Buffer[] = []
  for (let offset = 0; offset < bytes.length; offset += size) chunks.push(bytes.subarray(offset, offset + size))
  return Readable.from(chunks)
}

interface ReadResult {
  entries: ArchiveEntry[]
  problems: ArchiveProblem[]
  error?: unknown
}

async function readAllEntries(bytes: Buffer, entryLimits: EntryLimits = limits): Promise<ReadResult> {
  const result: ReadResult = {entries: [], problems: []}
  try {
    for await (const entry of readArchiveEntries(chunked(bytes), entryLimits, (problem) => result.problems.push(problem))) result.entries.push(entry)
  } catch (error) {
    result.error = error
  }

  return result
}

async function allEntries(path: string): Promise<IndexedEntry[]> {
  const entries: IndexedEntry[] = []
  for await (const entry of scanTarFile(path)) entries.push(entry)
  return entries
}

function pattern(length: number, seed: number): Buffer {
  const bytes = Buffer.alloc(length)
  for (let index = 0; index < length; index++) bytes[index] = (index * 31 + seed * 17) & 0xff
  return bytes
}

/** A ustar header block with a valid checksum, for headers tar writers will not produce. */
function ustarHeader(name: string, size: number | Buffer, typeflag: string): Buffer {
  const block = Buffer.alloc(512)
  block.write(name, 0, 100, 'utf8')
  block.write('0000644\0', 100, 'latin1')
  block.write('0000000\0', 108, 'latin1')
  block.write('0000000\0', 116, 'latin1')
  if (typeof size === 'number') block.write(`${size.toString(8).padStart(11, '0')}\0`, 124, 'latin1')
  else size.copy(block, 124)
  block.write('00000000000\0', 136, 'latin1')
  block.write(typeflag, 156, 'latin1')
  block.write('ustar\x0000', 257, 'latin1')
  block.fill(0x20, 148, 156)
  let sum = 0
  for (const byte of block) sum += byte
  block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1')
  return block
}

const padded = (data: Buffer) => Buffer.concat([data, Buffer.alloc((512 - (data.length % 512)) % 512)])

describe('checkEntryHeader', () => {
  it('accepts payload and tag files, and says where they belong', () => {
    expect(checkEntryHeader(file('bag/data/dicom/a/b.dcm'), limits)).toEqual({bag: 'bag', path: 'data/dicom/a/b.dcm'})
    expect(checkEntryHeader(file('bag/bagit.txt'), limits)).toEqual({bag: 'bag', path: 'bagit.txt'})
    expect(checkEntryHeader(file('bag/orthanc/contents.json'), limits)).toEqual({bag: 'bag', path: 'orthanc/contents.json'})
    expect(checkEntryHeader({name: 'bag/data/x.dcm', type: 'contiguous-file', size: 1}, limits)).toEqual({bag: 'bag', path: 'data/x.dcm'})
  })

  it('returns undefined for directories', () => {
    expect(checkEntryHeader({name: 'bag/data/', type: 'directory', size: 0}, limits)).toBeUndefined()
    expect(checkEntryHeader({name: 'bag', type: 'directory', size: 0}, limits)).toBeUndefined()
  })

  it('refuses a directory entry that carries data, and a sparse file', () => {
    expect(refusal({name: 'bag/data/', type: 'directory', size: 700}).reason).toBe('a directory entry that carries 700 bytes of data')
    expect(refusal({name: 'bag/data/x.dcm', type: 'file', size: 10, sparse: true}).reason).toMatch(/sparse/)
  })

  it('refuses an entry larger than one buffer can hold, whatever the configured limit', () => {
    expect(refusal(file('bag/data/x.dcm', 5 * 1024 ** 3), {maxEntryBytes: 8 * 1024 ** 3, maxTagFileBytes: 100}).reason).toBe(`size ${5 * 1024 ** 3} is over the limit of ${4 * 1024 ** 3} bytes`)
  })

  it('refuses links and special files, naming what they are', () => {
    const symlink = refusal({name: 'bag/data/x.dcm', type: 'symlink', size: 0, linkname: '/etc/passwd'})
    expect(symlink.reason).toMatch(/symbolic link/)
    expect(symlink.reason).toContain('/etc/passwd')
    expect(refusal({name: 'bag/data/x.dcm', type: 'link', size: 0, linkname: 'bag/bagit.txt'}).reason).toMatch(/hard link/)
    expect(refusal({name: 'bag/data/x', type: 'character-device', size: 0}).reason).toMatch(/character-device entries are not allowed/)
    expect(refusal({name: 'bag/data/x', type: 'block-device', size: 0}).reason).toMatch(/block-device entries are not allowed/)
    expect(refusal({name: 'bag/data/x', type: 'fifo', size: 0}).reason).toMatch(/fifo entries are not allowed/)
  })

  it('refuses paths that leave the bag or are not plain relative paths', () => {
    expect(refusal(file('/etc/x')).reason).toMatch(/absolute/)
    expect(refusal(file('C:/x')).reason).toMatch(/absolute/)
    expect(refusal(file('bag/../../etc/x')).reason).toMatch(/\.\./)
    expect(refusal(file('bag/data/../../x')).reason).toMatch(/\.\./)
    expect(refusal(file('bag//data/x')).reason).toMatch(/empty or "\." segments/)
    expect(refusal(file('bag/./data/x')).reason).toMatch(/empty or "\." segments/)
    expect(refusal(file('bag/data/x/')).reason).toMatch(/empty or "\." segments/)
    expect(refusal(file('bag\\data\\x')).reason).toMatch(/backslash/)
    expect(refusal(file('bag/data/x\0.dcm')).reason).toMatch(/NUL/)
    expect(refusal(file('bagit.txt')).reason).toMatch(/not inside a bag directory/)
  })

  it('applies the payload limit to data/ entries and the tag file limit to the others', () => {
    expect(checkEntryHeader(file('bag/data/x.dcm', 1000), limits)).toBeDefined()
    expect(refusal(file('bag/data/x.dcm', 1001)).reason).toMatch(/size 1001 is over the limit of 1000 bytes/)
    expect(checkEntryHeader(file('bag/bagit.txt', 100), limits)).toBeDefined()
    // Within the payload limit, but a tag file that large is refused.
    expect(refusal(file('bag/bagit.txt', 500)).reason).toMatch(/size 500 is over the limit of 100 bytes/)
    expect(refusal(file('bag/data/x.dcm', Number.NaN)).reason).toMatch(/over the limit/)
    expect(refusal(file('bag/data/x.dcm', -1)).reason).toMatch(/over the limit/)
  })

  it('escapes control characters when showing names', () => {
    expect(printable('a\x1b[2Jb\r\n')).toBe('a\\x1b[2Jb\\x0d\\x0a')
    expect(printable('x\x7f\u0085y')).toBe('x\\x7f\\x85y')
    expect(printable('données/é.dcm')).toBe('données/é.dcm')
    expect(printable('a'.repeat(1000))).toHaveLength(300)
    const error = refusal({name: 'bag/\x1b]0;owned\x07', type: 'fifo', size: 0})
    expect([...error.message].filter((char) => char.charCodeAt(0) < 0x20)).toEqual([])
    expect(error.message).toContain('\\x1b]0;owned\\x07')
  })
})

describe('readArchiveEntries', () => {
  it('reads entries with their data and header offsets, skipping directories', async () => {
    const a = pattern(1000, 1)
    const bytes = await packTar([
      {header: {name: 'bag/', type: 'directory'}},
      {header: {name: 'bag/bagit.txt'}, data: Buffer.from('BagIt-Version: 1.0\n')},
      {header: {name: 'bag/data/a.dcm'}, data: a},
      {header: {name: 'bag/data/empty.dcm'}, data: Buffer.alloc(0)},
    ])
    const {entries, problems, error} = await readAllEntries(bytes)
    expect(error).toBeUndefined()
    expect(problems).toEqual([])
    expect(entries.map(({name, bag, path, offset}) => ({name, bag, path, offset}))).toEqual([
      {name: 'bag/bagit.txt', bag: 'bag', path: 'bagit.txt', offset: 512},
      {name: 'bag/data/a.dcm', bag: 'bag', path: 'data/a.dcm', offset: 1536},
      {name: 'bag/data/empty.dcm', bag: 'bag', path: 'data/empty.dcm', offset: 3072},
    ])
    expect(entries[1]!.data.equals(a)).toBe(true)
    expect(entries[2]!.data.length).toBe(0)
  })

  it('yields a second entry with the same name: the bag validator refuses duplicates, the reader keeps no list of names', async () => {
    const bytes = await packTar([
      {header: {name: 'bag/data/a.dcm'}, data: Buffer.from('first')},
      {header: {name: 'bag/data/a.dcm'}, data: Buffer.from('second, swapped in')},
    ])
    const {entries, problems} = await readAllEntries(bytes)
    expect(problems).toEqual([])
    expect(entries.map((entry) => entry.data.toString())).toEqual(['first', 'second, swapped in'])
  })

  it('refuses an oversized entry without keeping it, and still reads the next one whole', async () => {
    const next = pattern(900, 2)
    const bytes = await packTar([
      {header: {name: 'bag/data/big.dcm'}, data: pattern(256 * 1024, 3)},
      {header: {name: 'bag/data/next.dcm'}, data: next},
    ])
    const {entries, problems, error} = await readAllEntries(bytes)
    expect(error).toBeUndefined()
    expect(problems).toEqual([expect.objectContaining({id: 'bag/data/big.dcm', kind: 'hostile', offset: 0, reason: expect.stringMatching(/over the limit/)})])
    expect(entries.map((entry) => entry.name)).toEqual(['bag/data/next.dcm'])
    expect(entries[0]!.data.equals(next)).toBe(true)
  }, 5000)

  it('refuses links and devices in the stream and goes on', async () => {
    const bytes = await packTar([
      {header: {name: 'bag/data/link.dcm', type: 'symlink', linkname: '../../etc/shadow'}},
      {header: {name: 'bag/data/dev', type: 'character-device', devmajor: 1, devminor: 3}},
      {header: {name: 'bag/data/ok.dcm'}, data: Buffer.from('ok')},
    ])
    const {entries, problems, error} = await readAllEntries(bytes)
    expect(error).toBeUndefined()
    expect(problems.map((problem) => [problem.id, problem.kind])).toEqual([['bag/data/link.dcm', 'hostile'], ['bag/data/dev', 'hostile']])
    expect(entries.map((entry) => entry.name)).toEqual(['bag/data/ok.dcm'])
  })

  it('reports a stream that ends in the middle of an entry as truncated, naming the entry and the real byte position', async () => {
    const bytes = await packTar([
      {header: {name: 'bag/data/a.dcm'}, data: pattern(600, 4)},
      {header: {name: 'bag/data/b.dcm'}, data: pattern(900, 5)},
    ])
    // a: header 512 + data 1024; b's header ends at 2048; cut 300 bytes into b's data.
    const {entries, problems, error} = await readAllEntries(bytes.subarray(0, 2048 + 300))
    expect(error).toBeUndefined()
    expect(entries.map((entry) => entry.name)).toEqual(['bag/data/a.dcm'])
    expect(problems).toEqual([{
      id: 'bag/data/b.dcm', kind: 'truncated', offset: 1536, lastEntry: 'bag/data/b.dcm',
      reason: 'the archive ends at byte 2348, inside "bag/data/b.dcm" (header at byte 1536, 900 bytes of data from byte 2048): the entry is lost',
    }])
  })

  it('reports a stream that ends inside a header as truncated, without blaming the entry before it', async () => {
    const bytes = await packTar([
      {header: {name: 'bag/data/a.dcm'}, data: pattern(600, 4)},
      {header: {name: 'bag/data/b.dcm'}, data: pattern(900, 5)},
    ])
    const {entries, problems} = await readAllEntries(bytes.subarray(0, 1536 + 200))
    expect(entries.map((entry) => entry.name)).toEqual(['bag/data/a.dcm'])
    expect(problems).toEqual([expect.objectContaining({kind: 'truncated', offset: 1536, reason: expect.stringMatching(/^the archive ends at byte 1736, inside a tar header \(at byte 1536\)/)})])
    expect(problems[0]!.id).not.toBe('bag/data/a.dcm')
  })

  it('reports a stream cut exactly between two entries as truncated: no end-of-archive marker', async () => {
    const bytes = await packTar([
      {header: {name: 'bag/data/a.dcm'}, data: pattern(600, 4)},
      {header: {name: 'bag/data/b.dcm'}, data: pattern(900, 5)},
    ])
    const {entries, problems} = await readAllEntries(bytes.subarray(0, 1536))
    expect(entries.map((entry) => entry.name)).toEqual(['bag/data/a.dcm'])
    expect(problems).toEqual([expect.objectContaining({kind: 'truncated', offset: 1536, reason: expect.stringMatching(/ends at byte 1536 without its end-of-archive marker.*"bag\/data\/a\.dcm"/)})])
  })

  it('takes the name from a pax header when the path is too long for ustar', async () => {
    const longName = `bag/data/dicom/${'s'.repeat(70)}/${'i'.repeat(180)}.dcm`
    const data = pattern(700, 6)
    const bytes = await packTar([{header: {name: longName}, data}])
    // The proof that a pax header was written: its type flag 'x' in the first block.
    expect(String.fromCharCode(bytes[156]!)).toBe('x')
    const {entries, problems, error} = await readAllEntries(bytes, {maxEntryBytes: 1000, maxTagFileBytes: 100})
    expect(error).toBeUndefined()
    expect(problems).toEqual([])
    expect(entries).toHaveLength(1)
    expect(entries[0]!.name).toBe(longName)
    expect(entries[0]!.path).toBe(longName.slice('bag/'.length))
    expect(entries[0]!.offset).toBe(0)
    expect(entries[0]!.data.equals(data)).toBe(true)
  })
})

describe('indexTarFile and scanTarFile', () => {
  let work: string
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'tar-index-test-'))
  })
  afterAll(async () => {
    await rm(work, {recursive: true, force: true})
  })

  const longDir = `bag/data/dicom/${'d'.repeat(60)}`
  const contents: Record<string, Buffer> = {
    'bag/bagit.txt': Buffer.from('BagIt-Version: 1.0\n'),
    'bag/data/dicom/a.dcm': pattern(1500, 7),
    // Over 100 bytes: ustar prefix, pax or GNU long name depending on the writer.
    [`${longDir}/${'f'.repeat(60)}.dcm`]: pattern(513, 8),
    [`${longDir}/${'g'.repeat(120)}.dcm`]: pattern(0, 9),
    'bag/tagmanifest-sha256.txt': Buffer.from('x'.repeat(64) + '  bagit.txt\n'),
  }

  async function writeWithTarStream(name: string): Promise<string> {
    const path = join(work, name)
    await writeFile(path, await packTar(Object.entries(contents).map(([entryName, data]) => ({header: {name: entryName}, data}))))
    return path
  }

  async function expectContents(path: string, entries: IndexedEntry[]): Promise<void> {
    const bytes = await readFile(path)
    const files = entries.filter((entry) => entry.type === 'file')
    expect(files.map((entry) => entry.name).sort()).toEqual(Object.keys(contents).sort())
    for (const entry of files) {
      const expected = contents[entry.name]!
      expect(entry.size, entry.name).toBe(expected.length)
      expect(entry.truncated).toBe(false)
      expect(bytes.subarray(entry.dataOffset, entry.dataOffset + entry.size).equals(expected), entry.name).toBe(true)
    }
  }

  it('lists a tar-stream tar: names, sizes and data offsets; the index keeps the tag files and counts the payload', async () => {
    const path = await writeWithTarStream('tar-stream.tar')
    await expectContents(path, await allEntries(path))
    const index = await indexTarFile(path)
    expect(index.damage).toEqual([])
    expect(index.endMarker).toBe(true)
    expect(index.afterEndMarker).toBe(false)
    expect(index.entries.map((entry) => entry.name)).toEqual(['bag/bagit.txt', 'bag/tagmanifest-sha256.txt'])
    expect(index).toMatchObject({entryCount: 5, payloadCount: 3, unlistedTagEntries: 0})
  })

  it.each(['gnu', 'posix', 'ustar'])('lists a tar written by GNU tar (--format=%s)', async (format) => {
    const folder = join(work, `tree-${format}`)
    for (const [name, data] of Object.entries(contents)) {
      // ustar cannot hold a 120-character file name in any field: leave that one out for it.
      if (format === 'ustar' && name.endsWith(`${'g'.repeat(120)}.dcm`)) continue
      await mkdir(join(folder, name, '..'), {recursive: true})
      await writeFile(join(folder, name), data)
    }

    const path = join(work, `gnu-${format}.tar`)
    await run('tar', [`--format=${format}`, '-cf', path, '-C', folder, 'bag'])
    const problems: ArchiveProblem[] = []
    const entries: IndexedEntry[] = []
    for await (const entry of scanTarFile(path, (problem) => problems.push(problem))) entries.push(entry)
    expect(problems).toEqual([])
    expect(entries.some((entry) => entry.type === 'directory' && entry.name.replace(/\/$/, '') === longDir)).toBe(true)
    if (format === 'ustar') {
      const bytes = await readFile(path)
      const files = entries.filter((entry) => entry.type === 'file')
      expect(files).toHaveLength(Object.keys(contents).length - 1)
      for (const entry of files) expect(bytes.subarray(entry.dataOffset, entry.dataOffset + entry.size).equals(contents[entry.name]!)).toBe(true)
    } else {
      await expectContents(path, entries)
    }

    // The stream reader reads the same archive the same way, long names included.
    const streamed = await readAllEntries(await readFile(path), {maxEntryBytes: 1024 ** 2, maxTagFileBytes: 1024 ** 2})
    expect(streamed.problems).toEqual([])
    expect(streamed.entries.map((entry) => entry.name).sort()).toEqual(entries.filter((entry) => entry.type === 'file').map((entry) => entry.name).sort())
    const index = await indexTarFile(path)
    expect(index.endMarker).toBe(true)
    expect(index.entries.map((entry) => entry.name).sort()).toEqual(['bag/', 'bag/bagit.txt', 'bag/tagmanifest-sha256.txt'])
  })

  it('marks an entry truncated when the file ends inside its data, and reports where', async () => {
    const whole = await readFile(await writeWithTarStream('whole.tar'))
    const a = (await allEntries(join(work, 'whole.tar'))).find((entry) => entry.name === 'bag/data/dicom/a.dcm')!
    const cut = join(work, 'cut.tar')
    await writeFile(cut, whole.subarray(0, a.dataOffset + 700))
    const entries = await allEntries(cut)
    expect(entries.map((entry) => [entry.name, entry.truncated, entry.size])).toEqual([['bag/bagit.txt', false, 19], ['bag/data/dicom/a.dcm', true, 1500]])
    const index = await indexTarFile(cut)
    expect(index.endMarker).toBe(false)
    expect(index.damage).toEqual([expect.objectContaining({id: 'bag/data/dicom/a.dcm', kind: 'truncated', reason: expect.stringContaining(`ends at byte ${a.dataOffset + 700}`)})])
  })

  it('resynchronises after a header whose checksum does not match: the entries after it are indexed, the damage named with its offsets', async () => {
    const whole = await readFile(await writeWithTarStream('to-damage.tar'))
    const second = 1024
    expect(whole.subarray(second, second + 20).toString('latin1')).toBe('bag/data/dicom/a.dcm')
    whole[second + 10] = whole[second + 10]! ^ 0x01
    const path = join(work, 'damaged.tar')
    await writeFile(path, whole)
    const index = await indexTarFile(path)
    // a.dcm's header and its 1500 bytes of data (3 blocks) are lost; the next header is at 1024 + 512 + 1536.
    expect(index.damage).toEqual([expect.objectContaining({kind: 'damaged', offset: second, end: 3072, lastEntry: 'bag/bagit.txt'})])
    expect(index.damage[0]!.reason).toMatch(/^damaged tar header at byte 1024 \(checksum mismatch.*the last good entry before it is "bag\/bagit\.txt"; reading resumed at the next valid header, at byte 3072: bytes 1024 to 3072 are lost$/)
    expect(index.endMarker).toBe(true)
    expect(index.entries.map((entry) => entry.name)).toEqual(['bag/bagit.txt', 'bag/tagmanifest-sha256.txt'])
    expect(index.payloadCount).toBe(2)
  })

  it('skips an extended header over 1 MiB unread and refuses the entry it describes', async () => {
    const paxSize = 2 * 1024 * 1024
    const path = join(work, 'huge-pax.tar')
    await writeFile(path, Buffer.concat([ustarHeader('PaxHeaders/x', paxSize, 'x'), Buffer.alloc(paxSize, 0x41), ustarHeader('bag/bagit.txt', 0, '0'), ustarHeader('bag/bag-info.txt', 0, '0'), Buffer.alloc(1024)]))
    const index = await indexTarFile(path)
    expect(index.damage).toEqual([expect.objectContaining({kind: 'damaged', offset: 0, reason: expect.stringMatching(/^extended header of 2097152 bytes at byte 0 is over the limit of 1048576 bytes: skipped unread; the entry it describes is refused/)})])
    expect(index.entries.map((entry) => entry.name)).toEqual(['bag/bag-info.txt'])
    expect(index.endMarker).toBe(true)
  })

  it('reads GNU base-256 sizes', async () => {
    // Sizes of 8 GiB and more do not fit 11 octal digits; GNU tar then writes them in binary.
    const size = Buffer.alloc(12)
    size[0] = 0x80
    size.writeUInt32BE(1300, 8)
    const data = pattern(1300, 10)
    const path = join(work, 'base256.tar')
    await writeFile(path, Buffer.concat([ustarHeader('bag/data/big.dcm', size, '0'), padded(data), Buffer.alloc(1024)]))
    expect(await allEntries(path)).toEqual([{name: 'bag/data/big.dcm', type: 'file', size: 1300, linkname: '', offset: 0, dataOffset: 512, truncated: false}])
    expect((await indexTarFile(path)).endMarker).toBe(true)
  })
})

describe('bagit tag files', () => {
  const digest = (seed: string) => createHash('sha256').update(seed).digest('hex')

  it('parses a rendered checksum manifest back to the same entries', () => {
    const entries: Array<[string, string]> = [['data/dicom/s/a.dcm', digest('a')], ['data/attachments/a/1030.bin', digest('b')], ['data/odd 100%.dcm', digest('c')]]
    const text = renderChecksumManifest(entries)
    expect(text).toBe(entries.map(([path, sha]) => `${sha}  ${path}\n`).join(''))
    expect([...parseChecksumManifest(text, 'manifest-sha256.txt')]).toEqual(entries)
  })

  it('reads what sha256sum writes in binary mode, with tabs, and percent-encoded paths', () => {
    const text = `${digest('a')} *data/a.dcm\n${digest('b')}\tdata/b.dcm\n\n${digest('c')}  data/line%0Abreak%25.dcm\n`
    expect(parseChecksumManifest(text, 'm')).toEqual(new Map([['data/a.dcm', digest('a')], ['data/b.dcm', digest('b')], ['data/line\nbreak%.dcm', digest('c')]]))
  })

  it('names the malformed line of a checksum manifest', () => {
    const text = `${digest('a')}  data/a.dcm\n${digest('b').slice(0, 40)}  data/b.dcm\n`
    expect(() => parseChecksumManifest(text, 'manifest-sha256.txt')).toThrow(BagFormatError)
    expect(() => parseChecksumManifest(text, 'manifest-sha256.txt')).toThrow('manifest-sha256.txt line 2 is not')
    expect(() => parseChecksumManifest(`\n\n${digest('a').toUpperCase()}  data/a.dcm\n`, 'tagmanifest-sha256.txt')).toThrow('tagmanifest-sha256.txt line 3')
  })

  it('parses rendered bag-info back, with long descriptions kept on one line', () => {
    const text = renderBagInfo({
      payloadBytes: 12345, payloadFiles: 3, group: 'group-1', volume: 2, volumeCount: 5, baggingDate: '2024-05-01', software: 'orthanc-replicate',
      description: 'first line\n   second line',
    })
    const fields = parseBagInfo(text)
    expect(Object.fromEntries(fields)).toEqual({
      'Bag-Software-Agent': 'orthanc-replicate',
      'Bagging-Date': '2024-05-01',
      'Payload-Oxum': '12345.3',
      'Bag-Group-Identifier': 'group-1',
      'Bag-Count': '2 of 5',
      'External-Description': 'first line second line',
    })
    // RFC 8493 allows values folded over indented continuation lines.
    expect(parseBagInfo('External-Description: one\n  two\n\tthree\nBag-Count: 1 of 1\n').get('External-Description')).toBe('one two three')
  })
})
