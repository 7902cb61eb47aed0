import {createHash} from 'node:crypto'
import {constants, deflateRawSync, inflateRawSync} from 'node:zlib'

import {describe, expect, it} from 'vitest'

import {INFLATE_CHUNK, InflateError, inflateRawChunks} from '../../src/util/inflate.js'

function pseudoRandom(length: number, seed: string): Buffer {
  const blocks: Buffer[] = []
  let block = createHash('sha256').update(seed).digest()
  for (let total = 0; total < length; total += block.length) {
    blocks.push(block)
    block = createHash('sha256').update(block).digest()
  }

  return Buffer.concat(blocks).subarray(0, length)
}

/** Data with every kind of redundancy: runs, repeats near and far, text, noise. */
function mixed(length: number, seed: string): Buffer {
  const noise = pseudoRandom(length, seed)
  const bytes = Buffer.alloc(length)
  for (let index = 0; index < length; index++) {
    const region = Math.floor(index / 7919) % 5
    bytes[index] = region === 0 ? 0 : region === 1 ? noise[index]! : region === 2 ? 'DICOM text value '.charCodeAt(index % 17) : region === 3 ? noise[index % 300]! : noise[index]! & 0x0f
  }

  return bytes
}

function inflateAll(input: Buffer): Buffer {
  const chunks = [...inflateRawChunks(input)]
  for (const chunk of chunks) expect(chunk.length).toBeLessThanOrEqual(INFLATE_CHUNK)
  return Buffer.concat(chunks)
}

function reasonOf(input: Buffer): string {
  try {
    inflateAll(input)
    return 'inflated'
  } catch (error) {
    if (error instanceof InflateError) return error.reason
    throw error
  }
}

describe('inflateRawChunks', () => {
  const samples = [
    ['empty', Buffer.alloc(0)],
    ['one byte', Buffer.from('x')],
    ['zeros (long runs, distance 1)', Buffer.alloc(300_000)],
    ['noise (stored blocks)', pseudoRandom(200_000, 'noise')],
    ['mixed', mixed(400_000, 'mixed')],
  ] as const

  it.each(samples)('gives back exactly what zlib deflated, at every level and strategy: %s', (_, data) => {
    for (const level of [0, 1, 6, 9]) {
      for (const strategy of [constants.Z_DEFAULT_STRATEGY, constants.Z_FILTERED, constants.Z_HUFFMAN_ONLY, constants.Z_RLE, constants.Z_FIXED]) {
        const compressed = deflateRawSync(data, {level, strategy})
        expect(inflateAll(compressed).equals(data), `level ${level} strategy ${strategy}`).toBe(true)
      }
    }
  })

  it('agrees with zlib on every cut of a stream: truncated, never wrong bytes', () => {
    const data = mixed(40_000, 'cuts')
    const compressed = deflateRawSync(data)
    for (let length = 0; length < compressed.length; length += length < 200 ? 1 : 37) {
      let produced: Buffer = Buffer.alloc(0)
      try {
        produced = inflateAll(compressed.subarray(0, length))
      } catch (error) {
        expect(error, `cut at ${length}`).toBeInstanceOf(InflateError)
        continue
      }

      // A prefix that decodes whole must be a prefix of the data (zlib agrees it is not complete).
      expect(data.subarray(0, produced.length).equals(produced), `cut at ${length}`).toBe(true)
    }

    expect(reasonOf(compressed.subarray(0, compressed.length - 3))).toBe('truncated')
  })

  it('corrupted streams raise InflateError or inflate to something, never anything else, and never hang', () => {
    const compressed = deflateRawSync(mixed(50_000, 'flips'))
    let errors = 0
    for (let attempt = 0; attempt < 400; attempt++) {
      const damaged = Buffer.from(compressed)
      const position = (attempt * 7919) % damaged.length
      damaged[position] = damaged[position]! ^ (1 << (attempt % 8))
      let zlibSays: 'ok' | 'error' = 'ok'
      try {
        inflateRawSync(damaged)
      } catch {
        zlibSays = 'error'
      }

      const outcome = reasonOf(damaged)
      if (outcome !== 'inflated') errors++
      // Where zlib inflates it, so does this decoder (zlib also checks nothing more in a raw stream).
      if (zlibSays === 'ok') expect(outcome, `flip at ${position}`).toBe('inflated')
    }

    expect(errors).toBeGreaterThan(0)
  })

  it('names a malformed stream as malformed', () => {
    expect(reasonOf(Buffer.from([0x07]))).toBe('malformed')
    expect(reasonOf(Buffer.from([0x01, 0x05, 0x00, 0x00, 0x00]))).toBe('malformed')
  })

  it('hands a bomb over chunk by chunk: the caller stops when it has seen enough, having held one chunk', () => {
    const compressed = deflateRawSync(Buffer.alloc(64 * 1024 * 1024), {level: 9})
    let seen = 0
    const before = process.memoryUsage().arrayBuffers
    for (const chunk of inflateRawChunks(compressed)) {
      seen += chunk.length
      if (seen >= 16 * 1024 * 1024) break
    }

    expect(seen).toBeLessThan(16 * 1024 * 1024 + INFLATE_CHUNK)
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(24 * 1024 * 1024)
  })
})
