import {createHash} from 'node:crypto'
import {mkdtemp, readdir, readFile, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {deflateSync} from 'node:zlib'

import sqlite from 'node-sqlite3-wasm'
import {afterAll, describe, expect, it} from 'vitest'

import {UserFacingError} from '../../src/errors.js'
import type {IndexedAttachment, ResourceSideData} from '../../src/recovery/index-model.js'
import {openSqliteIndex} from '../../src/recovery/sqlite-index.js'
import {openStoredAttachment} from '../../src/recovery/stored-attachment.js'
import {UuidSet} from '../../src/recovery/uuid-set.js'
import {type IndexSchemaVariant, schemaStatements} from '../helpers/orthanc-index-schemas.js'

const root = await mkdtemp(join(tmpdir(), 'orthanc-index-test-'))
afterAll(async () => {
  await rm(root, {recursive: true, force: true})
})

const md5 = (bytes: Buffer | string) => createHash('md5').update(bytes).digest('hex')
const uuid = (n: number) => `${n.toString(16).padStart(8, '0')}-0000-4000-8000-000000000000`

/**
 * An index as Orthanc would leave it: one patient, one study, one series, two instances (levels
 * 1 to 4, as Orthanc's SQLite numbers them), each with its DICOM file, a header-only copy and
 * system metadata; user metadata, a user attachment and labels on an instance, the study, the
 * series and the patient.
 */
async function writeIndex(variant: IndexSchemaVariant): Promise<string> {
  const dir = join(root, variant)
  const { Database } = sqlite
  const { mkdir } = await import('node:fs/promises')
  await mkdir(dir)
  const database = new Database(join(dir, 'index'))
  try {
    database.exec(schemaStatements(variant))
    const labels = variant !== '1.5-1.11' && variant !== 'version-7'
    const insert = (sql: string, values: unknown[]) => database.run(sql, values as never)
    insert('INSERT INTO Resources VALUES (1, 1, ?, NULL)', ['patient-1'])
    insert('INSERT INTO Resources VALUES (2, 2, ?, 1)', ['study-1'])
    insert('INSERT INTO Resources VALUES (3, 3, ?, 2)', ['series-1'])
    insert('INSERT INTO Resources VALUES (4, 4, ?, 3)', ['instance-1'])
    insert('INSERT INTO Resources VALUES (5, 4, ?, 3)', ['instance-2'])
    const attach = (id: number, type: number, n: number, compression: number) =>
      insert('INSERT INTO AttachedFiles (id, fileType, uuid, compressedSize, uncompressedSize, compressionType, uncompressedMD5, compressedMD5) VALUES (?, ?, ?, ?, ?, ?, ?, ?)', [id, type, uuid(n), 100 + n, 200 + n, compression, md5(`u${n}`), md5(`c${n}`)])
    attach(4, 1, 1, 2)
    attach(4, 3, 2, 2)
    attach(4, 1025, 3, 1)
    attach(5, 1, 4, 1)
    attach(3, 1030, 5, 1)
    insert('INSERT INTO Metadata (id, type, value) VALUES (?, ?, ?)', [4, 2, '20240101T000000'])
    insert('INSERT INTO Metadata (id, type, value) VALUES (?, ?, ?)', [4, 1024, 'second-read-ok'])
    insert('INSERT INTO Metadata (id, type, value) VALUES (?, ?, ?)', [5, 8, 'RestApi'])
    insert('INSERT INTO Metadata (id, type, value) VALUES (?, ?, ?)', [2, 7, '20240101T000000'])
    insert('INSERT INTO Metadata (id, type, value) VALUES (?, ?, ?)', [2, 1025, 'study note'])
    insert('INSERT INTO Metadata (id, type, value) VALUES (?, ?, ?)', [1, 1026, 'patient note'])
    if (labels) {
      insert('INSERT INTO Labels VALUES (?, ?)', [4, 'reviewed'])
      insert('INSERT INTO Labels VALUES (?, ?)', [4, 'teaching'])
      insert('INSERT INTO Labels VALUES (?, ?)', [2, 'research'])
    }
    if (variant === '1.12.8') database.exec("UPDATE AttachedFiles SET revision = 3, customData = 'opaque'; UPDATE Metadata SET revision = 2")
  } finally {
    database.close()
  }
  return dir
}

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const all: T[] = []
  for await (const item of items) all.push(item)
  return all
}

const VARIANTS = ['1.5-1.11', '1.12.0-1.12.7', '1.12.8'] as const
const indexDirs = Object.fromEntries(await Promise.all(VARIANTS.map(async (variant) => [variant, await writeIndex(variant)] as const)))

describe('reading the SQLite index of each Orthanc version', () => {
  for (const variant of VARIANTS) {
    describe(variant, () => {
      const labels = variant !== '1.5-1.11'

      it('lists every instance with its attachments, metadata and labels', async () => {
        const dir = indexDirs[variant]!
        const index = await openSqliteIndex(dir)
        try {
          expect(index.description).toMatchObject({source: join(dir, 'index'), instances: 2})
          expect(index.description.schema).toContain(labels ? 'with labels' : 'without labels')
          if (variant === '1.12.8') expect(index.description.schema).toMatch(/revision.*customdata|customdata.*revision/)
          const instances = (await collect(index.instanceBatches())).flat()
          expect(instances.map((instance) => instance.id)).toEqual(['instance-1', 'instance-2'])
          const [first] = instances
          expect(first).toMatchObject({seriesId: 'series-1', studyId: 'study-1', patientId: 'patient-1', labels: labels ? ['reviewed', 'teaching'] : []})
          expect(first!.attachments).toContainEqual<IndexedAttachment>({contentType: 1, uuid: uuid(1), compression: 2, compressedSize: 101, uncompressedSize: 201, compressedMd5: md5('c1'), uncompressedMd5: md5('u1')})
          expect(first!.attachments.map((attachment) => attachment.contentType).sort()).toEqual([1, 1025, 3])
          expect([...first!.metadata]).toEqual(expect.arrayContaining([[2, '20240101T000000'], [1024, 'second-read-ok']]))
          expect((await collect(index.attachmentUuids())).sort()).toEqual([1, 2, 3, 4, 5].map(uuid))
        } finally {
          await index.close()
        }
      })

      it('exposes the user metadata, attachments and labels of patients, studies and series', async () => {
        const index = await openSqliteIndex(join(indexDirs[variant]!, 'index'))
        try {
          const resources = await collect(index.resourceSideData())
          expect(resources).toEqual<ResourceSideData[]>([
            {level: 'patient', id: 'patient-1', userMetadata: {1026: 'patient note'}, labels: [], attachments: []},
            {level: 'study', id: 'study-1', userMetadata: {1025: 'study note'}, labels: labels ? ['research'] : [], attachments: []},
            {level: 'series', id: 'series-1', userMetadata: {}, labels: [], attachments: [expect.objectContaining({contentType: 1030, uuid: uuid(5)}) as IndexedAttachment]},
          ])
        } finally {
          await index.close()
        }
      })
    })
  }

  it('never touches the original: same bytes, no lock, journal or copy left beside it', async () => {
    const dir = indexDirs['1.12.8']!
    const before = md5(await readFile(join(dir, 'index')))
    const index = await openSqliteIndex(dir)
    await collect(index.instanceBatches())
    expect(await readdir(dir)).toEqual(['index'])
    await index.close()
    expect(await readdir(dir)).toEqual(['index'])
    expect(md5(await readFile(join(dir, 'index')))).toBe(before)
  })

  it('refuses a schema version it does not know, naming it', async () => {
    const dir = await writeIndex('version-7')
    await expect(openSqliteIndex(dir)).rejects.toThrow(/schema version 7; this tool reads version 6/)
    await expect(openSqliteIndex(dir)).rejects.toBeInstanceOf(UserFacingError)
  })

  it('refuses an SQLite file that is not an Orthanc index, and a file that is not SQLite', async () => {
    const dir = join(root, 'other')
    const {mkdir, writeFile} = await import('node:fs/promises')
    await mkdir(dir)
    const database = new sqlite.Database(join(dir, 'index'))
    database.exec('CREATE TABLE notes(text TEXT)')
    database.close()
    await expect(openSqliteIndex(dir)).rejects.toThrow(/not an Orthanc index \(no globalproperties table\)/)
    await writeFile(join(dir, 'plain.txt'), 'hello')
    await expect(openSqliteIndex(join(dir, 'plain.txt'))).rejects.toThrow(/not an SQLite database/)
  })
})

describe('checking a stored file against the index', () => {
  const content = Buffer.from('the DICOM bytes, or any attachment')
  const compressed = Buffer.concat([Buffer.alloc(8), deflateSync(content)])
  compressed.writeBigUInt64LE(BigInt(content.length))
  const plain: IndexedAttachment = {contentType: 1, uuid: uuid(9), compression: 1, compressedSize: content.length, compressedMd5: md5(content), uncompressedSize: content.length, uncompressedMd5: md5(content)}
  const zlib: IndexedAttachment = {...plain, compression: 2, compressedSize: compressed.length, compressedMd5: md5(compressed)}

  it('gives the content of a sound file, plain or compressed', () => {
    expect(openStoredAttachment({state: 'bytes', bytes: content}, plain)).toEqual({ok: true, bytes: content, md5: md5(content), checked: true})
    expect(openStoredAttachment({state: 'bytes', bytes: compressed}, zlib)).toEqual({ok: true, bytes: content, md5: md5(content), checked: true})
  })

  it('names a missing, resized, altered or undecodable file', () => {
    expect(openStoredAttachment({state: 'missing'}, plain)).toMatchObject({ok: false, kind: 'missing'})
    expect(openStoredAttachment({state: 'size', size: 3}, plain)).toMatchObject({ok: false, kind: 'damaged', reason: expect.stringMatching(/has 3 bytes, the index recorded 34/)})
    const altered = Buffer.from(content)
    altered[0]! ^= 1
    expect(openStoredAttachment({state: 'bytes', bytes: altered}, plain)).toMatchObject({ok: false, kind: 'checksum'})
    expect(openStoredAttachment({state: 'bytes', bytes: compressed}, {...zlib, compression: 3})).toMatchObject({ok: false, kind: 'unsupported'})
  })

  it('inflates no further than the index allows, whatever the stream says', () => {
    const bomb = Buffer.concat([Buffer.alloc(8), deflateSync(Buffer.alloc(50_000_000))])
    bomb.writeBigUInt64LE(BigInt(content.length))
    const opened = openStoredAttachment({state: 'bytes', bytes: bomb}, {...zlib, compressedSize: bomb.length, compressedMd5: md5(bomb)})
    expect(opened).toMatchObject({ok: false, kind: 'damaged', reason: expect.stringMatching(/does not inflate/)})
    const wrongSize = Buffer.from(compressed)
    wrongSize.writeBigUInt64LE(7n)
    expect(openStoredAttachment({state: 'bytes', bytes: wrongSize}, {...zlib, compressedMd5: md5(wrongSize)})).toMatchObject({ok: false, kind: 'damaged', reason: expect.stringMatching(/announces 7 bytes/)})
  })

  // Orthanc compresses empty content to an empty file (no size prefix): taken as damaged, an
  // empty user attachment of a compressing server was never restored.
  it('gives empty content, compressed to nothing or to a size of zero', () => {
    const empty: IndexedAttachment = {...zlib, compressedSize: 0, uncompressedSize: 0, compressedMd5: md5(''), uncompressedMd5: md5('')}
    expect(openStoredAttachment({state: 'bytes', bytes: Buffer.alloc(0)}, empty)).toEqual({ok: true, bytes: Buffer.alloc(0), md5: md5(''), checked: true})
    const sized = Buffer.alloc(8)
    expect(openStoredAttachment({state: 'bytes', bytes: sized}, {...empty, compressedSize: 8, compressedMd5: md5(sized)})).toMatchObject({ok: true, bytes: Buffer.alloc(0)})
    // Not content that should have been there: an empty file for a non-empty attachment stays damaged.
    expect(openStoredAttachment({state: 'bytes', bytes: Buffer.alloc(0)}, {...zlib, compressedSize: 0, compressedMd5: md5('')})).toMatchObject({ok: false, kind: 'damaged'})
  })

  it('checks sizes only where the index holds no MD5 (StoreMD5ForAttachments off)', () => {
    expect(openStoredAttachment({state: 'bytes', bytes: compressed}, {...zlib, compressedMd5: '', uncompressedMd5: ''})).toMatchObject({ok: true, checked: false})
  })
})

describe('the set of attachment UUIDs', () => {
  it('knows exactly the UUIDs it was built from', async () => {
    const known = Array.from({length: 5000}, (_, n) => createHash('md5').update(String(n)).digest('hex').replace(/^(.{8})(.{4})(.{4})(.{4})/, '$1-$2-$3-$4-'))
    const set = await UuidSet.build(async function* () {
      yield* known
      yield 'not-a-uuid'
    })
    for (const value of known) expect(set.has(value)).toBe(true)
    expect(set.has(known[0]!.toUpperCase())).toBe(true)
    expect(set.has('not-a-uuid')).toBe(true)
    expect(set.has(uuid(1))).toBe(false)
    expect(set.has(`${known[0]!.slice(0, -1)}${known[0]!.endsWith('0') ? '1' : '0'}`)).toBe(false)
  })
})
