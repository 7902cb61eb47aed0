import {createWriteStream} from 'node:fs'
import {mkdtemp, readFile, rm} from 'node:fs/promises'
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

  it('writes every line in order, about one file write per MiB instead of one per line', async () => {
    const path = join(dir, 'lines.jsonl')
    const file = createWriteStream(path)
    let writes = 0
    const write = file.write.bind(file) as (chunk: string) => boolean
    file.write = ((chunk: string) => {
      writes++
      return write(chunk)
    }) as typeof file.write
    const writer = new BatchedLineWriter(file)
    // 20,000 lines of about 150 bytes: 3 MB, written by callers that do not wait for each other.
    const lines = Array.from({length: 20_000}, (_, index) => `${JSON.stringify({id: index, padding: 'x'.repeat(128)})}\n`)
    await Promise.all(lines.map((line) => writer.write(line)))
    await writer.end()
    expect(await readFile(path, 'utf8')).toBe(lines.join(''))
    expect(writes).toBeGreaterThanOrEqual(2)
    expect(writes).toBeLessThanOrEqual(4)
  })
})
