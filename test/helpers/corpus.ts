import {execFile} from 'node:child_process'
import {mkdtemp, readdir} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {promisify} from 'node:util'

import {type FixtureRecord, generateAwkwardSet, generateStudySet} from '../../fixtures/generate.js'

const run = promisify(execFile)

/** The fixture set most tests share: ordinary studies plus every awkward encoding, kept small. */
export async function makeCorpus(dir: string): Promise<FixtureRecord[]> {
  const studies = await generateStudySet(join(dir, 'studies'), {patients: 3, studiesPerPatient: 2, seriesPerStudy: 2, instancesPerSeries: 2, pixelBytes: 6000, seed: 'corpus', modalities: ['CT', 'MR']})
  const awkward = await generateAwkwardSet(join(dir, 'awkward'), {largeBytes: 1_500_000})
  return [...studies, ...awkward]
}

/** Extracts volumes with GNU tar, as a receiving site without this tool would. */
export async function extractWithTar(volumes: string[]): Promise<string> {
  const target = await mkdtemp(join(tmpdir(), 'extracted-'))
  for (const volume of volumes) await run('tar', ['-xf', volume, '-C', target])
  return target
}

export async function volumeFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((name) => name.endsWith('.tar')).sort().map((name) => join(dir, name))
}

/** Every file under a folder, recursively, relative paths. */
export async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, {recursive: true, withFileTypes: true})
  return entries.filter((entry) => entry.isFile()).map((entry) => join(entry.parentPath ?? (entry as unknown as {path: string}).path, entry.name))
}
