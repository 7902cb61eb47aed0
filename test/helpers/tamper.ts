import {createReadStream} from 'node:fs'
import {open, readFile, truncate, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import tar from 'tar-stream'

import {type IndexedEntry, scanTarFile} from '../../src/archive/tar-index.js'

/** Flips one byte in the middle of the named entry's data, in place. */
export async function flipByteInEntry(volume: string, entrySuffix: string): Promise<void> {
  const entry = (await allEntries(volume)).find((candidate) => candidate.name.endsWith(entrySuffix))
  if (!entry) throw new Error(`no entry ending with ${entrySuffix} in ${volume}`)
  const file = await open(volume, 'r+')
  try {
    const position = entry.dataOffset + Math.floor(entry.size / 2)
    const byte = Buffer.alloc(1)
    await file.read(byte, 0, 1, position)
    byte[0] = byte[0]! ^ 0x01
    await file.write(byte, 0, 1, position)
  } finally {
    await file.close()
  }
}

/** The payload entries of a volume, in order, with where each one's data ends (padded to 512). */
export async function payloadEntries(volume: string): Promise<Array<{name: string; dataOffset: number; end: number; size: number}>> {
  return (await allEntries(volume))
    .filter((entry) => entry.name.includes('/data/'))
    .map((entry) => ({name: entry.name, dataOffset: entry.dataOffset, size: entry.size, end: entry.dataOffset + Math.ceil(entry.size / 512) * 512}))
}

/** Every entry header of a volume, payload included (the index keeps only tag files). */
async function allEntries(volume: string): Promise<IndexedEntry[]> {
  const entries: IndexedEntry[] = []
  for await (const entry of scanTarFile(volume)) entries.push(entry)
  return entries
}

export async function truncateAt(volume: string, length: number): Promise<void> {
  await truncate(volume, length)
}

/** Copies a volume, adding entries that no export ever writes. */
export async function addHostileEntries(volume: string, output: string, extra: Array<Partial<tar.Header> & {name: string; content?: string}>): Promise<void> {
  const extract = tar.extract()
  const pack = tar.pack()
  const chunks: Buffer[] = []
  pack.on('data', (chunk) => chunks.push(chunk as Buffer))
  const packed = new Promise<void>((resolve, reject) => {
    pack.on('end', resolve)
    pack.on('error', reject)
  })
  createReadStream(volume).pipe(extract)
  let first = true
  for await (const entry of extract) {
    const data: Buffer[] = []
    for await (const chunk of entry) data.push(chunk as Buffer)
    // Hostile entries go right after the first payload entry's headers, before the rest of the payload.
    if (first && entry.header.name.includes('/data/')) {
      first = false
      for (const {content, ...header} of extra) pack.entry(header, content ?? '')
    }

    pack.entry(entry.header, Buffer.concat(data))
  }

  pack.finalize()
  await packed
  await writeFile(output, Buffer.concat(chunks))
}

/**
 * Flips a byte near the end of an instance's file in a (plain) storage folder, as a disk fault
 * would, without Orthanc knowing: its recorded MD5 no longer matches. Returns the undo.
 */
export async function damageStoredFile(server: {storageDir: string; json<T>(path: string): Promise<T>}, instanceId: string): Promise<() => Promise<void>> {
  const info = await server.json<{Uuid: string}>(`/instances/${instanceId}/attachments/dicom/info`)
  const stored = join(server.storageDir, info.Uuid.slice(0, 2), info.Uuid.slice(2, 4), info.Uuid)
  const original = await readFile(stored)
  const damaged = Buffer.from(original)
  damaged[damaged.length - 10] = damaged[damaged.length - 10]! ^ 0xff
  await writeFile(stored, damaged)
  return async () => writeFile(stored, original)
}
