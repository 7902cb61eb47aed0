import {spawnSync} from 'node:child_process'
import {createHash} from 'node:crypto'
import {cp, mkdir, mkdtemp, readdir, readFile, rename, rm, symlink, truncate, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {basename, dirname, join, relative} from 'node:path'
import {deflateSync, inflateSync} from 'node:zlib'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {type FixtureRecord, generateAwkwardSet, generateStudySet, SAMPLE_OPTIONS} from '../../fixtures/generate.js'
import {text} from '../../fixtures/writer/data-element.js'
import {uidFromName} from '../../fixtures/writer/deterministic.js'
import {encodePart10} from '../../fixtures/writer/part10.js'
import {TAG} from '../../fixtures/writer/tags.js'
import {orthancInstanceId} from '../../src/dicom/orthanc-id.js'
import {readDicomIdentifiers} from '../../src/dicom/parse.js'
import {tagOf} from '../../src/dicom/tags.js'
import {EXPLICIT_VR_LITTLE_ENDIAN} from '../../src/dicom/transfer-syntax.js'
import {readDicomFolder, readWholeFile} from '../../src/sources/dicom-folder.js'
import type {InstanceInTransit} from '../../src/model.js'
import type {SourceEvents} from '../../src/sources/source-events.js'
import type {Problem} from '../../src/problems.js'
import {OWNER_FILE} from '../../src/util/scratch-folder.js'
import {FirstCopies} from '../../src/sources/first-copies.js'
import {
  HEADER_ONLY_COPY_REASON,
  IDENTICAL_COPY_REASON,
  looksLikeStorageFolder,
  readStorageFolder,
  SMALLER_COPY_REASON,
} from '../../src/sources/storage-folder.js'
import {type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'

const root = await mkdtemp(join(tmpdir(), 'folder-sources-test-'))
const dicomDir = join(root, 'dicom')
const sample = await generateStudySet(join(dicomDir, 'sample'), SAMPLE_OPTIONS)
// A smaller "large" case than the default keeps the test quick; its size changes nothing here.
const awkward = await generateAwkwardSet(join(dicomDir, 'awkward'), {largeBytes: 400_000})
const fixtures = [...sample, ...awkward]

afterAll(async () => {
  await rm(root, {recursive: true, force: true})
})

interface Collected {
  units: InstanceInTransit[]
  skips: Problem[]
  problems: Problem[]
  /** Every label in the order the source reported it, units and notices alike. */
  order: string[]
}

async function collect(read: (events: SourceEvents) => AsyncGenerator<InstanceInTransit>): Promise<Collected> {
  const collected: Collected = {units: [], skips: [], problems: [], order: []}
  const events: SourceEvents = {
    onSkip(notice) {
      collected.skips.push(notice)
      collected.order.push(notice.id)
    },
    onProblem(notice) {
      collected.problems.push(notice)
      collected.order.push(notice.id)
    },
  }
  for await (const unit of read(events)) {
    collected.units.push(unit)
    collected.order.push(unit.label)
  }
  return collected
}

function md5Of(bytes: Buffer): string {
  return createHash('md5').update(bytes).digest('hex')
}

function skipReasonOf(collected: Collected, label: string): string | undefined {
  return collected.skips.find((skip) => skip.id === label)?.reason
}

// Path segments compared one by one in code-unit order: the order of a walk that sorts every listing.
function bySegments(a: string, b: string): number {
  const left = a.split('/')
  const right = b.split('/')
  for (let index = 0; index < Math.min(left.length, right.length); index++) {
    if (left[index] !== right[index]) return left[index]! < right[index]! ? -1 : 1
  }
  return left.length - right.length
}

function dicomDirBytes(): Buffer {
  return encodePart10({
    sopClassUid: '1.2.840.10008.1.3.10',
    sopInstanceUid: uidFromName('folder-sources', 'dicomdir'),
    transferSyntaxUid: EXPLICIT_VR_LITTLE_ENDIAN,
    dataSet: [text(tagOf(0x0004, 0x1130), 'CS', 'FIXTURESET')],
  })
}

describe('DICOM folder', () => {
  const junk = {
    json: join(dicomDir, 'notes.json'),
    readme: join(dicomDir, 'README.txt'),
    empty: join(dicomDir, 'empty.dcm'),
    nested: join(dicomDir, 'extra', 'deeper', 'random.bin'),
    dicomDir: join(dicomDir, 'extra', 'DICOMDIR'),
    renamedDicomDir: join(dicomDir, 'extra', 'media-index.bin'),
    truncated: join(dicomDir, 'extra', 'truncated.dcm'),
    damagedMarker: join(dicomDir, 'extra', 'damaged-marker.dcm'),
    fileLink: join(dicomDir, 'link-to-file.dcm'),
    folderLink: join(dicomDir, 'link-to-folder'),
    pipe: join(dicomDir, 'extra', 'pipe'),
  }
  let hasPipe = false
  let first: Collected

  beforeAll(async () => {
    await mkdir(dirname(junk.nested), {recursive: true})
    await writeFile(junk.json, JSON.stringify({note: 'not an instance'}))
    await writeFile(junk.readme, 'Exported from somewhere.\n')
    await writeFile(junk.empty, '')
    await writeFile(junk.nested, createHash('sha512').update('random').digest())
    await writeFile(junk.dicomDir, dicomDirBytes())
    await writeFile(junk.renamedDicomDir, dicomDirBytes())
    const whole = await readFile(sample[0]!.path)
    await writeFile(junk.truncated, whole.subarray(0, Math.floor(whole.length / 2)))
    // One byte of its "DICM" marker changed: still an instance, never passed over as not DICOM.
    const damaged = Buffer.from(whole)
    damaged.write('DIXM', 128, 'latin1')
    await writeFile(junk.damagedMarker, damaged)
    await symlink(sample[0]!.path, junk.fileLink)
    await symlink(join(dicomDir, 'awkward'), junk.folderLink)
    // Reading a pipe would block forever: it proves special files are never opened.
    hasPipe = spawnSync('mkfifo', [junk.pipe]).status === 0
    first = await collect((events) => readDicomFolder(dicomDir, events))
  })

  it('yields every fixture exactly once, with its Orthanc ID, MD5 and bytes', async () => {
    expect(first.units).toHaveLength(fixtures.length)
    for (const fixture of fixtures) {
      const units = first.units.filter((unit) => unit.label === fixture.path)
      expect(units, fixture.path).toHaveLength(1)
      const unit = units[0]!
      expect(unit.instanceId).toBe(fixture.orthancId)
      expect(unit.md5).toBe(fixture.md5)
      expect(md5Of(unit.dicom)).toBe(fixture.md5)
      expect(unit.dicom.equals(await readFile(fixture.path))).toBe(true)
    }
  })

  it('skips junk, DICOMDIRs, symlinks and special files by path, and reports a truncated file and a damaged marker as problems', () => {
    for (const path of [junk.json, junk.readme, junk.empty, junk.nested]) expect(skipReasonOf(first, path), path).toMatch(/not a DICOM file/)
    expect(skipReasonOf(first, junk.dicomDir)).toBe('DICOMDIR')
    expect(skipReasonOf(first, junk.renamedDicomDir)).toBe('DICOMDIR')
    expect(skipReasonOf(first, junk.fileLink)).toMatch(/symbolic link/)
    expect(skipReasonOf(first, junk.folderLink)).toMatch(/symbolic link/)
    if (hasPipe) expect(skipReasonOf(first, junk.pipe)).toMatch(/not a regular file/)
    expect(first.skips).toHaveLength(hasPipe ? 9 : 8)
    expect(first.problems).toEqual([
      {id: junk.damagedMarker, kind: 'damaged', reason: expect.stringMatching(/^a Part 10 file whose "DICM" marker \(bytes 128-131\) is damaged/)},
      {id: junk.truncated, kind: 'truncated', reason: expect.stringMatching(/truncated/)},
    ])
  })

  it('walks in name order, the same on every run', async () => {
    const relativeOrder = first.order.map((label) => relative(dicomDir, label))
    expect(relativeOrder).toEqual([...relativeOrder].sort(bySegments))
    const second = await collect((events) => readDicomFolder(dicomDir, events))
    expect(second.order).toEqual(first.order)
  })

  it('reads a single file given as the root, and refuses one over the size limit', async () => {
    const fixture = sample[1]!
    const single = await collect((events) => readDicomFolder(fixture.path, events))
    expect(single.units.map((unit) => [unit.label, unit.instanceId, unit.md5])).toEqual([[fixture.path, fixture.orthancId, fixture.md5]])

    const limited = await collect((events) => readDicomFolder(fixture.path, events, {maxFileBytes: fixture.size - 1}))
    expect(limited.units).toEqual([])
    expect(limited.problems).toEqual([{id: fixture.path, kind: 'too-large', reason: expect.stringMatching(/more than/)}])
  })

  // The walk lists before it reads: a file swapped for a link in between must not lead elsewhere.
  it('reads through a link only where the user named it: a file opened in the walk is never a link', async () => {
    await expect(readWholeFile(junk.fileLink, 1024 ** 2)).rejects.toMatchObject({code: 'ELOOP'})
    expect((await readWholeFile(junk.fileLink, 1024 ** 2, {followLink: true})).equals(await readFile(sample[0]!.path))).toBe(true)
    const named = await collect((events) => readDicomFolder(junk.fileLink, events))
    expect(named.units.map((unit) => unit.md5)).toEqual([sample[0]!.md5])
  })

  // Node decodes names as UTF-8: "\xff.dcm" became "\ufffd.dcm", which opened that sibling twice
  // and never the file itself, exit 0.
  it('a file or folder whose name is not UTF-8 is named as a problem, never read in place of a sibling', async () => {
    const folder = join(root, 'names')
    await mkdir(folder)
    const raw = (name: string) => Buffer.concat([Buffer.from(`${folder}/`), Buffer.from(name, 'latin1')])
    await writeFile(raw('\xff.dcm'), await readFile(sample[0]!.path))
    await writeFile(join(folder, '\ufffd.dcm'), await readFile(sample[1]!.path))
    await mkdir(raw('\xe9tude'))
    await writeFile(Buffer.concat([raw('\xe9tude'), Buffer.from('/inside.dcm')]), await readFile(sample[2]!.path))
    const found = await collect((events) => readDicomFolder(folder, events))
    expect(found.units.map((unit) => unit.md5)).toEqual([sample[1]!.md5])
    expect(found.problems).toEqual([
      {id: join(folder, '\\xe9tude'), kind: 'unreadable', reason: expect.stringMatching(/^its name is not valid UTF-8 .* rename it/)},
      {id: join(folder, '\\xff.dcm'), kind: 'unreadable', reason: expect.stringMatching(/^its name is not valid UTF-8/)},
    ])
  })

  // A 3 GiB video took 3 GB of memory only to be skipped; a 5 GiB disk image failed the run as too large.
  it('a large file whose first bytes begin no DICOM file is passed over unread, however large', async () => {
    const folder = join(root, 'large-junk')
    await mkdir(folder)
    const image = join(folder, 'disk.iso')
    await writeFile(image, Buffer.from('this is a disk image, not DICOM\n'.repeat(40)))
    await truncate(image, 5 * 1024 ** 3)
    const found = await collect((events) => readDicomFolder(folder, events))
    expect(found.problems).toEqual([])
    expect(found.skips).toEqual([{id: image, kind: 'not-dicom', reason: `not read whole (${5 * 1024 ** 3} bytes): its first bytes begin no DICOM file`}])
  })

  // The look before the whole read must know damage as the read does: skipped unread, it was lost with exit 0.
  it('a large Part 10 file whose DICM marker is damaged is read and named as damaged, as a small one is', async () => {
    const folder = join(root, 'large-damaged')
    await mkdir(folder)
    const damaged = join(folder, 'big.dcm')
    const bytes = Buffer.from(await readFile(sample[0]!.path))
    bytes.write('DICX', 128, 'latin1')
    await writeFile(damaged, bytes)
    await truncate(damaged, 65 * 1024 ** 2)
    const found = await collect((events) => readDicomFolder(folder, events))
    expect(found.problems).toEqual([{id: damaged, kind: 'damaged', reason: expect.stringMatching(/^a Part 10 file whose "DICM" marker/)}])
  })

  // A pipe with no writer blocks open(2) in the kernel, where no signal reaches: Ctrl-C did nothing.
  it('a pipe put where a file was listed is refused at once, never waited on', async () => {
    if (!hasPipe) return
    await expect(readWholeFile(junk.pipe, 1024 ** 2)).rejects.toMatchObject({code: 'ENOTREGULAR', message: expect.stringMatching(/is not a regular file/)})
  })

  it('stops when its signal is aborted', async () => {
    await expect(collect((events) => readDicomFolder(dicomDir, events, {signal: AbortSignal.abort()}))).rejects.toThrow(/abort/i)
  })
})

// A structured-report-like instance: DICOM without any pixel data, which must still be imported.
const noPixelsPath = join(root, 'no-pixels', 'report.dcm')
const noPixels = {
  patientId: 'FX-NO-PIXELS',
  study: uidFromName('folder-sources', 'no-pixels', 'study'),
  series: uidFromName('folder-sources', 'no-pixels', 'series'),
  sop: uidFromName('folder-sources', 'no-pixels', 'instance'),
}
const noPixelsBytes = encodePart10({
  sopClassUid: '1.2.840.10008.5.1.4.1.1.88.11',
  sopInstanceUid: noPixels.sop,
  transferSyntaxUid: EXPLICIT_VR_LITTLE_ENDIAN,
  dataSet: [
    text(TAG.SOPClassUID, 'UI', '1.2.840.10008.5.1.4.1.1.88.11'),
    text(TAG.SOPInstanceUID, 'UI', noPixels.sop),
    text(TAG.Modality, 'CS', 'SR'),
    text(TAG.PatientName, 'PN', 'NO^PIXELS'),
    text(TAG.PatientID, 'LO', noPixels.patientId),
    text(TAG.StudyInstanceUID, 'UI', noPixels.study),
    text(TAG.SeriesInstanceUID, 'UI', noPixels.series),
  ],
})
const noPixelsId = orthancInstanceId(noPixels.patientId, noPixels.study, noPixels.series, noPixels.sop)

describe('storage folder of a stopped Orthanc', () => {
  // The compressed server keeps its SQLite index inside the storage folder, as Debian's default configuration does.
  let compressedDir: string
  let compressed: OrthancServer
  let plain: OrthancServer
  const deferredDir = join(root, 'deferred')
  const expected = new Map<string, {path: string; md5: string; hasPixelData: boolean}>()
  const read = new Map<OrthancServer, Collected>()

  beforeAll(async () => {
    await mkdir(dirname(noPixelsPath), {recursive: true})
    await mkdir(deferredDir)
    await writeFile(noPixelsPath, noPixelsBytes)
    for (const fixture of fixtures) expected.set(fixture.orthancId, {path: fixture.path, md5: fixture.md5, hasPixelData: true})
    expected.set(noPixelsId, {path: noPixelsPath, md5: md5Of(noPixelsBytes), hasPixelData: false})

    compressedDir = await mkdtemp(join(tmpdir(), 'orthanc-compressed-'))
    ;[compressed, plain] = await Promise.all([
      startOrthanc({dir: compressedDir, storageCompression: true, userContentType: {Notes: 1025}, extra: {IndexDirectory: join(compressedDir, 'storage')}}),
      startOrthanc({}),
    ])
    const paths = [...fixtures.map((fixture) => fixture.path), noPixelsPath]
    const [compressedIds] = await Promise.all([uploadFiles(compressed, paths), uploadFiles(plain, paths)])
    // A user attachment is one more file in the folder that is not DICOM.
    const notes = await compressed.api(`/instances/${compressedIds[0]}/attachments/Notes`, {method: 'PUT', body: 'a user attachment'})
    expect(notes.ok).toBe(true)
    await Promise.all([compressed.stop(), plain.stop()])

    for (const server of [compressed, plain]) read.set(server, await collect((events) => readStorageFolder(server.storageDir, events, {deferredDir})))
  })

  afterAll(async () => {
    await Promise.all([compressed?.dispose(), plain?.dispose()])
    if (compressedDir) await rm(compressedDir, {recursive: true, force: true})
  })

  for (const kind of ['compressed', 'plain'] as const) {
    it(`yields each stored instance once, byte-identical to what was uploaded (${kind})`, async () => {
      const {units, problems} = read.get(kind === 'compressed' ? compressed : plain)!
      expect(problems).toEqual([])
      expect(units.map((unit) => unit.instanceId).sort()).toEqual([...expected.keys()].sort())
      for (const unit of units) {
        const original = expected.get(unit.instanceId)!
        expect(unit.md5, unit.label).toBe(original.md5)
        expect(md5Of(unit.dicom)).toBe(original.md5)
        expect(unit.dicom.equals(await readFile(original.path))).toBe(true)
        expect(readDicomIdentifiers(unit.dicom).hasPixelData).toBe(original.hasPixelData)
      }
    })
  }

  it('skips the dicom-until-pixel-data copies, the index and a user attachment', async () => {
    const {skips} = read.get(compressed)!
    const headerCopies = skips.filter((skip) => skip.reason === HEADER_ONLY_COPY_REASON)
    // Orthanc 1.10.1 writes one for every instance whose pixel data it can locate while storing it.
    expect(headerCopies.length).toBeGreaterThan(fixtures.length / 2)
    const copiedInstances = new Set<string>()
    for (const skip of headerCopies) {
      const header = inflateSync((await readFile(skip.id)).subarray(8))
      const identifiers = readDicomIdentifiers(header)
      expect(identifiers.hasPixelData).toBe(false)
      const id = orthancInstanceId(identifiers.patientId, identifiers.studyInstanceUid, identifiers.seriesInstanceUid, identifiers.sopInstanceUid)
      expect(expected.get(id)?.hasPixelData, skip.id).toBe(true)
      copiedInstances.add(id)
    }
    expect(copiedInstances.size).toBe(headerCopies.length)
    expect(skipReasonOf(read.get(compressed)!, join(compressed.storageDir, 'index'))).toBe('Orthanc index database (SQLite)')
    expect(skips.filter((skip) => /user attachment/.test(skip.reason))).toHaveLength(1)
    expect(skips.length).toBe(headerCopies.length + skips.filter((skip) => basename(skip.id).startsWith('index')).length + 1)

    // Without compression 1.10.1 keeps no header-only copies, and this server's index is elsewhere.
    expect(read.get(plain)!.skips).toEqual([])
  })

  it('leaves no temporary file behind', async () => {
    expect(await readdir(deferredDir)).toEqual([])
  })

  it('removes its temporary file when the consumer stops early; a killed run\'s is swept, as a scratch folder', async () => {
    const events: SourceEvents = {onSkip() {}, onProblem() {}}
    let filesWhileReading: string[] = []
    let scratch: string[] = []
    // The instance without pixel data comes last, read back from the temporary list.
    for await (const unit of readStorageFolder(compressed.storageDir, events, {deferredDir})) {
      if (unit.instanceId === noPixelsId) {
        filesWhileReading = await readdir(deferredDir)
        scratch = (await readdir(join(deferredDir, filesWhileReading[0]!))).sort()
        break
      }
    }
    expect(filesWhileReading).toHaveLength(1)
    // Inside a folder that names its process (owner.pid): one left by kill -9 is removed by the next run.
    expect(scratch).toEqual([expect.stringMatching(/\.tsv$/), OWNER_FILE])
    expect(await readdir(deferredDir)).toEqual([])
  })

  it('recognises storage folders and nothing else', async () => {
    expect(await looksLikeStorageFolder(compressed.storageDir)).toBe(true)
    expect(await looksLikeStorageFolder(plain.storageDir)).toBe(true)
    expect(await looksLikeStorageFolder(dicomDir)).toBe(false)
    expect(await looksLikeStorageFolder(sample[0]!.path)).toBe(false)
    expect(await looksLikeStorageFolder(join(root, 'nowhere'))).toBe(false)
  })

  // Every byte of the framing Orthanc adds around a stored instance, damaged in turn: the file must
  // never pass as "not DICOM" (skipped, lost without a word, exit 0) while its bytes hold one.
  const framingDamage: Array<{what: string; server: 'compressed' | 'plain'; damage: (bytes: Buffer) => void; reason: RegExp}> = [
    {what: 'the size prefix (bytes 0-7)', server: 'compressed', damage: (bytes) => Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).copy(bytes, 0), reason: /^compressed storage file whose first 8 bytes \(its size once inflated\) are damaged: its data inflates to DICOM$/},
    {what: 'the zlib method byte (byte 8)', server: 'compressed', damage: (bytes) => void (bytes[8] = 0x00), reason: /^compressed storage file whose zlib header \(bytes 8-9\) is damaged: its data inflates to DICOM$/},
    {what: 'the zlib flags byte (byte 9)', server: 'compressed', damage: (bytes) => void (bytes[9] = bytes[9]! ^ 0x01), reason: /^compressed storage file whose zlib header \(bytes 8-9\) is damaged: its data inflates to DICOM$/},
    {what: 'both the size and the zlib header', server: 'compressed', damage: (bytes) => bytes.fill(0xee, 0, 10), reason: /^compressed storage file whose first 8 bytes \(its size once inflated\) and zlib header \(bytes 8-9\) are damaged: its data inflates to DICOM$/},
    {what: 'the DICM magic of a plain file (bytes 128-131)', server: 'plain', damage: (bytes) => bytes.write('DXCM', 128, 'latin1'), reason: /^a Part 10 file whose "DICM" marker \(bytes 128-131\) is damaged/},
  ]
  it.each(framingDamage)('a stored file with damage to $what is a damaged instance, never a file that is not DICOM', async ({server, damage, reason, what}) => {
    const source = server === 'compressed' ? compressed : plain
    const copy = join(root, `framing-damaged-${framingDamage.findIndex((entry) => entry.what === what)}`)
    await cp(source.storageDir, copy, {recursive: true})
    // This case has no header-only copy: skipped as not DICOM, it would be lost without a word.
    const victim = read.get(source)!.units.find((unit) => unit.instanceId === awkward.find((fixture) => fixture.label === 'private-un-sequence')!.orthancId)!
    const path = join(copy, relative(source.storageDir, victim.label))
    const bytes = await readFile(path)
    damage(bytes)
    await writeFile(path, bytes)
    const found = await collect((events) => readStorageFolder(copy, events, {deferredDir}))
    expect(found.problems).toEqual([{id: path, kind: 'damaged', reason: expect.stringMatching(reason)}])
    expect(found.units.some((unit) => unit.instanceId === victim.instanceId)).toBe(false)
    expect(found.units).toHaveLength(read.get(source)!.units.length - 1)
    await rm(copy, {recursive: true, force: true})
  })

  // Moving some aa folders to another disk and linking them back: without the index nothing says
  // what is behind the link, and skipped (exit 0) its instances were lost without a word.
  it('a symbolic link in the storage folder is a problem naming it, never a file skipped', async () => {
    const copy = join(root, 'linked-storage')
    await cp(compressed.storageDir, copy, {recursive: true})
    const moved = read.get(compressed)!.units.find((unit) => unit.instanceId === awkward.find((fixture) => fixture.label === 'private-un-sequence')!.orthancId)!
    const folder = dirname(join(copy, relative(compressed.storageDir, moved.label)))
    await cp(folder, join(root, 'linked-storage-elsewhere'), {recursive: true})
    await rm(folder, {recursive: true})
    await symlink(join(root, 'linked-storage-elsewhere'), folder)
    const found = await collect((events) => readStorageFolder(copy, events, {deferredDir}))
    expect(found.problems).toEqual([{id: folder, kind: 'unreadable', reason: expect.stringMatching(/^a symbolic link, not followed .* \(cp -rL\) to recover it$/)}])
    expect(found.units.some((unit) => unit.instanceId === moved.instanceId)).toBe(false)
  })

  it('a large stored file: not read whole when its start begins no instance (a video attached, say); read when zeros (a power loss) and named as damaged', async () => {
    const copy = join(root, 'large-stored')
    await cp(compressed.storageDir, copy, {recursive: true})
    await mkdir(join(copy, 'ab', '12'), {recursive: true})
    const video = join(copy, 'ab', '12', 'ab120000-0000-4000-8000-000000000001')
    await writeFile(video, Buffer.from('\u0000\u0000\u0000\u0018ftypmp42 not dicom at all'))
    await truncate(video, 3 * 1024 ** 3)
    const zeroed = join(copy, 'ab', '12', 'ab120000-0000-4000-8000-000000000002')
    await writeFile(zeroed, '')
    await truncate(zeroed, 80 * 1024 ** 2)
    // Compressed, its zlib header damaged (its size odd, so that its start reads as no data element): read, and named.
    const framingDamaged = join(copy, 'ab', '12', 'ab120000-0000-4000-8000-000000000003')
    const dicom = await readFile(sample[0]!.path)
    const size = Buffer.alloc(8)
    size.writeBigUInt64LE(BigInt(dicom.length) | 1n)
    const compressedBytes = Buffer.concat([size, deflateSync(dicom)])
    compressedBytes[8] = 0
    compressedBytes[9] = 0
    await writeFile(framingDamaged, compressedBytes)
    await truncate(framingDamaged, 65 * 1024 ** 2)
    // A disk image attached: 32 KiB of zeros, then its volume descriptor; larger than any buffer.
    const diskImage = join(copy, 'ab', '12', 'ab120000-0000-4000-8000-000000000004')
    const imageStart = Buffer.alloc(40_000)
    imageStart.write('CD001', 32_769, 'latin1')
    await writeFile(diskImage, imageStart)
    await truncate(diskImage, 5 * 1024 ** 3)
    const found = await collect((events) => readStorageFolder(copy, events, {deferredDir}))
    expect(found.skips).toContainEqual({id: video, kind: 'not-dicom', reason: `not read whole (${3 * 1024 ** 3} bytes): its first bytes begin no DICOM file`})
    expect(found.skips).toContainEqual({id: diskImage, kind: 'not-dicom', reason: `not read whole (${5 * 1024 ** 3} bytes): its first bytes begin no DICOM file`})
    expect(found.problems).toContainEqual({id: framingDamaged, kind: 'damaged', reason: expect.stringMatching(/zlib header \(bytes 8-9\) is damaged: its data inflates to DICOM/)})
    expect(found.problems).toContainEqual({id: zeroed, kind: 'damaged', reason: expect.stringMatching(/^a stored file of 83886080 bytes, all zeros: most often an instance a power loss left zeroed$/)})
    expect(found.problems).toHaveLength(2)
    expect(found.units).toHaveLength(read.get(compressed)!.units.length)
    await rm(copy, {recursive: true, force: true})
  })

  // Another input of the same import gave a different copy of the report first: this one is a whole copy, named, never a header-only one.
  it('a report met first in another input, with other bytes, is a contradiction here', async () => {
    const copies = new FirstCopies()
    copies.meet(noPixelsId, 'f'.repeat(32), '/elsewhere/report.dcm')
    const found = await collect((events) => readStorageFolder(compressed.storageDir, events, {deferredDir, copies}))
    expect(found.problems).toEqual([expect.objectContaining({id: noPixelsId, kind: 'contradiction', reason: expect.stringContaining('with other bytes than /elsewhere/report.dcm (the one taken)')})])
    expect(found.units.some((unit) => unit.instanceId === noPixelsId)).toBe(false)
  })

  it('handles duplicates, altered copies, damage and stray files in a copied folder', async () => {
    const copy = join(root, 'tampered')
    await cp(compressed.storageDir, copy, {recursive: true})
    const original = read.get(compressed)!
    const unitOf = (fixture: FixtureRecord | string) => {
      const id = typeof fixture === 'string' ? fixture : fixture.orthancId
      const unit = original.units.find((candidate) => candidate.instanceId === id)!
      return {unit, path: join(copy, relative(compressed.storageDir, unit.label))}
    }
    // Another attachment UUID in the same aa/bb folder.
    const sibling = (path: string) => join(dirname(path), basename(path).slice(0, -1) + (basename(path).endsWith('0') ? '1' : '0'))
    const compress = (bytes: Buffer) => {
      const size = Buffer.alloc(8)
      size.writeBigUInt64LE(BigInt(bytes.length))
      return Buffer.concat([size, deflateSync(bytes)])
    }

    const duplicated = unitOf(sample[0]!)
    await cp(duplicated.path, sibling(duplicated.path))
    const altered = unitOf(sample[1]!)
    const alteredBytes = Buffer.from(altered.unit.dicom)
    alteredBytes.writeUInt8(alteredBytes.readUInt8(alteredBytes.length - 1) ^ 0xff, alteredBytes.length - 1)
    await writeFile(sibling(altered.path), compress(alteredBytes))
    // This case has no header-only copy, so damaging its file leaves nothing else to import it from.
    const damaged = unitOf(awkward.find((fixture) => fixture.label === 'private-un-sequence')!)
    const damagedBytes = await readFile(damaged.path)
    await writeFile(damaged.path, damagedBytes.subarray(0, Math.floor(damagedBytes.length / 2)))
    const report = unitOf(noPixelsId)
    await cp(report.path, sibling(report.path))
    // A third file of the report, with other bytes: a report's files are whole copies, never header-only ones.
    // Its preamble changed: the same instance, other bytes.
    const alteredReport = Buffer.from(report.unit.dicom)
    alteredReport[0] = alteredReport[0]! ^ 0x55
    // Named to come after one of the identical two in the walk (those end in 0 or 1): the first file met is taken.
    const alteredReportPath = join(dirname(report.path), basename(report.path).slice(0, -1) + (basename(report.path).endsWith('f') ? 'e' : 'f'))
    await writeFile(alteredReportPath, compress(alteredReport))
    await writeFile(join(dirname(duplicated.path), 'notes.txt'), 'stray')
    // What fsck leaves: an instance's file moved out of the layout, under a name of its own.
    await mkdir(join(copy, 'lost+found'))
    const misplaced = unitOf(sample[2]!)
    await rename(misplaced.path, join(copy, 'lost+found', '#4242'))
    await writeFile(join(copy, 'lost+found', 'tab\tand\nline.txt'), 'not dicom')
    // A stray, altered copy beside the storage, named to come first: Orthanc's own file is still the one taken.
    const strayCopy = join(copy, '000-old-export.dcm')
    const strayBytes = Buffer.from(unitOf(sample[3]!).unit.dicom)
    strayBytes[0] = strayBytes[0]! ^ 0x55
    await writeFile(strayCopy, strayBytes)
    // A folder named like the index is a folder: walked.
    await mkdir(join(copy, 'index-wal'))
    const inIndexFolder = unitOf(sample[4]!)
    await rename(inIndexFolder.path, join(copy, 'index-wal', 'moved.dcm'))
    // Outside the layout Orthanc wrote nothing: an empty file or one of zeros there is no alarm.
    await writeFile(join(copy, '.keep'), '')
    await writeFile(join(copy, 'lost+found', 'zeros.img'), Buffer.alloc(1000))
    // A report's copy under a name with a tab and a line break: set aside to be read after the walk, by that name.
    await cp(report.path, join(copy, 'lost+found', 're\tport\n1'))

    const tampered = await collect((events) => readStorageFolder(copy, events, {deferredDir}))
    // Two different whole copies: the first in walk order goes, and the instance is failed with both files named.
    const [firstCopy, secondCopy] = [altered.path, sibling(altered.path)].sort()
    const byWhere = (a: {id: string; path?: string}, b: {id: string; path?: string}) => (a.path ?? a.id).localeCompare(b.path ?? b.id)
    expect([...tampered.problems].sort(byWhere)).toEqual([
      {id: damaged.path, kind: 'damaged', reason: expect.stringMatching(/does not inflate/)},
      {id: altered.unit.instanceId, path: secondCopy, kind: 'contradiction', reason: expect.stringContaining(`another copy of this instance, with other bytes than ${firstCopy} (the one taken), was left out`)},
      // Files without pixel data are read after the walk, in walk order: the first of the report's is taken.
      {id: noPixelsId, path: alteredReportPath, kind: 'contradiction', reason: expect.stringContaining('another copy of this instance, with other bytes than')},
      {id: unitOf(sample[3]!).unit.instanceId, path: strayCopy, kind: 'contradiction', reason: expect.stringContaining(`with other bytes than ${unitOf(sample[3]!).path} (the one taken)`)},
    ].sort(byWhere))
    expect(tampered.units.filter((unit) => unit.instanceId === inIndexFolder.unit.instanceId).map((unit) => unit.label)).toEqual([join(copy, 'index-wal', 'moved.dcm')])
    expect(tampered.units.filter((unit) => unit.instanceId === duplicated.unit.instanceId)).toHaveLength(1)
    // The duplicated image and the report's two copies: a report has no header-only copies, each of its files is whole.
    expect(tampered.skips.filter((skip) => skip.reason === IDENTICAL_COPY_REASON).map((skip) => skip.id)).toContain(join(copy, 'lost+found', 're\tport\n1'))
    expect(tampered.skips.filter((skip) => skip.reason === IDENTICAL_COPY_REASON)).toHaveLength(3)
    const alteredUnits = tampered.units.filter((unit) => unit.instanceId === altered.unit.instanceId)
    expect(alteredUnits.map((unit) => unit.label)).toEqual([firstCopy])
    expect(tampered.units.filter((unit) => unit.instanceId === noPixelsId)).toHaveLength(1)
    expect(tampered.skips.filter((skip) => skip.reason === SMALLER_COPY_REASON)).toHaveLength(0)
    expect(skipReasonOf(tampered, join(dirname(duplicated.path), 'notes.txt'))).toMatch(/not a storage file/)
    // Outside the layout, files are read too: the misplaced instance is imported from there, the rest set aside.
    expect(tampered.units.filter((unit) => unit.instanceId === misplaced.unit.instanceId).map((unit) => unit.label)).toEqual([join(copy, 'lost+found', '#4242')])
    expect(skipReasonOf(tampered, join(copy, 'lost+found', 'tab\tand\nline.txt'))).toMatch(/^not a storage file \(outside the aa\/bb\/uuid layout\), not DICOM/)
    // Every instance but the damaged one.
    expect(tampered.units).toHaveLength(expected.size - 1)
    expect(tampered.units.some((unit) => unit.instanceId === damaged.unit.instanceId)).toBe(false)
    expect(await readdir(deferredDir)).toEqual([])
  })
})
