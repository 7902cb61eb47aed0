import {mkdtemp, readFile, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {deflateSync, gzipSync} from 'node:zlib'

import {afterAll, describe, expect, it} from 'vitest'

import {FRAMING_CASES, generateFramingSet, generateStudySet, SAMPLE_OPTIONS} from '../../fixtures/generate.js'
import {text} from '../../fixtures/writer/data-element.js'
import {encodePart10} from '../../fixtures/writer/part10.js'
import {TAG} from '../../fixtures/writer/tags.js'
import {EXPLICIT_VR_LITTLE_ENDIAN} from '../../src/dicom/transfer-syntax.js'
import type {Problem} from '../../src/problems.js'
import {decodeStoredBytes} from '../../src/sources/storage-folder.js'

// Without its index, a storage folder says nothing of which files are instances: a stored
// instance with one damaged byte must come out as an instance or as a problem, never be passed
// over as "not DICOM" (a user attachment), which loses it without a word and exits 0. Every byte
// of the start of a file (framing, preamble, marker, meta group, first elements) is damaged in turn.
const root = await mkdtemp(join(tmpdir(), 'stored-file-damage-test-'))
const part10 = (await generateStudySet(join(root, 'part10'), SAMPLE_OPTIONS))[0]!
const framed = await generateFramingSet(join(root, 'framed'))

afterAll(async () => {
  await rm(root, {recursive: true, force: true})
})

const SWEPT_BYTES = 700
const MASKS = [0xff, 0x01, 0x80]

/** How Orthanc stores a file under StorageCompression: its size in 8 bytes, then a zlib stream. */
function compressedStorage(dicom: Buffer): Buffer {
  const size = Buffer.alloc(8)
  size.writeBigUInt64LE(BigInt(dicom.length))
  return Buffer.concat([size, deflateSync(dicom)])
}

function outcome(stored: Buffer): {skipped: Problem[]; problems: Problem[]; instance: boolean} {
  const skipped: Problem[] = []
  const problems: Problem[] = []
  const decoded = decodeStoredBytes('stored-file', stored, {onSkip: (notice) => skipped.push(notice), onProblem: (notice) => problems.push(notice)})
  return {skipped, problems, instance: decoded !== undefined}
}

function passedOver(stored: Buffer): string[] {
  const found: string[] = []
  for (let position = 0; position < Math.min(stored.length, SWEPT_BYTES); position++) {
    for (const mask of MASKS) {
      const damaged = Buffer.from(stored)
      damaged[position] = damaged[position]! ^ mask
      const {skipped, problems, instance} = outcome(damaged)
      if (skipped.length > 0 || (problems.length === 0 && !instance)) found.push(`byte ${position} ^ 0x${mask.toString(16)}: ${skipped[0]?.reason ?? 'nothing said'}`)
    }
  }
  return found
}

describe('a stored instance with one damaged byte is never passed over as not DICOM', () => {
  it('a Part 10 file, plain and compressed', async () => {
    const dicom = await readFile(part10.path)
    expect(outcome(dicom).instance).toBe(true)
    expect(outcome(compressedStorage(dicom)).instance).toBe(true)
    expect(passedOver(dicom)).toEqual([])
    expect(passedOver(compressedStorage(dicom))).toEqual([])
  })

  // Files without a "DICM" marker can only be told from other files by their first elements; these
  // are the framings Orthanc accepts. Compressed, the zlib check value catches any damaged byte.
  it.each(framed.map((record) => [record.label, record] as const))('compressed, a file framed as %s', async (label, record) => {
    expect(label in FRAMING_CASES).toBe(true)
    const stored = compressedStorage(await readFile(record.path))
    expect(outcome(stored).instance).toBe(true)
    expect(passedOver(stored)).toEqual([])
  })
})

// A power loss leaves files whose size was written and whose data was not: zeros, all of them.
describe('a stored file of zeros is a damaged instance, never passed over', () => {
  it('all zeros, of an instance\'s size plain or compressed', async () => {
    const dicom = await readFile(part10.path)
    for (const size of [dicom.length, compressedStorage(dicom).length]) {
      const {skipped, problems} = outcome(Buffer.alloc(size))
      expect(skipped).toEqual([])
      expect(problems).toEqual([{id: 'stored-file', kind: 'damaged', reason: `a stored file of ${size} bytes, all zeros: most often an instance a power loss left zeroed`}])
    }
  })

  // A disk image kept as a user attachment begins with 32 KiB of zeros: no alarm for it.
  it('zeros at the start only (a disk image) are a user attachment, passed over', () => {
    const image = Buffer.alloc(40_000)
    image.write('CD001', 32_769, 'latin1')
    const {skipped, problems} = outcome(image)
    expect(problems).toEqual([])
    expect(skipped[0]?.reason).toMatch(/^not DICOM: a user attachment/)
  })
})

// The other side of the same promise: what is whole and not an instance is not called damaged.
describe('files that are not a patient\'s instance are passed over, never called damaged', () => {
  it('a gzipped DICOM file kept as a user attachment (its 10-byte header is no damaged Orthanc framing)', async () => {
    for (const path of [part10.path, ...framed.map((record) => record.path)]) {
      const {skipped, problems, instance} = outcome(gzipSync(await readFile(path)))
      expect({problems, instance}, path).toEqual({problems: [], instance: false})
      expect(skipped[0]?.reason, path).toMatch(/^not DICOM: a user attachment/)
    }
  })

  it.each([['Color Palette', '1.2.840.10008.5.1.4.39.1'], ['Hanging Protocol', '1.2.840.10008.5.1.4.38.1'], ['Generic Implant Template', '1.2.840.10008.5.1.4.43.1']])('a %s object: DICOM of no patient, without Study or Series', (name, sopClassUid) => {
    const object = encodePart10({sopClassUid, sopInstanceUid: '1.2.3.4.5', transferSyntaxUid: EXPLICIT_VR_LITTLE_ENDIAN, dataSet: [text(TAG.SOPClassUID, 'UI', sopClassUid), text(TAG.SOPInstanceUID, 'UI', '1.2.3.4.5')]})
    const {skipped, problems, instance} = outcome(object)
    expect({problems, instance}).toEqual({problems: [], instance: false})
    expect(skipped[0]?.reason).toContain(`a ${name} object: DICOM that belongs to no patient`)
  })
})
