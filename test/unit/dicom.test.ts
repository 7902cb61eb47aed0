import {createHash} from 'node:crypto'
import {mkdtemp, readFile, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join, relative} from 'node:path'
import {afterAll, describe, expect, it} from 'vitest'
import {
  AWKWARD_LABELS,
  type FixtureRecord,
  generateAwkwardSet,
  generateStudySet,
  SAMPLE_OPTIONS,
} from '../../fixtures/generate.js'
import {encodeInstance, type InstanceDescription} from '../../fixtures/instance.js'
import {rleEncodeFrame} from '../../fixtures/writer/rle.js'
import {NotDicomError, type NotDicomReason} from '../../src/dicom/not-dicom-error.js'
import {orthancInstanceId, orthancPatientId, orthancSeriesId, orthancStudyId} from '../../src/dicom/orthanc-id.js'
import {readDicomIdentifiers} from '../../src/dicom/parse.js'
import {EXPLICIT_VR_BIG_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN} from '../../src/dicom/transfer-syntax.js'

const root = await mkdtemp(join(tmpdir(), 'dicom-test-'))
const sample = await generateStudySet(join(root, 'a', 'sample'), SAMPLE_OPTIONS)
const awkward = await generateAwkwardSet(join(root, 'a', 'awkward'))
const all = [...sample, ...awkward]

afterAll(async () => {
  await rm(root, {recursive: true, force: true})
})

function awkwardCase(label: string): FixtureRecord {
  const record = awkward.find((candidate) => candidate.label === label)
  if (record === undefined) throw new Error(`no awkward case ${label}`)
  return record
}

// The generated headers hold only ASCII text and small numbers, so the first match
// of the Pixel Data tag is the element itself and not a coincidence inside a value.
function pixelDataOffset(bytes: Buffer, transferSyntaxUid: string): number {
  const tag = transferSyntaxUid === EXPLICIT_VR_BIG_ENDIAN ? [0x7f, 0xe0, 0x00, 0x10] : [0xe0, 0x7f, 0x10, 0x00]
  const offset = bytes.indexOf(Buffer.from(tag), 132)
  expect(offset).toBeGreaterThan(132)
  return offset
}

function notDicomReason(bytes: Buffer): NotDicomReason | 'parsed' {
  try {
    readDicomIdentifiers(bytes)
    return 'parsed'
  } catch (error) {
    if (error instanceof NotDicomError) return error.reason
    throw error
  }
}

function pseudoRandomBytes(length: number, seed: string): Buffer {
  const blocks: Buffer[] = []
  let block = createHash('sha256').update(seed).digest()
  for (let total = 0; total < length; total += block.length) {
    blocks.push(block)
    block = createHash('sha256').update(block).digest()
  }
  return Buffer.concat(blocks).subarray(0, length)
}

describe('readDicomIdentifiers on generated files', () => {
  it.each(all.map((record) => [`${record.label} ${relative(root, record.path)}`, record] as const))('reads %s', async (_, record) => {
    const parsed = readDicomIdentifiers(await readFile(record.path))
    expect(parsed).toEqual({
      patientId: record.patientId,
      studyInstanceUid: record.studyInstanceUid,
      seriesInstanceUid: record.seriesInstanceUid,
      sopInstanceUid: record.sopInstanceUid,
      transferSyntaxUid: record.transferSyntaxUid,
      hasPixelData: true,
      describesImage: true,
      framing: 'part10',
    })
    expect(orthancInstanceId(parsed.patientId, parsed.studyInstanceUid, parsed.seriesInstanceUid, parsed.sopInstanceUid)).toBe(record.orthancId)
  })

  it('covers every encoding the importer has to read', () => {
    expect(new Set(awkward.map((record) => record.transferSyntaxUid))).toEqual(new Set([
      EXPLICIT_VR_LITTLE_ENDIAN,
      EXPLICIT_VR_BIG_ENDIAN,
      IMPLICIT_VR_LITTLE_ENDIAN,
      '1.2.840.10008.1.2.1.99',
      '1.2.840.10008.1.2.5',
    ]))
    expect(awkward.map((record) => record.label)).toEqual([...AWKWARD_LABELS])
  })

  it('accepts a Uint8Array as well as a Buffer', async () => {
    const bytes = await readFile(awkwardCase('tiny').path)
    expect(readDicomIdentifiers(new Uint8Array(bytes)).sopInstanceUid).toBe(awkwardCase('tiny').sopInstanceUid)
  })
})

describe('files cut short', () => {
  const notDeflated = awkward.filter((record) => record.label !== 'deflated').concat(sample.slice(0, 1))

  it.each(notDeflated.map((record) => [record.label, record] as const))('%s cut just before Pixel Data has no pixel data', async (_, record) => {
    const bytes = await readFile(record.path)
    const header = bytes.subarray(0, pixelDataOffset(bytes, record.transferSyntaxUid))
    expect(readDicomIdentifiers(header)).toEqual({
      patientId: record.patientId,
      studyInstanceUid: record.studyInstanceUid,
      seriesInstanceUid: record.seriesInstanceUid,
      sopInstanceUid: record.sopInstanceUid,
      transferSyntaxUid: record.transferSyntaxUid,
      hasPixelData: false,
      describesImage: true,
      framing: 'part10',
    })
  })

  it.each(notDeflated.map((record) => [record.label, record] as const))('%s cut inside Pixel Data is truncated', async (_, record) => {
    const bytes = await readFile(record.path)
    const offset = pixelDataOffset(bytes, record.transferSyntaxUid)
    expect(notDicomReason(bytes.subarray(0, offset + 6))).toBe('truncated')
    expect(notDicomReason(bytes.subarray(0, offset + 7))).toBe('truncated')
    expect(notDicomReason(bytes.subarray(0, bytes.length - 1))).toBe('truncated')
  })

  it('a cut inside a text value is truncated', async () => {
    const record = awkwardCase('charset-latin1')
    const bytes = await readFile(record.path)
    const nameOffset = bytes.indexOf(Buffer.from('Gómez^Renée', 'latin1'))
    expect(nameOffset).toBeGreaterThan(132)
    expect(notDicomReason(bytes.subarray(0, nameOffset + 3))).toBe('truncated')
  })

  it.each(['nested-sequences', 'private-un-sequence', 'implicit-little-endian'])('a cut inside the nested sequences of %s is truncated', async (label) => {
    const bytes = await readFile(awkwardCase(label).path)
    const innerCode = bytes.indexOf(Buffer.from('Localizer', 'latin1'))
    expect(innerCode).toBeGreaterThan(132)
    expect(notDicomReason(bytes.subarray(0, innerCode + 4))).toBe('truncated')
  })

  it('a deflated file cut in half is truncated', async () => {
    const bytes = await readFile(awkwardCase('deflated').path)
    expect(notDicomReason(bytes.subarray(0, Math.floor(bytes.length / 2)))).toBe('truncated')
  })

  // Whatever the cut, the parser must answer or raise NotDicomError, never a RangeError,
  // and it may only claim pixel data for the whole file. Every header byte is tried;
  // deep inside the pixels a sample is enough.
  it.each(AWKWARD_LABELS.filter((label) => label !== 'large'))('any prefix of %s parses or is rejected as not DICOM', async (label) => {
    const record = awkwardCase(label)
    const bytes = await readFile(record.path)
    const lengths = Array.from({length: bytes.length + 1}, (_, length) => length)
      .filter((length) => length < 12_000 || length % 509 === 0 || length > bytes.length - 8)
    for (const length of lengths) {
      const prefix = bytes.subarray(0, length)
      try {
        const parsed = readDicomIdentifiers(prefix)
        expect(parsed.hasPixelData, `prefix of ${length} bytes`).toBe(length === bytes.length)
      } catch (error) {
        expect(error, `prefix of ${length} bytes`).toBeInstanceOf(NotDicomError)
      }
    }
  })
})

describe('input that is not DICOM', () => {
  it.each([
    ['empty input', Buffer.alloc(0)],
    ['a JSON document', Buffer.from(JSON.stringify({ID: 'x', Status: 'Success', Path: '/instances/x'}))],
    ['a long JSON document', Buffer.from(JSON.stringify({items: Array.from({length: 50}, (_, index) => ({index}))}))],
    ['pseudo-random bytes', pseudoRandomBytes(4096, 'noise')],
  ])('rejects %s for lacking the DICM magic', (_, bytes) => {
    expect(notDicomReason(bytes)).toBe('no-dicm-magic')
  })

  it('rejects pseudo-random bytes that happen to carry DICM at offset 128', () => {
    for (let attempt = 0; attempt < 200; attempt++) {
      const bytes = pseudoRandomBytes(2048, `noise ${attempt}`)
      bytes.write('DICM', 128, 'latin1')
      expect(notDicomReason(bytes)).not.toBe('parsed')
    }
  })

  it('rejects a file whose data set has a garbled VR as malformed', async () => {
    const record = sample[0] as FixtureRecord
    const bytes = Buffer.from(await readFile(record.path))
    const patientIdTag = bytes.indexOf(Buffer.from([0x10, 0x00, 0x20, 0x00, 0x4c, 0x4f]))
    bytes.write('lo', patientIdTag + 4, 'latin1')
    expect(notDicomReason(bytes)).toBe('malformed')
  })

  // "DICM" says the file is meant as DICOM: without an instance's UIDs it is damaged, never "not DICOM".
  it('rejects a Part 10 file without SOP Instance UID as damaged (malformed)', async () => {
    const record = awkwardCase('tiny')
    const bytes = Buffer.from(await readFile(record.path))
    const sopInstanceUidTag = bytes.indexOf(Buffer.from([0x08, 0x00, 0x18, 0x00, 0x55, 0x49]), 132 + 100)
    bytes.writeUInt16LE(0x0019, sopInstanceUidTag + 2)
    expect(notDicomReason(bytes)).toBe('malformed')
  })
})

describe('character sets', () => {
  const base: InstanceDescription = {
    patient: {id: 'Gómez-Ñandú', name: 'Gómez^Renée', birthDate: '19700101', sex: 'O'},
    study: {uid: '1.2.3', date: '20200101', time: '120000', accessionNumber: 'A1', description: 'x', id: '1'},
    series: {uid: '1.2.3.4', number: 1, modality: 'OT', description: 'x'},
    instance: {uid: '1.2.3.4.5', number: 1, sopClassUid: '1.2.840.10008.5.1.4.1.1.7'},
    image: {rows: 1, columns: 1, frames: 1, bitsAllocated: 8, bitsStored: 8},
    pixels: Uint8Array.of(1),
    transferSyntaxUid: EXPLICIT_VR_LITTLE_ENDIAN,
  }

  it.each(['ISO_IR 100', 'ISO_IR 192'] as const)('decodes a non-ASCII Patient ID written in %s', (specificCharacterSet) => {
    const bytes = encodeInstance({...base, specificCharacterSet})
    expect(readDicomIdentifiers(bytes).patientId).toBe('Gómez-Ñandú')
  })
})

describe('orthanc IDs', () => {
  // Values returned by Orthanc 1.10.1 for an instance with exactly these identifiers.
  it('match what Orthanc computes', () => {
    expect(orthancPatientId('VECTOR-PATIENT')).toBe('edca4f25-523d88e4-6818c235-faf9bdf6-c1139a6a')
    expect(orthancStudyId('VECTOR-PATIENT', '1.2.3')).toBe('f1e70a83-5c65485a-df6e37ca-f4c9b239-e8171af8')
    expect(orthancSeriesId('VECTOR-PATIENT', '1.2.3', '1.2.3.4')).toBe('35e39edb-a0c6710e-ce138596-0b1b0244-dc6985b9')
    expect(orthancInstanceId('VECTOR-PATIENT', '1.2.3', '1.2.3.4', '1.2.3.4.5')).toBe('396c16e7-185b62c1-64ef199e-656a8967-f6de79d8')
    expect(orthancInstanceId('Zoë-ÄÖ', '1.2.3', '1.2.3.4', '1.2.3.4.5')).toBe('3d94c4e0-0e676f82-abbb31d6-63e6a8a5-e42e626f')
  })
})

describe('RLE encoder', () => {
  // PS3.5 G.3.2: the reference PackBits decoder.
  function decodeSegment(segment: Buffer, expectedLength: number): Uint8Array {
    const output: number[] = []
    let index = 0
    while (output.length < expectedLength) {
      const control = segment[index++] as number
      if (control < 128) {
        for (let count = 0; count <= control; count++) output.push(segment[index++] as number)
      } else if (control > 128) {
        const value = segment[index++] as number
        for (let count = 0; count < 257 - control; count++) output.push(value)
      }
    }
    return Uint8Array.from(output)
  }

  it('round-trips 16-bit samples through one segment per byte, most significant first', () => {
    const rows = 3
    const columns = 300
    const random = pseudoRandomBytes(rows * columns, 'rle')
    const samples = Uint16Array.from({length: rows * columns}, (_, index) => {
      const column = index % columns
      return column < 140 ? 0x0a00 + (column >> 5) : column < 200 ? (random[index] as number) * 7 : 0xfffe
    })
    const encoded = rleEncodeFrame({rows, columns, samplesPerPixel: 1, bitsAllocated: 16, samples})
    expect(encoded.readUInt32LE(0)).toBe(2)
    const [high, low] = [1, 2].map((segment) => {
      const start = encoded.readUInt32LE(4 * segment)
      const end = segment === 1 ? encoded.readUInt32LE(8) : encoded.length
      expect(start % 2).toBe(0)
      return decodeSegment(encoded.subarray(start, end), rows * columns)
    }) as [Uint8Array, Uint8Array]
    const decoded = Uint16Array.from({length: rows * columns}, (_, index) => ((high[index] as number) << 8) | (low[index] as number))
    expect(decoded).toEqual(samples)
  })
})

describe('generation', () => {
  it('lays the study set out in stable, readable paths', () => {
    expect(relative(root, (sample[0] as FixtureRecord).path)).toBe(join('a', 'sample', 'p01', 's01', 'se01', 'i0001.dcm'))
    expect(sample).toHaveLength(32)
    expect(new Set(sample.map((record) => record.patientId)).size).toBe(4)
    expect(new Set(sample.map((record) => record.studyInstanceUid)).size).toBe(8)
    expect(new Set(sample.map((record) => record.seriesInstanceUid)).size).toBe(16)
    expect(new Set(sample.map((record) => record.studyDate)).size).toBe(8)
    expect(new Set(sample.map((record) => record.modality)).size).toBeGreaterThan(3)
    for (const uid of sample.flatMap((record) => [record.studyInstanceUid, record.seriesInstanceUid, record.sopInstanceUid])) {
      expect(uid).toMatch(/^2\.25\.(0|[1-9]\d*)$/)
      expect(uid.length).toBeLessThanOrEqual(64)
    }
  })

  it('gives each awkward case its own patient and the expected size', () => {
    expect(new Set(awkward.map((record) => record.patientId)).size).toBe(awkward.length)
    expect(new Set(awkward.map((record) => record.studyInstanceUid)).size).toBe(awkward.length)
    expect(awkwardCase('tiny').size).toBeLessThan(1000)
    expect(awkwardCase('large').size).toBeGreaterThan(5_900_000)
    expect(awkwardCase('large').size).toBeLessThan(6_200_000)
  })

  it('writes identical bytes for identical options', async () => {
    const again = [
      ...await generateStudySet(join(root, 'b', 'sample'), SAMPLE_OPTIONS),
      ...await generateAwkwardSet(join(root, 'b', 'awkward')),
    ]
    const fingerprint = (records: FixtureRecord[], dir: string) => records.map((record) => [relative(dir, record.path), record.md5, record.orthancId])
    expect(fingerprint(again, join(root, 'b'))).toEqual(fingerprint(all, join(root, 'a')))
  })

  it('writes a disjoint set for another seed', async () => {
    const other = await generateStudySet(join(root, 'c'), {...SAMPLE_OPTIONS, seed: 'another seed'})
    const knownPatients = new Set(sample.map((record) => record.patientId))
    const knownMd5s = new Set(sample.map((record) => record.md5))
    expect(other.filter((record) => knownPatients.has(record.patientId) || knownMd5s.has(record.md5))).toEqual([])
  })

  it('honours instance limits and pixel sizes', async () => {
    const records = await generateStudySet(join(root, 'd'), {patients: 3, instancesPerSeries: 5, pixelBytes: 20_000, maxInstances: 7})
    expect(records).toHaveLength(7)
    for (const record of records) {
      expect(record.size).toBeGreaterThan(20_000)
      expect(record.size).toBeLessThan(22_000)
    }
  })
})
