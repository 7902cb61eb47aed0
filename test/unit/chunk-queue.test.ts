import {describe, expect, it} from 'vitest'

import {ChunkQueue} from '../../src/util/chunk-queue.js'

describe('ChunkQueue', () => {
  it('gives back exactly the bytes pushed, in order, whatever the cuts on either side', () => {
    const bytes = Buffer.from(Array.from({length: 997}, (_, index) => (index * 31) % 256))
    for (const [pushSize, takeSize] of [[1, 7], [7, 1], [64, 100], [100, 64], [997, 13], [13, 997], [50, 50]] as const) {
      const queue = new ChunkQueue()
      for (let at = 0; at < bytes.length; at += pushSize) queue.push(bytes.subarray(at, at + pushSize))
      expect(queue.length).toBe(bytes.length)
      // Takes and drops (as a skip does) in turn; every byte is accounted for, in order.
      let offset = 0
      for (let step = 0; queue.length > 0; step++) {
        expect(queue.peek(takeSize)).toEqual(bytes.subarray(offset, offset + takeSize))
        if (step % 3 === 2) {
          const dropped = queue.drop(takeSize)
          expect(dropped).toBeGreaterThan(0)
          offset += dropped
        } else {
          const taken = queue.take(takeSize)
          expect(taken).toEqual(bytes.subarray(offset, offset + takeSize))
          offset += taken.length
        }

        expect(queue.length).toBe(bytes.length - offset)
      }

      expect(offset).toBe(bytes.length)
      expect(queue.take(10)).toEqual(Buffer.alloc(0))
      expect(queue.drop(10)).toBe(0)
    }
  })

  it('takes without copying when one chunk holds the bytes, and lets a consumed chunk go', () => {
    const queue = new ChunkQueue()
    const first = Buffer.from('abcdef')
    queue.push(first)
    queue.push(Buffer.alloc(0))
    queue.push(Buffer.from('ghi'))
    const taken = queue.take(4)
    expect(taken.buffer).toBe(first.buffer)
    expect(taken.toString()).toBe('abcd')
    expect(queue.take(4).toString()).toBe('efgh')
    queue.unshift(Buffer.from('xy'))
    expect(queue.length).toBe(3)
    expect(queue.peek(10).toString()).toBe('xyi')
    queue.clear()
    expect(queue.length).toBe(0)
  })
})
