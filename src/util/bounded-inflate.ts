import {constants as bufferConstants} from 'node:buffer'
import {inflateRawSync, inflateSync} from 'node:zlib'

/**
 * How far a compressed input may inflate. A few compressed megabytes can claim gigabytes (zlib
 * reaches about 1000:1 on zeros); real DICOM compresses a few times, and blank images more.
 * The output is capped by `maxOutputBytes`, and by `maxRatio` times the compressed size once
 * past `ratioFloorBytes`, so that small files may compress as well as they like.
 */
export interface InflateBounds {
  maxOutputBytes: number
  maxRatio: number
  ratioFloorBytes: number
}

/** For DICOM: 4 GiB at most (32-bit lengths), 100 times the compressed size beyond 64 MiB. */
export const DEFAULT_INFLATE_BOUNDS: InflateBounds = {maxOutputBytes: 4 * 1024 ** 3, maxRatio: 100, ratioFloorBytes: 64 * 1024 ** 2}

/** The most `compressedBytes` may inflate to under `bounds`. */
export function inflateLimit(compressedBytes: number, bounds: InflateBounds = DEFAULT_INFLATE_BOUNDS): number {
  return Math.min(bounds.maxOutputBytes, Math.max(bounds.ratioFloorBytes, compressedBytes * bounds.maxRatio))
}

/** The bound in words, for messages: "104857600 bytes (100 times its 1048576 compressed bytes)". */
export function describeInflateLimit(compressedBytes: number, bounds: InflateBounds = DEFAULT_INFLATE_BOUNDS): string {
  const limit = inflateLimit(compressedBytes, bounds)
  if (limit === bounds.maxOutputBytes) return `${limit} bytes, the most any input may inflate to`
  if (limit === bounds.ratioFloorBytes) return `${limit} bytes`
  return `${limit} bytes (${bounds.maxRatio} times its ${compressedBytes} compressed bytes)`
}

/** The input would inflate beyond its bounds, or beyond the size it announced: a decompression bomb, or a lie. */
export class InflateLimitError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'InflateLimitError'
  }
}

/** The compressed data itself is damaged or cut short. */
export class CorruptCompressedDataError extends Error {
  constructor(readonly reason: 'truncated' | 'malformed', message: string) {
    super(message)
    this.name = 'CorruptCompressedDataError'
  }
}

/**
 * Inflates a whole compressed input whose inflated size is announced ahead, such as an Orthanc
 * storage file with StorageCompression (an 8-byte size, then a zlib stream): the output is never
 * larger than the announced size, and an announced size beyond the bounds is refused before
 * anything is inflated. Returns exactly `announcedSize` bytes, or throws InflateLimitError
 * (beyond the bounds or the announced size) or CorruptCompressedDataError (damaged, cut short, or
 * shorter than announced). Memory: at most twice the announced size while zlib assembles it.
 */
export function inflateAnnounced(compressed: Buffer, announcedSize: number, options: {format: 'zlib' | 'raw'; bounds?: InflateBounds}): Buffer {
  const bounds = options.bounds ?? DEFAULT_INFLATE_BOUNDS
  const limit = inflateLimit(compressed.length, bounds)
  if (!Number.isSafeInteger(announcedSize) || announcedSize < 0) throw new CorruptCompressedDataError('malformed', `announces ${announcedSize} bytes once inflated, not a size`)
  if (announcedSize > limit) {
    throw new InflateLimitError(`announces ${announcedSize} bytes once inflated, more than ${describeInflateLimit(compressed.length, bounds)}: refused without inflating`)
  }

  let inflated: Buffer
  try {
    // One more byte than announced is allowed, to tell "more than announced" from "exactly".
    const inflate = options.format === 'zlib' ? inflateSync : inflateRawSync
    inflated = inflate(compressed, {maxOutputLength: Math.min(announcedSize + 1, bufferConstants.MAX_LENGTH)})
  } catch (error) {
    if ((error as {code?: string}).code === 'ERR_BUFFER_TOO_LARGE') throw new InflateLimitError(`inflates to more than its announced ${announcedSize} bytes`)
    const reason = (error as {code?: string}).code === 'Z_BUF_ERROR' ? 'truncated' : 'malformed'
    throw new CorruptCompressedDataError(reason, `does not inflate: ${(error as Error).message}`)
  }

  if (inflated.length > announcedSize) throw new InflateLimitError(`inflates to more than its announced ${announcedSize} bytes`)
  if (inflated.length < announcedSize) throw new CorruptCompressedDataError('truncated', `inflates to ${inflated.length} bytes, not the announced ${announcedSize}`)
  return inflated
}
