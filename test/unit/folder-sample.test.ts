import {mkdir, mkdtemp, rm, symlink, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterEach, beforeEach, describe, expect, it} from 'vitest'

import {sampleFolderFiles} from '../../src/sources/dicom-folder.js'

describe('sampleFolderFiles', () => {
  let root: string
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'folder-sample-'))
  })
  afterEach(async () => {
    await rm(root, {recursive: true, force: true})
  })

  it('sums the sizes of the first files in the walk\'s order, and stops there', async () => {
    await mkdir(join(root, 'a'))
    await mkdir(join(root, 'b'))
    for (let index = 0; index < 3; index++) await writeFile(join(root, 'a', `${index}.dcm`), Buffer.alloc(100))
    for (let index = 0; index < 3; index++) await writeFile(join(root, 'b', `${index}.dcm`), Buffer.alloc(10_000))
    // Folder a first (name order): its three files, then one of b.
    expect(await sampleFolderFiles([root], {files: 4})).toEqual({instances: 4, bytes: 3 * 100 + 10_000})
    expect(await sampleFolderFiles([root], {files: 100})).toEqual({instances: 6, bytes: 3 * 100 + 3 * 10_000})
    // A root may be a file.
    expect(await sampleFolderFiles([join(root, 'b', '0.dcm'), join(root, 'a')], {files: 100})).toEqual({instances: 4, bytes: 10_000 + 300})
  })

  it('follows no link below a root, passes over what it cannot read, and reads no more directories than allowed', async () => {
    const outside = await mkdtemp(join(tmpdir(), 'folder-sample-outside-'))
    try {
      await writeFile(join(outside, 'big.dcm'), Buffer.alloc(50_000))
      await symlink(outside, join(root, 'linked-folder'))
      await symlink(join(outside, 'big.dcm'), join(root, 'linked-file'))
      await writeFile(join(root, 'z.dcm'), Buffer.alloc(7))
      expect(await sampleFolderFiles([root, join(root, 'missing')], {files: 10})).toEqual({instances: 1, bytes: 7})
    } finally {
      await rm(outside, {recursive: true, force: true})
    }

    let dir = root
    for (let depth = 0; depth < 5; depth++) {
      dir = join(dir, `d${depth}`)
      await mkdir(dir)
      await writeFile(join(dir, 'f.dcm'), Buffer.alloc(1))
    }
    // Three listings: the root, d0 and d1; d2 and below are not read, and their files not counted.
    expect(await sampleFolderFiles([root], {files: 10, maxListings: 3})).toEqual({instances: 3, bytes: 1 + 1 + 7})
    expect(await sampleFolderFiles([root], {files: 10})).toEqual({instances: 6, bytes: 5 + 7})
  })

  it('reads no more entries in all than allowed, however wide the tree', async () => {
    // 20 folders, each with 20 empty folders and one file: 420 paths to queue for 21 files.
    for (let outer = 0; outer < 20; outer++) {
      const folder = join(root, `a${String(outer).padStart(2, '0')}`)
      for (let inner = 0; inner < 20; inner++) await mkdir(join(folder, `b${String(inner).padStart(2, '0')}`), {recursive: true})
      await writeFile(join(folder, 'x.dcm'), Buffer.alloc(1))
    }
    await writeFile(join(root, 'z.dcm'), Buffer.alloc(3))
    expect(await sampleFolderFiles([root], {files: 100})).toEqual({instances: 21, bytes: 20 + 3})
    // 30 entries in all: the root's 21 and 9 of one folder's. Nothing more is listed; z.dcm, listed, is still reached.
    const bounded = await sampleFolderFiles([root], {files: 100, maxEntries: 30})
    expect(bounded.instances).toBeLessThanOrEqual(2)
    expect(bounded.bytes - 3).toBe(bounded.instances - 1)
  })
})
