import {mkdtemp, rm, stat, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {makePrivateFolder} from '../../src/util/private-files.js'

describe('making a private folder and its parents', () => {
  let work: string
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'private-folders-'))
  })
  afterAll(async () => {
    await rm(work, {recursive: true, force: true})
  })

  it('makes every missing level, private (0700), and takes one that is there', async () => {
    const deep = join(work, 'a', 'b', 'c')
    await makePrivateFolder(deep)
    for (const folder of [join(work, 'a'), join(work, 'a', 'b'), deep]) expect((await stat(folder)).mode & 0o777).toBe(0o700)
    await makePrivateFolder(deep)
    await makePrivateFolder(`${deep}/`)
  })

  it('a file in the way is an error, not a folder', async () => {
    const file = join(work, 'file')
    await writeFile(file, '')
    await expect(makePrivateFolder(file)).rejects.toMatchObject({code: 'EEXIST'})
    await expect(makePrivateFolder(join(file, 'below'))).rejects.toMatchObject({code: 'ENOTDIR'})
  })

  it('where the system refuses a folder under one that exists (/proc), it fails at once: Node\'s recursive mkdir spins there forever', async () => {
    await expect(makePrivateFolder('/proc/1/x')).rejects.toMatchObject({code: 'ENOENT'})
    await expect(makePrivateFolder('/proc/1/x/y/z')).rejects.toMatchObject({code: 'ENOENT'})
  }, 5000)
})
