/**
 * DICOM parsing bounded whatever the input: nesting depth, element count, and what a deflated
 * data set may inflate to; and the check the upload path runs before sending bytes to a server.
 */
import {mkdtemp, readFile, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {deflateRawSync, deflateSync} from 'node:zlib'

import {afterAll, describe, expect, it} from 'vitest'

import {encodeInstance, generateAwkwardSet, generateStudySet, type InstanceDescription, SAMPLE_OPTIONS, SOP_CLASS} from '../../fixtures/generate.js'
import {deeplyNestedDicom, writeDeflatedBomb} from '../helpers/bombs.js'
import {DEFAULT_WALK_LIMITS, readElementHeader, skipElementValue, WalkBudget} from '../../src/dicom/element-reader.js'
import {NotDicomError, type NotDicomReason} from '../../src/dicom/not-dicom-error.js'
import {readDicomIdentifiers} from '../../src/dicom/parse.js'
import {checkSafeToSend} from '../../src/dicom/safe-to-send.js'
import {DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_LITTLE_ENDIAN_ENCODING, EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN} from '../../src/dicom/transfer-syntax.js'
import {CorruptCompressedDataError, DEFAULT_INFLATE_BOUNDS, inflateAnnounced, InflateLimitError, inflateLimit} from '../../src/util/bounded-inflate.js'

const root = await mkdtemp(join(tmpdir(), 'dicom-bounds-'))
afterAll(async () => {
  await rm(root, {recursive: true, force: true})
})

function outcome(read: () => unknown): NotDicomReason | 'parsed' {
  try {
    read()
    return 'parsed'
  } catch (error) {
    if (error instanceof NotDicomError) return error.reason
    throw error
  }
}

function errorOf(read: () => unknown): NotDicomError {
  try {
    read()
  } catch (error) {
    if (error instanceof NotDicomError) return error
    throw error
  }

  throw new Error('no error')
}

const maxDepth = DEFAULT_WALK_LIMITS.maxSequenceDepth

function instance(seed: string, transferSyntaxUid: string, pixels: Uint8Array = Uint8Array.of(1, 2, 3, 4), rows = 2): InstanceDescription {
  return {
    patient: {id: `P-${seed}`, name: 'Bounds^Test', birthDate: '19700101', sex: 'O'},
    study: {uid: '1.2.3.4.5.1', date: '20240101', time: '120000', accessionNumber: 'A1', description: seed, id: '1'},
    series: {uid: '1.2.3.4.5.2', number: 1, modality: 'OT', description: seed},
    instance: {uid: `1.2.3.4.5.3.${seed.length}`, number: 1, sopClassUid: SOP_CLASS.secondaryCapture},
    image: {rows, columns: pixels.length / rows, frames: 1, bitsAllocated: 8, bitsStored: 8},
    pixels,
    transferSyntaxUid,
  }
}

/** Sequences nested `depth` deep in implicit VR, each of defined length, under a tag a dictionary knows as SQ. */
function implicitNest(depth: number, unknownVr: boolean): Buffer {
  const whole = encodeInstance(instance('implicit-nest', unknownVr ? EXPLICIT_VR_LITTLE_ENDIAN : IMPLICIT_VR_LITTLE_ENDIAN))
  const pixelData = whole.indexOf(Buffer.from([0xe0, 0x7f, 0x10, 0x00]), 132)
  // Each level: (0040,A730) with a length, then an item with a length. In explicit VR the outer
  // element is UN (12 bytes of header); inside a UN value everything is implicit VR (8 bytes).
  const outerHeader = unknownVr ? 12 : 8
  const total = outerHeader + 8 + (depth - 1) * 16
  const nest = Buffer.alloc(total)
  let offset = 0
  for (let level = 0; level < depth; level++) {
    const headerLength = level === 0 ? outerHeader : 8
    const inner = total - offset - headerLength - 8
    nest.writeUInt16LE(0x0040, offset)
    nest.writeUInt16LE(0xa730, offset + 2)
    if (headerLength === 12) {
      nest.write('UN', offset + 4, 'latin1')
      nest.writeUInt32LE(inner + 8, offset + 8)
    } else {
      nest.writeUInt32LE(inner + 8, offset + 4)
    }

    offset += headerLength
    nest.writeUInt16LE(0xfffe, offset)
    nest.writeUInt16LE(0xe000, offset + 2)
    nest.writeUInt32LE(inner, offset + 4)
    offset += 8
  }

  return Buffer.concat([whole.subarray(0, pixelData), nest, whole.subarray(pixelData)])
}

describe('sequences nested deep', () => {
  it('5,000 levels (delimited): refused as hostile, no stack overflow', () => {
    const error = errorOf(() => readDicomIdentifiers(deeplyNestedDicom('deep', 5000, true)))
    expect(error.reason).toBe('hostile')
    expect(error.message).toMatch(new RegExp(`^refused as hostile: sequences nested more than ${maxDepth} deep \\(at offset \\d+\\)`))
  })

  it('200,000 levels: refused as quickly', () => {
    const started = Date.now()
    expect(outcome(() => readDicomIdentifiers(deeplyNestedDicom('deeper', 200_000, true)))).toBe('hostile')
    expect(Date.now() - started).toBeLessThan(2000)
  })

  it(`${maxDepth} levels, the limit, still parse; one more is refused`, () => {
    const atLimit = deeplyNestedDicom('at-limit', maxDepth, true)
    expect(readDicomIdentifiers(atLimit)).toMatchObject({patientId: 'BOMB-at-limit', hasPixelData: true})
    expect(checkSafeToSend(atLimit)).toMatchObject({walked: true, deepestSequence: maxDepth})
    expect(outcome(() => readDicomIdentifiers(deeplyNestedDicom('over-limit', maxDepth + 1, true)))).toBe('hostile')
  })

  it('5,000 levels of defined length: identifiers are read (their values are jumped over), and the upload check refuses them', () => {
    const bytes = deeplyNestedDicom('defined', 5000, false)
    expect(readDicomIdentifiers(bytes).hasPixelData).toBe(true)
    expect(errorOf(() => checkSafeToSend(bytes)).message).toMatch(/sequences nested more than 128 deep/)
  })

  it.each([['implicit VR', false], ['UN in explicit VR', true]] as const)('5,000 levels of defined length in %s, which only a dictionary calls SQ: the upload check refuses them', (_, unknownVr) => {
    const bytes = implicitNest(5000, unknownVr)
    expect(readDicomIdentifiers(bytes).hasPixelData).toBe(true)
    expect(outcome(() => checkSafeToSend(bytes))).toBe('hostile')
    expect(checkSafeToSend(implicitNest(20, unknownVr))).toMatchObject({walked: true, deepestSequence: 20})
  })

  it('a value that only starts like a sequence is skipped as bytes, not refused', () => {
    // A private UN value beginning with an item tag and then garbage: not a sequence after all.
    const whole = encodeInstance(instance('fake-sequence', EXPLICIT_VR_LITTLE_ENDIAN))
    const pixelData = whole.indexOf(Buffer.from([0xe0, 0x7f, 0x10, 0x00]), 132)
    const value = Buffer.concat([Buffer.from([0xfe, 0xff, 0x00, 0xe0, 0xff, 0xff, 0xff, 0x7f]), Buffer.from('not an item at all')])
    const header = Buffer.alloc(12)
    header.writeUInt16LE(0x0041, 0)
    header.writeUInt16LE(0x1001, 2)
    header.write('UN', 4, 'latin1')
    header.writeUInt32LE(value.length, 8)
    const bytes = Buffer.concat([whole.subarray(0, pixelData), header, value, whole.subarray(pixelData)])
    expect(checkSafeToSend(bytes)).toMatchObject({walked: true})
    expect(readDicomIdentifiers(bytes).hasPixelData).toBe(true)
  })
})

describe('the element count', () => {
  it('a sequence of more items than the limit is refused as hostile', () => {
    // An undefined-length sequence holding 2,000 empty items, against a limit of 1,000 elements.
    const items = Buffer.alloc(2000 * 8)
    for (let index = 0; index < 2000; index++) {
      items.writeUInt16LE(0xfffe, index * 8)
      items.writeUInt16LE(0xe000, index * 8 + 2)
    }

    const sequence = Buffer.concat([Buffer.from([0x40, 0x00, 0x30, 0xa7, 0x53, 0x51, 0, 0, 0xff, 0xff, 0xff, 0xff]), items, Buffer.from([0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0])])
    const header = readElementHeader(sequence, 0, EXPLICIT_LITTLE_ENDIAN_ENCODING)
    expect(skipElementValue(sequence, header, EXPLICIT_LITTLE_ENDIAN_ENCODING, new WalkBudget({maxSequenceDepth: 10, maxElements: 3000}))).toBe(sequence.length)
    const error = errorOf(() => skipElementValue(sequence, header, EXPLICIT_LITTLE_ENDIAN_ENCODING, new WalkBudget({maxSequenceDepth: 10, maxElements: 1000})))
    expect(error).toMatchObject({reason: 'hostile', message: expect.stringMatching(/more than 1000 elements/)})
    expect(outcome(() => checkSafeToSend(deeplyNestedDicom('count', 50, true), {walk: {maxSequenceDepth: 128, maxElements: 100}}))).toBe('hostile')
  })
})

describe('deflated data sets', () => {
  const memoryNow = () => process.memoryUsage().arrayBuffers

  it('a 256 KB file inflating to 256 MiB: refused as a decompression bomb, with bounded memory', async () => {
    const path = join(root, 'bomb.dcm')
    await writeDeflatedBomb(path, 'unit-bomb', 256 * 1024 * 1024)
    const bytes = await readFile(path)
    expect(bytes.length).toBeLessThan(300_000)
    const before = memoryNow()
    const error = errorOf(() => readDicomIdentifiers(bytes))
    // Chunks not yet collected count here too: far below the 64 MiB the bomb was allowed to inflate to before refusal, and its 256 MiB.
    expect(memoryNow() - before).toBeLessThan(48 * 1024 * 1024)
    expect(error.reason).toBe('hostile')
    expect(error.message).toBe(`refused as hostile: the deflated data set inflates to more than ${64 * 1024 * 1024} bytes: a decompression bomb`)
    expect(outcome(() => checkSafeToSend(bytes))).toBe('hostile')
  })

  it('the limit follows the compressed size: 100 times it beyond 64 MiB, 4 GiB at most', () => {
    expect(inflateLimit(1000)).toBe(64 * 1024 * 1024)
    expect(inflateLimit(1024 * 1024)).toBe(100 * 1024 * 1024)
    expect(inflateLimit(1024 ** 3)).toBe(4 * 1024 ** 3)
  })

  it('a legitimate deflated image of 24 MiB: identifiers and pixel data found, inflated in pieces, never held whole', () => {
    const pixels = new Uint8Array(24 * 1024 * 1024)
    for (let index = 0; index < pixels.length; index++) pixels[index] = (index * 2654435761) >>> 24
    const bytes = encodeInstance(instance('large-deflated', DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, pixels, 4096))
    const before = memoryNow()
    expect(readDicomIdentifiers(bytes)).toMatchObject({patientId: 'P-large-deflated', hasPixelData: true, transferSyntaxUid: DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN})
    expect(memoryNow() - before).toBeLessThan(8 * 1024 * 1024)
    expect(checkSafeToSend(bytes)).toMatchObject({walked: true, inflatedBytes: expect.any(Number)})
    expect(checkSafeToSend(bytes).inflatedBytes).toBeGreaterThan(pixels.length)
  })

  it('a legitimate blank image compressing 1000 times, under the 64 MiB floor, is read', () => {
    const bytes = encodeInstance(instance('blank', DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, new Uint8Array(32 * 1024 * 1024), 4096))
    expect(bytes.length).toBeLessThan(64 * 1024)
    expect(readDicomIdentifiers(bytes).hasPixelData).toBe(true)
  })
})

describe('checkSafeToSend on ordinary files', () => {
  it('walks every generated file whole: every encoding, nested and UN sequences, encapsulated pixel data', async () => {
    const files = [...await generateStudySet(join(root, 'sample'), SAMPLE_OPTIONS), ...await generateAwkwardSet(join(root, 'awkward'), {largeBytes: 400_000})]
    for (const file of files) {
      const report = checkSafeToSend(await readFile(file.path))
      expect(report, file.label).toMatchObject({walked: true})
      expect(report.elements, file.label).toBeGreaterThan(10)
    }
  })

  it('a raw data set without preamble is walked too, and refused when nested too deep', () => {
    // The meta group's length is the value of (0002,0000), right after "DICM".
    const withoutMeta = (part10: Buffer) => part10.subarray(132 + 12 + part10.readUInt32LE(140))
    expect(outcome(() => checkSafeToSend(withoutMeta(deeplyNestedDicom('raw', 5000, false))))).toBe('hostile')
    expect(checkSafeToSend(withoutMeta(deeplyNestedDicom('raw-ok', 10, false)))).toMatchObject({walked: true, deepestSequence: 10})
  })

  it('bytes it cannot walk are returned as such, with the reason', () => {
    expect(checkSafeToSend(Buffer.from('{"not": "dicom"}'))).toMatchObject({walked: false, why: expect.stringMatching(/no "DICM"/)})
    const cut = deeplyNestedDicom('cut', 10, true)
    expect(checkSafeToSend(cut.subarray(0, cut.length - 3))).toMatchObject({walked: false, why: expect.stringMatching(/needed/)})
  })
})

describe('inflateAnnounced (compressed storage files)', () => {
  const announcedOf = (data: Buffer) => ({compressed: deflateSync(data), size: data.length})

  it('gives back exactly the announced bytes', () => {
    const data = Buffer.from('DICM and some more bytes'.repeat(1000))
    const {compressed, size} = announcedOf(data)
    expect(inflateAnnounced(compressed, size, {format: 'zlib'}).equals(data)).toBe(true)
    expect(inflateAnnounced(deflateRawSync(data), size, {format: 'raw'}).equals(data)).toBe(true)
  })

  it('refuses a 2 MB file announcing 4 GiB before inflating anything', () => {
    const compressed = Buffer.alloc(2 * 1024 * 1024, 0x78)
    const before = memoryNow()
    const started = Date.now()
    expect(() => inflateAnnounced(compressed, 4 * 1024 ** 3 - 1, {format: 'zlib'})).toThrow(new InflateLimitError(`announces ${4 * 1024 ** 3 - 1} bytes once inflated, more than ${inflateLimit(compressed.length)} bytes (100 times its 2097152 compressed bytes): refused without inflating`))
    expect(Date.now() - started).toBeLessThan(100)
    expect(memoryNow() - before).toBeLessThan(1024 * 1024)
  })

  it('stops a stream that inflates beyond what it announced, holding no more than that', () => {
    const {compressed} = announcedOf(Buffer.alloc(50 * 1024 * 1024))
    expect(() => inflateAnnounced(compressed, 1024 * 1024, {format: 'zlib'})).toThrow(/inflates to more than its announced 1048576 bytes/)
  })

  it('reports a stream shorter than announced, or cut, or damaged, as corrupt', () => {
    const data = Buffer.from('x'.repeat(10_000))
    const {compressed} = announcedOf(data)
    expect(() => inflateAnnounced(compressed, 20_000, {format: 'zlib'})).toThrow(CorruptCompressedDataError)
    expect(() => inflateAnnounced(compressed.subarray(0, 10), 10_000, {format: 'zlib'})).toThrow(expect.objectContaining({reason: 'truncated'}))
    const damaged = Buffer.from(compressed)
    damaged[0] = 0
    expect(() => inflateAnnounced(damaged, 10_000, {format: 'zlib'})).toThrow(expect.objectContaining({reason: 'malformed'}))
  })

  it('takes other bounds', () => {
    const {compressed, size} = announcedOf(Buffer.alloc(1024 * 1024))
    expect(() => inflateAnnounced(compressed, size, {format: 'zlib', bounds: {...DEFAULT_INFLATE_BOUNDS, ratioFloorBytes: 1000, maxRatio: 10}})).toThrow(InflateLimitError)
  })
})

function memoryNow(): number {
  return process.memoryUsage().arrayBuffers
}
