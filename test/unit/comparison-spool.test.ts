import {stat} from 'node:fs/promises'
import {dirname} from 'node:path'

import {describe, expect, it} from 'vitest'

import {ComparisonSpool} from '../../src/sync/plan.js'
import type {ComparedInstance} from '../../src/sync/compare.js'

/** An instance as the comparison writes it: about 400 bytes of JSON, like a real plan's. */
function compared(index: number): ComparedInstance {
  const id = index.toString(16).padStart(8, '0')
  return {
    id: `${id}-11111111-22222222-33333333-44444444`,
    studyId: 'aaaaaaaa-bbbbbbbb-cccccccc-dddddddd-eeeeeeee',
    studyInstanceUid: '1.2.826.0.1.3680043.8.498.12345678901234567890',
    state: 'only-source',
    size: 130_000 + index,
    source: {id: `${id}-11111111-22222222-33333333-44444444`, seriesId: 'ffffffff-00000000-11111111-22222222-33333333', studyId: 'aaaaaaaa-bbbbbbbb-cccccccc-dddddddd-eeeeeeee', studyInstanceUid: '1.2.826.0.1.3680043.8.498.12345678901234567890', seriesInstanceUid: '1.2.826.0.1.3680043.8.498.98765432109876543210', sopInstanceUid: `1.2.826.0.1.3680043.8.498.${index}`, size: 130_000 + index},
  }
}

async function readAll(spool: ComparisonSpool): Promise<ComparedInstance[]> {
  const items: ComparedInstance[] = []
  for await (const item of spool.read()) items.push(item)
  return items
}

describe('the comparison spool', () => {
  it('keeps a small plan in memory: no file, every instance back in order', async () => {
    const spool = new ComparisonSpool()
    const written = Array.from({length: 400}, (_, index) => compared(index))
    for (const item of written) await spool.write(item)
    expect(spool.size).toBe(400)
    expect(spool.spillPath).toBeUndefined()
    expect(await readAll(spool)).toEqual(written)
    await spool.dispose()
  })

  it('spills a large plan to a private file, reads every instance back in order, and removes the file', async () => {
    const spool = new ComparisonSpool()
    // About 2.5 MiB of lines: more than memory holds.
    const count = 6000
    for (let index = 0; index < count; index++) await spool.write(compared(index))
    const path = spool.spillPath
    expect(path).toBeDefined()
    expect((await stat(path!)).mode & 0o777).toBe(0o600)
    expect((await stat(dirname(path!))).mode & 0o777).toBe(0o700)
    const read = await readAll(spool)
    expect(read).toHaveLength(count)
    expect(read.map((item) => item.size)).toEqual(Array.from({length: count}, (_, index) => 130_000 + index))
    expect(read[count - 1]).toEqual(compared(count - 1))
    await spool.dispose()
    await expect(stat(dirname(path!))).rejects.toMatchObject({code: 'ENOENT'})
  })
})
