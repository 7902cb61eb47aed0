import {constants as bufferConstants} from 'node:buffer'
import {createHash} from 'node:crypto'
import {inflateAnnounced} from '../util/bounded-inflate.js'

import type {ProblemKind} from '../problems.js'
import {COMPRESSION_NONE, COMPRESSION_ZLIB_WITH_SIZE, type IndexedAttachment} from './index-model.js'

/** What a storage area gave for one attachment UUID. */
export type StoredRead =
  /** `modifiedAt`: when it was last written (ms since the epoch), where the storage keeps such times. */
  | {state: 'bytes'; bytes: Buffer; modifiedAt?: number}
  | {state: 'missing'}
  /** The storage holds another number of bytes than the index recorded (`larger`: at least that many more): not read. */
  | {state: 'size'; size: number; larger?: boolean}
  | {state: 'unreadable'; reason: string}

export type OpenedAttachment =
  | {ok: true; bytes: Buffer; md5: string; checked: boolean}
  | {ok: false; kind: ProblemKind; reason: string}

const SIZE_PREFIX = 8
const LARGEST_BUFFER = bufferConstants.MAX_LENGTH

/**
 * Checks a stored attachment against what the index recorded and gives its content. The stored
 * bytes must have the recorded compressed size and MD5; stored with compression (type 2, an
 * 8-byte little-endian size then a zlib stream) they are inflated, never beyond the recorded
 * uncompressed size, and the result must have the recorded uncompressed size and MD5. An index
 * written with StoreMD5ForAttachments off has no MD5s: then only the sizes are checked
 * (`checked` is false).
 */
export function openStoredAttachment(read: StoredRead, attachment: IndexedAttachment): OpenedAttachment {
  switch (read.state) {
    case 'missing':
      return {ok: false, kind: 'missing', reason: `no stored file ${attachment.uuid}`}
    case 'unreadable':
      return {ok: false, kind: 'unreadable', reason: `stored file ${attachment.uuid} cannot be read: ${read.reason}`}
    case 'size':
      return {ok: false, kind: 'damaged', reason: `stored file ${attachment.uuid} has ${read.larger ? `more than ${read.size}` : read.size} bytes, the index recorded ${attachment.compressedSize}`}
    case 'bytes':
      break
  }

  const stored = read.bytes
  if (stored.length !== attachment.compressedSize) {
    return {ok: false, kind: 'damaged', reason: `stored file ${attachment.uuid} has ${stored.length} bytes, the index recorded ${attachment.compressedSize}`}
  }
  const checked = attachment.compressedMd5 !== '' && attachment.uncompressedMd5 !== ''
  const storedMd5 = md5Hex(stored)
  if (checked && storedMd5 !== attachment.compressedMd5) {
    return {ok: false, kind: 'checksum', reason: `stored file ${attachment.uuid} has MD5 ${storedMd5}, the index recorded ${attachment.compressedMd5}`}
  }

  let content: Buffer
  switch (attachment.compression) {
    case COMPRESSION_NONE:
      content = stored
      break
    case COMPRESSION_ZLIB_WITH_SIZE: {
      const inflated = inflateStored(stored, attachment)
      if ('reason' in inflated) return {ok: false, kind: 'damaged', reason: `stored file ${attachment.uuid}: ${inflated.reason}`}
      content = inflated.bytes
      break
    }
    default:
      return {ok: false, kind: 'unsupported', reason: `stored file ${attachment.uuid} uses compression type ${attachment.compression}, which Orthanc's storage does not write`}
  }

  if (content.length !== attachment.uncompressedSize) {
    return {ok: false, kind: 'damaged', reason: `stored file ${attachment.uuid} holds ${content.length} bytes, the index recorded ${attachment.uncompressedSize}`}
  }
  const md5 = content === stored ? storedMd5 : md5Hex(content)
  if (checked && md5 !== attachment.uncompressedMd5) {
    return {ok: false, kind: 'checksum', reason: `stored file ${attachment.uuid} holds content with MD5 ${md5}, the index recorded ${attachment.uncompressedMd5}`}
  }
  return {ok: true, bytes: content, md5, checked}
}

function inflateStored(stored: Buffer, attachment: IndexedAttachment): {bytes: Buffer} | {reason: string} {
  // Orthanc compresses empty content to nothing at all: no size, no stream.
  if (stored.length === 0 && attachment.uncompressedSize === 0) return {bytes: Buffer.alloc(0)}
  if (stored.length < SIZE_PREFIX) return {reason: 'too short for a compressed file'}
  const announced = stored.readBigUInt64LE(0)
  if (announced !== BigInt(attachment.uncompressedSize)) return {reason: `announces ${announced} bytes once inflated, the index recorded ${attachment.uncompressedSize}`}
  if (attachment.uncompressedSize > LARGEST_BUFFER) return {reason: `${attachment.uncompressedSize} bytes once inflated, more than one buffer can hold`}
  // Nor anything after the size, if a writer gives one.
  if (attachment.uncompressedSize === 0 && stored.length === SIZE_PREFIX) return {bytes: Buffer.alloc(0)}
  try {
    // Bounded by the index, and the index's size by the bounds: neither a damaged stream nor a
    // damaged index row can make a small file inflate without limit.
    return {bytes: inflateAnnounced(stored.subarray(SIZE_PREFIX), attachment.uncompressedSize, {format: 'zlib'})}
  } catch (error) {
    return {reason: `does not inflate to the ${attachment.uncompressedSize} bytes the index recorded: ${(error as Error).message}`}
  }
}

export function md5Hex(bytes: Buffer): string {
  return createHash('md5').update(bytes).digest('hex')
}
