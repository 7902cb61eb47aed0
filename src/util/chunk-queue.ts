/**
 * Chunks as a stream or an inflater hands them over, consumed from the front: what is taken
 * comes without a copy when one chunk holds it, and a chunk is let go once consumed, so memory
 * is what the consumer has not taken yet. The readers around it decide when to pull more.
 */
export class ChunkQueue {
  /** Bytes held. */
  length = 0
  private chunks: Buffer[] = []

  push(chunk: Buffer): void {
    if (chunk.length === 0) return
    this.chunks.push(chunk)
    this.length += chunk.length
  }

  /** Puts bytes back at the front, to be taken again. */
  unshift(chunk: Buffer): void {
    if (chunk.length === 0) return
    this.chunks.unshift(chunk)
    this.length += chunk.length
  }

  /** The first `count` bytes (at most `length`), left in place. */
  peek(count: number): Buffer {
    const wanted = Math.min(count, this.length)
    const first = this.chunks[0]
    if (!first || first.length >= wanted) return (first ?? Buffer.alloc(0)).subarray(0, wanted)
    // Only the bytes asked for are copied: a few header bytes across a chunk boundary must not copy the whole next chunk.
    return Buffer.concat(this.chunks, wanted)
  }

  /** Removes and returns the first `count` bytes (at most `length`). */
  take(count: number): Buffer {
    const wanted = Math.min(count, this.length)
    const pieces: Buffer[] = []
    for (let left = wanted; left > 0;) {
      const piece = this.dropFront(left)
      pieces.push(piece)
      left -= piece.length
    }

    return pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces, wanted)
  }

  /** Removes up to `count` bytes from the front, within the first chunk; returns how many. */
  drop(count: number): number {
    return this.length === 0 ? 0 : this.dropFront(count).length
  }

  clear(): void {
    this.chunks = []
    this.length = 0
  }

  /** Up to `count` bytes of the first chunk, removed. */
  private dropFront(count: number): Buffer {
    const chunk = this.chunks[0]!
    if (count >= chunk.length) {
      this.chunks.shift()
      this.length -= chunk.length
      return chunk
    }

    this.chunks[0] = chunk.subarray(count)
    this.length -= count
    return chunk.subarray(0, count)
  }
}
