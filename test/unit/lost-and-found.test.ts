import {mkdir, mkdtemp, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, describe, expect, it, vi} from 'vitest'

import type {Problem} from '../../src/problems.js'

// Root reads every folder: the refusal a non-root user meets on lost+found (root, 0700) is made here.
vi.mock('../../src/sources/dicom-folder.js', async (original) => {
  const actual = await original<typeof import('../../src/sources/dicom-folder.js')>()
  return {
    ...actual,
    listDirectory: async (path: string, limit?: number) => {
      if (path.endsWith('lost+found')) throw Object.assign(new Error(`EACCES: permission denied, opendir '${path}'`), {code: 'EACCES'})
      return actual.listDirectory(path, limit)
    },
  }
})

const {storageFiles} = await import('../../src/sources/storage-folder.js')

const root = await mkdtemp(join(tmpdir(), 'lost-and-found-test-'))

afterAll(async () => {
  await rm(root, {recursive: true, force: true})
})

describe('a storage folder on a disk of its own', () => {
  it('lost+found that this user cannot read is set aside with the way out, not failed', async () => {
    await mkdir(join(root, 'ab', 'cd'), {recursive: true})
    await writeFile(join(root, 'ab', 'cd', 'abcd0000-1111-2222-3333-444455556666'), 'x')
    await mkdir(join(root, 'lost+found'))
    const skips: Problem[] = []
    const problems: Problem[] = []
    const files = []
    for await (const file of storageFiles(root, {onSkip: (notice) => skips.push(notice), onProblem: (notice) => problems.push(notice)}, undefined, {outsideLayout: true})) files.push(file.relative)
    expect(files).toEqual(['ab/cd/abcd0000-1111-2222-3333-444455556666'])
    expect(problems).toEqual([])
    expect(skips).toEqual([{id: join(root, 'lost+found'), kind: 'foreign-file', reason: expect.stringMatching(/lost\+found, which this user cannot read: not looked in \(run as root/)}])
  })
})
