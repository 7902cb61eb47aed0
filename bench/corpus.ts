import {join} from 'node:path'

import {benchOptions, type FixtureRecord, generateStudySet, SOP_CLASS} from '../fixtures/generate.js'
import {writeFixture} from '../fixtures/fixture-record.js'
import {uidFromName} from '../fixtures/writer/deterministic.js'
import {type MonochromeImage, monochromePixels} from '../fixtures/writer/pixels.js'
import {EXPLICIT_VR_LITTLE_ENDIAN} from '../src/dicom/transfer-syntax.js'

export interface Corpus {
  name: string
  /** Folder holding every file of the corpus, for the folder importers. */
  dir: string
  files: string[]
  count: number
  bytes: number
  description: string
}

export interface CorpusSpec {
  name: string
  instances: number
  fileBytes: number
  large: number
  largeBytes: number
  /** One instance per study (and series), as CR and DX archives hold, instead of studies of 50. */
  singleInstanceStudies?: boolean
}

/** 512 x 512 16-bit frames: a cine loop or a small enhanced CT, as multi-frame files usually are. */
const FRAME: MonochromeImage = {rows: 512, columns: 512, frames: 1, bitsAllocated: 16, bitsStored: 12}
const FRAME_BYTES = FRAME.rows * FRAME.columns * 2

/** Generates a corpus under `dir`: the fixture bench studies, plus large multi-frame instances in large/. */
export async function generateCorpus(dir: string, spec: CorpusSpec): Promise<Corpus> {
  const options = benchOptions(spec.instances, spec.fileBytes)
  const layout = spec.singleInstanceStudies ? {patients: Math.ceil(spec.instances / 2), studiesPerPatient: 2, seriesPerStudy: 1, instancesPerSeries: 1} : {}
  const studies = await generateStudySet(join(dir, 'studies'), {...options, ...layout})
  const large: FixtureRecord[] = []
  for (let index = 1; index <= spec.large; index++) large.push(await writeLargeInstance(join(dir, 'large'), index, spec.largeBytes))
  const records = [...studies, ...large]
  const bytes = records.reduce((sum, record) => sum + record.size, 0)
  const ordinary = studies.length > 0 ? Math.round(studies.reduce((sum, record) => sum + record.size, 0) / studies.length) : 0
  const largeSize = large.length > 0 ? `, plus ${large.length} multi-frame of ${(large[0]!.size / 1e6).toFixed(1)} MB` : ''
  return {
    name: spec.name,
    dir,
    files: records.map((record) => record.path),
    count: records.length,
    bytes,
    description: `${studies.length} instances of ${(ordinary / 1000).toFixed(1)} kB${spec.singleInstanceStudies ? ', one per study' : ''}${largeSize}: ${records.length} instances, ${(bytes / 1e6).toFixed(1)} MB`,
  }
}

async function writeLargeInstance(dir: string, index: number, bytes: number): Promise<FixtureRecord> {
  const seed = 'bench-large'
  const image = {...FRAME, frames: Math.max(2, Math.ceil(bytes / FRAME_BYTES))}
  const key = `large${index}`
  return writeFixture(join(dir, `large-${String(index).padStart(2, '0')}.dcm`), 'large', {
    patient: {id: `BENCH-LARGE-${index}`, name: `LARGE^MULTIFRAME^${index}`, birthDate: '19700101', sex: 'O'},
    study: {uid: uidFromName(seed, 'study', key), date: '20200101', time: '120000', accessionNumber: `L${index}`, description: 'BENCH LARGE MULTI-FRAME', id: `L${index}`},
    series: {uid: uidFromName(seed, 'series', key), number: 1, modality: 'OT', description: 'multi-frame'},
    instance: {uid: uidFromName(seed, 'instance', key), number: 1, sopClassUid: SOP_CLASS.multiFrameGrayscaleWordSecondaryCapture},
    image,
    pixels: monochromePixels(image, seed, key),
    transferSyntaxUid: EXPLICIT_VR_LITTLE_ENDIAN,
  })
}
