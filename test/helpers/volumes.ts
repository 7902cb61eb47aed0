import {createHash} from 'node:crypto'
import {Writable} from 'node:stream'

import tar from 'tar-stream'

import {parseBagInfo, parseChecksumManifest, renderBagInfo, renderChecksumManifest} from '../../src/archive/bagit.js'
import {
  ARCHIVE_FORMAT, ARCHIVE_FORMAT_VERSION, attachmentPayloadPath, BAG_INFO_FILE, CONTENTS_FILE, dicomPayloadPath, MANIFEST_FILE,
  PAYLOAD_MANIFEST_FILE, TAG_MANIFEST_FILE, type VolumeContents, type VolumeHeader, type VolumeManifest, volumeName, type WrittenInstanceRecord,
  type WrittenResourceRecord,
} from '../../src/archive/format.js'
import {TarOutput, VolumeWriter} from '../../src/archive/volume-writer.js'
import type {InstanceRecord, ResourceRecord} from '../../src/model.js'

/**
 * Archive volumes built in memory the way export writes them, and the tools to take one apart,
 * alter it and put it back together, as a clumsy user or a forger would: the archive tests and
 * the fuzz suite are written with them.
 */

export const md5 = (data: Buffer) => createHash('md5').update(data).digest('hex')
export const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex')

/** A deterministic Orthanc-shaped ID from a seed: 5 groups of 8 hex digits. */
export function fakeOrthancId(seed: string): string {
  const hex = createHash('sha1').update(seed).digest('hex')
  return [0, 8, 16, 24, 32].map((start) => hex.slice(start, start + 8)).join('-')
}

export function pattern(length: number, seed: number): Buffer {
  const bytes = Buffer.alloc(length)
  for (let index = 0; index < length; index++) bytes[index] = (index * 31 + seed * 17) & 0xff
  return bytes
}

export interface TestInstance {
  record: InstanceRecord
  dicom: Buffer
  attachments: Buffer[]
}

const STUDY = fakeOrthancId('study-1')

/** An instance record with its bytes; `attachments` gives the content of each user attachment. */
export function testInstance(name: string, size: number, attachments: Buffer[] = [], extra: Partial<InstanceRecord> = {}): TestInstance {
  const id = fakeOrthancId(name)
  const dicom = Buffer.concat([Buffer.alloc(128), Buffer.from('DICM'), pattern(size, name.length + size)])
  const record: InstanceRecord = {
    id,
    studyId: STUDY,
    seriesId: fakeOrthancId('series-1'),
    studyInstanceUid: '1.2.3',
    seriesInstanceUid: '1.2.3.4',
    sopInstanceUid: `1.2.3.4.${name.length}.${size}`,
    size: dicom.length,
    md5: md5(dicom),
    path: dicomPayloadPath({studyId: STUDY, id}),
    userMetadata: {},
    systemMetadata: {},
    attachments: attachments.map((data, index) => ({name: String(1030 + index), contentType: 1030 + index, size: data.length, md5: md5(data), path: attachmentPayloadPath(id, 1030 + index)})),
    labels: [],
    ...extra,
  }
  return {record, dicom, attachments}
}

export interface TestVolumeOptions {
  instances: TestInstance[]
  prefix?: string
  volume?: number
  volumeCount?: number
  group?: string
  /** Planned instances that "failed on the source": in the contents, not in the payload. */
  failed?: TestInstance[]
  /** Side data of patients, studies and series, with the bytes of their attachments (written before the first instance). */
  resources?: Array<{record: ResourceRecord; attachments: Buffer[]}>
  mtime?: Date
}

export function testHeader(options: {volume?: number; volumeCount?: number; group?: string; instances: TestInstance[]; mtime?: Date}): VolumeHeader {
  const mtime = options.mtime ?? new Date('2024-05-01T00:00:00Z')
  return {
    format: ARCHIVE_FORMAT,
    formatVersion: ARCHIVE_FORMAT_VERSION,
    group: options.group ?? '00000000-0000-4000-8000-000000000001',
    volume: options.volume ?? 1,
    volumeCount: options.volumeCount ?? 1,
    source: {server: 'http://source.test', name: 'SOURCE', version: '1.12.4', databaseBackend: 'SQLite (built-in)', storageBackend: 'filesystem (built-in)'},
    exportedAt: mtime.toISOString(),
    filters: {},
    changeCursor: 42,
    hops: [],
    studies: {[STUDY]: {studyInstanceUid: '1.2.3', expectedInstances: options.instances.length, instancesOnSource: options.instances.length}},
  }
}

/** One volume written the way export writes it, into memory; returns its bytes and its bag name. */
export async function writeTestVolume(options: TestVolumeOptions): Promise<{bytes: Buffer; bag: string}> {
  const volume = options.volume ?? 1
  const volumeCount = options.volumeCount ?? 1
  const bag = volumeName(options.prefix ?? 'test', volume, volumeCount)
  const planned = [...options.instances, ...(options.failed ?? [])]
  const header = testHeader({...options, instances: planned})
  const chunks: Buffer[] = []
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk)
      callback()
    },
  })
  const output = new TarOutput(sink)
  const writer = new VolumeWriter(output, bag, options.mtime ?? new Date('2024-05-01T00:00:00Z'))
  const resources = options.resources ?? []
  await writer.begin({...header, instances: planned.map((one) => one.record), resources: resources.map((resource) => resource.record)})
  const writtenResources: WrittenResourceRecord[] = []
  for (const {record, attachments} of resources) {
    const digests = []
    for (const [index, data] of attachments.entries()) digests.push({...record.attachments[index]!, sha256: await writer.addPayload(record.attachments[index]!.path, data)})
    writtenResources.push({...record, attachments: digests})
  }
  const written: WrittenInstanceRecord[] = []
  for (const {record, dicom, attachments} of options.instances) {
    const sha256 = await writer.addPayload(record.path, dicom)
    const attachmentDigests = []
    for (const [index, data] of attachments.entries()) attachmentDigests.push({...record.attachments[index]!, sha256: await writer.addPayload(record.attachments[index]!.path, data)})
    written.push({...record, sha256, attachments: attachmentDigests})
  }

  const manifest: VolumeManifest = {...header, instances: written, resources: writtenResources, failed: (options.failed ?? []).map((one) => ({id: one.record.id, reason: 'failed on the source'}))}
  await writer.finish(manifest, {group: header.group, volume, volumeCount, baggingDate: '2024-05-01', software: 'orthanc-replicate', description: 'test volume'})
  await output.close()
  return {bytes: Buffer.concat(chunks), bag}
}

export interface TarFile {
  name: string
  data: Buffer
  /** Header fields other than name and size (type, linkname, mode...). */
  header?: Partial<tar.Header>
}

/** Every entry of a tar, in order. */
export async function unpackTar(bytes: Buffer): Promise<TarFile[]> {
  const extract = tar.extract()
  const files: TarFile[] = []
  const done = (async () => {
    for await (const entry of extract) {
      const data: Buffer[] = []
      for await (const chunk of entry) data.push(chunk as Buffer)
      const {name, size: _size, ...header} = entry.header
      files.push({name, data: Buffer.concat(data), header})
    }
  })()
  extract.end(bytes)
  await done
  return files
}

export async function packTar(files: TarFile[]): Promise<Buffer> {
  const pack = tar.pack()
  for (const file of files) pack.entry({mtime: new Date('2024-05-01T00:00:00Z'), mode: 0o644, ...file.header, name: file.name, size: file.data.length}, file.data)
  pack.finalize()
  const chunks: Buffer[] = []
  for await (const chunk of pack) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

export type SealLayer = 'contents' | 'manifest' | 'payload-manifest' | 'bag-info' | 'tag-manifest'
export const ALL_LAYERS: SealLayer[] = ['contents', 'manifest', 'payload-manifest', 'bag-info', 'tag-manifest']

/**
 * Recomputes a bag's checksums from its payload as it now is, layer by layer from the bottom, as a
 * forger would after altering payload bytes. Leaving out a layer leaves that file stale.
 */
export function reseal(files: TarFile[], bag: string, layers: SealLayer[]): void {
  const find = (path: string) => files.find((file) => file.name === `${bag}/${path}`)
  const payload = new Map(files.filter((file) => file.name.startsWith(`${bag}/data/`)).map((file) => [file.name.slice(bag.length + 1), file.data]))
  const refresh = <T extends {path: string; size: number; md5: string; sha256?: string}>(item: T, withSha: boolean): T => {
    const data = payload.get(item.path)
    if (!data) return item
    return {...item, size: data.length, md5: md5(data), ...(withSha ? {sha256: sha256(data)} : {})}
  }

  if (layers.includes('contents')) {
    const file = find(CONTENTS_FILE)!
    const contents = JSON.parse(file.data.toString()) as VolumeContents
    contents.instances = contents.instances.map((record) => ({...refresh(record, false), attachments: record.attachments.map((attachment) => refresh(attachment, false))}))
    contents.resources = contents.resources?.map((resource) => ({...resource, attachments: resource.attachments.map((attachment) => refresh(attachment, false))}))
    file.data = Buffer.from(`${JSON.stringify(contents, null, 1)}\n`)
  }

  if (layers.includes('manifest')) {
    const file = find(MANIFEST_FILE)!
    const manifest = JSON.parse(file.data.toString()) as VolumeManifest
    manifest.instances = manifest.instances.map((record) => ({...refresh(record, true), attachments: record.attachments.map((attachment) => refresh(attachment, true))}))
    manifest.resources = manifest.resources?.map((resource) => ({...resource, attachments: resource.attachments.map((attachment) => refresh(attachment, true))}))
    file.data = Buffer.from(`${JSON.stringify(manifest, null, 1)}\n`)
  }

  if (layers.includes('payload-manifest')) {
    const file = find(PAYLOAD_MANIFEST_FILE)!
    const listed = parseChecksumManifest(file.data.toString(), PAYLOAD_MANIFEST_FILE)
    for (const path of listed.keys()) if (payload.has(path)) listed.set(path, sha256(payload.get(path)!))
    file.data = Buffer.from(renderChecksumManifest(listed))
  }

  if (layers.includes('bag-info')) {
    const file = find(BAG_INFO_FILE)!
    const info = parseBagInfo(file.data.toString())
    const listed = parseChecksumManifest(find(PAYLOAD_MANIFEST_FILE)!.data.toString(), PAYLOAD_MANIFEST_FILE)
    const bytes = [...listed.keys()].reduce((sum, path) => sum + (payload.get(path)?.length ?? 0), 0)
    const [volume, volumeCount] = (info.get('Bag-Count') ?? '1 of 1').split(' of ').map(Number)
    file.data = Buffer.from(renderBagInfo({
      software: info.get('Bag-Software-Agent') ?? '', baggingDate: info.get('Bagging-Date') ?? '', payloadBytes: bytes, payloadFiles: listed.size,
      group: info.get('Bag-Group-Identifier') ?? '', volume: volume!, volumeCount: volumeCount!, description: info.get('External-Description') ?? '',
    }))
  }

  if (layers.includes('tag-manifest')) {
    const file = find(TAG_MANIFEST_FILE)!
    const listed = parseChecksumManifest(file.data.toString(), TAG_MANIFEST_FILE)
    for (const path of listed.keys()) {
      const tag = find(path)
      if (tag) listed.set(path, sha256(tag.data))
    }
    file.data = Buffer.from(renderChecksumManifest(listed))
  }
}

/** Rewrites one JSON tag file of a bag through `edit`. */
export function editJson(files: TarFile[], name: string, edit: (value: Record<string, unknown>) => void): void {
  const file = files.find((candidate) => candidate.name === name)
  if (!file) throw new Error(`no entry ${name}`)
  const value = JSON.parse(file.data.toString()) as Record<string, unknown>
  edit(value)
  file.data = Buffer.from(`${JSON.stringify(value, null, 1)}\n`)
}
