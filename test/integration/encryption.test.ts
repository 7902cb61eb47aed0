import {execFile} from 'node:child_process'
import {mkdir, mkdtemp, readdir, readFile, rm, stat, truncate, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {promisify} from 'node:util'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {type FixtureRecord, generateStudySet} from '../../fixtures/generate.js'
import {ExitCode} from '../../src/cli/exit-codes.js'
import {parseJson, runCli} from '../helpers/cli.js'
import {listFiles} from '../helpers/corpus.js'
import {instanceMd5s, type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'

const run = promisify(execFile)

interface Summary {
  transferred: number
  failed: number
  problems: Array<{id: string; kind: string; reason: string}>
  volumes: {unproven: Array<{volume: string}>}
}

/**
 * Encrypted volumes (age): export to recipients or to a passphrase, import and verify decrypt as
 * they stream with the same checks; the standard `age` tool decrypts them too, and a wrong key,
 * a truncated or an altered file is refused by name with nothing of that volume uploaded.
 */
describe('encrypted volumes', () => {
  let work: string
  let records: FixtureRecord[]
  let source: OrthancServer
  let target: OrthancServer
  let keyA: string
  let keyB: string
  let recipientA: string
  let recipientB: string
  let volumes: string
  let exportedStderr: string

  const clearTarget = async () => {
    for (const id of await target.json<string[]>('/instances')) await target.api(`/instances/${id}`, {method: 'DELETE'})
  }

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'encryption-'))
    records = await generateStudySet(join(work, 'fixtures'), {patients: 2, studiesPerPatient: 1, seriesPerStudy: 2, instancesPerSeries: 3, pixelBytes: 5000, seed: 'encryption'})
    ;[source, target] = await Promise.all([startOrthanc({name: 'enc-source'}), startOrthanc({name: 'enc-target'})])
    await uploadFiles(source, records.map((record) => record.path))
    await source.api(`/instances/${records[0]!.orthancId}/attachments/1030`, {method: 'PUT', body: 'a report\n'})
    keyA = join(work, 'a.key')
    keyB = join(work, 'b.key')
    await run('age-keygen', ['-o', keyA])
    await run('age-keygen', ['-o', keyB])
    recipientA = (await run('age-keygen', ['-y', keyA])).stdout.trim()
    recipientB = (await run('age-keygen', ['-y', keyB])).stdout.trim()
    volumes = join(work, 'volumes')
    const exported = await runCli(['export', '--source', source.url, '--output', volumes, '--max-volume-size', '70000', '--recipient', recipientA, '--recipient', recipientB])
    expect(exported.code, exported.stderr).toBe(0)
    exportedStderr = exported.stderr
  })
  afterAll(async () => {
    await Promise.all([source?.dispose(), target?.dispose()])
    await rm(work, {recursive: true, force: true})
  })

  const encryptedVolumes = async (dir: string) => (await readdir(dir)).filter((name) => name.endsWith('.tar.age')).sort().map((name) => join(dir, name))

  it('writes .tar.age volumes, private, that each identity alone opens: import restores every instance exactly', async () => {
    const files = await encryptedVolumes(volumes)
    expect(files.length).toBeGreaterThanOrEqual(2)
    expect((await readdir(volumes)).filter((name) => name.endsWith('.tar'))).toEqual([])
    for (const file of await listFiles(volumes)) expect(((await stat(file)).mode & 0o077).toString(8), file).toBe('0')
    for (const key of [keyA, keyB]) {
      await clearTarget()
      const result = await runCli(['import', '--target', target.url, '--identity', key, '--json', '--no-receipt', volumes])
      expect(result.code, result.stderr).toBe(0)
      expect(await instanceMd5s(target)).toEqual(await instanceMd5s(source))
    }
    expect(await (await target.api(`/instances/${records[0]!.orthancId}/attachments/1030/data`)).text()).toBe('a report\n')
    expect((await runCli(['verify', '--identity', keyB, volumes])).code).toBe(0)
  })

  it('volumes given one by one, as files: by their own names, and under names export does not give', async () => {
    const files = await encryptedVolumes(volumes)
    // Each .tar.age file named on the command line: import and verify read them as volumes.
    await clearTarget()
    const named = await runCli(['import', '--target', target.url, '--identity', keyA, '--json', '--no-receipt', ...files])
    expect(named.code, named.stderr).toBe(0)
    expect(parseJson<{transferred: number}>(named).transferred).toBe(records.length)
    expect((await runCli(['verify', '--identity', keyA, ...files])).code).toBe(0)
    // Without a key: refused before anything is read, not set aside as "not DICOM".
    expect((await runCli(['import', '--target', target.url, '--json', '--no-receipt', files[0]!])).code).toBe(ExitCode.usage)

    // Renamed (as a transfer might): still volumes when given as files, by what they start with.
    const renamed = join(work, 'renamed')
    await mkdir(renamed, {recursive: true})
    const copies = await Promise.all(files.map(async (file, index) => {
      const copy = join(renamed, `transfer-${index}`)
      await writeFile(copy, await readFile(file))
      return copy
    }))
    await clearTarget()
    const byContent = await runCli(['import', '--target', target.url, '--identity', keyA, '--json', '--no-receipt', ...copies])
    expect(byContent.code, byContent.stderr).toBe(0)
    expect(await instanceMd5s(target)).toEqual(await instanceMd5s(source))
    // The folder of renamed volumes is read as DICOM files: each volume is named, not passed over (exit 11).
    const asFolder = await runCli(['import', '--target', target.url, '--identity', keyA, '--json', '--no-receipt', renamed])
    expect(asFolder.code).toBe(ExitCode.badInput)
    expect(parseJson<{problems: Array<{id: string; reason: string}>}>(asFolder).problems).toHaveLength(copies.length)
  })

  it('the standard age tool decrypts each volume into a bag that sha256sum -c checks', async () => {
    for (const volume of await encryptedVolumes(volumes)) {
      const extracted = await mkdtemp(join(work, 'extracted-'))
      await run('sh', ['-c', `age -d -i "${keyA}" "${volume}" | tar -x -C "${extracted}"`])
      const [bag] = await readdir(extracted)
      const {stdout} = await run('sh', ['-c', 'sha256sum -c manifest-sha256.txt && sha256sum -c tagmanifest-sha256.txt'], {cwd: join(extracted, bag!)})
      expect(stdout).not.toMatch(/FAILED/)
      expect(stdout.match(/: OK$/gm)!.length).toBeGreaterThanOrEqual(6)
    }
  })

  it('--patient-index beside encrypted volumes is encrypted too: index.csv.age, which names them and their patients', async () => {
    const output = join(work, 'with-index')
    const exported = await runCli(['export', '--source', source.url, '--output', output, '--max-volume-size', '70000', '--recipient', recipientA, '--patient-index'])
    expect(exported.code, exported.stderr).toBe(0)
    const plainFiles = (await listFiles(output)).filter((file) => !file.endsWith('.age'))
    const patientIds = [...new Set(records.map((record) => record.patientId))]
    for (const file of plainFiles) {
      const text = await readFile(file, 'latin1')
      for (const id of patientIds) expect(text.includes(id), `${file} names patient ${id}`).toBe(false)
    }
    await expect(stat(join(output, 'index.csv'))).rejects.toThrow()
    const index = join(output, 'index.csv.age')
    expect(((await stat(index)).mode & 0o777).toString(8)).toBe('600')
    const csv = (await run('age', ['-d', '-i', keyA, index])).stdout
    expect(csv.split('\r\n')[0]).toMatch(/^PatientID,PatientName,/)
    for (const id of patientIds) expect(csv).toContain(id)
    const named = [...new Set(csv.match(/[\w-]+\.tar\.age/g))].sort()
    expect(named).toEqual((await encryptedVolumes(output)).map((file) => file.split('/').at(-1)))
    // The index is no volume: the folder reads as it would without it.
    const verified = await runCli(['verify', '--identity', keyA, output])
    expect(verified.code, verified.stderr).toBe(0)
  })

  it('the next step suggested after an encrypted export or verify carries the key flag, as a placeholder; after a plain one none', async () => {
    expect(exportedStderr).toMatch(new RegExp(`^Next: .* verify --identity KEY-FILE ${volumes}$`, 'm'))
    const verified = await runCli(['verify', '--identity', keyA, volumes])
    expect(verified.code, verified.stderr).toBe(0)
    expect(verified.stderr).toMatch(new RegExp(`^Next: import it \\(orthanc-replicate import --target URL --identity KEY-FILE ${volumes}\\), then verify again with --target URL --identity KEY-FILE before`, 'm'))
    for (const stderr of [exportedStderr, verified.stderr]) expect(stderr).not.toContain(keyA)

    const plain = join(work, 'plain')
    const exported = await runCli(['export', '--source', source.url, '--output', plain])
    expect(exported.code, exported.stderr).toBe(0)
    expect(exported.stderr).toMatch(new RegExp(`^Next: .* orthanc-replicate verify ${plain}$`, 'm'))
    const verifiedPlain = await runCli(['verify', plain])
    expect(verifiedPlain.code, verifiedPlain.stderr).toBe(0)
    expect(verifiedPlain.stderr).toMatch(new RegExp(`^Next: import it \\(orthanc-replicate import --target URL ${plain}\\), then verify again with --target URL before`, 'm'))
    for (const stderr of [exported.stderr, verifiedPlain.stderr]) expect(stderr).not.toMatch(/--identity|--passphrase-file/)
  })

  it('a passphrase from a file, both ways; and through a pipe', async () => {
    const passphrase = join(work, 'passphrase')
    await writeFile(passphrase, 'correct horse battery staple\n', {mode: 0o600})
    const output = join(work, 'with-passphrase')
    const exported = await runCli(['export', '--source', source.url, '--output', output, '--passphrase-file', passphrase])
    expect(exported.code, exported.stderr).toBe(0)
    expect(exported.stderr).toMatch(new RegExp(`^Next: .* verify --passphrase-file PASSPHRASE-FILE ${output}$`, 'm'))
    expect(exported.stderr).not.toContain(passphrase)
    await clearTarget()
    const imported = await runCli(['import', '--target', target.url, '--passphrase-file', passphrase, '--no-receipt', output])
    expect(imported.code, imported.stderr).toBe(0)
    expect(await instanceMd5s(target)).toEqual(await instanceMd5s(source))

    const piped = await runCli(['export', '--source', source.url, '--output', '-', '--recipient', recipientA])
    expect(piped.code, piped.stderr).toBe(0)
    expect(piped.stdoutBytes.subarray(0, 21).toString()).toBe('age-encryption.org/v1')
    await clearTarget()
    const fromStdin = await runCli(['import', '--target', target.url, '--identity', keyA, '--no-receipt', '-'], {stdin: piped.stdoutBytes})
    expect(fromStdin.code, fromStdin.stderr).toBe(0)
    expect(await instanceMd5s(target)).toEqual(await instanceMd5s(source))
  })

  it('a wrong key: refused by name (exit 11), nothing uploaded', async () => {
    const stranger = join(work, 'stranger.key')
    await run('age-keygen', ['-o', stranger])
    await clearTarget()
    const result = await runCli(['import', '--target', target.url, '--identity', stranger, '--json', '--no-receipt', volumes])
    expect(result.code).toBe(11)
    const summary = parseJson<Summary>(result)
    expect(summary.transferred).toBe(0)
    expect(summary.problems.map((problem) => problem.kind)).toContain('wrong-key')
    expect(await target.json<string[]>('/instances')).toEqual([])
    // Whole volumes, another key: verify never says to delete them.
    const checked = await runCli(['verify', '--identity', stranger, volumes])
    expect(checked.code).toBe(11)
    expect(checked.stderr + checked.stdout).not.toContain('delete each volume')
  })

  it.each(['truncated', 'flipped'] as const)('a %s volume: refused by name (exit 11), nothing of it uploaded, the other volumes imported', async (damage) => {
    const copy = join(work, `damaged-${damage}`)
    await mkdir(copy)
    const files = await encryptedVolumes(volumes)
    for (const file of files) await writeFile(join(copy, file.split('/').at(-1)!), await readFile(file))
    const victim = join(copy, files[0]!.split('/').at(-1)!)
    const {size} = await stat(victim)
    if (damage === 'truncated') await truncate(victim, Math.floor(size * 0.6))
    else {
      const bytes = await readFile(victim)
      bytes[Math.floor(size * 0.5)] = bytes[Math.floor(size * 0.5)]! ^ 0x40
      await writeFile(victim, bytes)
    }

    // Which instances the damaged volume held: the intact original, decrypted by the age tool.
    const {stdout: listing} = await run('sh', ['-c', `age -d -i "${keyA}" "${files[0]}" | tar -t`])
    const inVictim = new Set(listing.split('\n').filter((name) => name.endsWith('.dcm')).map((name) => name.split('/').at(-1)!.replace('.dcm', '')))
    expect(inVictim.size).toBeGreaterThan(0)

    await clearTarget()
    const result = await runCli(['import', '--target', target.url, '--identity', keyA, '--json', '--no-receipt', copy])
    expect(result.code).toBe(11)
    const summary = parseJson<Summary>(result)
    expect(summary.problems).toContainEqual(expect.objectContaining({id: victim, kind: expect.stringMatching(/^(truncated|damaged|checksum)$/)}))
    expect(summary.problems.filter((problem) => problem.kind === 'not-archive')).toEqual([])
    // The other volumes came whole; of the damaged one, nothing.
    const onTarget = new Set(await target.json<string[]>('/instances'))
    expect([...inVictim].filter((id) => onTarget.has(id))).toEqual([])
    expect(onTarget.size).toBe(records.length - inVictim.size)
  })

  it('an encrypted volume given with no key: exit 2, saying which key to give, before anything is asked of the target', async () => {
    const result = await runCli(['import', '--target', target.url, '--no-receipt', volumes])
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/is encrypted \(age\)/)
    expect(result.stderr).toMatch(/--identity/)
  })

  it('an encrypted export resumes after a crash without rewriting a finished volume, and --since reads its chain', async () => {
    const output = join(work, 'resume')
    const crashed = await runCli(['export', '--source', source.url, '--output', output, '--max-volume-size', '70000', '--recipient', recipientA], {env: {ORTHANC_REPLICATE_CRASH_AT: 'export:volume-renamed'}})
    expect(crashed.code).not.toBe(0)
    const [first] = await encryptedVolumes(output)
    const before = await stat(first!)
    const resumed = await runCli(['export', '--source', source.url, '--output', output, '--max-volume-size', '70000', '--recipient', recipientA, '--json'])
    expect(resumed.code, resumed.stderr).toBe(0)
    expect((await stat(first!)).ino).toBe(before.ino)
    await clearTarget()
    expect((await runCli(['import', '--target', target.url, '--identity', keyA, '--no-receipt', output])).code).toBe(0)
    expect(await instanceMd5s(target)).toEqual(await instanceMd5s(source))

    const next = join(work, 'resume-since')
    const incremental = await runCli(['export', '--source', source.url, '--output', next, '--since', output, '--recipient', recipientA, '--json'])
    expect(incremental.code, incremental.stderr).toBe(0)
    expect(parseJson<{instancesPlanned: number}>(incremental).instancesPlanned).toBe(0)
  })

  // The plan records that a passphrase is used, not which: resumed with another, the export said
  // it was finished (exit 0) with volumes that no one passphrase opened.
  it('a passphrase export resumed with another passphrase is refused (exit 2), and goes on with the first', async () => {
    const [first, second] = [join(work, 'passphrase-one'), join(work, 'passphrase-two')]
    await writeFile(first, 'first passphrase\n', {mode: 0o600})
    await writeFile(second, 'second passphrase\n', {mode: 0o600})
    const output = join(work, 'resume-passphrase')
    // Two instances, a volume each: every volume costs a passphrase's work (scrypt) to write and to open.
    const args = ['export', '--source', source.url, '--output', output, '--max-volume-instances', '1', '--json', '--orthanc-id', records[0]!.orthancId, '--orthanc-id', records[1]!.orthancId]
    const crashed = await runCli([...args, '--passphrase-file', first], {env: {ORTHANC_REPLICATE_CRASH_AT: 'export:volume-renamed'}})
    expect(crashed.code).not.toBe(0)
    expect(await encryptedVolumes(output)).toHaveLength(1)
    const other = await runCli([...args, '--passphrase-file', second])
    expect(other.code, other.stdout).toBe(2)
    expect(parseJson<{error: {code: string}}>(other).error.code).toBe('other-passphrase')
    expect(`${other.stdout}${other.stderr}`).not.toContain('second passphrase')
    expect(await encryptedVolumes(output)).toHaveLength(1)
    const resumed = await runCli([...args, '--passphrase-file', first])
    expect(resumed.code, resumed.stdout).toBe(0)
    expect((await runCli(['verify', '--passphrase-file', first, output])).code).toBe(0)

    // Stopped before any volume was finished: the patient index, written with the first, tells.
    const indexed = join(work, 'resume-passphrase-index')
    const indexArgs = [...args.map((arg) => (arg === output ? indexed : arg)), '--patient-index']
    expect((await runCli([...indexArgs, '--passphrase-file', first], {env: {ORTHANC_REPLICATE_CRASH_AT: 'export:volume-closed'}})).code).not.toBe(0)
    expect(await encryptedVolumes(indexed)).toHaveLength(0)
    const otherForIndex = await runCli([...indexArgs, '--passphrase-file', second])
    expect(otherForIndex.code, otherForIndex.stdout).toBe(2)
    expect(parseJson<{error: {code: string}}>(otherForIndex).error.code).toBe('other-passphrase')
  })

  it('with --state elsewhere, the drive holds encrypted volumes only; the same --state resumes, and --since reads it', async () => {
    const drive = join(work, 'drive')
    const state = join(work, 'private', 'export-state')
    const exportArgs = ['export', '--source', source.url, '--output', drive, '--state', state, '--max-volume-size', '70000', '--recipient', recipientA]
    const crashed = await runCli(exportArgs, {env: {ORTHANC_REPLICATE_CRASH_AT: 'export:volume-renamed'}})
    expect(crashed.code).not.toBe(0)
    const [first] = await encryptedVolumes(drive)
    const before = await stat(first!)
    const resumed = await runCli([...exportArgs, '--json'])
    expect(resumed.code, resumed.stderr).toBe(0)
    expect(parseJson<{skipped: number}>(resumed).skipped).toBeGreaterThan(0)
    expect((await stat(first!)).ino).toBe(before.ino)
    // Once more, finished: the state folder, chain list included, is taken as the export's own.
    const again = await runCli([...exportArgs, '--json'])
    expect(again.code, again.stderr).toBe(0)
    expect(parseJson<{volumesWritten: number}>(again).volumesWritten).toBe(0)
    // Nothing in clear on the drive: no state folder, no plan, only .tar.age volumes.
    const onDrive = await listFiles(drive)
    expect(onDrive.length).toBeGreaterThanOrEqual(2)
    expect(onDrive.filter((file) => !file.endsWith('.tar.age'))).toEqual([])
    // The state, private, holds the plan and the chain list.
    expect(((await stat(state)).mode & 0o077).toString(8)).toBe('0')
    const stateFiles = await listFiles(state)
    expect(stateFiles.map((file) => file.split('/').at(-1))).toEqual(expect.arrayContaining(['plan.json', 'exported-instances.txt']))
    for (const file of stateFiles) expect(((await stat(file)).mode & 0o077).toString(8), file).toBe('0')
    // The same export without its --state: refused before it plans, so no plan lands on the drive
    // and no volume is written again.
    const forgotten = await runCli(exportArgs.filter((arg, at) => arg !== '--state' && exportArgs[at - 1] !== '--state'))
    expect(forgotten.code).toBe(ExitCode.usage)
    expect(forgotten.stderr).toContain('--state')
    expect(await listFiles(drive)).toEqual(onDrive)
    expect((await stat(first!)).ino).toBe(before.ino)
    await clearTarget()
    expect((await runCli(['import', '--target', target.url, '--identity', keyA, '--no-receipt', drive])).code).toBe(0)
    expect(await instanceMd5s(target)).toEqual(await instanceMd5s(source))

    // The encrypted volumes alone cannot be a base; their --state can.
    const withoutState = await runCli(['export', '--source', source.url, '--output', join(work, 'drive-next'), '--since', drive, '--recipient', recipientA])
    expect(withoutState.code).toBe(ExitCode.badInput)
    expect(withoutState.stderr).toContain('--state')
    const incremental = await runCli(['export', '--source', source.url, '--output', join(work, 'drive-next'), '--since', state, '--recipient', recipientA, '--json'])
    expect(incremental.code, incremental.stderr).toBe(0)
    expect(parseJson<{instancesPlanned: number}>(incremental).instancesPlanned).toBe(0)
  })

  it('--state must be a folder of its own: one holding other files, or the output itself, is refused before anything is written', async () => {
    // Planning empties the state folder: a folder with anything else in it is never used.
    const busy = join(work, 'busy')
    await mkdir(busy)
    await writeFile(join(busy, 'notes.txt'), 'mine\n')
    const output = join(work, 'busy-out')
    const refused = await runCli(['export', '--source', source.url, '--output', output, '--state', busy, '--recipient', recipientA])
    expect(refused.code).toBe(ExitCode.usage)
    expect(refused.stderr).toContain('notes.txt')
    expect(await readdir(busy)).toEqual(['notes.txt'])
    expect(await readdir(work)).not.toContain('busy-out')
    for (const state of [output, work]) {
      const inside = await runCli(['export', '--source', source.url, '--output', output, '--state', state, '--recipient', recipientA])
      expect(inside.code, state).toBe(ExitCode.usage)
      expect(inside.stderr, state).toContain('--output folder')
    }
    const toStream = await runCli(['export', '--source', source.url, '--output', '-', '--state', join(work, 'stream-state'), '--recipient', recipientA])
    expect(toStream.code).toBe(ExitCode.usage)
    expect(await readdir(work)).not.toContain('stream-state')
  })
})
