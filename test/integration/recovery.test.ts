import {createHash} from 'node:crypto'
import {copyFile, cp, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, truncate, utimes, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {dirname, join} from 'node:path'

import sqlite from 'node-sqlite3-wasm'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {type FixtureRecord, generateFramingSet, generateStudySet} from '../../fixtures/generate.js'
import {parseJson, runCli} from '../helpers/cli.js'
import {startFaultProxy} from '../helpers/fault-proxy.js'
import {listFiles, makeCorpus} from '../helpers/corpus.js'
import {instanceMd5s, type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'
import {INSTALL_LABELS, INSTALL_REVISION_AND_CUSTOM_DATA} from '../helpers/orthanc-index-schemas.js'

interface Problem {
  id: string
  path?: string
  kind: string
  reason: string
}

interface RecoveryJson {
  route: string
  source: string
  index?: {source: string; schema: string}
  candidates: number
  recovered: number
  failed: number
  attachmentsFailed: number
  notInIndex: number
  unindexedInstances: number
  unindexedAfterIndex: number
  resourceSideData: {resources: number; userMetadata: number; attachments: number; labels: number; protectedPatients: number}
}

interface ImportJson {
  transferred: number
  skipped: number
  failed: number
  failures: Problem[]
  problems: Problem[]
  ignoredFiles: number
  ignoredByKind: Record<string, number>
  ignoredSamples: Problem[]
  notCarried: Array<{level: string; kind: string; name?: string; count: number; reason: string}>
  recovery: RecoveryJson[]
}

const userConfig = {userMetadata: {Reviewed: 1024}, userContentType: {Report: 1030}}
const md5 = (bytes: Buffer) => createHash('md5').update(bytes).digest('hex')

/**
 * A server that stored files without preamble, big-endian bare data sets and ordinary files,
 * first plain then compressed (so its folder holds both, and header-only copies), carried user
 * metadata and attachments, and was killed with kill -9. Then one stored file goes missing, one
 * is damaged, and a stranger turns up in the folder.
 */
describe('recovery of a stopped server from its storage folder', () => {
  let work: string
  let deadDir: string
  let storage: string
  let corpus: FixtureRecord[]
  let sourceMd5s: Map<string, string>
  let missing: {id: string; uuid: string}
  let corrupt: {id: string; uuid: string}
  /** The stored files of empty user attachments: empty files, as a power loss leaves them. */
  const emptyAttachmentFiles: string[] = []
  let annotated: {plain: string; compressed: string}
  let stranger: FixtureRecord
  let strangerPath: string
  let indexFiles: Map<string, string>
  let main: ImportJson
  let storedBeforeCleanStop: number
  let storedAfter: string[]
  let mainTarget: OrthancServer
  let protectedPatient: string

  const stored = (uuid: string) => join(storage, uuid.slice(0, 2), uuid.slice(2, 4), uuid)
  const info = (server: OrthancServer, id: string) => server.json<{Uuid: string}>(`/instances/${id}/attachments/dicom/info`)
  const recoverInto = (target: OrthancServer, ...args: string[]) => runCli(['import', '--target', target.url, '--no-receipt', ...args])

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'recovery-test-'))
    const all = [...await makeCorpus(join(work, 'fixtures')), ...await generateFramingSet(join(work, 'framing'))]
    stranger = (await generateStudySet(join(work, 'stranger'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 1, pixelBytes: 3000, seed: 'stranger'}))[0]!
    corpus = all
    deadDir = join(work, 'dead')
    storage = join(deadDir, 'storage')
    // Debian's layout: the index in the storage folder.
    const config = {dir: deadDir, ...userConfig, extra: {IndexDirectory: storage}}
    const half = Math.floor(all.length / 2)
    storedBeforeCleanStop = half
    const plainEra = await startOrthanc({...config, storageCompression: false})
    const plainIds = await uploadFiles(plainEra, all.slice(0, half).map((record) => record.path))
    await plainEra.stop()
    const dead = await startOrthanc({...config, storageCompression: true})
    const compressedIds = await uploadFiles(dead, all.slice(half).map((record) => record.path))
    storedAfter = compressedIds

    annotated = {plain: plainIds[0]!, compressed: compressedIds[0]!}
    for (const id of Object.values(annotated)) {
      expect((await dead.api(`/instances/${id}/metadata/Reviewed`, {method: 'PUT', body: `read ${id}`})).ok).toBe(true)
      expect((await dead.api(`/instances/${id}/attachments/Report`, {method: 'PUT', body: `report on ${id}`})).ok).toBe(true)
      // Empty: a compressing server stores it as an empty file, with no size before it.
      expect((await dead.api(`/instances/${id}/attachments/1031`, {method: 'PUT', body: ''})).ok).toBe(true)
      emptyAttachmentFiles.push((await dead.json<{Uuid: string}>(`/instances/${id}/attachments/1031/info`)).Uuid)
    }
    // Protected from recycling: the index says so by leaving the patient out of its recycling order.
    protectedPatient = (await dead.json<{ID: string}>(`/instances/${annotated.compressed}/patient`)).ID
    expect((await dead.api(`/patients/${protectedPatient}/protected`, {method: 'PUT', body: '1'})).ok).toBe(true)
    sourceMd5s = await instanceMd5s(dead)
    missing = {id: plainIds[2]!, uuid: (await info(dead, plainIds[2]!)).Uuid}
    // One with a header-only copy: without the index, that copy must not stand in for it.
    const withHeaderCopy = []
    for (const id of compressedIds.slice(1)) {
      if ((await dead.json<string[]>(`/instances/${id}/attachments`)).includes('dicom-until-pixel-data')) withHeaderCopy.push(id)
    }
    corrupt = {id: withHeaderCopy[0]!, uuid: (await info(dead, withHeaderCopy[0]!)).Uuid}
    await dead.kill()

    await rm(stored(missing.uuid))
    const damaged = await readFile(stored(corrupt.uuid))
    damaged[Math.floor(damaged.length / 2)]! ^= 0x40
    await writeFile(stored(corrupt.uuid), damaged)
    const strangerUuid = 'ab12cd34-0000-4000-8000-000000000001'
    strangerPath = stored(strangerUuid)
    await mkdir(join(storage, 'ab', '12'), {recursive: true})
    await copyFile(stranger.path, strangerPath)
    // A stranger from long ago: older than what the index lists, as a deleted instance's leftover is.
    const longAgo = new Date('2020-01-01T00:00:00Z')
    await utimes(strangerPath, longAgo, longAgo)

    indexFiles = new Map()
    for (const name of (await readdir(storage)).filter((entry) => entry.startsWith('index'))) indexFiles.set(name, md5(await readFile(join(storage, name))))

    mainTarget = await startOrthanc({name: 'recovered', ...userConfig})
    const result = await recoverInto(mainTarget, '--json', storage)
    expect(result.code, result.stderr).toBe(10)
    main = parseJson<ImportJson>(result)
  })

  afterAll(async () => {
    await mainTarget?.dispose()
    await rm(work, {recursive: true, force: true})
  })

  it('a server killed with kill -9 left its committed rows in index-wal only: the recovery reads them from there', async () => {
    expect(indexFiles.has('index-wal')).toBe(true)
    expect((await stat(join(storage, 'index-wal'))).size).toBeGreaterThan(0)
    // The index alone still holds what the server had when it was last stopped cleanly, before the compressed half.
    const withoutWal = join(work, 'index-without-wal')
    await mkdir(withoutWal)
    await copyFile(join(storage, 'index'), join(withoutWal, 'index'))
    const older = await recoverInto(mainTarget, '--dry-run', '--json', '--index', withoutWal, storage)
    expect(parseJson<ImportJson>(older).recovery[0]!.candidates).toBe(storedBeforeCleanStop)
    expect(main.recovery[0]).toMatchObject({route: 'sqlite-index', candidates: corpus.length, index: {source: join(storage, 'index')}})
  })

  it('an index older than the storage (its index-wal lost): the instances stored after it are failed, not passed over, and --include-unindexed takes them', async () => {
    const withoutWal = join(work, 'stale-index')
    await mkdir(withoutWal)
    await copyFile(join(storage, 'index'), join(withoutWal, 'index'))
    // As it was written last, the WAL lost beside it.
    const written = await stat(join(storage, 'index'))
    await utimes(join(withoutWal, 'index'), written.atime, written.mtime)
    const stale = await recoverInto(mainTarget, '--dry-run', '--json', '--index', withoutWal, storage)
    expect(stale.code).toBe(10)
    const summary = parseJson<ImportJson>(stale)
    // Stored after the last clean stop, so after every instance the stale index lists; the damaged one no longer reads as DICOM.
    const lost = storedAfter.filter((id) => id !== corrupt.id)
    expect(summary.recovery[0]).toMatchObject({candidates: storedBeforeCleanStop, unindexedAfterIndex: lost.length})
    expect(summary.failures.filter((failure) => failure.kind === 'missing' && /stored after every instance it lists/.test(failure.reason)).map((failure) => failure.id).sort()).toEqual([...lost].sort())
    // The stranger is older than all of it: named, not failed.
    expect(summary.failures.map((failure) => failure.id)).not.toContain(stranger.orthancId)
    expect((await recoverInto(mainTarget, '--dry-run', storage, '--index', withoutWal)).stdout).toMatch(new RegExp(`${lost.length} of those were stored after every instance the index lists`))

    const included = parseJson<ImportJson>(await recoverInto(mainTarget, '--dry-run', '--json', '--include-unindexed', '--index', withoutWal, storage))
    expect(included.failures.map((failure) => failure.id)).not.toEqual(expect.arrayContaining(lost))
  })

  it('an index older than the storage, and nothing else wrong: exit 10, not 0, until --include-unindexed takes what it never saw', async () => {
    const records = await generateStudySet(join(work, 'stale-only'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 4, pixelBytes: 2000, seed: 'stale-only'})
    const folder = join(work, 'stale-only-server', 'storage')
    const config = {dir: join(work, 'stale-only-server'), extra: {IndexDirectory: folder}}
    const first = await startOrthanc(config)
    await uploadFiles(first, records.slice(0, 2).map((record) => record.path))
    await first.stop()
    // The index as a backup taken now would hold it; then two more arrive.
    const backup = join(work, 'stale-only-backup')
    await mkdir(backup)
    await copyFile(join(folder, 'index'), join(backup, 'index'))
    const second = await startOrthanc(config)
    await uploadFiles(second, records.slice(2).map((record) => record.path))
    await second.stop()

    const stale = await recoverInto(mainTarget, '--dry-run', '--json', '--index', backup, folder)
    expect(stale.code).toBe(10)
    const summary = parseJson<ImportJson>(stale)
    // The server's own count says them failed too, beside the whole summary's.
    expect(summary.recovery[0]).toMatchObject({candidates: 2, recovered: 2, failed: 2, unindexedInstances: 2, unindexedAfterIndex: 2})
    expect(summary.failures.map((failure) => failure.id).sort()).toEqual(records.slice(2).map((record) => record.orthancId).sort())
    const included = await recoverInto(mainTarget, '--dry-run', '--json', '--include-unindexed', '--index', backup, folder)
    expect(included.code, included.stderr).toBe(0)
    expect(parseJson<ImportJson & {planned: {instances: number}}>(included).planned.instances).toBe(4)
    // Those it takes count among the candidates: never more recovered than candidates.
    expect(parseJson<ImportJson>(included).recovery[0]).toMatchObject({candidates: 4, recovered: 4, failed: 0})

    // The same remains copied days later without keeping times (cp -r, then the index): every file
    // of that moment, the index last. By time the two it never saw looked like deleted leftovers: exit 0.
    const copiedAt = new Date(Date.now() + 3 * 86_400_000)
    for (const file of await listFiles(folder)) await utimes(file, copiedAt, copiedAt)
    const indexCopiedAt = new Date(copiedAt.getTime() + 1000)
    await utimes(join(backup, 'index'), indexCopiedAt, indexCopiedAt)
    const undated = await recoverInto(mainTarget, '--dry-run', '--json', '--index', backup, folder)
    expect(undated.code, undated.stdout).toBe(10)
    expect(parseJson<ImportJson>(undated).recovery[0]).toMatchObject({candidates: 2, recovered: 2, failed: 2, unindexedInstances: 2, unindexedAfterIndex: 0, unindexedUndated: 2, fileTimesNotKept: true})
    const failures = parseJson<ImportJson>(undated).failures
    expect(failures.map((failure) => failure.id).sort()).toEqual(records.slice(2).map((record) => record.orthancId).sort())
    for (const failure of failures) expect(failure.reason).toMatch(/times do not tell/)
  })

  it('a file the index does not list, too large to read only to say what it is: named unread (exit 0); stored after the index, failed unread (exit 10)', async () => {
    const records = await generateStudySet(join(work, 'huge-stranger'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 1, pixelBytes: 1000, seed: 'huge-stranger'})
    const folder = join(work, 'huge-stranger-server', 'storage')
    const server = await startOrthanc({dir: join(work, 'huge-stranger-server'), extra: {IndexDirectory: folder}})
    await uploadFiles(server, records.map((record) => record.path))
    await server.stop()
    // 5 GiB of nothing, sparse: read whole it would fill the memory, or be refused as too large (exit 11).
    const huge = join(folder, 'ab', '12', 'ab120000-0000-4000-8000-000000000009')
    await mkdir(dirname(huge), {recursive: true})
    await writeFile(huge, '')
    await truncate(huge, 5 * 1024 ** 3)
    const longAgo = new Date(Date.now() - 30 * 86_400_000)
    await utimes(huge, longAgo, longAgo)
    const older = await recoverInto(mainTarget, '--dry-run', '--json', folder)
    expect(older.code, older.stdout).toBe(0)
    expect(parseJson<ImportJson>(older).ignoredSamples).toContainEqual(expect.objectContaining({id: huge, kind: 'not-in-index', reason: expect.stringMatching(/larger than 67108864 bytes, not read/)}))
    const now = new Date()
    await utimes(huge, now, now)
    const newer = await recoverInto(mainTarget, '--dry-run', '--json', folder)
    expect(newer.code).toBe(10)
    expect(parseJson<ImportJson>(newer).failures).toContainEqual(expect.objectContaining({id: huge, reason: expect.stringMatching(/larger than 67108864 bytes, stored after every instance the index lists/)}))
    await rm(huge)
  })

  // A storage folder is read like an archive: a link could lead anywhere on this machine.
  it('a symbolic link where the index puts a file, or in place of a storage folder, is not followed: the instance is named as failed (exit 10)', async () => {
    const records = await generateStudySet(join(work, 'linked'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 3, pixelBytes: 1000, seed: 'linked'})
    const folder = join(work, 'linked-server', 'storage')
    const server = await startOrthanc({dir: join(work, 'linked-server'), extra: {IndexDirectory: folder}})
    const ids = await uploadFiles(server, records.map((record) => record.path))
    const uuids = await Promise.all(ids.map(async (id) => (await info(server, id)).Uuid))
    await server.stop()
    const at = (uuid: string) => join(folder, uuid.slice(0, 2), uuid.slice(2, 4), uuid)
    const elsewhere = join(work, 'linked-elsewhere')
    await mkdir(elsewhere)
    // The same bytes behind each link: only the link itself can refuse them.
    const fileLinked = uuids[0]!
    await copyFile(at(fileLinked), join(elsewhere, fileLinked))
    await rm(at(fileLinked))
    await symlink(join(elsewhere, fileLinked), at(fileLinked))
    const folderLinked = uuids.slice(1).find((uuid) => uuid.slice(0, 4) !== fileLinked.slice(0, 4))!
    const linkedFolder = dirname(at(folderLinked))
    await cp(linkedFolder, join(elsewhere, 'folder'), {recursive: true})
    await rm(linkedFolder, {recursive: true})
    await symlink(join(elsewhere, 'folder'), linkedFolder)

    const result = await recoverInto(mainTarget, '--dry-run', '--json', folder)
    expect(result.code, result.stdout).toBe(10)
    const failures = parseJson<ImportJson>(result).failures
    expect(failures).toContainEqual({id: ids[uuids.indexOf(fileLinked)], path: at(fileLinked), kind: 'unreadable', reason: expect.stringMatching(/is a symbolic link, not followed/)})
    expect(failures).toContainEqual({id: ids[uuids.indexOf(folderLinked)], path: at(folderLinked), kind: 'unreadable', reason: expect.stringContaining(`${linkedFolder} is a symbolic link, not followed`)})
    expect(failures).toHaveLength(uuids.filter((uuid) => uuid === fileLinked || uuid.slice(0, 4) === folderLinked.slice(0, 4)).length)
  })

  it('the leftover file of the last instance deleted before the server stopped is named, not failed: the index recorded the deletion after it', async () => {
    const records = await generateStudySet(join(work, 'deleted-last'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 3, pixelBytes: 2000, seed: 'deleted-last'})
    const folder = join(work, 'deleted-last-server', 'storage')
    const server = await startOrthanc({dir: join(work, 'deleted-last-server'), extra: {IndexDirectory: folder}})
    const ids = await uploadFiles(server, records.map((record) => record.path))
    const last = ids.at(-1)!
    const file = stored((await server.json<{Uuid: string}>(`/instances/${last}/attachments/dicom/info`)).Uuid).replace(storage, folder)
    const kept = join(work, 'deleted-last-file')
    await copyFile(file, kept)
    const {atime, mtime} = await stat(file)
    expect((await server.api(`/instances/${last}`, {method: 'DELETE'})).ok).toBe(true)
    await server.stop()
    // A crash between the deletion's commit and the file's removal leaves the file as it was.
    await mkdir(dirname(file), {recursive: true})
    await copyFile(kept, file)
    await utimes(file, atime, mtime)

    const result = await recoverInto(mainTarget, '--dry-run', '--json', folder)
    expect(result.code, result.stderr).toBe(0)
    expect(parseJson<ImportJson>(result).recovery[0]).toMatchObject({candidates: 2, unindexedInstances: 1, unindexedAfterIndex: 0})
  })

  it('recovers every intact instance the index lists, with identical MD5s, bare data sets and files without preamble included', async () => {
    const onTarget = await instanceMd5s(mainTarget)
    const expected = new Map([...sourceMd5s].filter(([id]) => id !== missing.id && id !== corrupt.id))
    expect(onTarget).toEqual(expected)
    for (const label of ['data-set-explicit-big-endian', 'data-set-implicit-little-endian', 'meta-without-preamble']) {
      const record = corpus.find((entry) => entry.label === label)!
      expect(onTarget.get(record.orthancId), label).toBe(record.md5)
    }
    expect(main).toMatchObject({transferred: corpus.length - 2, skipped: 0, failed: 2, problems: []})
    expect(main.recovery[0]).toMatchObject({candidates: corpus.length, recovered: corpus.length - 2, failed: 2})
  })

  it('never stores a header-only copy in place of a whole file', async () => {
    for (const id of (await mainTarget.json<string[]>('/instances')).filter((candidate) => candidate !== corrupt.id)) {
      const record = corpus.find((entry) => entry.orthancId === id)!
      if (record.label === 'tiny') continue
      expect(await mainTarget.json<Record<string, unknown>>(`/instances/${id}/tags?short`), record.label).toHaveProperty('7fe0,0010')
    }
  })

  it('names the instance whose file is missing and the one whose file is damaged: failed, exit 10', async () => {
    expect(main.failures).toEqual(expect.arrayContaining([
      {id: missing.id, path: stored(missing.uuid), kind: 'missing', reason: expect.stringMatching(/no stored file/)},
      {id: corrupt.id, path: stored(corrupt.uuid), kind: 'checksum', reason: expect.stringMatching(/MD5 .* the index recorded/)},
    ]))
    const human = await recoverInto(mainTarget, storage)
    expect(human.code).toBe(10)
    expect(human.stdout).toContain(missing.id)
    expect(human.stdout).toContain(corrupt.id)
    expect(human.stdout).toMatch(/from its SQLite index .*: \d+ of \d+ instance\(s\) recovered, 2 failed/)
    expect(human.stderr).not.toMatch(/\n\s+at /)
  })

  it('restores user metadata and user attachments from the index, plain and compressed alike, empty ones too', async () => {
    for (const id of Object.values(annotated)) {
      expect(await (await mainTarget.api(`/instances/${id}/metadata/Reviewed`)).text()).toBe(`read ${id}`)
      expect(await (await mainTarget.api(`/instances/${id}/attachments/Report/data`)).text()).toBe(`report on ${id}`)
      const empty = await mainTarget.api(`/instances/${id}/attachments/1031/data`)
      expect(empty.status, id).toBe(200)
      expect((await empty.arrayBuffer()).byteLength).toBe(0)
    }
  })

  // Not carried: a recycling target could delete the patient the dead server kept on purpose.
  it('protects on the target the patients the index says were protected from recycling, and no other', async () => {
    expect(main.recovery[0]).toMatchObject({resourceSideData: {protectedPatients: 1}})
    for (const patient of await mainTarget.json<string[]>('/patients')) {
      expect((await (await mainTarget.api(`/patients/${patient}/protected`)).text()).trim(), patient).toBe(patient === protectedPatient ? '1' : '0')
    }
  })

  it('lists and counts a stored file the index does not know, and imports it only when asked', async () => {
    // The stranger is a whole instance the index does not list: said, so that a stale index cannot hide what it leaves out.
    expect(main.recovery[0]).toMatchObject({notInIndex: 1, unindexedInstances: 1})
    expect(main.ignoredByKind['not-in-index']).toBe(1)
    expect(main.ignoredSamples).toContainEqual(expect.objectContaining({id: strangerPath, kind: 'not-in-index', reason: expect.stringMatching(/whole instance the index does not list/)}))
    expect((await mainTarget.api(`/instances/${stranger.orthancId}`)).status).toBe(404)
    const human = await recoverInto(mainTarget, storage)
    expect(human.stdout).toMatch(/1 of them are whole instances the index does not list/)

    const included = await recoverInto(mainTarget, '--json', '--include-unindexed', storage)
    expect(included.code).toBe(10)
    expect(parseJson<ImportJson>(included)).toMatchObject({transferred: 1, skipped: corpus.length - 2, failed: 2})
    expect((await instanceMd5s(mainTarget)).get(stranger.orthancId)).toBe(stranger.md5)
  })

  it('an upload tried again after a cut connection is counted once, by how it ended: recovered, not also failed', async () => {
    const target = await startOrthanc({name: 'recovery-retried', ...userConfig})
    const proxy = await startFaultProxy(target.port)
    try {
      // More cuts in a row than the HTTP client retries: the engine tries the instance again.
      for (let cut = 0; cut < 6; cut++) proxy.faults.push({match: /^POST \/instances$/, fault: 'reset-before-response'})
      const receipt = join(work, 'retried-receipt.jsonl')
      const result = await runCli(['import', '--target', proxy.url, '--json', '--concurrency', '1', '--receipt', receipt, storage])
      expect(result.code).toBe(10)
      const summary = parseJson<ImportJson>(result)
      expect(summary).toMatchObject({transferred: corpus.length - 2, failed: 2})
      expect(summary.recovery[0]).toMatchObject({recovered: corpus.length - 2, failed: 2})
      // The receipt has one line per instance uploaded, by how it ended: none failed (the two whose files are gone never reached the target).
      const lines = (await readFile(receipt, 'utf8')).trim().split('\n').slice(1).map((line) => JSON.parse(line) as {id?: string; status?: string})
      expect(lines.filter((line) => line.status === 'failed')).toEqual([])
      expect(lines.filter((line) => line.status === 'transferred')).toHaveLength(corpus.length - 2)
    } finally {
      await proxy.close()
      await target.dispose()
    }
  }, 120_000)

  it('--include-unindexed never lets an older copy of an instance the index lists replace it, on a target that overwrites', async () => {
    const source = await startOrthanc({name: 'overwritten-source', overwriteInstances: true})
    const target = await startOrthanc({name: 'overwriting-target', overwriteInstances: true})
    try {
      const [id] = await uploadFiles(source, [stranger.path])
      const oldUuid = (await info(source, id!)).Uuid
      const older = await readFile(join(source.storageDir, oldUuid.slice(0, 2), oldUuid.slice(2, 4), oldUuid))
      // The same instance stored again with other bytes (one letter of the patient's name), overwriting it.
      const newer = Buffer.from(older)
      const at = newer.indexOf(Buffer.from('^', 'latin1'))
      newer[at + 1] = newer[at + 1] === 0x41 ? 0x42 : 0x41
      expect(await source.json<{ID: string}>('/instances', {method: 'POST', body: newer})).toMatchObject({ID: id})
      // The server failed to delete the older file (a crash at the wrong moment): it is still there.
      await mkdir(join(source.storageDir, oldUuid.slice(0, 2), oldUuid.slice(2, 4)), {recursive: true})
      await writeFile(join(source.storageDir, oldUuid.slice(0, 2), oldUuid.slice(2, 4), oldUuid), older)
      await source.kill()

      const result = await runCli(['import', '--target', target.url, '--no-receipt', '--json', '--include-unindexed', '--index', join(source.dir, 'index'), source.storageDir])
      expect(result.code, result.stdout).toBe(0)
      expect(parseJson<ImportJson>(result)).toMatchObject({transferred: 1, failed: 0, ignoredByKind: {copy: 1}})
      expect((await instanceMd5s(target)).get(id!)).toBe(md5(newer))
    } finally {
      await Promise.all([source.dispose(), target.dispose()])
    }
  }, 120_000)

  it('a second run transfers nothing', async () => {
    const again = await recoverInto(mainTarget, '--json', storage)
    expect(again.code).toBe(10)
    expect(parseJson<ImportJson>(again)).toMatchObject({transferred: 0, skipped: corpus.length - 2, failed: 2})
  })

  it('labels and patient, study and series side data come from a newer index too; a 1.10.1 target is told it cannot take labels', async () => {
    // The same index brought to the 1.12.8 schema with Orthanc's own scripts, then labelled.
    const fixture = join(work, 'index-1.12')
    await cp(storage, fixture, {recursive: true, filter: (source) => source === storage || /\/index(-wal)?$/.test(source)})
    const database = new sqlite.Database(join(fixture, 'index'))
    try {
      // Orthanc's own locking mode: it lets this VFS, which has no shared memory, take the WAL in.
      database.exec('PRAGMA locking_mode = EXCLUSIVE')
      database.exec(INSTALL_LABELS + INSTALL_REVISION_AND_CUSTOM_DATA)
      const internalId = (publicId: string) => Number((database.get('SELECT internalId AS id FROM Resources WHERE publicId = ?', publicId) as {id: number}).id)
      const instance = internalId(annotated.compressed)
      const study = internalId((await mainTarget.json<{ParentStudy: string}>(`/series/${(await mainTarget.json<{ParentSeries: string}>(`/instances/${annotated.compressed}`)).ParentSeries}`)).ParentStudy)
      database.run('INSERT INTO Labels VALUES (?, ?), (?, ?), (?, ?)', [instance, 'reviewed', instance, 'teaching', study, 'research'])
      database.run('INSERT INTO Metadata (id, type, value) VALUES (?, ?, ?)', [study, 1025, 'study note'])
    } finally {
      database.close()
    }

    const target = await startOrthanc({name: 'labels-target', ...userConfig})
    try {
      const result = await recoverInto(target, '--json', '--index', fixture, storage)
      expect(result.code).toBe(10)
      const summary = parseJson<ImportJson>(result)
      // Two labels on the instance, one on the study: none fits on a 1.10.1 target, each level named, each resource counted once.
      expect(summary.notCarried.filter((entry) => entry.kind === 'labels').map((entry) => [entry.level, entry.count]).sort()).toEqual([['instance', 1], ['study', 1]])
      expect(summary.recovery[0]).toMatchObject({index: {schema: expect.stringMatching(/with labels/)}, resourceSideData: {resources: 2, userMetadata: 1, attachments: 0, labels: 1, protectedPatients: 1}})
      expect(await (await target.api(`/instances/${annotated.compressed}/metadata/Reviewed`)).text()).toBe(`read ${annotated.compressed}`)
      // The study's user metadata, read from the index, is restored on the target's study.
      const studyOnTarget = (await target.json<{ParentStudy: string}>(`/series/${(await target.json<{ParentSeries: string}>(`/instances/${annotated.compressed}`)).ParentSeries}`)).ParentStudy
      expect(await (await target.api(`/studies/${studyOnTarget}/metadata/1025`)).text()).toBe('study note')
      const human = await recoverInto(target, '--index', fixture, storage)
      expect(human.stdout).toMatch(/Not carried: labels of 1 instance\(s\): the target is older than Orthanc 1\.12/)
      expect(human.stdout).toMatch(/Not carried: labels of 1 study\(s\)/)
    } finally {
      await target.dispose()
    }
  })

  it('without its index: every intact instance recognised file by file, a header-only copy never stands in for a damaged file, files set aside counted by kind', async () => {
    const target = await startOrthanc({name: 'guessed'})
    try {
      const result = await recoverInto(target, '--json', '--ignore-index', storage)
      // The damaged compressed file no longer inflates: bad input, named.
      expect(result.code).toBe(11)
      const summary = parseJson<ImportJson>(result)
      // An empty file is named too: without the index, an empty user attachment cannot be told
      // from an instance a power loss cut short (see the README).
      expect(summary.problems).toEqual(expect.arrayContaining([expect.objectContaining({id: stored(corrupt.uuid), kind: 'damaged'})]))
      expect(summary.problems.filter((problem) => problem.kind === 'truncated').map((problem) => problem.id).sort()).toEqual(emptyAttachmentFiles.map(stored).sort())
      expect(summary.problems).toHaveLength(1 + emptyAttachmentFiles.length)
      expect(summary.failures).toEqual([expect.objectContaining({id: corrupt.id, kind: 'missing', reason: expect.stringMatching(/only a header-only copy/)})])
      expect((await target.api(`/instances/${corrupt.id}`)).status).toBe(404)

      const expected = new Map([...sourceMd5s].filter(([id]) => id !== missing.id && id !== corrupt.id))
      expected.set(stranger.orthancId, stranger.md5)
      expect(await instanceMd5s(target)).toEqual(expected)
      expect(summary.recovery[0]).toMatchObject({route: 'storage-folder-without-index', candidates: expected.size + 1, recovered: expected.size, failed: 1})
      expect(summary.ignoredByKind['header-only']).toBeGreaterThan(0)
      expect(summary.ignoredByKind['index-file']).toBe(indexFiles.size)
      expect(Object.values(summary.ignoredByKind).reduce((sum, count) => sum + count, 0)).toBe(summary.ignoredFiles)
    } finally {
      await target.dispose()
    }
  })

  it('without its index: a stored file left empty (a power loss) is named, never passed over as not DICOM', async () => {
    const copy = join(work, 'emptied-storage')
    await cp(storage, copy, {recursive: true})
    let emptied: string | undefined
    for (const file of await listFiles(copy)) {
      const bytes = await readFile(file)
      if (bytes.subarray(128, 132).toString('latin1') === 'DICM') {
        emptied = file
        break
      }
    }
    expect(emptied).toBeDefined()
    await writeFile(emptied!, Buffer.alloc(0))
    const target = await startOrthanc({name: 'emptied'})
    try {
      const result = await recoverInto(target, '--json', '--ignore-index', copy)
      expect(result.code).toBe(11)
      expect(parseJson<ImportJson>(result).problems).toContainEqual(expect.objectContaining({id: emptied, kind: 'truncated', reason: expect.stringMatching(/empty stored file/)}))
    } finally {
      await target.dispose()
      await rm(copy, {recursive: true, force: true})
    }
  })

  // Last: the restarted server folds its WAL into the index.
  it('leaves the index as it found it: same bytes, no lock, no -shm; the server starts again on it', async () => {
    const now = new Map<string, string>()
    for (const name of (await readdir(storage)).filter((entry) => entry.startsWith('index'))) now.set(name, md5(await readFile(join(storage, name))))
    expect(now).toEqual(indexFiles)
    const restarted = await startOrthanc({dir: deadDir, ...userConfig, storageCompression: true, extra: {IndexDirectory: storage}})
    try {
      expect((await restarted.json<string[]>('/instances')).length).toBe(corpus.length)
    } finally {
      await restarted.stop()
    }
  })
})
