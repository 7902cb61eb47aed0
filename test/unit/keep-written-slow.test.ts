import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {afterAll, describe, expect, it, vi} from 'vitest'

// A file system whose every open takes 40 ms, as a slow NFS server's may.
const opens = vi.hoisted(() => ({now: 0, most: 0, all: 0}))
vi.mock('node:fs/promises', async (original) => {
  const fs = await original<typeof import('node:fs/promises')>()
  return {
    ...fs,
    async open(...args: Parameters<typeof fs.open>) {
      opens.all++
      opens.most = Math.max(opens.most, ++opens.now)
      try {
        await sleep(40)
        return await fs.open(...args)
      } finally {
        opens.now--
      }
    },
  }
})

const {keepWritten} = await import('../../src/util/run-lock.js')
const {makeScratchFolder, removeScratchFolder} = await import('../../src/util/scratch-folder.js')

describe('a file kept written on a slow file system', () => {
  const dirs: string[] = []
  afterAll(async () => Promise.all(dirs.map((dir) => rm(dir, {recursive: true, force: true}))))

  it('touches it one at a time, each timed from the end of the last', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'keep-written-'))
    dirs.push(dir)
    const path = join(dir, 'owner.pid')
    await writeFile(path, 'this run\n')
    const keeper = keepWritten(path, 'this run\n', 5)
    await sleep(300)
    await keeper.stop()
    expect(opens.most).toBe(1)
    expect(await readFile(path, 'utf8')).toBe('this run\n')
  })

  it('a scratch folder is removed once its touch has stopped: none in flight, none after', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'scratch-touch-'))
    dirs.push(parent)
    const dir = await makeScratchFolder(parent, 'scratch-', {refreshMs: 5})
    // A touch is in flight (each open takes 40 ms).
    while (opens.now === 0) await sleep(2)
    await removeScratchFolder(dir)
    expect(opens.now).toBe(0)
    const after = opens.all
    await sleep(100)
    expect(opens.all).toBe(after)
    await expect(readFile(join(dir, 'owner.pid'))).rejects.toMatchObject({code: 'ENOENT'})
  })
})
