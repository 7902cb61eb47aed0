import {spawnSync} from 'node:child_process'
import {createHash} from 'node:crypto'
import {mkdir, mkdtemp, readdir, rm, stat, symlink, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, describe, expect, it} from 'vitest'

import {type KeptResource, ReplacementJournal} from '../../src/sync/replacement-journal.js'

const root = await mkdtemp(join(tmpdir(), 'replacement-journal-test-'))

afterAll(async () => {
  await rm(root, {recursive: true, force: true})
})

const INSTANCE = '0a1b2c3d-4e5f6a7b-8c9d0e1f-2a3b4c5d-6e7f8a9b'
const OTHER = '1a1b2c3d-4e5f6a7b-8c9d0e1f-2a3b4c5d-6e7f8a9b'
const SERIES = '2a1b2c3d-4e5f6a7b-8c9d0e1f-2a3b4c5d-6e7f8a9b'
const kept: KeptResource[] = [
  {level: 'instance', id: INSTANCE, data: {userMetadata: {1031: 'note'}, systemMetadata: {}, attachments: [{contentType: 1041, name: '1041', size: 3, md5: createHash('md5').update(Buffer.from([0, 255, 7])).digest('hex')} as never], labels: ['seen']}, bytes: new Map([[1041, Buffer.from([0, 255, 7])]])},
  {level: 'series', id: SERIES, data: {userMetadata: {1032: 'series note'}, systemMetadata: {}, attachments: [], labels: []}, bytes: new Map()},
]

/** A process ID no process has: one that has just ended. */
function goneProcessId(): number {
  return Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], {encoding: 'utf8'}).stdout)
}

/** A journal folder holding one run folder left by a process that is gone, with these entries. */
async function leftBehind(name: string, entries: Record<string, string>): Promise<string> {
  const folder = join(root, name)
  const run = join(folder, 'run-left')
  await mkdir(run, {recursive: true})
  await writeFile(join(run, 'owner.pid'), `${JSON.stringify({pid: goneProcessId()})}\n`)
  for (const [file, content] of Object.entries(entries)) await writeFile(join(run, file), content)
  return folder
}

const entryText = (instanceId: string, resources: unknown[] = [{...kept[0], id: instanceId, bytes: {1041: 'AP8H'}}]) => JSON.stringify({instanceId, kept: resources})

describe('replacement journal', () => {
  it('a run that is gone leaves its entries to the next run, bytes and all; a run still going keeps its own', async () => {
    const folder = join(root, 'target')
    const killed = new ReplacementJournal(folder)
    const entry = await killed.record(INSTANCE, kept)
    await killed.noteWent(entry, INSTANCE, kept, ['instance'])
    // As a kill leaves it: the owner file names a process that is gone, and nothing removed the entry.
    const [runFolder] = (await readdir(folder)).filter((name) => name.startsWith('run-'))
    await writeFile(join(folder, runFolder!, 'owner.pid'), `${JSON.stringify({pid: goneProcessId()})}\n`)
    // In this process its folder counts as live until closed: closed, its entry stays, as a kill leaves it.
    await killed.close()
    expect((await stat(entry)).mode & 0o777).toBe(0o600)
    expect((await stat(join(folder, runFolder!))).mode & 0o777).toBe(0o700)

    // Another process's live run: simulated by a run folder whose owner is this test's parent.
    const liveRun = join(folder, 'run-alive')
    await mkdir(liveRun)
    await writeFile(join(liveRun, 'owner.pid'), `${JSON.stringify({pid: process.ppid})}\n`)
    await writeFile(join(liveRun, `${OTHER}.aaaaaaaaaaaa.json`), entryText(OTHER))
    const next = new ReplacementJournal(folder)
    const left = await next.takeOver()
    expect(left).toEqual([{entry: expect.stringMatching(new RegExp(`${INSTANCE}\\.[0-9a-f]{12}\\.json$`)), instanceId: INSTANCE, kept, went: ['instance']}])
    expect(await readdir(liveRun)).toContain(`${OTHER}.aaaaaaaaaaaa.json`)

    // The same instance replaced again in this run: its own entry, never the one taken over.
    const again = await next.record(INSTANCE, kept)
    expect(again).not.toBe(left[0]!.entry)
    await next.remove(again)
    expect((await stat(left[0]!.entry)).isFile()).toBe(true)

    // Not written back: it stays for the next run, which takes it over even from this same process (a mirror's next pass).
    await next.close()
    const nextPass = new ReplacementJournal(folder)
    expect((await nextPass.takeOver()).map((each) => each.instanceId)).toEqual([INSTANCE])
    await nextPass.close()
  })

  it('a run that replaces nothing writes nothing', async () => {
    const folder = join(root, 'untouched')
    const journal = new ReplacementJournal(folder)
    expect(await journal.takeOver()).toEqual([])
    await journal.close()
    await expect(readdir(folder)).rejects.toMatchObject({code: 'ENOENT'})
  })

  // Nothing read from the journal is written onto a server unless it is what this tool wrote.
  it.each([
    ['not JSON', `${INSTANCE}.000000000001.json`, '{"instanceId": "'],
    ['its name and content disagreeing', `${OTHER}.000000000001.json`, entryText(INSTANCE)],
    ['an ID that is a path', `${INSTANCE}.000000000001.json`, entryText(INSTANCE, [{...kept[0], id: `../patients/${INSTANCE}`, bytes: {1041: 'AP8H'}}])],
    ['a level of its own', `${INSTANCE}.000000000001.json`, entryText(INSTANCE, [{...kept[0], level: '../../tools/reset', bytes: {1041: 'AP8H'}}])],
    ['no data', `${INSTANCE}.000000000001.json`, entryText(INSTANCE, [{level: 'instance', id: INSTANCE, bytes: {}}])],
    ['a label that is a path', `${INSTANCE}.000000000001.json`, entryText(INSTANCE, [{...kept[0], data: {...kept[0]!.data, labels: ['../x']}, bytes: {1041: 'AP8H'}}])],
    ['an attachment\'s bytes that are not what was read (another MD5)', `${INSTANCE}.000000000001.json`, entryText(INSTANCE, [{...kept[0], bytes: {1041: 'AP8I'}}])],
    ['an attachment without its bytes', `${INSTANCE}.000000000001.json`, entryText(INSTANCE, [{...kept[0], bytes: {}}])],
    ['bytes that are not base64', `${INSTANCE}.000000000001.json`, entryText(INSTANCE, [{...kept[0], bytes: {1041: '!!!not base64'}}])],
  ])('an entry with %s is refused, named, never written back', async (_what, file, content) => {
    const folder = await leftBehind(`bad-${file}-${content.length}`, {[file]: content})
    const journal = new ReplacementJournal(folder)
    await expect(journal.takeOver()).rejects.toMatchObject({code: 'journal-unreadable', message: expect.stringContaining(file)})
    await journal.close()
  })

  it('an entry that is a pipe is refused at once, never waited on; a run folder that is a link is not followed', async () => {
    const folder = await leftBehind('pipe', {})
    if (spawnSync('mkfifo', [join(folder, 'run-left', `${INSTANCE}.000000000001.json`)]).status !== 0) return
    const journal = new ReplacementJournal(folder)
    await expect(journal.takeOver()).rejects.toMatchObject({code: 'journal-unreadable'})
    await journal.close()

    const elsewhere = await leftBehind('elsewhere', {[`${INSTANCE}.000000000001.json`]: entryText(INSTANCE)})
    const linked = join(root, 'linked')
    await mkdir(linked)
    await symlink(join(elsewhere, 'run-left'), join(linked, 'run-link'))
    const throughLink = new ReplacementJournal(linked)
    expect(await throughLink.takeOver()).toEqual([])
    expect(await readdir(join(elsewhere, 'run-left'))).toContain(`${INSTANCE}.000000000001.json`)
    await throughLink.close()
  })

  it('what a kill leaves beside the entries (an entry cut while written, the owner file) goes with the folder taken over; a folder being made is left to its maker', async () => {
    const folder = await leftBehind('cut-write', {[`${INSTANCE}.000000000001.json`]: entryText(INSTANCE), [`${OTHER}.000000000002.json.tmp`]: 'cut'})
    const making = join(folder, 'making-abc')
    await mkdir(making)
    const gone = join(folder, 'making-def')
    await mkdir(gone)
    await writeFile(join(gone, 'owner.pid'), `${JSON.stringify({pid: goneProcessId()})}\n`)
    const journal = new ReplacementJournal(folder)
    expect((await journal.takeOver()).map((left) => left.instanceId)).toEqual([INSTANCE])
    const names = await readdir(folder)
    expect(names).not.toContain('run-left')
    expect(names).not.toContain('making-def')
    expect(names).toContain('making-abc')
    await journal.close()
  })

  it('a journal that fails once the deletion is done does not stop the replacement, and leaves no cut copy', async () => {
    const journal = new ReplacementJournal(join(root, 'after-delete'))
    const entry = await journal.record(INSTANCE, kept)
    // Its place taken by a folder that is not empty: the rewrite cannot land.
    await rm(entry)
    await mkdir(entry)
    await writeFile(join(entry, 'x'), '')
    await expect(journal.noteWent(entry, INSTANCE, kept, ['instance'])).resolves.toBe(false)
    expect(await readdir(join(entry, '..'))).not.toContainEqual(expect.stringMatching(/\.tmp$/))
    await journal.close()
  })

  it('a journal that cannot be written stops the replacement before anything is deleted, saying where and the way out', async () => {
    const file = join(root, 'a-file')
    await writeFile(file, '')
    const journal = new ReplacementJournal(join(file, 'replacements'))
    await expect(journal.record(INSTANCE, kept)).rejects.toMatchObject({code: 'journal-unwritable', message: expect.stringContaining(join(file, 'replacements'))})
  })
})
