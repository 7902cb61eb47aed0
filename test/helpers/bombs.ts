/**
 * Hostile inputs that cost little to make and much to read: each one targets one way a reader
 * can be made to use unbounded memory or time, or to crash. Every generator streams what it
 * writes, so a test process never holds a bomb's inflated size either.
 */
import {once} from 'node:events'
import {createWriteStream} from 'node:fs'
import {open, readFile, writeFile} from 'node:fs/promises'
import {createDeflateRaw} from 'node:zlib'

import {encodeInstance, type InstanceDescription, SOP_CLASS} from '../../fixtures/instance.js'
import {text} from '../../fixtures/writer/data-element.js'
import {encodeDataSet} from '../../fixtures/writer/encode-data-set.js'
import {encodePart10} from '../../fixtures/writer/part10.js'
import {TAG} from '../../fixtures/writer/tags.js'
import {DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_LITTLE_ENDIAN_ENCODING, EXPLICIT_VR_LITTLE_ENDIAN} from '../../src/dicom/transfer-syntax.js'

/** The ceiling every bomb run of the CLI must stay under: peak RSS of the whole process. */
export const RSS_CEILING_MIB = 300

const BLOCK = 512

/** A ustar header block with a valid checksum; `size` as octal, or GNU base-256 when it does not fit 11 octal digits. */
export function tarHeader(name: string, size: number, typeflag = '0', linkname = ''): Buffer {
  const block = Buffer.alloc(BLOCK)
  block.write(name, 0, 100, 'utf8')
  block.write('0000644\0', 100, 'latin1')
  block.write('0000000\0', 108, 'latin1')
  block.write('0000000\0', 116, 'latin1')
  if (size < 8 ** 11) {
    block.write(`${size.toString(8).padStart(11, '0')}\0`, 124, 'latin1')
  } else {
    block[124] = 0x80
    let rest = size
    for (let index = 135; index > 124; index--) {
      block[index] = rest % 256
      rest = Math.floor(rest / 256)
    }
  }

  block.write('00000000000\0', 136, 'latin1')
  block.write(typeflag, 156, 'latin1')
  block.write(linkname, 157, 100, 'utf8')
  block.write('ustar\x0000', 257, 'latin1')
  return withChecksum(block)
}

/** Writes the header checksum of a block in place and returns it. */
export function withChecksum(block: Buffer): Buffer {
  block.fill(0x20, 148, 156)
  let sum = 0
  for (const byte of block) sum += byte
  block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1')
  return block
}

/** A pax extended header record set as tar writes it: "<length> <key>=<value>\n", the length counting itself. */
export function paxRecords(records: Record<string, string>): Buffer {
  const lines = Object.entries(records).map(([key, value]) => {
    const body = ` ${key}=${value}\n`
    let length = Buffer.byteLength(body) + 1
    while (String(length).length + Buffer.byteLength(body) !== length) length++
    return `${length}${body}`
  })
  return Buffer.from(lines.join(''), 'utf8')
}

export function padToBlock(data: Buffer): Buffer {
  return Buffer.concat([data, Buffer.alloc((BLOCK - (data.length % BLOCK)) % BLOCK)])
}

/** Where the tar headers of a volume sit, read with a scanner of the test's own (ustar and pax names), independent of src/. */
export async function tarLayout(volume: string): Promise<Array<{name: string; headerOffset: number; dataOffset: number; size: number; end: number}>> {
  const bytes = await readFile(volume)
  const entries: Array<{name: string; headerOffset: number; dataOffset: number; size: number; end: number}> = []
  let offset = 0
  let paxName: string | undefined
  let entryStart = 0
  while (offset + BLOCK <= bytes.length) {
    const block = bytes.subarray(offset, offset + BLOCK)
    if (block.every((byte) => byte === 0)) break
    const field = (start: number, length: number) => {
      const raw = block.subarray(start, start + length)
      const end = raw.indexOf(0)
      return raw.subarray(0, end === -1 ? length : end).toString('utf8')
    }

    const size = Number.parseInt(field(124, 12).trim() || '0', 8)
    const type = String.fromCharCode(block[156]!)
    const dataOffset = offset + BLOCK
    const end = dataOffset + Math.ceil(size / BLOCK) * BLOCK
    if (type === 'x') {
      if (paxName === undefined) entryStart = offset
      paxName = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(bytes.subarray(dataOffset, dataOffset + size).toString('utf8'))?.[1] ?? paxName
    } else {
      const prefix = field(345, 155)
      const name = paxName ?? (prefix ? `${prefix}/${field(0, 100)}` : field(0, 100))
      entries.push({name, headerOffset: paxName === undefined ? offset : entryStart, dataOffset, size, end})
      paxName = undefined
    }

    offset = end
  }

  return entries
}

/**
 * Copies a volume, inserting bytes right after the first payload entry: hostile entries amid
 * genuine ones, so a reader has to get past them to import the rest.
 */
export async function insertAfterFirstPayload(volume: string, output: string, insert: (write: (chunk: Buffer) => Promise<void>) => Promise<void>): Promise<{insertedAt: number}> {
  const layout = await tarLayout(volume)
  const first = layout.find((entry) => entry.name.includes('/data/'))
  if (!first) throw new Error(`no payload entry in ${volume}`)
  const bytes = await readFile(volume)
  const out = createWriteStream(output)
  const write = async (chunk: Buffer) => {
    if (!out.write(chunk)) await once(out, 'drain')
  }

  await write(bytes.subarray(0, first.end))
  await insert(write)
  await write(bytes.subarray(first.end))
  out.end()
  await once(out, 'finish')
  return {insertedAt: first.end}
}

/** `count` empty regular files, each a 512-byte header and nothing else: in the bag's data/, or outside any bag. */
export function manyEmptyEntries(bag: string | undefined, count: number): (write: (chunk: Buffer) => Promise<void>) => Promise<void> {
  return async (write) => {
    const batch = 2000
    for (let start = 0; start < count; start += batch) {
      const blocks: Buffer[] = []
      for (let index = start; index < Math.min(count, start + batch); index++) blocks.push(tarHeader(bag ? `${bag}/data/dicom/bomb/${index}.dcm` : `empty-${index}`, 0))
      await write(Buffer.concat(blocks))
    }
  }
}

/** A header that claims `claimed` bytes of data, followed by only `actual` bytes. */
export function oversizedClaim(name: string, claimed: number, actual: number): (write: (chunk: Buffer) => Promise<void>) => Promise<void> {
  return async (write) => {
    await write(tarHeader(name, claimed))
    await write(Buffer.alloc(actual, 0x41))
  }
}

/** A pax extended header of `bytes` bytes (one long comment record) ahead of a small entry. */
export function hugePaxHeader(name: string, bytes: number): (write: (chunk: Buffer) => Promise<void>) => Promise<void> {
  return async (write) => {
    const prefix = `${bytes} comment=`
    await write(tarHeader('PaxHeaders/huge', bytes, 'x'))
    await write(Buffer.from(prefix, 'latin1'))
    const chunk = Buffer.alloc(1024 * 1024, 0x78)
    let left = bytes - prefix.length - 1
    while (left > 0) {
      const length = Math.min(left, chunk.length)
      await write(chunk.subarray(0, length))
      left -= length
    }

    await write(Buffer.from('\n'))
    await write(Buffer.alloc((BLOCK - (bytes % BLOCK)) % BLOCK))
    await write(tarHeader(name, 1))
    await write(padToBlock(Buffer.from('x')))
  }
}

function description(seed: string, transferSyntaxUid: string): InstanceDescription {
  return {
    patient: {id: `BOMB-${seed}`, name: 'Bomb^Test', birthDate: '19700101', sex: 'O'},
    study: {uid: `1.2.826.0.1.3680043.8.498.1.${seed.length}.1`, date: '20240101', time: '120000', accessionNumber: 'A1', description: seed, id: '1'},
    series: {uid: `1.2.826.0.1.3680043.8.498.1.${seed.length}.2`, number: 1, modality: 'OT', description: seed},
    instance: {uid: `1.2.826.0.1.3680043.8.498.1.${seed.length}.3.${Buffer.from(seed).reduce((sum, byte) => sum * 31 + byte, 7) % 1_000_000_007}`, number: 1, sopClassUid: SOP_CLASS.secondaryCapture},
    image: {rows: 2, columns: 2, frames: 1, bitsAllocated: 8, bitsStored: 8},
    pixels: Uint8Array.of(1, 2, 3, 4),
    transferSyntaxUid,
  }
}

/** The identifying elements of a bomb instance, without pixel data. */
function identifiers(seed: string) {
  const {patient, study, series, instance} = description(seed, EXPLICIT_VR_LITTLE_ENDIAN)
  return [
    text(TAG.SOPClassUID, 'UI', instance.sopClassUid),
    text(TAG.SOPInstanceUID, 'UI', instance.uid),
    text(TAG.Modality, 'CS', series.modality),
    text(TAG.PatientID, 'LO', patient.id),
    text(TAG.StudyInstanceUID, 'UI', study.uid),
    text(TAG.SeriesInstanceUID, 'UI', series.uid),
  ]
}

/**
 * A deflated-transfer-syntax DICOM file whose data set inflates to about `inflatedBytes`: the
 * identifiers, then Pixel Data of that many zero bytes. Deflate shrinks zeros about 1000 times,
 * so 1 GiB inflated is a 1 MB file. Written by streaming the deflater.
 */
export async function writeDeflatedBomb(path: string, seed: string, inflatedBytes: number): Promise<void> {
  const {sopClassUid, uid} = description(seed, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN).instance
  const headerOnly = encodePart10({sopClassUid, sopInstanceUid: uid, transferSyntaxUid: DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, dataSet: []})
  // The meta group's length is the value of (0002,0000), right after "DICM".
  const metaEnd = 132 + 12 + headerOnly.readUInt32LE(140)
  const out = createWriteStream(path)
  out.write(headerOnly.subarray(0, metaEnd))
  const deflate = createDeflateRaw({level: 9, memLevel: 9})
  deflate.pipe(out)
  const write = async (chunk: Buffer) => {
    if (!deflate.write(chunk)) await once(deflate, 'drain')
  }

  await write(encodeDataSet(identifiers(seed), EXPLICIT_LITTLE_ENDIAN_ENCODING, 'latin1'))
  // An even length, under the 0xFFFFFFFF that means undefined.
  const capped = Math.min(inflatedBytes, 0xfffffffe)
  const length = capped - (capped % 2)
  const pixelHeader = Buffer.alloc(12)
  pixelHeader.writeUInt16LE(0x7fe0, 0)
  pixelHeader.writeUInt16LE(0x0010, 2)
  pixelHeader.write('OB', 4, 'latin1')
  pixelHeader.writeUInt32LE(length, 8)
  await write(pixelHeader)
  const zeros = Buffer.alloc(4 * 1024 * 1024)
  for (let left = length; left > 0; left -= zeros.length) await write(zeros.subarray(0, Math.min(left, zeros.length)))
  deflate.end()
  await once(out, 'finish')
}

/**
 * An explicit VR little endian file with sequences nested `depth` deep inside (0040,A730)
 * Content Sequence, the way DICOM SR nests: each item holds the next sequence. With
 * `undefinedLength` every sequence and item is delimited; otherwise every length is given.
 */
export function deeplyNestedDicom(seed: string, depth: number, undefinedLength: boolean): Buffer {
  const whole = encodeInstance(description(seed, EXPLICIT_VR_LITTLE_ENDIAN))
  const pixelData = whole.indexOf(Buffer.from([0xe0, 0x7f, 0x10, 0x00]), 132)
  const sequenceHeader = (length: number) => {
    const header = Buffer.alloc(12)
    header.writeUInt16LE(0x0040, 0)
    header.writeUInt16LE(0xa730, 2)
    header.write('SQ', 4, 'latin1')
    header.writeUInt32LE(length, 8)
    return header
  }

  const marker = (element: number, length: number) => {
    const header = Buffer.alloc(8)
    header.writeUInt16LE(0xfffe, 0)
    header.writeUInt16LE(element, 2)
    header.writeUInt32LE(length, 4)
    return header
  }

  let nest: Buffer
  if (undefinedLength) {
    const open = Buffer.concat([sequenceHeader(0xffffffff), marker(0xe000, 0xffffffff)])
    const close = Buffer.concat([marker(0xe00d, 0), marker(0xe0dd, 0)])
    nest = Buffer.concat([Buffer.concat(Array.from({length: depth}, () => open)), Buffer.concat(Array.from({length: depth}, () => close))])
  } else {
    // Built from the inside out: an item of length L inside a sequence of length L + 8.
    const total = depth * 20
    nest = Buffer.alloc(total)
    for (let level = 0; level < depth; level++) {
      const offset = level * 20
      const inner = total - offset - 20
      sequenceHeader(inner + 8).copy(nest, offset)
      marker(0xe000, inner).copy(nest, offset + 12)
    }
  }

  return Buffer.concat([whole.subarray(0, pixelData), nest, whole.subarray(pixelData)])
}

/** A sparse file of `size` bytes whose `bytes` are written at `offset`: gigabytes that cost no disk. */
export async function writeSparse(path: string, size: number, pieces: Array<{offset: number; bytes: Buffer}>): Promise<void> {
  await writeFile(path, '')
  const file = await open(path, 'r+')
  try {
    await file.truncate(size)
    for (const {offset, bytes} of pieces) await file.write(bytes, 0, bytes.length, offset)
  } finally {
    await file.close()
  }
}
