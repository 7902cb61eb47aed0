import {mkdtemp, readFile, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, describe, expect, it} from 'vitest'

import {FRAMING_CASES, generateFramingSet} from '../../fixtures/generate.js'
import {encodeInstance} from '../../fixtures/instance.js'
import {locateDataSet} from '../../src/dicom/file-meta.js'
import {NotDicomError} from '../../src/dicom/not-dicom-error.js'
import {orthancInstanceId} from '../../src/dicom/orthanc-id.js'
import {readDicomIdentifiers} from '../../src/dicom/parse.js'
import {EXPLICIT_VR_BIG_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN} from '../../src/dicom/transfer-syntax.js'

const root = await mkdtemp(join(tmpdir(), 'dicom-framing-test-'))
const framed = await generateFramingSet(root)

afterAll(async () => {
  await rm(root, {recursive: true, force: true})
})

function reason(bytes: Buffer): string {
  try {
    readDicomIdentifiers(bytes)
    return 'parsed'
  } catch (error) {
    if (error instanceof NotDicomError) return error.reason
    throw error
  }
}

describe('files that are DICOM without being Part 10 files', () => {
  it.each(framed.map((record) => [record.label, record] as const))('reads %s with its identifiers and encoding', async (label, record) => {
    const bytes = await readFile(record.path)
    const expected = FRAMING_CASES[label as keyof typeof FRAMING_CASES]
    expect(bytes.toString('latin1', 128, 132)).not.toBe('DICM')
    const parsed = readDicomIdentifiers(bytes)
    expect(parsed).toMatchObject({
      patientId: record.patientId,
      studyInstanceUid: record.studyInstanceUid,
      seriesInstanceUid: record.seriesInstanceUid,
      sopInstanceUid: record.sopInstanceUid,
      transferSyntaxUid: expected.transferSyntaxUid,
      hasPixelData: true,
      describesImage: true,
      framing: expected.framing,
    })
    expect(orthancInstanceId(parsed.patientId, parsed.studyInstanceUid, parsed.seriesInstanceUid, parsed.sopInstanceUid)).toBe(record.orthancId)
  })

  it('tells the encoding of a bare data set from its first element', async () => {
    const guessed = (label: string) => readFile(framed.find((record) => record.label === label)!.path).then((bytes) => locateDataSet(bytes).transferSyntaxUid)
    expect(await guessed('data-set-implicit-little-endian')).toBe(IMPLICIT_VR_LITTLE_ENDIAN)
    expect(await guessed('data-set-explicit-little-endian')).toBe(EXPLICIT_VR_LITTLE_ENDIAN)
    expect(await guessed('data-set-explicit-big-endian')).toBe(EXPLICIT_VR_BIG_ENDIAN)
  })

  it('reads a header-only prefix of a bare data set as an image without pixel data', async () => {
    const bytes = await readFile(framed.find((record) => record.label === 'data-set-explicit-big-endian')!.path)
    const pixelData = bytes.indexOf(Buffer.from([0x7f, 0xe0, 0x00, 0x10]))
    expect(readDicomIdentifiers(bytes.subarray(0, pixelData))).toMatchObject({hasPixelData: false, describesImage: true, framing: 'data-set'})
  })

  it('says that an instance without an image describes none', () => {
    const report = encodeInstance({
      patient: {id: 'P', name: 'N', birthDate: '19700101', sex: 'O'},
      study: {uid: '1.2.3', date: '20200101', time: '120000', accessionNumber: 'A', description: 'd', id: '1'},
      series: {uid: '1.2.3.4', number: 1, modality: 'SR', description: 'd'},
      instance: {uid: '1.2.3.4.5', number: 1, sopClassUid: '1.2.840.10008.5.1.4.1.1.88.11'},
      image: {rows: 1, columns: 1, frames: 1, bitsAllocated: 8, bitsStored: 8},
      pixels: Uint8Array.of(1),
      transferSyntaxUid: EXPLICIT_VR_LITTLE_ENDIAN,
    })
    const rows = report.indexOf(Buffer.from([0x28, 0x00, 0x02, 0x00]))
    expect(readDicomIdentifiers(report.subarray(0, rows))).toMatchObject({hasPixelData: false, describesImage: false})
  })

  // A bare data set cut short is no proof of a damaged DICOM file: nothing said it was one.
  it('calls any prefix of a bare data set either readable or not DICOM, never damaged', async () => {
    for (const record of framed.filter((entry) => entry.label.startsWith('data-set'))) {
      const bytes = await readFile(record.path)
      for (let length = 0; length < bytes.length; length += 7) {
        expect(['parsed', 'no-dicm-magic', 'missing-attribute'], `${record.label} cut at ${length}`).toContain(reason(bytes.subarray(0, length)))
      }
    }
  })

  it('refuses "DICM" without its preamble, as Orthanc does', async () => {
    const part10 = encodeInstance({
      patient: {id: 'P', name: 'N', birthDate: '19700101', sex: 'O'},
      study: {uid: '1.2.3', date: '20200101', time: '120000', accessionNumber: 'A', description: 'd', id: '1'},
      series: {uid: '1.2.3.4', number: 1, modality: 'OT', description: 'd'},
      instance: {uid: '1.2.3.4.5', number: 1, sopClassUid: '1.2.840.10008.5.1.4.1.1.7'},
      image: {rows: 1, columns: 1, frames: 1, bitsAllocated: 8, bitsStored: 8},
      pixels: Uint8Array.of(1),
      transferSyntaxUid: EXPLICIT_VR_LITTLE_ENDIAN,
    })
    expect(reason(part10.subarray(128))).toBe('no-dicm-magic')
  })

  it.each([
    ['text', Buffer.from('Exported from somewhere.\n')],
    ['JSON', Buffer.from('{"Report": "a user attachment"}')],
    ['a PDF', Buffer.from('%PDF-1.7\n%\u00e2\u00e3\u00cf\u00d3\n1 0 obj\n', 'latin1')],
    ['zeros', Buffer.alloc(64)],
  ])('does not take %s for a data set', (_, bytes) => {
    expect(reason(bytes)).toBe('no-dicm-magic')
  })
})
