import {mkdtemp, readFile, rm, stat} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {BatchedLineWriter} from '../../src/util/batched-line-writer.js'

describe('BatchedLineWriter', () => {
  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'batched-lines-'))
  })
  afterAll(async () => rm(dir, {recursive: true, force: true}))

  it('writes every line in order, about one file write per MiB instead of one per line, into a private file', async () => {
    const path = join(dir, 'lines.jsonl')
    const writer = await BatchedLineWriter.create(path)
    // 20,000 lines of about 150 bytes: 3 MB, written by callers that do not wait for each other.
    const lines = Array.from({length: 20_000}, (_, index) => `${JSON.stringify({id: index, padding: 'x'.repeat(128)})}\n`)
    await Promise.all(lines.map((line) => writer.write(line)))
    await writer.end({sync: true})
    expect(await readFile(path, 'utf8')).toBe(lines.join(''))
    expect(writer.writes).toBeGreaterThanOrEqual(2)
    expect(writer.writes).toBeLessThanOrEqual(4)
    expect((await stat(path)).mode & 0o777).toBe(0o600)
  })

  it('a failed write is the caller\'s rejection, not an unhandled error event', async () => {
    const writer = await BatchedLineWriter.create(join(dir, 'fails.jsonl'))
    await writer.abandon()
    await writer.write('a line for a closed file\n')
    await expect(writer.end()).rejects.toThrow(/closed|EBADF/)
  })
})
