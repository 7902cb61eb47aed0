import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import tar from 'tar-stream'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {readExportBase} from '../../src/export/since.js'

async function volumeWithManifest(manifest: string): Promise<Buffer> {
  const pack = tar.pack()
  pack.entry({name: 'orthanc-export-0001-of-0001/bagit.txt'}, 'BagIt-Version: 1.0\n')
  pack.entry({name: 'orthanc-export-0001-of-0001/orthanc/manifest.json'}, manifest)
  pack.finalize()
  const chunks: Buffer[] = []
  for await (const chunk of pack) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

describe('an earlier export given to --since, read from its volumes alone', () => {
  let work: string
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'since-base-'))
  })
  afterAll(async () => {
    await rm(work, {recursive: true, force: true})
  })

  it.each([
    ['is not JSON (control characters and a name in it)', '{"group": "\u001b[2J DOE^JOHN'],
    ['is JSON of another shape', '{"group": "../../x", "instances": "all"}'],
  ])('whose manifest %s: refused as damaged, naming the volume, never quoting it (it was exit 1, "a bug")', async (_what, manifest) => {
    const folder = await mkdtemp(join(work, 'base-'))
    await writeFile(join(folder, 'orthanc-export-0001-of-0001.tar'), await volumeWithManifest(manifest))
    const refused = await readExportBase(folder).then(() => undefined, (error: unknown) => error)
    expect(refused).toMatchObject({code: 'damaged-volume', category: 'bad-input', message: expect.stringContaining(`${folder}/orthanc-export-0001-of-0001.tar: its manifest.json is damaged: `)})
    expect((refused as Error).message).not.toContain('DOE')
    expect((refused as Error).message).not.toContain('\u001b')
  })
})
