import {execFile, spawn, spawnSync} from 'node:child_process'
import {createHash} from 'node:crypto'
import {existsSync} from 'node:fs'
import {mkdtemp, readFile, rm, stat, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'
import {promisify} from 'node:util'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import type {FixtureRecord} from '../../fixtures/generate.js'
import {generateStudySet} from '../../fixtures/generate.js'
import type {VolumeManifest} from '../../src/archive/format.js'
import {PASSWORD_IN_URL_WARNING} from '../../src/util/redact.js'
import {parseJson, repoRoot, runCli} from '../helpers/cli.js'
import {extractWithTar, listFiles, makeCorpus, volumeFiles} from '../helpers/corpus.js'
import {startFaultProxy} from '../helpers/fault-proxy.js'
import {damageStoredFile, flipByteInEntry, payloadEntries} from '../helpers/tamper.js'
import {type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'

const md5 = (bytes: Buffer) => createHash('md5').update(bytes).digest('hex')
const run = promisify(execFile)
const PASSWORD = 'export-Secret-77'

interface ExportJson {
  transferred: number
  skipped: number
  failed: number
  bytes: number
  volumes: number
  volumesWritten: number
  instancesPlanned: number
  bytesPlanned: number
  durationMs: number
  failures: Array<{id: string; kind: string; reason: string}>
}

async function manifestsOf(extracted: string): Promise<VolumeManifest[]> {
  const files = (await listFiles(extracted)).filter((file) => file.endsWith('orthanc/manifest.json')).sort()
  return Promise.all(files.map(async (file) => JSON.parse(await readFile(file, 'utf8')) as VolumeManifest))
}

describe('export', () => {
  let source: OrthancServer
  let work: string
  let corpus: FixtureRecord[]
  const annotated = {metadata: 'reviewed-by-dr-who', attachment: Buffer.from('%PDF-1.4 a small report\n')}

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'export-test-'))
    corpus = await makeCorpus(join(work, 'fixtures'))
    source = await startOrthanc({name: 'export-source', users: {alice: PASSWORD}, userMetadata: {Reviewed: 1024}, userContentType: {Report: 1030}})
    await uploadFiles(source, corpus.map((record) => record.path))
    const first = corpus[0]!.orthancId
    await source.api(`/instances/${first}/metadata/Reviewed`, {method: 'PUT', body: annotated.metadata})
    await source.api(`/instances/${first}/attachments/Report`, {method: 'PUT', body: annotated.attachment, headers: {'content-type': 'application/octet-stream'}})
  })
  afterAll(async () => {
    await source?.dispose()
    await rm(work, {recursive: true, force: true})
  })

  const exportTo = (output: string, ...extra: string[]) => runCli(['export', '--source', source.authUrl, '--output', output, '--json', ...extra])

  describe('a full export in small volumes', () => {
    let output: string
    let extracted: string
    let summary: ExportJson
    const limit = 1_600_000

    beforeAll(async () => {
      output = join(work, 'full')
      const result = await exportTo(output, '--max-volume-size', String(limit))
      expect(result.code, result.stderr).toBe(0)
      summary = parseJson<ExportJson>(result)
      extracted = await extractWithTar(await volumeFiles(output))
    })

    it('reports integer counts, bytes, volumes and duration', () => {
      expect(summary).toMatchObject({transferred: corpus.length, skipped: 0, failed: 0, volumes: expect.any(Number), durationMs: expect.any(Number)})
      expect(summary.bytes).toBe(corpus.reduce((sum, record) => sum + record.size, 0))
    })

    it('holds every instance exactly once, byte-identical, awkward encodings included', async () => {
      const dcmFiles = (await listFiles(extracted)).filter((file) => file.endsWith('.dcm'))
      expect(dcmFiles).toHaveLength(corpus.length)
      for (const record of corpus) {
        const matches = dcmFiles.filter((file) => file.endsWith(`/${record.orthancId}.dcm`))
        expect(matches, record.label).toHaveLength(1)
        expect((await readFile(matches[0]!)).equals(await readFile(record.path)), record.label).toBe(true)
      }
    })

    it('splits into volumes at the limit, named to sort and to show k of n', async () => {
      const volumes = await volumeFiles(output)
      expect(volumes.length).toBe(summary.volumes)
      expect(volumes.length).toBeGreaterThanOrEqual(2)
      for (const [index, volume] of volumes.entries()) {
        expect(volume).toMatch(new RegExp(`orthanc-export-${String(index + 1).padStart(4, '0')}-of-${String(volumes.length).padStart(4, '0')}\\.tar$`))
        expect((await stat(volume)).size).toBeLessThanOrEqual(limit)
        expect((await stat(volume)).size).toBeGreaterThan(limit / 4)
      }
    })

    it('is a valid BagIt bag per volume, checked by sha256sum and by its tag files', async () => {
      const manifests = await manifestsOf(extracted)
      for (const manifest of manifests) {
        const bag = join(extracted, `orthanc-export-${String(manifest.volume).padStart(4, '0')}-of-${String(manifest.volumeCount).padStart(4, '0')}`)
        await run('sha256sum', ['--strict', '-c', 'manifest-sha256.txt'], {cwd: bag})
        await run('sha256sum', ['--strict', '-c', 'tagmanifest-sha256.txt'], {cwd: bag})
        expect(await readFile(join(bag, 'bagit.txt'), 'utf8')).toBe('BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n')
        const info = await readFile(join(bag, 'bag-info.txt'), 'utf8')
        const payload = (await listFiles(join(bag, 'data')))
        const payloadBytes = (await Promise.all(payload.map(async (file) => (await stat(file)).size))).reduce((a, b) => a + b, 0)
        expect(info).toContain(`Payload-Oxum: ${payloadBytes}.${payload.length}\n`)
        expect(info).toContain(`Bag-Count: ${manifest.volume} of ${manifests.length}\n`)
        expect(info).toContain(`Bag-Group-Identifier: ${manifests[0]!.group}\n`)
        // Every payload file is in the manifest, and nothing else is.
        const listed = (await readFile(join(bag, 'manifest-sha256.txt'), 'utf8')).trim().split('\n').map((line) => line.split('  ')[1])
        expect(listed.sort()).toEqual(payload.map((file) => file.slice(bag.length + 1)).sort())
      }
    })

    it('writes the tag manifest last in every volume', async () => {
      for (const volume of await volumeFiles(output)) {
        const {stdout} = await run('tar', ['-tf', volume])
        expect(stdout.trim().split('\n').at(-1)).toMatch(/\/tagmanifest-sha256\.txt$/)
      }
    })

    it('is read the same by GNU tar and by bsdtar (libarchive)', async () => {
      for (const volume of await volumeFiles(output)) {
        const gnu = (await run('tar', ['-tvf', volume])).stdout.trim().split('\n').map((line) => line.split(/\s+/).slice(-1)[0])
        const bsd = await run('bsdtar', ['-tf', volume]).catch(() => {
          throw new Error('bsdtar is missing: install it with `sudo apt-get install -y libarchive-tools`')
        })
        expect(bsd.stdout.trim().split('\n')).toEqual(gnu)
        // bsdtar also extracts it and the BagIt manifests check out.
        const dir = await mkdtemp(join(tmpdir(), 'bsdtar-'))
        await run('bsdtar', ['-xf', volume, '-C', dir])
        const [bag] = (await listFiles(dir)).filter((file) => file.endsWith('/bagit.txt'))
        await run('sha256sum', ['--strict', '-c', 'manifest-sha256.txt'], {cwd: bag!.replace('/bagit.txt', '')})
        await rm(dir, {recursive: true, force: true})
      }
    })

    it('records per instance the IDs, UIDs, size, SHA-256 and MD5, and per study the expected count', async () => {
      const manifests = await manifestsOf(extracted)
      const records = manifests.flatMap((manifest) => manifest.instances)
      for (const fixture of corpus) {
        const record = records.find((entry) => entry.id === fixture.orthancId)!
        expect(record).toMatchObject({studyInstanceUid: fixture.studyInstanceUid, seriesInstanceUid: fixture.seriesInstanceUid, sopInstanceUid: fixture.sopInstanceUid, size: fixture.size, md5: fixture.md5})
        expect(record.sha256).toMatch(/^[0-9a-f]{64}$/)
      }

      const expectedByStudy = new Map<string, number>()
      for (const fixture of corpus) expectedByStudy.set(fixture.studyInstanceUid, (expectedByStudy.get(fixture.studyInstanceUid) ?? 0) + 1)
      for (const manifest of manifests) {
        expect(manifest.source).toMatchObject({name: 'export-source', version: '1.10.1', databaseBackend: 'SQLite (built-in)'})
        expect(manifest.changeCursor).toBeGreaterThan(0)
        for (const study of Object.values(manifest.studies)) expect(study.expectedInstances).toBe(expectedByStudy.get(study.studyInstanceUid))
      }
    })

    it('records user metadata, user attachments (as payload) and system metadata', async () => {
      const records = (await manifestsOf(extracted)).flatMap((manifest) => manifest.instances)
      const record = records.find((entry) => entry.id === corpus[0]!.orthancId)!
      expect(record.userMetadata).toEqual({Reviewed: annotated.metadata})
      expect(record.systemMetadata).toHaveProperty('ReceptionDate')
      expect(record.systemMetadata).toHaveProperty('Origin', 'RestApi')
      expect(record.attachments).toEqual([expect.objectContaining({name: 'Report', contentType: 1030, size: annotated.attachment.length})])
      const attachmentFile = (await listFiles(extracted)).find((file) => file.endsWith(`/data/attachments/${record.id}/1030.bin`))!
      expect(await readFile(attachmentFile)).toEqual(annotated.attachment)
      expect(record.labels).toEqual([])
    })

    it('verify does not count as valid an instance whose user attachment fails its checksum, nor its study as complete', async () => {
      const copy = join(work, 'attachment-damaged')
      await run('cp', ['-r', output, copy])
      let damaged: string | undefined
      for (const candidate of await volumeFiles(copy)) {
        const entry = (await payloadEntries(candidate)).find((found) => found.name.endsWith(`/data/attachments/${corpus[0]!.orthancId}/1030.bin`))
        if (!entry) continue
        await flipByteInEntry(candidate, entry.name)
        damaged = candidate
      }
      expect(damaged).toBeDefined()
      const verified = await runCli(['verify', copy, '--json'])
      expect(verified.code).toBe(11)
      const summary = parseJson<{instances: number; studies: Array<{studyInstanceUid: string; valid: number; expected: number}>}>(verified)
      expect(summary.instances).toBe(corpus.length - 1)
      const study = summary.studies.find((entry) => entry.studyInstanceUid === corpus[0]!.studyInstanceUid)!
      expect(study.valid).toBe(study.expected - 1)
      const human = await runCli(['verify', copy])
      expect(human.stdout).toContain(`Instances: ${corpus.length - 1} valid.`)
      await rm(copy, {recursive: true, force: true})
    })

    it('names no patient in any plain file, unless asked for an index', async () => {
      const patients = await source.json<Array<{MainDicomTags: Record<string, string>}>>('/patients?expand')
      const studies = await source.json<Array<{MainDicomTags: Record<string, string>}>>('/studies?expand')
      const secrets = [
        ...patients.flatMap((patient) => [patient.MainDicomTags.PatientName, patient.MainDicomTags.PatientID, patient.MainDicomTags.PatientBirthDate]),
        ...studies.map((study) => study.MainDicomTags.AccessionNumber),
      ].filter((value): value is string => Boolean(value && value.length >= 4))
      expect(secrets.length).toBeGreaterThan(10)
      const plainFiles = [
        ...(await listFiles(extracted)).filter((file) => !file.endsWith('.dcm') && !file.endsWith('.bin')),
        ...(await listFiles(join(output, '.orthanc-replicate'))),
      ]
      expect(plainFiles.length).toBeGreaterThan(10)
      for (const file of plainFiles) {
        const text = await readFile(file, 'utf8')
        for (const secret of secrets) expect(text.includes(secret), `${secret} in ${file}`).toBe(false)
        // The export ran with the password in the source URL: no file written may hold it.
        expect(text.includes(PASSWORD), `the password in ${file}`).toBe(false)
      }

      const indexed = join(work, 'indexed')
      const result = await exportTo(indexed, '--patient-index', '--patient-id', corpus[0]!.patientId)
      expect(result.code, result.stderr).toBe(0)
      const index = await readFile(join(indexed, 'index.csv'), 'utf8')
      expect(index).toContain(corpus[0]!.patientId)
      expect(index.split('\r\n')[0]).toBe('PatientID,PatientName,PatientBirthDate,AccessionNumber,StudyDate,StudyDescription,StudyInstanceUID,Instances,Volumes')
    })

    it('a second run into the same folder writes nothing again', async () => {
      const before = await Promise.all((await volumeFiles(output)).map(async (file) => (await stat(file)).mtimeMs))
      const result = await exportTo(output, '--max-volume-size', String(limit))
      expect(result.code, result.stderr).toBe(0)
      expect(parseJson<ExportJson>(result)).toMatchObject({transferred: 0, skipped: corpus.length, failed: 0, volumesWritten: 0})
      const after = await Promise.all((await volumeFiles(output)).map(async (file) => (await stat(file)).mtimeMs))
      expect(after).toEqual(before)
    })
  })

  it('writes entries in the same order on every run, whatever finishes downloading first', async () => {
    const listings: string[] = []
    for (const concurrency of ['1', '8']) {
      const output = join(work, `order-${concurrency}`)
      expect((await exportTo(output, '--concurrency', concurrency, '--max-volume-size', '1600000')).code).toBe(0)
      let listing = ''
      for (const volume of await volumeFiles(output)) listing += (await run('tar', ['-tf', volume])).stdout
      listings.push(listing)
    }

    expect(listings[0]).toBe(listings[1])
    expect(listings[0]!.split('\n').filter((line) => line.endsWith('.dcm'))).toHaveLength(corpus.length)
  })

  it('parses HTTP with baseline WebAssembly code only: no optimizing compile for the process to wait on', async () => {
    // bin/run.js turns V8's tier-up of undici's llhttp off: a TurboFan compile of its parser costs
    // 230-300 ms of CPU, and a short command waited for it before exiting. Without that, V8 tiers
    // the parser up after 10 to 50 requests; this export makes more.
    const result = await runCli(['export', '--source', source.authUrl, '--output', join(work, 'wasm-tiers'), '--json'], {nodeArgs: ['--trace-wasm-compilation-times']})
    expect(result.code, result.stderr).toBe(0)
    const compiles = result.stdout.split('\n').filter((line) => line.startsWith('Compiled function'))
    expect(compiles.some((line) => line.includes('using Liftoff'))).toBe(true)
    expect(compiles.filter((line) => line.includes('using TurboFan'))).toEqual([])
  })

  it('leaves JavaScript that is only warm for a few seconds unoptimized', async () => {
    // bin/run.js raises V8's interrupt budget eightfold: TurboFan compiles of functions that are
    // warm only for a short command cost more CPU than they save. This export marked 21 functions
    // for TurboFan before, 5 after (those of Node's start-up, which runs before the flag is set).
    const result = await runCli(['export', '--source', source.authUrl, '--output', join(work, 'js-tiers'), '--json'], {nodeArgs: ['--trace-opt']})
    expect(result.code, result.stderr).toBe(0)
    const marked = result.stdout.split('\n').filter((line) => line.startsWith('[marking') && line.includes('TURBOFAN'))
    expect(marked.length).toBeGreaterThan(0)
    expect(marked.length, marked.join('\n')).toBeLessThanOrEqual(10)
  })

  it('--dry-run reports instances, bytes and volumes and writes nothing', async () => {
    const output = join(work, 'dry')
    const result = await exportTo(output, '--dry-run', '--max-volume-size', '1600000')
    expect(result.code, result.stderr).toBe(0)
    const summary = parseJson<ExportJson>(result)
    expect(summary.instancesPlanned).toBe(corpus.length)
    expect(summary.bytesPlanned).toBe(corpus.reduce((sum, record) => sum + record.size, 0) + annotated.attachment.length)
    expect(summary.volumes).toBeGreaterThanOrEqual(2)
    // What it would write is planned; nothing is transferred, not even bytes.
    expect(summary).toMatchObject({dryRun: true, transferred: 0, bytes: 0, planned: {instances: summary.instancesPlanned, bytes: summary.bytesPlanned}})
    expect(existsSync(output)).toBe(false)
  })

  it('--output - writes one tar archive to stdout, and the summary to stderr', async () => {
    const result = await new Promise<{code: number; stdout: Buffer; stderr: string}>((resolve) => {
      const child = spawn(process.execPath, [join(repoRoot, 'bin/run.js'), 'export', '--source', source.authUrl, '--output', '-', '--json', '--modality', 'MR'])
      const out: Buffer[] = []
      let err = ''
      child.stdout.on('data', (chunk: Buffer) => out.push(chunk))
      child.stderr.on('data', (chunk: Buffer) => (err += chunk))
      child.on('close', (code) => resolve({code: code ?? 1, stdout: Buffer.concat(out), stderr: err}))
    })
    expect(result.code, result.stderr).toBe(0)
    const file = join(work, 'stdout.tar')
    await writeFile(file, result.stdout)
    const {stdout: listing} = await run('tar', ['-tf', file])
    const dcm = listing.split('\n').filter((line) => line.endsWith('.dcm'))
    expect(dcm).toHaveLength(corpus.filter((record) => record.modality === 'MR').length)
    // The result follows the warnings on stderr (here: the one about the password in the URL).
    expect(result.stderr.startsWith(PASSWORD_IN_URL_WARNING)).toBe(true)
    expect(JSON.parse(result.stderr.slice(PASSWORD_IN_URL_WARNING.length))).toMatchObject({transferred: dcm.length, failed: 0, volumes: 1})
  })

  // Node puts /dev/null in place of a closed descriptor 1: the archive would vanish, exit 0.
  it.each([['closed', '>&-'], ['/dev/null', '>/dev/null']])('--output - refuses a standard output that throws the archive away (%s)', async (_name, redirect) => {
    const result = spawnSync('sh', ['-c', `exec "$0" "$1" export --source "$2" --output - --modality MR ${redirect}`, process.execPath, join(repoRoot, 'bin/run.js'), source.authUrl], {encoding: 'utf8'})
    expect(result.status, result.stderr).toBe(2)
    expect(result.stderr).toMatch(/standard output is \/dev\/null or \/dev\/zero \(or was closed\): the archive would be thrown away/)
    expect(result.stderr).not.toMatch(/\n\s+at /)
    // A dry run writes no archive: nothing to lose.
    const dry = spawnSync('sh', ['-c', `exec "$0" "$1" export --source "$2" --output - --dry-run --modality MR ${redirect}`, process.execPath, join(repoRoot, 'bin/run.js'), source.authUrl], {encoding: 'utf8'})
    expect(dry.status, dry.stderr).toBe(0)
  })

  describe('filters', () => {
    const planned = async (...filters: string[]) => {
      const result = await exportTo(join(work, 'unused'), '--dry-run', ...filters)
      expect(result.code, result.stderr).toBe(0)
      return parseJson<ExportJson>(result).instancesPlanned
    }

    it('by patient ID, inline and from a file', async () => {
      const patient = corpus[0]!.patientId
      const expected = corpus.filter((record) => record.patientId === patient).length
      expect(await planned('--patient-id', patient)).toBe(expected)
      const file = join(work, 'patients.txt')
      await writeFile(file, `# patients\n${patient}\n`)
      expect(await planned('--patient-id', `@${file}`)).toBe(expected)
    })

    it('by study instance UID and by Orthanc ID of any level', async () => {
      const [a, b] = [corpus[0]!, corpus.at(-1)!]
      expect(await planned('--study-uid', `${a.studyInstanceUid},${b.studyInstanceUid}`)).toBe(corpus.filter((record) => record.studyInstanceUid === a.studyInstanceUid || record.studyInstanceUid === b.studyInstanceUid).length)
      expect(await planned('--orthanc-id', a.orthancId)).toBe(1)
      const instance = await source.json<{ParentSeries: string}>(`/instances/${a.orthancId}`)
      expect(await planned('--orthanc-id', instance.ParentSeries)).toBe(corpus.filter((record) => record.seriesInstanceUid === a.seriesInstanceUid).length)
    })

    it('by study date range and by modality', async () => {
      const dates = [...new Set(corpus.map((record) => record.studyDate))].sort()
      const from = dates[1]!
      const to = dates.at(-2)!
      expect(await planned('--study-date-from', from, '--study-date-to', to)).toBe(corpus.filter((record) => record.studyDate >= from && record.studyDate <= to).length)
      expect(await planned('--modality', 'ct')).toBe(corpus.filter((record) => record.modality === 'CT').length)
    })

    it('--shard K/N: the shards together cover every instance exactly once', async () => {
      const seen: string[] = []
      for (let shard = 1; shard <= 3; shard++) {
        const output = join(work, `shard-${shard}`)
        const result = await exportTo(output, '--shard', `${shard}/3`)
        expect(result.code, result.stderr).toBe(0)
        const {stdout} = await run('tar', ['-tf', (await volumeFiles(output))[0]!])
        const ids = stdout.split('\n').filter((line) => line.endsWith('.dcm')).map((line) => line.split('/').at(-1)!.replace('.dcm', ''))
        expect(ids.length).toBeGreaterThan(0)
        seen.push(...ids)
      }

      expect(seen.sort()).toEqual(corpus.map((record) => record.orthancId).sort())
      const bad = await runCli(['export', '--source', source.authUrl, '--output', join(work, 'x'), '--shard', '4/3'])
      expect(bad.code).toBe(2)
      expect(bad.stderr).toMatch(/--shard[\s\S]*"4\/3" is not K\/N/)
    })

    it('a filter that matches nothing: exit 12 and a clear message', async () => {
      const result = await runCli(['export', '--source', source.authUrl, '--output', join(work, 'none'), '--patient-id', 'NOBODY'])
      expect(result.code).toBe(12)
      expect(result.stderr).toMatch(/no instance matches the filters/)
      expect(existsSync(join(work, 'none', '.orthanc-replicate'))).toBe(false)
    })
  })

  it('a folder holding another export is refused, naming what differs: the server by another name, a limit', async () => {
    const folder = join(work, 'named')
    const first = await runCli(['export', '--source', source.authUrl, '--output', folder, '--modality', 'MR'])
    expect(first.code, first.stderr).toBe(0)
    const byName = await runCli(['export', '--source', source.authUrl.replace('127.0.0.1', 'localhost'), '--output', folder, '--modality', 'MR'])
    expect(byName.code).toBe(2)
    expect(byName.stderr).toContain(`holds another export, which differs from this command in: server ("http://localhost:${source.port}" now, "http://127.0.0.1:${source.port}" in the folder)`)
    expect(byName.stderr).toMatch(/repeat the original command exactly/)
    const limit = await runCli(['export', '--source', source.authUrl, '--output', folder, '--modality', 'MR', '--max-volume-instances', '7'])
    expect(limit.code).toBe(2)
    expect(limit.stderr).toMatch(/which differs from this command in: maxVolumeInstances \(7 now, 2000 in the folder\)$/m)
    const same = await runCli(['export', '--source', source.authUrl, '--output', folder, '--modality', 'MR'])
    expect(same.code, same.stderr).toBe(0)
  })

  it('an unreachable source and a 401: documented exit codes, no password shown', async () => {
    const refused = await runCli(['export', '--source', 'http://127.0.0.1:9', '--output', join(work, 'x')])
    expect(refused.code).toBe(4)
    const wrong = await runCli(['export', '--source', source.url.replace('//', '//alice:wrong-Pass@'), '--output', join(work, 'x')])
    expect(wrong.code).toBe(5)
    expect(wrong.stderr).not.toContain('wrong-Pass')
  })

  it('an incremental export after more instances arrive holds exactly the new ones', async () => {
    const base = join(work, 'base')
    expect((await exportTo(base)).code).toBe(0)
    const more = await generateStudySet(join(work, 'more'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 3, pixelBytes: 3000, seed: 'incremental'})
    await uploadFiles(source, more.map((record) => record.path))
    try {
      const next = join(work, 'next')
      const result = await exportTo(next, '--since', base)
      expect(result.code, result.stderr).toBe(0)
      expect(parseJson<ExportJson>(result)).toMatchObject({transferred: 3, failed: 0, volumes: 1})
      const ids = (await listFiles(await extractWithTar(await volumeFiles(next)))).filter((file) => file.endsWith('.dcm')).map((file) => file.split('/').at(-1)!.replace('.dcm', ''))
      expect(ids.sort()).toEqual(more.map((record) => record.orthancId).sort())
      const manifest = (await manifestsOf(await extractWithTar(await volumeFiles(next))))[0]!
      expect(manifest.incrementalBase?.changeCursor).toBeGreaterThan(0)
      // Nothing new since the incremental one: success, nothing written.
      const again = await exportTo(join(work, 'next2'), '--since', next)
      expect(again.code, again.stderr).toBe(0)
      // Said so, without a "verify" of a folder that was never made.
      const told = await runCli(['export', '--source', source.authUrl, '--output', join(work, 'next3'), '--since', next])
      expect(told.stderr + told.stdout).toContain(`Nothing new since ${next}: no volume was written. The next incremental export is again --since ${next}.`)
      expect(told.stderr + told.stdout).not.toMatch(/verify/)
    } finally {
      for (const record of more) await source.api(`/instances/${record.orthancId}`, {method: 'DELETE'})
    }
  })

  // --since took only instances logged as new: metadata or an attachment set on the source after
  // the base never went, and the far side kept the old side data (exit 0, nothing said).
  it('side data set on the source after the base goes with the incremental export, at every level, and its import completes the far side', async () => {
    const base = join(work, 'base-of-side-data')
    expect((await exportTo(base)).code).toBe(0)
    const [instance, inSeries, inStudy, ofPatient] = [corpus[1]!, corpus[5]!, corpus[9]!, corpus[17]!].map((record) => record.orthancId)
    const patient = (await source.json<{ID: string}>(`/instances/${ofPatient}/patient`)).ID
    const series = (await source.json<{ParentSeries: string}>(`/instances/${inSeries}`)).ParentSeries
    const study = (await source.json<{ParentStudy: string}>(`/series/${(await source.json<{ParentSeries: string}>(`/instances/${inStudy}`)).ParentSeries}`)).ParentStudy
    const report = '%PDF-1.4 a series report\n'
    const set = async (path: string, body: string) => expect((await source.api(path, {method: 'PUT', body})).status).toBe(200)
    await set(`/instances/${instance}/metadata/Reviewed`, 'second look')
    await set(`/series/${series}/attachments/Report`, report)
    await set(`/studies/${study}/metadata/Reviewed`, 'study read')
    await set(`/patients/${patient}/metadata/Reviewed`, 'patient consent')
    // The instance's own series too: the instance that goes for its own change carries it, no other.
    const seriesOfInstance = (await source.json<{ParentSeries: string}>(`/instances/${instance}`)).ParentSeries
    await set(`/series/${seriesOfInstance}/metadata/Reviewed`, 'series read')
    const declared = {userMetadata: {Reviewed: 1024}, userContentType: {Report: 1030}}
    const [oneByOne, together] = await Promise.all([startOrthanc({name: 'export-side-data-one-by-one', ...declared}), startOrthanc({name: 'export-side-data-together', ...declared})])
    try {
      const next = join(work, 'next-side-data')
      const result = await exportTo(next, '--since', base)
      expect(result.code, result.stderr).toBe(0)
      // One instance for each: the instance itself, one of the series, one of the study, one of each of the patient's two studies.
      expect(parseJson<ExportJson>(result)).toMatchObject({transferred: 5, failed: 0})
      // Imported one after the other, and both in one run.
      for (const [target, runs] of [[oneByOne, [[base], [next]]], [together, [[base, next]]]] as const) {
        for (const volumes of runs) {
          const imported = await runCli(['import', '--target', target.url, '--no-receipt', ...volumes])
          expect(imported.code, imported.stdout + imported.stderr).toBe(0)
        }
        expect(await (await target.api(`/instances/${instance}/metadata/Reviewed`)).text()).toBe('second look')
        expect(await (await target.api(`/series/${series}/attachments/Report/data`)).text()).toBe(report)
        expect(await (await target.api(`/studies/${study}/metadata/Reviewed`)).text()).toBe('study read')
        expect(await (await target.api(`/patients/${patient}/metadata/Reviewed`)).text()).toBe('patient consent')
        expect(await (await target.api(`/series/${seriesOfInstance}/metadata/Reviewed`)).text()).toBe('series read')
      }
    } finally {
      await Promise.all([oneByOne.dispose(), together.dispose()])
      await source.api(`/instances/${instance}/metadata/Reviewed`, {method: 'DELETE'})
      await source.api(`/series/${series}/attachments/Report`, {method: 'DELETE'})
      await source.api(`/studies/${study}/metadata/Reviewed`, {method: 'DELETE'})
      await source.api(`/patients/${patient}/metadata/Reviewed`, {method: 'DELETE'})
      await source.api(`/series/${seriesOfInstance}/metadata/Reviewed`, {method: 'DELETE'})
    }
  }, 120_000)

  // The plan read the log's head again after the exclusions had read the log: metadata set in
  // between went neither with this export nor with the next one, which reads the log after that
  // head (lost, exit 0 both times).
  it('side data set while an incremental export plans goes with the next incremental export', async () => {
    const work2 = await mkdtemp(join(tmpdir(), 'export-since-window-'))
    const records = await generateStudySet(join(work2, 'fixtures'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 3, pixelBytes: 3000, seed: 'since-window'})
    const server = await startOrthanc({name: 'export-since-window', userMetadata: {Reviewed: 1024}})
    const proxy = await startFaultProxy(server.port)
    try {
      const [base, next, after] = [join(work2, 'base'), join(work2, 'next'), join(work2, 'after')]
      await uploadFiles(server, records.slice(0, 2).map((record) => record.path))
      expect((await runCli(['export', '--source', server.url, '--output', base])).code).toBe(0)
      await uploadFiles(server, [records[2]!.path])
      // Held after the log was read, before anything is listed: the metadata is set meanwhile.
      proxy.slow.push({match: /^GET \/system/, ms: 1500})
      const running = runCli(['export', '--source', proxy.url, '--output', next, '--since', base, '--json'])
      const logRead = () => proxy.log.some((line, index) => line === 'GET /system' && proxy.log.slice(0, index).some((earlier) => /^GET \/changes\?since=/.test(earlier)))
      while (!logRead()) await sleep(20)
      expect((await server.api(`/instances/${records[0]!.orthancId}/metadata/Reviewed`, {method: 'PUT', body: 'late'})).status).toBe(200)
      const nextRun = await running
      expect({code: nextRun.code, transferred: parseJson<ExportJson>(nextRun).transferred}).toEqual({code: 0, transferred: 1})
      const afterRun = await runCli(['export', '--source', server.url, '--output', after, '--since', next, '--json'])
      expect({code: afterRun.code, transferred: parseJson<ExportJson>(afterRun).transferred}).toEqual({code: 0, transferred: 1})
    } finally {
      await proxy.close()
      await server.dispose()
      await rm(work2, {recursive: true, force: true})
    }
  })

  // A source moved onto a new database (or restored from a backup) numbers its changes from 1:
  // --since took its log after the base's cursor for what changed since, and left out the rest,
  // exit 0, whatever bytes the new server holds.
  it('--since against a source whose change log began again (a new database) is refused, naming the way out', async () => {
    const base = join(work, 'base-of-moved')
    expect((await exportTo(base)).code).toBe(0)
    const moved = await startOrthanc({name: 'moved-source'})
    try {
      await uploadFiles(moved, corpus.slice(0, 2).map((record) => record.path))
      const result = await runCli(['export', '--source', moved.url, '--output', join(work, 'after-move'), '--since', base, '--json'])
      expect(result.code, result.stdout).toBe(11)
      expect(parseJson<{error: {code: string; message: string; suggestion: string}}>(result).error).toMatchObject({code: 'other-history', suggestion: expect.stringContaining('--exclude-receipt')})
    } finally {
      await moved.dispose()
    }
  })
})

describe('export faults', () => {
  let source: OrthancServer
  let work: string
  let records: FixtureRecord[]

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'export-faults-'))
    records = await generateStudySet(join(work, 'fixtures'), {patients: 2, studiesPerPatient: 2, seriesPerStudy: 1, instancesPerSeries: 5, pixelBytes: 20_000, seed: 'faults'})
    source = await startOrthanc({name: 'faulty-source'})
    await uploadFiles(source, records.map((record) => record.path))
  })
  afterAll(async () => {
    await source?.dispose()
    await rm(work, {recursive: true, force: true})
  })

  it('resumes after kill -9: finished volumes are kept, nothing ends up twice', async () => {
    const proxy = await startFaultProxy(source.port)
    proxy.delayMs = 60
    const output = join(work, 'killed')
    const args = [join(repoRoot, 'bin/run.js'), 'export', '--source', proxy.url, '--output', output, '--max-volume-size', '90000', '--concurrency', '1', '--json']
    try {
      const child = spawn(process.execPath, args, {stdio: 'ignore'})
      const deadline = Date.now() + 30_000
      while ((await volumeFiles(output).catch(() => [])).length < 1 && Date.now() < deadline) await sleep(20)
      child.kill('SIGKILL')
      await new Promise((resolve) => child.once('close', resolve))
      const kept = await volumeFiles(output)
      expect(kept.length).toBeGreaterThanOrEqual(1)
      const keptStats = await Promise.all(kept.map(async (file) => {
        const info = await stat(file)
        return {file, ino: info.ino, mtimeMs: info.mtimeMs}
      }))

      proxy.delayMs = 0
      const result = await runCli(args.slice(1))
      expect(result.code, result.stderr).toBe(0)
      const summary = parseJson<ExportJson>(result)
      expect(summary.transferred + summary.skipped).toBe(records.length)
      expect(summary.skipped).toBeGreaterThan(0)
      expect(summary.volumesWritten).toBe(summary.volumes - kept.length)
      for (const before of keptStats) {
        const info = await stat(before.file)
        expect({ino: info.ino, mtimeMs: info.mtimeMs}).toEqual({ino: before.ino, mtimeMs: before.mtimeMs})
      }

      const dcm = (await listFiles(await extractWithTar(await volumeFiles(output)))).filter((file) => file.endsWith('.dcm'))
      expect(dcm.map((file) => file.split('/').at(-1)).sort()).toEqual(records.map((record) => `${record.orthancId}.dcm`).sort())
      expect((await listFiles(output)).some((file) => file.endsWith('.partial'))).toBe(false)
    } finally {
      await proxy.close()
    }
  })

  it('downloads cut off mid-body are fetched again and counted; the archive holds the exact bytes', async () => {
    const proxy = await startFaultProxy(source.port)
    proxy.faults.push(
      {match: /^GET \/instances\/.*\/attachments\/dicom\/data$/, fault: 'reset-mid-body'},
      {match: /^GET \/instances\/.*\/attachments\/dicom\/data$/, fault: 'reset-mid-body'},
    )
    const output = join(work, 'cut-off')
    try {
      const result = await runCli(['export', '--source', proxy.url, '--output', output, '--json'])
      expect(result.code, result.stderr).toBe(0)
      const summary = parseJson<ExportJson & {retries: number}>(result)
      expect(summary).toMatchObject({transferred: records.length, failed: 0})
      expect(summary.retries).toBeGreaterThanOrEqual(2)
      expect(proxy.faults).toEqual([])
      const dcm = (await listFiles(await extractWithTar(await volumeFiles(output)))).filter((file) => file.endsWith('.dcm'))
      const archived = new Map(await Promise.all(dcm.map(async (file) => [file.split('/').at(-1)!.replace('.dcm', ''), md5(await readFile(file))] as const)))
      expect(archived).toEqual(new Map(records.map((record) => [record.orthancId, record.md5])))
    } finally {
      await proxy.close()
    }
  })

  it('shows progress (instances, bytes, rate, ETA) on a terminal, and none in a pipe', async () => {
    const proxy = await startFaultProxy(source.port)
    proxy.delayMs = 20
    try {
      const command = `${process.execPath} ${join(repoRoot, 'bin/run.js')} export --source ${proxy.url} --output ${join(work, 'progress-tty')} --concurrency 1`
      // script(1) gives the command a real pseudo-terminal.
      const {stdout: terminal} = await run('script', ['-qfec', command, '/dev/null'])
      expect(terminal).toMatch(/export: \d+\/20 instances\s+[\d.]+ KiB\/[\d.]+ KiB\s+[\d.]+ (B|KiB|MiB)\/s\s+ETA/)
      const piped = await runCli(['export', '--source', proxy.url, '--output', join(work, 'progress-pipe'), '--concurrency', '1'])
      expect(piped.code).toBe(0)
      expect(piped.stderr).not.toMatch(/\r|ETA/)
      expect(piped.stdout).toMatch(/^Exported 20 instances/)
    } finally {
      await proxy.close()
    }
  })

  it('a source file whose MD5 is wrong: that instance fails, the rest is exported, exit 10', async () => {
    const victim = records[3]!
    const restore = await damageStoredFile(source, victim.orthancId)
    try {
      const output = join(work, 'md5')
      const result = await runCli(['export', '--source', source.url, '--output', output, '--json'])
      expect(result.code).toBe(10)
      const summary = parseJson<ExportJson>(result)
      expect(summary).toMatchObject({transferred: records.length - 1, failed: 1})
      expect(summary.failures[0]!.id).toBe(victim.orthancId)
      expect(summary.failures[0]!.kind).toBe('checksum')
      expect(summary.failures[0]!.reason).toMatch(/MD5/)
      const manifest = (await manifestsOf(await extractWithTar(await volumeFiles(output))))[0]!
      expect(manifest.failed).toEqual([expect.objectContaining({id: victim.orthancId})])
      expect(manifest.instances.map((record) => record.id)).not.toContain(victim.orthancId)
    } finally {
      await restore()
    }
  })

  // Export wrote what its readers refuse: a value with a line break, or over 1 MiB, made the whole
  // volume unproven (none of its instances imported), after an export that exited 0.
  it('metadata with line breaks goes into the archive and back; a value the format cannot hold fails its instance only, never the volume', async () => {
    const [noted, huge, many] = [records[4]!, records[5]!, records[6]!]
    const note = 'first line\nsecond line\ttabbed\r\n'
    await source.api(`/instances/${noted.orthancId}/metadata/1025`, {method: 'PUT', body: note})
    await source.api(`/instances/${huge.orthancId}/metadata/1025`, {method: 'PUT', body: 'x'.repeat(1024 * 1024 + 1)})
    // Each value fits; together they make the volume's manifests larger than a reader takes.
    const manyNames = Array.from({length: 9}, (_, index) => String(1025 + index))
    for (const name of manyNames) await source.api(`/instances/${many.orthancId}/metadata/${name}`, {method: 'PUT', body: 'y'.repeat(1024 * 1024 - 16)})
    const target = await startOrthanc({name: 'metadata-values-target'})
    try {
      const output = join(work, 'metadata-values')
      const result = await runCli(['export', '--source', source.url, '--output', output, '--json'])
      expect(result.code, result.stdout).toBe(10)
      const summary = parseJson<ExportJson>(result)
      expect(summary).toMatchObject({transferred: records.length - 2, failed: 2})
      expect(summary.failures).toEqual(expect.arrayContaining([
        expect.objectContaining({id: huge.orthancId, kind: 'rejected', reason: expect.stringContaining('userMetadata["1025"] is 1048577 characters long')}),
        expect.objectContaining({id: many.orthancId, kind: 'rejected', reason: expect.stringContaining('a volume\'s records may')}),
      ]))
      // Every volume proven: the one that holds only the instance of too many values (planned alone
      // for their size) too, its payload manifest empty (it was refused as "is empty": unproven).
      const {volumes} = parseJson<{volumes: {proven: number; read: number}}>(await runCli(['verify', output, '--json']))
      expect(volumes.read).toBeGreaterThan(1)
      expect(volumes.proven).toBe(volumes.read)
      const imported = await runCli(['import', '--target', target.url, '--json', '--no-receipt', output])
      expect(parseJson<{transferred: number}>(imported).transferred).toBe(records.length - 2)
      expect(await (await target.api(`/instances/${noted.orthancId}/metadata/1025`)).text()).toBe(note)
    } finally {
      await target.dispose()
      await source.api(`/instances/${noted.orthancId}/metadata/1025`, {method: 'DELETE'})
      await source.api(`/instances/${huge.orthancId}/metadata/1025`, {method: 'DELETE'})
      for (const name of manyNames) await source.api(`/instances/${many.orthancId}/metadata/${name}`, {method: 'DELETE'})
    }
  })

  // A reader's limit on a volume's manifests is in bytes; the planner counted characters, and a
  // character outside ASCII takes two to four bytes: values of CJK text filled a volume whose
  // manifests no reader took (every instance in it lost to the import, after an export exit 0).
  it('side data in characters of several bytes each is measured in bytes: every volume is one its readers take', async () => {
    const written = [records[7]!, records[8]!, records[9]!]
    const wide = '漢'.repeat(1_000_000)
    const names = ['1025', '1026']
    for (const record of written) for (const name of names) await source.api(`/instances/${record.orthancId}/metadata/${name}`, {method: 'PUT', body: wide})
    try {
      const output = join(work, 'wide-values')
      const result = await runCli(['export', '--source', source.url, '--output', output, '--json'])
      expect(result.code, result.stderr).toBe(0)
      const {volumes} = parseJson<{volumes: {proven: number; read: number}}>(await runCli(['verify', output, '--json']))
      expect(volumes.proven).toBe(volumes.read)
      const contents = (await manifestsOf(await extractWithTar(await volumeFiles(output)))).flatMap((manifest) => manifest.instances)
      for (const record of written) expect(contents.find((held) => held.id === record.orthancId)?.userMetadata).toEqual({1025: wide, 1026: wide})
    } finally {
      for (const record of written) for (const name of names) await source.api(`/instances/${record.orthancId}/metadata/${name}`, {method: 'DELETE'})
    }
  })

  it('a volume larger than the filesystem or the user\'s limit allows (EFBIG): exit 13 saying so, and the same command then resumes', async () => {
    const output = join(work, 'file-size-limit')
    const args = [join(repoRoot, 'bin/run.js'), 'export', '--source', source.url, '--output', output, '--json']
    // `ulimit -f` (in KiB) makes the kernel refuse to grow a file, as FAT32 does past 4 GiB.
    const limited = await run('bash', ['-c', `ulimit -f 100; exec "${process.execPath}" "$@"`, 'bash', ...args]).then(() => ({code: 0, stdout: ''}), (error: {code: number; stdout: string}) => error)
    expect(limited.code).toBe(13)
    const {error} = JSON.parse(limited.stdout) as {error: {code: string; message: string; suggestion: string}}
    expect(error.code).toBe('file-too-large')
    expect(error.message).toMatch(/larger than its filesystem or this user's file size limit allows \(EFBIG/)
    expect(error.suggestion).toMatch(/FAT32/)
    const resumed = await runCli(args.slice(1))
    expect(resumed.code, resumed.stderr).toBe(0)
    expect(parseJson<{transferred: number; skipped: number}>(resumed).transferred + parseJson<{skipped: number}>(resumed).skipped).toBe(records.length)
    const verified = await runCli(['verify', output, '--json'])
    expect(verified.code, verified.stderr).toBe(0)
  })

  it('the drive taken away mid-way (its folder gone): exit 16 naming the file, never "a bug"; the same command then starts again', async () => {
    const proxy = await startFaultProxy(source.port)
    proxy.delayMs = 40
    const output = join(work, 'yanked')
    const args = ['export', '--source', proxy.url, '--output', output, '--max-volume-size', '90000', '--concurrency', '1', '--json']
    try {
      const child = spawn(process.execPath, [join(repoRoot, 'bin/run.js'), ...args], {stdio: ['ignore', 'pipe', 'ignore']})
      let stdout = ''
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk))
      const closed = new Promise<number>((resolve) => child.once('close', (code) => resolve(code ?? 1)))
      const deadline = Date.now() + 30_000
      while (!(await listFiles(output).catch(() => [])).some((file) => file.endsWith('.partial')) && Date.now() < deadline) await sleep(10)
      await rm(output, {recursive: true, force: true})
      expect(await closed).toBe(16)
      const {error} = JSON.parse(stdout) as {error: {code: string; message: string; suggestion: string}}
      expect(error.code).toBe('local-files')
      expect(error.message).toMatch(new RegExp(`^cannot \\w+ ${output}/`))
      expect(error.suggestion).toMatch(/Check the drive or folder/)
    } finally {
      await proxy.close()
    }

    const again = await runCli(args.map((arg) => (arg === proxy.url ? source.url : arg)))
    expect(again.code, again.stderr).toBe(0)
    expect((await runCli(['verify', output, '--json'])).code).toBe(0)
  })

  describe('on a small disk', () => {
    let mountPoint: string
    beforeAll(async () => {
      mountPoint = await mkdtemp(join(tmpdir(), 'small-disk-'))
      // A real full disk: a 640 KiB tmpfs. Mounting needs root, as CI runs.
      await run('mount', ['-t', 'tmpfs', '-o', 'size=640k', 'tmpfs', mountPoint])
    })
    afterAll(async () => {
      await run('umount', [mountPoint]).catch(() => {})
      await rm(mountPoint, {recursive: true, force: true})
    })

    it('refuses to start when the free space is short: exit 13, nothing written', async () => {
      await writeFile(join(mountPoint, 'filler'), Buffer.alloc(350 * 1024))
      try {
        const result = await runCli(['export', '--source', source.url, '--output', join(mountPoint, 'out')])
        expect(result.code).toBe(13)
        expect(result.stderr).toMatch(/not enough free space/)
        expect(await volumeFiles(join(mountPoint, 'out'))).toEqual([])
      } finally {
        await rm(join(mountPoint, 'filler'), {force: true})
        await rm(join(mountPoint, 'out'), {recursive: true, force: true})
      }
    })

    it('a disk that fills up mid-way: exit 13, and no volume claims to be complete', async () => {
      const proxy = await startFaultProxy(source.port)
      proxy.delayMs = 40
      const output = join(mountPoint, 'out')
      try {
        const child = spawn(process.execPath, [join(repoRoot, 'bin/run.js'), 'export', '--source', proxy.url, '--output', output, '--max-volume-size', '120000', '--concurrency', '1'], {stdio: ['ignore', 'ignore', 'pipe']})
        let stderr = ''
        child.stderr.on('data', (chunk: Buffer) => (stderr += chunk))
        const closed = new Promise<number>((resolve) => child.once('close', (code) => resolve(code ?? 1)))
        const deadline = Date.now() + 30_000
        while (!(await listFiles(output).catch(() => [])).some((file) => file.endsWith('.partial')) && Date.now() < deadline) await sleep(10)
        // Another program takes the rest of the disk while the export runs.
        await writeFile(join(mountPoint, 'filler'), Buffer.alloc(600 * 1024)).catch(() => {})
        const code = await closed
        expect(code).toBe(13)
        expect(stderr).toMatch(/no space left/)
        expect(stderr).not.toMatch(/\n\s+at /)
        // Whatever volume was being written keeps its .partial name; complete ones pass sha256sum.
        for (const volume of await volumeFiles(output)) {
          const extracted = await extractWithTar([volume])
          const [bag] = (await listFiles(extracted)).filter((file) => file.endsWith('tagmanifest-sha256.txt'))
          expect(bag).toBeDefined()
          await run('sha256sum', ['-c', 'manifest-sha256.txt'], {cwd: bag!.replace('/tagmanifest-sha256.txt', '')})
        }
      } finally {
        await proxy.close()
      }
    })
  })
})
