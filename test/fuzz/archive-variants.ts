import {ARCHIVE_FORMAT_VERSION} from '../../src/archive/format.js'
import {ALL_LAYERS, editJson, packTar, reseal, type SealLayer, type TarFile, testInstance, unpackTar, writeTestVolume} from '../helpers/volumes.js'

/**
 * Damaged, altered and hostile variants of a real export, made deterministically from a seed:
 * the classes a clumsy user, a failing drive or an attacker produce. Each variant is the bytes
 * of every volume file (or of one stream), ready to be imported.
 */

export type VariantClass = 'flip' | 'cut' | 'forge' | 'json' | 'hostile' | 'bomb' | 'hidden' | 'swap'
export const VARIANT_CLASSES: VariantClass[] = ['flip', 'cut', 'forge', 'json', 'hostile', 'bomb', 'hidden', 'swap']

/** Classes whose every variant is bad input: none of them may end in exit 0. */
export const ALWAYS_REFUSED: ReadonlySet<VariantClass> = new Set(['forge', 'json', 'hostile', 'bomb', 'hidden'])

export interface Baseline {
  /** The volume files of the export, in order, each with its entries. */
  volumes: Array<{name: string; bytes: Buffer; files: TarFile[]; bag: string}>
  /** The same export as one stream (export --output -). */
  stream: Buffer
}

export interface Variant {
  name: string
  kind: VariantClass
  /** Volume files by name, or one stream. */
  input: {files: Array<{name: string; bytes: Buffer}>} | {stream: Buffer}
}

/** A small fast PRNG (mulberry32): the same seed gives the same variants on every machine. */
export function random(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let value = state
    value = Math.imul(value ^ (value >>> 15), value | 1)
    value ^= value + Math.imul(value ^ (value >>> 7), value | 61)
    return ((value ^ (value >>> 14)) >>> 0) / 4294967296
  }
}

const pick = <T>(rng: () => number, items: readonly T[]): T => items[Math.floor(rng() * items.length)]!
const copyFiles = (files: TarFile[]): TarFile[] => files.map((file) => ({...file, data: Buffer.from(file.data), header: file.header ? {...file.header} : undefined}))

/** The variant of `kind` number `index` made from `seed`. */
export async function makeVariant(baseline: Baseline, kind: VariantClass, seed: number): Promise<Variant> {
  const rng = random(seed * 7919 + VARIANT_CLASSES.indexOf(kind))
  const asStream = rng() < 0.3
  const volumeIndex = Math.floor(rng() * baseline.volumes.length)
  const volume = baseline.volumes[volumeIndex]!
  const withVolume = (name: string, bytes: Buffer): Variant => ({
    name: `${kind} #${seed}: ${name}`,
    kind,
    input: {files: baseline.volumes.map((other, index) => ({name: other.name, bytes: index === volumeIndex ? bytes : other.bytes}))},
  })

  switch (kind) {
    case 'flip': {
      const target = asStream ? Buffer.from(baseline.stream) : Buffer.from(volume.bytes)
      const flips = 1 + Math.floor(rng() * 3)
      const where: number[] = []
      for (let flip = 0; flip < flips; flip++) {
        // Half the flips land in the first block of an entry's header, where damage costs the most.
        const offset = rng() < 0.5 ? Math.floor(rng() * target.length) : Math.floor(rng() * (target.length / 512)) * 512 + Math.floor(rng() * 512)
        target[offset] = target[offset]! ^ (1 + Math.floor(rng() * 255))
        where.push(offset)
      }
      const name = `byte(s) at ${where.join(', ')}`
      return asStream ? {name: `${kind} #${seed}: stream ${name}`, kind, input: {stream: target}} : withVolume(`${volume.name} ${name}`, target)
    }

    case 'cut': {
      const bytes = asStream ? baseline.stream : volume.bytes
      const boundaries = entryBoundaries(bytes)
      const at = rng() < 0.7 ? pick(rng, boundaries) : Math.floor(rng() * bytes.length)
      const cut = bytes.subarray(0, at)
      return asStream ? {name: `${kind} #${seed}: stream cut at ${at}`, kind, input: {stream: cut}} : withVolume(`${volume.name} cut at ${at}`, cut)
    }

    case 'forge': {
      // Altered payload, with a random part of the chain recomputed to match: never all of it
      // (a whole consistent forgery is indistinguishable from an export; see the threat model).
      const files = copyFiles(volume.files)
      const payload = files.filter((file) => file.name.includes('/data/'))
      const victim = pick(rng, payload)
      const offset = Math.floor(rng() * victim.data.length)
      victim.data[offset] = victim.data[offset]! ^ (1 + Math.floor(rng() * 255))
      // Bag-info only counts bytes, which a flipped byte does not change: leave one of the others stale.
      const layers = ALL_LAYERS.filter(() => rng() < 0.6)
      const essential = layers.filter((layer) => layer !== 'bag-info')
      if (essential.length === ALL_LAYERS.length - 1) layers.splice(layers.indexOf(pick(rng, essential)), 1)
      reseal(files, volume.bag, layers as SealLayer[])
      return withVolume(`${victim.name} altered at ${offset}, resealed: ${layers.join(', ') || 'nothing'}`, await packTar(files))
    }

    case 'json': {
      // One of the two JSON manifests edited (never both the same way), the tag manifest resealed.
      const files = copyFiles(volume.files)
      const file = pick(rng, ['orthanc/contents.json', 'orthanc/manifest.json'])
      const [path, value] = pick(rng, JSON_EDITS)(rng)
      editJson(files, `${volume.bag}/${file}`, (json) => setPath(json, path, value))
      reseal(files, volume.bag, ['tag-manifest'])
      return withVolume(`${file} ${path.join('.')} = ${JSON.stringify(value)?.slice(0, 40)}`, await packTar(files))
    }

    case 'hostile': {
      if (rng() < 0.15) {
        // A directory that carries data: tar writers will not make one, so it is spliced in raw.
        const data = Buffer.from('data hidden in a directory entry')
        const at = pick(rng, entryBoundaries(volume.bytes))
        const entry = Buffer.concat([rawHeader(`${volume.bag}/data/dicom/dir/`, data.length, '5'), data, Buffer.alloc(512 - data.length)])
        return withVolume(`a directory carrying data at ${at}`, Buffer.concat([volume.bytes.subarray(0, at), entry, volume.bytes.subarray(at)]))
      }
      const files = copyFiles(volume.files)
      const entry = pick(rng, hostileEntries(volume.bag))
      files.splice(Math.floor(rng() * (files.length + 1)), 0, entry.file)
      return withVolume(`${entry.what}`, await packTar(files))
    }

    case 'bomb': {
      const bomb = pick(rng, ['many-empty', 'huge-size', 'huge-pax'] as const)
      if (bomb === 'many-empty') {
        const files = copyFiles(volume.files)
        const count = 2000 + Math.floor(rng() * 3000)
        const empties = Array.from({length: count}, (_, index) => ({name: `${volume.bag}/data/dicom/empty-${index}.dcm`, data: Buffer.alloc(0)}))
        files.splice(2, 0, ...empties)
        return withVolume(`${count} empty entries`, await packTar(files))
      }
      if (bomb === 'huge-pax') {
        const files = copyFiles(volume.files)
        files.splice(2, 0, {name: `${volume.bag}/data/dicom/pax.dcm`, data: Buffer.from('x'), header: {pax: {comment: 'x'.repeat(2 * 1024 * 1024)}}})
        return withVolume('a 2 MiB pax header', await packTar(files))
      }
      // A header that claims gigabytes, followed by a few bytes and the rest of the volume.
      const claimed = (4 + Math.floor(rng() * 5)) * 1024 ** 3
      const header = rawHeader(`${volume.bag}/data/dicom/claims-${claimed}.dcm`, claimed)
      const at = pick(rng, entryBoundaries(volume.bytes).filter((offset) => offset < volume.bytes.length - 1024))
      return withVolume(`a header claiming ${claimed} bytes at ${at}`, Buffer.concat([volume.bytes.subarray(0, at), header, Buffer.alloc(512, 7), volume.bytes.subarray(at)]))
    }

    case 'hidden': {
      // A well-formed bag of instances the export does not hold, smuggled in.
      const intruder = await writeTestVolume({instances: [testInstance(`intruder-${seed}`, 300 + Math.floor(rng() * 3000))], prefix: 'intruder'})
      if (asStream) {
        return {name: `${kind} #${seed}: a bag after the stream's end marker`, kind, input: {stream: Buffer.concat([baseline.stream, intruder.bytes])}}
      }
      if (rng() < 0.6) {
        // After the end-of-archive marker: a reader must stop there, and say something follows.
        return withVolume(`a bag hidden after ${volume.name}'s end marker`, Buffer.concat([volume.bytes, intruder.bytes]))
      }
      const files = [...copyFiles(volume.files), ...await unpackTar(intruder.bytes)]
      return withVolume(`a second bag inside ${volume.name}`, await packTar(files))
    }

    case 'swap': {
      const files = copyFiles(volume.files)
      const payload = files.filter((file) => file.name.includes('/data/'))
      const how = pick(rng, ['swap-data', 'duplicate', 'duplicate-altered', 'move', 'rename'] as const)
      const first = pick(rng, payload)
      const second = pick(rng, payload.filter((file) => file !== first).length > 0 ? payload.filter((file) => file !== first) : payload)
      if (how === 'swap-data') [first.data, second.data] = [second.data, first.data]
      else if (how === 'duplicate') files.splice(files.indexOf(first) + 1, 0, {...first, data: Buffer.from(first.data)})
      else if (how === 'duplicate-altered') {
        const altered = Buffer.from(first.data)
        altered[0] = altered[0]! ^ 1
        files.splice(files.indexOf(first) + 1 + Math.floor(rng() * 3), 0, {...first, data: altered})
      } else if (how === 'move') {
        files.splice(files.indexOf(first), 1)
        files.splice(Math.floor(rng() * files.length), 0, first)
      } else {
        first.name = second.name
      }
      return withVolume(`${how} ${first.name} / ${second.name}`, await packTar(files))
    }
  }
}

/** Offsets where an entry's header starts or its padded data ends: where cuts hurt most. */
export function entryBoundaries(bytes: Buffer): number[] {
  const boundaries: number[] = []
  for (let offset = 0; offset + 512 <= bytes.length;) {
    const block = bytes.subarray(offset, offset + 512)
    if (block.every((byte) => byte === 0)) break
    boundaries.push(offset)
    const size = Number.parseInt(block.toString('latin1', 124, 136).replace(/\0.*$/, '').trim() || '0', 8)
    offset += 512 + Math.ceil(size / 512) * 512
    boundaries.push(offset)
  }

  return boundaries
}

type JsonEdit = (rng: () => number) => [path: Array<string | number>, value: unknown]
const JSON_EDITS: JsonEdit[] = [
  () => [['volumeCount'], 1e9],
  () => [['volume'], 0],
  () => [['changeCursor'], -1],
  // A version newer than this program reads.
  () => [['formatVersion'], ARCHIVE_FORMAT_VERSION + 1],
  () => [['formatVersion'], 1],
  () => [['group'], 'not-a-uuid'],
  () => [['instances', 0, 'size'], '3590'],
  (rng) => [['instances', 0, 'size'], Math.floor(rng() * 100000)],
  () => [['instances', 0, 'labels'], 'urgent'],
  () => [['instances', 0, 'labels'], ['a label with spaces']],
  () => [['instances', 0, 'id'], '../../system'],
  () => [['instances', 0, 'path'], 'data/dicom/../../escape.dcm'],
  () => [['instances', 0, 'md5'], '0'.repeat(32)],
  () => [['instances', 0, 'userMetadata'], {Reviewed: 'forged'}],
  () => [['instances', 0, 'userMetadata'], {'../x': 'y'}],
  () => [['instances', 0, 'attachments'], [{name: 'x', contentType: 1, size: 1, md5: '0'.repeat(32), path: 'data/attachments/x/1.bin'}]],
  () => [['instances'], []],
  () => [['studies'], {}],
  () => [['comment'], 'an unknown field'],
  () => [['hops'], 'none'],
  () => [['source', 'server'], 'http://elsewhere:8042'],
  () => [['resources'], [{level: 'study', study: '00000000-00000000-00000000-00000000-00000000', userMetadata: {Reviewed: 'forged'}, systemMetadata: {}, attachments: [], labels: []}]],
  () => [['resources'], 'none'],
]

function setPath(value: Record<string, unknown>, path: Array<string | number>, replacement: unknown): void {
  let node: Record<string | number, unknown> = value
  for (const key of path.slice(0, -1)) {
    const next = node[key]
    if (typeof next !== 'object' || next === null) return
    node = next as Record<string | number, unknown>
  }
  node[path.at(-1)!] = replacement
}

function hostileEntries(bag: string): Array<{what: string; file: TarFile}> {
  return [
    {what: 'a symbolic link', file: {name: `${bag}/data/dicom/link.dcm`, data: Buffer.alloc(0), header: {type: 'symlink', linkname: '/etc/passwd'}}},
    {what: 'a hard link', file: {name: `${bag}/data/dicom/hard.dcm`, data: Buffer.alloc(0), header: {type: 'link', linkname: `${bag}/bagit.txt`}}},
    {what: 'a character device', file: {name: `${bag}/data/dicom/dev.dcm`, data: Buffer.alloc(0), header: {type: 'character-device', devmajor: 1, devminor: 3}}},
    {what: 'a FIFO', file: {name: `${bag}/data/dicom/fifo.dcm`, data: Buffer.alloc(0), header: {type: 'fifo'}}},
    {what: 'a path climbing out', file: {name: `${bag}/../../escaped.txt`, data: Buffer.from('escape')}},
    {what: 'an absolute path', file: {name: '/tmp/absolute-escape.txt', data: Buffer.from('escape')}},
    {what: 'a backslash path', file: {name: `${bag}/data\\dicom\\x.dcm`, data: Buffer.from('x')}},
    {what: 'an entry outside any bag', file: {name: 'top-level.txt', data: Buffer.from('x')}},
    {what: 'an unlisted payload file', file: {name: `${bag}/data/dicom/unlisted.dcm`, data: Buffer.from('DICM')}},
    {what: 'an unlisted tag file', file: {name: `${bag}/orthanc/extra.json`, data: Buffer.from('{}')}},
    {what: 'a second bagit.txt', file: {name: `${bag}/bagit.txt`, data: Buffer.from('BagIt-Version: 0.97\n')}},
  ]
}

/** A ustar header with a valid checksum and any size, for sizes tar writers refuse to write. */
export function rawHeader(name: string, size: number, typeflag = '0'): Buffer {
  const block = Buffer.alloc(512)
  block.write(name.slice(0, 99), 0, 'utf8')
  block.write('0000644\0', 100, 'latin1')
  block.write('0000000\0', 108, 'latin1')
  block.write('0000000\0', 116, 'latin1')
  const octal = size.toString(8)
  if (octal.length <= 11) block.write(`${octal.padStart(11, '0')}\0`, 124, 'latin1')
  else {
    // GNU base-256: the high bit of the first byte set, the size big-endian in the rest.
    block[124] = 0x80
    let rest = BigInt(size)
    for (let index = 135; index > 124; index--) {
      block[index] = Number(rest & 0xffn)
      rest >>= 8n
    }
  }
  block.write('00000000000\0', 136, 'latin1')
  block.write(typeflag, 156, 'latin1')
  block.write('ustar\x0000', 257, 'latin1')
  block.fill(0x20, 148, 156)
  let sum = 0
  for (const byte of block) sum += byte
  block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1')
  return block
}

/** Unpacks each volume of an export for the generators. */
export async function baselineFrom(volumes: Array<{name: string; bytes: Buffer}>, stream: Buffer): Promise<Baseline> {
  return {
    volumes: await Promise.all(volumes.map(async ({name, bytes}) => ({name, bytes, files: await unpackTar(bytes), bag: name.replace(/\.tar$/, '')}))),
    stream,
  }
}
