import {spawnSync} from 'node:child_process'
import {mkdtemp, readdir, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, describe, expect, it} from 'vitest'

import {type KeptResource, ReplacementJournal} from '../../src/sync/replacement-journal.js'

const root = await mkdtemp(join(tmpdir(), 'replacement-journal-test-'))

afterAll(async () => {
  await rm(root, {recursive: true, force: true})
})

const INSTANCE = '0a1b2c3d-4e5f6a7b-8c9d0e1f-2a3b4c5d-6e7f8a9b'
const kept: KeptResource[] = [
  {level: 'instance', id: INSTANCE, data: {userMetadata: {1031: 'note'}, systemMetadata: {}, attachments: [{contentType: 1041, name: '1041', size: 3, md5: 'x', compressedSize: 3, compressedMd5: 'x', compression: 'none'} as never], labels: ['seen']}, bytes: new Map([[1041, Buffer.from([0, 255, 7])]])},
  {level: 'series', id: 'series-id', data: {userMetadata: {1032: 'series note'}, systemMetadata: {}, attachments: [], labels: []}, bytes: new Map()},
]

/** A process ID no process has: one that has just ended. */
function goneProcessId(): number {
  return Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], {encoding: 'utf8'}).stdout)
}

describe('replacement journal', () => {
  it('a run that is gone leaves its entries to the next run, bytes and all; a run still going keeps its own', async () => {
    const folder = join(root, 'target')
    const killed = new ReplacementJournal(folder)
    await killed.record(INSTANCE, kept)
    // As a kill leaves it: the owner file names a process that is gone, and nothing removed the entry.
    const [runFolder] = await readdir(folder)
    await writeFile(join(folder, runFolder!, 'owner.pid'), `${JSON.stringify({pid: goneProcessId()})}\n`)

    const live = new ReplacementJournal(folder)
    await live.record('1a1b2c3d-4e5f6a7b-8c9d0e1f-2a3b4c5d-6e7f8a9b', kept)
    const next = new ReplacementJournal(folder)
    const left = await next.takeOver()
    expect(left).toEqual([{instanceId: INSTANCE, kept}])
    // The live run's entry stays where it is, and is not handed to anyone else.
    expect(await new ReplacementJournal(folder).takeOver()).toEqual([])

    // Written back: removed, and the run's folder goes at its end. Not written back: it stays for the next run.
    await next.remove(INSTANCE)
    await next.close()
    await live.close()
    expect((await readdir(folder)).length).toBe(1)
  })

  it('a run that replaces nothing writes nothing', async () => {
    const folder = join(root, 'untouched')
    const journal = new ReplacementJournal(folder)
    expect(await journal.takeOver()).toEqual([])
    await journal.close()
    await expect(readdir(folder)).rejects.toMatchObject({code: 'ENOENT'})
  })
})
