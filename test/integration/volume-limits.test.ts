import {mkdtemp, readdir, readFile, rm, stat, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {generateStudySet} from '../../fixtures/generate.js'
import {parseJson, runCli} from '../helpers/cli.js'
import {type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'

/**
 * `--max-volume-size` holds for the files on the disk, encrypted ones included: age adds 16 bytes
 * per 64 KiB and a header, which a volume of tens of megabytes planned at the limit in plaintext
 * bytes would carry over it. One instance of 60 MB, so that the encryption's overhead (about
 * 15 kB) is more than the planner's own slack.
 */
describe('--max-volume-size with encryption', () => {
  let work: string
  let source: OrthancServer
  let plannedBytes: number

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'orthanc-replicate-volume-limits-'))
    const records = await generateStudySet(join(work, 'fixtures'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 1, pixelBytes: 60_000_000, seed: 'volume-limits'})
    source = await startOrthanc({name: 'volume-limits-source'})
    await uploadFiles(source, records.map((record) => record.path))
    await writeFile(join(work, 'passphrase'), 'a passphrase for the volume limits\n', {mode: 0o600})
    // What the plaintext volume is planned at.
    const plain = join(work, 'plain')
    expect((await runCli(['export', '--source', source.url, '--output', plain])).code).toBe(0)
    plannedBytes = (JSON.parse(await readFile(join(plain, '.orthanc-replicate', 'plan.json'), 'utf8')) as {volumes: Array<{bytes: number}>}).volumes[0]!.bytes
  }, 180_000)

  afterAll(async () => {
    await source?.dispose()
    if (work) await rm(work, {recursive: true, force: true})
  })

  const encryptedExport = async (name: string, limit: number) => {
    const output = join(work, name)
    const result = await runCli(['export', '--source', source.url, '--output', output, '--max-volume-size', String(limit), '--passphrase-file', join(work, 'passphrase'), '--json'])
    const sizes = await Promise.all((await readdir(output).catch(() => [] as string[])).filter((file) => file.includes('.tar')).map(async (file) => (await stat(join(output, file))).size))
    return {result, sizes}
  }

  it('a limit the plaintext fits but the encrypted file would not: the instance is refused as too large, and no file is over the limit', async () => {
    const limit = plannedBytes + 30
    const {result, sizes} = await encryptedExport('tight', limit)
    expect(result.code).toBe(10)
    expect(parseJson<{failures: Array<{kind: string}>}>(result).failures).toEqual([expect.objectContaining({kind: 'too-large'})])
    for (const size of sizes) expect(size).toBeLessThanOrEqual(limit)
  }, 120_000)

  it('a limit with room for the encryption: one volume, within it', async () => {
    const limit = plannedBytes + 64 * 1024
    const {result, sizes} = await encryptedExport('roomy', limit)
    expect(result.code, result.stderr).toBe(0)
    expect(sizes).toHaveLength(1)
    expect(sizes[0]).toBeLessThanOrEqual(limit)
  }, 120_000)
})
