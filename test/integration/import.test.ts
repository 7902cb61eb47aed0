import {spawn, spawnSync} from 'node:child_process'
import {copyFile, cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile} from 'node:fs/promises'
import {hostname, tmpdir} from 'node:os'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import type {FixtureRecord} from '../../fixtures/generate.js'
import {generateStudySet} from '../../fixtures/generate.js'
import {parseJson, repoRoot, runCli} from '../helpers/cli.js'
import {readVolumeManifest} from '../../src/export/since.js'
import {makeCorpus, volumeFiles} from '../helpers/corpus.js'
import {startFaultProxy} from '../helpers/fault-proxy.js'
import {instanceMd5s, type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'
import {addHostileEntries, flipByteInEntry, payloadEntries, truncateAt} from '../helpers/tamper.js'

interface ImportJson {
  transferred: number
  skipped: number
  failed: number
  bytes: number
  problems: Array<{id: string; path?: string; kind: string; reason: string}>
  failures: Array<{id: string; path?: string; kind: string; reason: string}>
  volumes: {read: number; proven: number; complete: number; incomplete: string[]; unproven: Array<{volume: string; input: string; instances: number}>; missing: Array<{from: number; to: number; volumeCount: number}>}
  studies: {complete: number; incomplete: Array<{studyInstanceUid: string; expected: number; present: number}>}
  ignoredFiles: number
  notCarried: Array<{level: string; kind: string; name?: string; count: number; reason: string}>
  receipt?: string
}

const targetConfig = {userMetadata: {Reviewed: 1024}, userContentType: {Report: 1030}}

describe('import', () => {
  let source: OrthancServer
  let work: string
  let corpus: FixtureRecord[]
  let volumesDir: string
  let sourceMd5s: Map<string, string>
  const annotation = {metadata: 'second-read-ok', attachment: Buffer.from('report body\n')}

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'import-test-'))
    corpus = await makeCorpus(join(work, 'fixtures'))
    source = await startOrthanc({name: 'import-source', ...targetConfig})
    await uploadFiles(source, corpus.map((record) => record.path))
    const annotated = corpus[1]!.orthancId
    await source.api(`/instances/${annotated}/metadata/Reviewed`, {method: 'PUT', body: annotation.metadata})
    await source.api(`/instances/${annotated}/attachments/Report`, {method: 'PUT', body: annotation.attachment})
    sourceMd5s = await instanceMd5s(source)
    volumesDir = join(work, 'volumes')
    const exported = await runCli(['export', '--source', source.url, '--output', volumesDir, '--max-volume-size', '1600000', '--json'])
    expect(exported.code, exported.stderr).toBe(0)
    expect((await volumeFiles(volumesDir)).length).toBeGreaterThanOrEqual(2)
  })
  afterAll(async () => {
    await source?.dispose()
    await rm(work, {recursive: true, force: true})
  })

  const importInto = (target: OrthancServer, ...args: string[]) => runCli(['import', '--target', target.url, '--json', '--no-receipt', ...args])
  // The same UIDs, other bytes: a copy of the instance that is not the source's.
  const alteredCopy = async (record: FixtureRecord) => {
    const altered = Buffer.from(await readFile(record.path))
    altered[0] = altered[0]! ^ 0x55
    return altered
  }

  describe('a round trip into a fresh target', () => {
    let target: OrthancServer
    let first: ImportJson
    let receipt: string
    beforeAll(async () => {
      target = await startOrthanc({name: 'import-target', ...targetConfig})
      receipt = join(work, 'receipt.jsonl')
      const result = await runCli(['import', '--target', target.url, '--json', '--receipt', receipt, volumesDir])
      expect(result.code, result.stderr).toBe(0)
      first = parseJson<ImportJson>(result)
    })
    afterAll(async () => target?.dispose())

    it('lands every instance with the same ID and MD5, awkward encodings included', async () => {
      expect(first).toMatchObject({transferred: corpus.length, skipped: 0, failed: 0, problems: []})
      expect(await instanceMd5s(target)).toEqual(sourceMd5s)
    })

    it('restores user metadata and attachments, and says what it could not restore', async () => {
      const id = corpus[1]!.orthancId
      expect(await (await target.api(`/instances/${id}/metadata/Reviewed`)).text()).toBe(annotation.metadata)
      const attachment = await target.api(`/instances/${id}/attachments/Report/data`)
      expect(Buffer.from(await attachment.arrayBuffer())).toEqual(annotation.attachment)
      expect(first.notCarried).toContainEqual(expect.objectContaining({level: 'instance', kind: 'system-metadata', count: corpus.length}))
    })

    it('reports every study complete against the manifest', () => {
      expect(first.volumes).toMatchObject({complete: first.volumes.read, incomplete: [], missing: []})
      expect(first.studies.incomplete).toEqual([])
      expect(first.studies.complete).toBe(new Set(corpus.map((record) => record.studyInstanceUid)).size)
    })

    it('a second run transfers nothing', async () => {
      const result = await importInto(target, volumesDir)
      expect(result.code, result.stderr).toBe(0)
      expect(parseJson<ImportJson>(result)).toMatchObject({transferred: 0, skipped: corpus.length, failed: 0})
    })

    it('writes a receipt that export --exclude-receipt uses to leave out what arrived', async () => {
      const lines = (await readFile(receipt, 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as Record<string, string>)
      expect(lines[0]).toMatchObject({format: 'orthanc-replicate-receipt', target: {name: 'import-target'}})
      expect(lines.slice(1)).toHaveLength(corpus.length)
      for (const line of lines.slice(1)) expect(line).toEqual({id: line.id, status: 'transferred', md5: sourceMd5s.get(line.id!)})
      const receiptText = await readFile(receipt, 'utf8')
      for (const record of corpus) expect(receiptText).not.toContain(record.patientId)

      const more = await generateStudySet(join(work, 'after-receipt'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 2, pixelBytes: 2000, seed: 'after-receipt'})
      await uploadFiles(source, more.map((record) => record.path))
      try {
        const result = await runCli(['export', '--source', source.url, '--output', join(work, 'unused'), '--dry-run', '--json', '--exclude-receipt', receipt])
        expect(result.code, result.stderr).toBe(0)
        // What was left out, and on whose word: the receipt names the server it came from.
        expect(parseJson<{instancesPlanned: number; leftOut: number; receipts: unknown[]}>(result)).toMatchObject({
          instancesPlanned: 2, leftOut: corpus.length,
          receipts: [{path: receipt, arrived: corpus.length, target: {name: 'import-target', server: target.url.replace(/\/$/, ''), version: expect.any(String)}, importedAt: expect.any(String)}],
        })
        const told = await runCli(['export', '--source', source.url, '--output', join(work, 'unused'), '--dry-run', '--exclude-receipt', receipt])
        expect(told.stdout).toContain(`${corpus.length} selected instance(s) left out`)
        expect(told.stdout).toContain(`${corpus.length} instance(s) arrived on "import-target"`)
      } finally {
        for (const record of more) await source.api(`/instances/${record.orthancId}`, {method: 'DELETE'})
      }
    })

    it('a receipt whose import was killed is written by the next import; one another import is writing is refused (exit 2)', async () => {
      const again = join(work, 'killed-receipt.jsonl')
      // What a killed import leaves: the lines it had gathered, and (from this version on) its lock.
      await writeFile(`${again}.partial`, '{"id":"x","status":"transferred","md5":""}\n')
      await writeFile(`${again}.lock`, `${JSON.stringify({pid: deadProcessId(), host: hostname()})}\n`)
      const resumed = await runCli(['import', '--target', target.url, '--json', '--receipt', again, volumesDir])
      expect(resumed.code, resumed.stderr).toBe(0)
      const lines = (await readFile(again, 'utf8')).trim().split('\n').slice(1).map((line) => JSON.parse(line) as {id: string; status: string})
      expect(lines.map((line) => line.id).sort()).toEqual(corpus.map((record) => record.orthancId).sort())
      expect(await readdir(work)).not.toContain('killed-receipt.jsonl.lock')

      // This test's own process stands for an import still running.
      const busy = join(work, 'busy-receipt.jsonl')
      await writeFile(`${busy}.lock`, `${JSON.stringify({pid: process.pid, host: hostname()})}\n`)
      const refused = await runCli(['import', '--target', target.url, '--json', '--receipt', busy, volumesDir])
      expect(refused.code).toBe(2)
      expect(parseJson<{error: {message: string}}>(refused).error.message).toMatch(new RegExp(`receipt .* is in use by another run \\(process ${process.pid}`))
    })

    it('export --exclude-receipt sends again an instance stored anew on the source since (same ID, other bytes)', async () => {
      const victim = corpus[5]!
      const original = Buffer.from(await (await source.api(`/instances/${victim.orthancId}/file`)).arrayBuffer())
      // The same UIDs and patient, so the same Orthanc ID; another value in the data set, so other bytes.
      const modified = await source.api(`/instances/${victim.orthancId}/modify`, {method: 'POST', body: JSON.stringify({Replace: {InstitutionName: 'Stored again'}, Keep: ['SOPInstanceUID', 'SeriesInstanceUID', 'StudyInstanceUID'], Force: true})})
      expect(modified.status).toBe(200)
      const bytes = Buffer.from(await modified.arrayBuffer())
      await source.api(`/instances/${victim.orthancId}`, {method: 'DELETE'}).then((response) => response.arrayBuffer())
      expect(await source.json<{ID: string}>('/instances', {method: 'POST', body: bytes})).toMatchObject({ID: victim.orthancId})
      try {
        const result = await runCli(['export', '--source', source.url, '--output', join(work, 'unused-again'), '--dry-run', '--json', '--exclude-receipt', receipt])
        expect(result.code, result.stderr).toBe(0)
        expect(parseJson<{instancesPlanned: number}>(result).instancesPlanned).toBe(1)
      } finally {
        await source.api(`/instances/${victim.orthancId}`, {method: 'DELETE'}).then((response) => response.arrayBuffer())
        await source.json('/instances', {method: 'POST', body: original})
      }
    })
  })

  it('a second hop re-exports with the chain of earlier hops', async () => {
    const middle = await startOrthanc({name: 'middle-hop', ...targetConfig})
    try {
      const receipt = join(work, 'middle-receipt.jsonl')
      expect((await runCli(['import', '--target', middle.url, '--receipt', receipt, volumesDir])).code).toBe(0)
      const onward = join(work, 'onward')
      const result = await runCli(['export', '--source', middle.url, '--output', onward, '--hops-from', receipt, '--json'])
      expect(result.code, result.stderr).toBe(0)
      const [volume] = await volumeFiles(onward)
      const manifest = await readVolumeManifest(volume!)
      const original = await readVolumeManifest((await volumeFiles(volumesDir))[0]!)
      expect(manifest.hops).toEqual([{group: original.group, source: expect.objectContaining({name: 'import-source'}), exportedAt: original.exportedAt}])
      expect(manifest.source.name).toBe('middle-hop')
      // The archive itself works as the origin too.
      const direct = await runCli(['export', '--source', middle.url, '--output', join(work, 'onward2'), '--hops-from', volumesDir, '--json'])
      expect(direct.code, direct.stderr).toBe(0)
      expect((await readVolumeManifest((await volumeFiles(join(work, 'onward2')))[0]!)).hops).toEqual(manifest.hops)
    } finally {
      await middle.dispose()
    }
  })

  it('a target holding another file under an instance\'s ID: refused without OverwriteInstances, replaced with it, the target\'s own side data kept', async () => {
    const annotated = corpus[1]!
    const altered = Buffer.from(await readFile(annotated.path))
    altered[altered.length - 1] = altered[altered.length - 1]! ^ 0x0f
    const keeps = await startOrthanc({name: 'keeps-old', ...targetConfig})
    const overwrites = await startOrthanc({name: 'overwrites', ...targetConfig, overwriteInstances: true})
    try {
      for (const server of [keeps, overwrites]) await server.api('/instances', {method: 'POST', body: new Uint8Array(altered)})
      // What the overwriting target holds of its own: beside the instance, and beside its series,
      // which the overwrite deletes with it (its only instance there).
      const {ParentSeries: series} = await overwrites.json<{ParentSeries: string}>(`/instances/${annotated.orthancId}`)
      for (const [path, body] of [[`/instances/${annotated.orthancId}/metadata/2000`, 'instance own'], [`/series/${series}/metadata/2000`, 'series own'], [`/series/${series}/attachments/1031`, 'series report']]) {
        expect((await overwrites.api(path!, {method: 'PUT', body})).status, path).toBe(200)
      }
      const refused = await importInto(keeps, volumesDir)
      expect(refused.code).toBe(10)
      const summary = parseJson<ImportJson & {failures: Array<{id: string; kind: string; reason: string}>}>(refused)
      expect(summary.failed).toBe(1)
      expect(summary.failures[0]!.id).toContain(annotated.orthancId)
      expect(summary.failures[0]!.reason).toMatch(/OverwriteInstances/)

      const replaced = await importInto(overwrites, volumesDir)
      expect(replaced.code, replaced.stderr).toBe(0)
      expect(await instanceMd5s(overwrites)).toEqual(sourceMd5s)
      // Overwriting drops an instance's metadata and attachments: they are written after the upload.
      expect(await (await overwrites.api(`/instances/${annotated.orthancId}/metadata/Reviewed`)).text()).toBe(annotation.metadata)
      expect(await (await overwrites.api(`/instances/${annotated.orthancId}/attachments/Report/data`)).text()).toBe(annotation.attachment.toString())
      // The target's own went with the copy it had: written back, as a sync --checksum does.
      expect(await (await overwrites.api(`/instances/${annotated.orthancId}/metadata/2000`)).text()).toBe('instance own')
      expect(await (await overwrites.api(`/series/${series}/metadata/2000`)).text()).toBe('series own')
      expect(await (await overwrites.api(`/series/${series}/attachments/1031/data`)).text()).toBe('series report')
    } finally {
      await Promise.all([keeps.dispose(), overwrites.dispose()])
    }
  })

  it('--dry-run reads and checks everything, and changes nothing', async () => {
    const target = await startOrthanc({name: 'dry-target'})
    try {
      const result = await importInto(target, '--dry-run', volumesDir)
      expect(result.code, result.stderr).toBe(0)
      // A dry run counts what it would upload as planned, never as transferred.
      expect(parseJson<ImportJson>(result)).toMatchObject({dryRun: true, transferred: 0, bytes: 0, planned: {instances: corpus.length, bytes: corpus.reduce((sum, record) => sum + record.size, 0)}, failed: 0, problems: []})
      expect(await target.json<string[]>('/instances')).toEqual([])
      // Its studies are what the target would hold, said as such: the target holds none yet.
      const told = await runCli(['import', '--target', target.url, '--dry-run', '--no-receipt', volumesDir])
      expect(told.stdout).toMatch(/^Studies, were it imported: \d+ complete, 0 incomplete on the target\.$/m)
    } finally {
      await target.dispose()
    }
  })

  it('reads an archive on stdin, as written by export --output -', async () => {
    const target = await startOrthanc({name: 'stdin-target', ...targetConfig})
    try {
      const archive = join(work, 'stream.tar')
      const exported = await runCli(['export', '--source', source.url, '--output', '-', '--max-volume-instances', '10'])
      expect(exported.code, exported.stderr).toBe(0)
      await writeFile(archive, exported.stdoutBytes)
      const result = await runCli(['import', '--target', target.url, '--json', '--no-receipt', '-'], {stdin: await readFile(archive)})
      expect(result.code, result.stderr).toBe(0)
      const summary = parseJson<ImportJson>(result)
      expect(summary).toMatchObject({transferred: corpus.length, failed: 0, problems: []})
      // Several bags in one stream, all complete.
      expect(summary.volumes.read).toBeGreaterThan(1)
      expect(summary.volumes.complete).toBe(summary.volumes.read)
      expect(await instanceMd5s(target)).toEqual(sourceMd5s)
    } finally {
      await target.dispose()
    }
  })

  describe('bad archives', () => {
    let target: OrthancServer
    let bad: string
    beforeAll(async () => {
      target = await startOrthanc({name: 'bad-input-target'})
    })
    afterAll(async () => target?.dispose())

    const freshCopy = async (name: string) => {
      bad = join(work, name)
      await rm(bad, {recursive: true, force: true})
      await mkdir(bad)
      for (const volume of await volumeFiles(volumesDir)) await copyFile(volume, join(bad, volume.split('/').at(-1)!))
      for (const id of await target.json<string[]>('/instances')) await target.api(`/instances/${id}`, {method: 'DELETE'})
      return bad
    }

    it.each(['import', 'verify'] as const)('%s of an empty stdin: one problem that names stdin, exit 11, nothing uploaded', async (command) => {
      await freshCopy('empty-stdin')
      const args = command === 'import' ? ['import', '--target', target.url, '--no-receipt', '--json', '-'] : ['verify', '--json', '-']
      const result = await runCli(args, {stdin: Buffer.alloc(0)})
      expect(result.code, result.stderr).toBe(11)
      const {problems} = parseJson<{problems: Array<{id: string; path?: string; kind: string; reason: string}>}>(result)
      expect(problems).toEqual([expect.objectContaining({path: 'stdin', kind: 'not-archive', reason: expect.stringMatching(/empty/)})])
      expect(await target.json<string[]>('/instances')).toEqual([])
    })

    it('a corrupt entry is refused by name; the rest is imported; exit 11', async () => {
      const dir = await freshCopy('corrupt')
      const [volume] = await volumeFiles(dir)
      const [victim] = await payloadEntries(volume!)
      await flipByteInEntry(volume!, victim!.name)
      const result = await importInto(target, dir)
      expect(result.code).toBe(11)
      const summary = parseJson<ImportJson>(result)
      expect(summary.problems).toEqual([expect.objectContaining({id: expect.stringContaining(victim!.name), kind: 'checksum', reason: expect.stringMatching(/checksum mismatch/)})])
      expect(summary.transferred).toBe(corpus.length - 1)
      const victimId = victim!.name.split('/').at(-1)!.replace('.dcm', '')
      expect((await target.api(`/instances/${victimId}`)).status).toBe(404)
      const human = await runCli(['import', '--target', target.url, '--no-receipt', dir])
      expect(human.stdout).toContain(victim!.name)
      expect(human.stderr).not.toMatch(/\n\s+at /)
    })

    it('an attachment entry refused: its instance is on the target without it, and failed, not transferred, in the summary and the receipt', async () => {
      const dir = await freshCopy('corrupt-attachment')
      const annotated = corpus[1]!.orthancId
      const damaged: string[] = []
      for (const volume of await volumeFiles(dir)) {
        const entry = (await payloadEntries(volume)).find((candidate) => candidate.name.includes(annotated) && !candidate.name.endsWith('.dcm'))
        if (entry) {
          await flipByteInEntry(volume, entry.name)
          damaged.push(entry.name)
        }
      }
      expect(damaged).toHaveLength(1)
      const receipt = join(work, 'attachment-receipt.jsonl')
      const result = await runCli(['import', '--target', target.url, '--json', '--receipt', receipt, dir])
      expect(result.code).toBe(11)
      const summary = parseJson<ImportJson>(result)
      expect(summary.problems).toEqual([expect.objectContaining({id: expect.stringContaining(damaged[0]!), kind: 'checksum'})])
      expect(summary).toMatchObject({transferred: corpus.length - 1, failed: 1})
      expect(summary.failures).toEqual([expect.objectContaining({id: annotated, kind: 'missing', reason: expect.stringMatching(/without user attachment 1030/)})])
      expect((await target.api(`/instances/${annotated}`)).status).toBe(200)
      // The receipt must not tell export --exclude-receipt that it arrived whole.
      const lines = (await readFile(receipt, 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as {id?: string; status?: string})
      expect(lines.find((line) => line.id === annotated)).toMatchObject({status: 'failed'})
    })

    it('a volume truncated in the middle of an entry: nothing of it can be proven, so nothing of it is imported; the other volumes are', async () => {
      const dir = await freshCopy('truncated-mid')
      const [volume, ...others] = await volumeFiles(dir)
      const entries = await payloadEntries(volume!)
      const cut = entries[2]!
      await truncateAt(volume!, cut.dataOffset + Math.floor(cut.size / 2))
      const result = await importInto(target, dir)
      expect(result.code).toBe(11)
      const summary = parseJson<ImportJson>(result)
      expect(summary.problems).toContainEqual(expect.objectContaining({kind: 'missing', id: expect.stringMatching(/tagmanifest-sha256\.txt$/), reason: expect.stringMatching(/cut short/)}))
      expect(summary.volumes.unproven).toEqual([expect.objectContaining({input: volume, instances: entries.filter((entry) => entry.name.endsWith('.dcm')).length})])
      // Even the entries before the cut, whole as they are, cannot be told apart from altered ones: none reached the target.
      for (const entry of entries.slice(0, 2)) expect((await target.api(`/instances/${entry.name.split('/').at(-1)!.replace('.dcm', '')}`)).status).toBe(404)
      expect(summary.transferred).toBe(corpus.length - entries.filter((entry) => entry.name.endsWith('.dcm')).length)
      expect(others.length).toBeGreaterThan(0)
      const human = await runCli(['import', '--target', target.url, '--no-receipt', dir])
      expect(human.stdout).toMatch(/cannot be proven, so none of its \d+ instance\(s\) was imported/)
    })

    it('a volume truncated exactly between two entries is still caught', async () => {
      const dir = await freshCopy('truncated-boundary')
      const [volume] = await volumeFiles(dir)
      const entries = await payloadEntries(volume!)
      await truncateAt(volume!, entries[1]!.end)
      const result = await importInto(target, dir)
      expect(result.code).toBe(11)
      const summary = parseJson<ImportJson>(result)
      expect(summary.volumes.unproven).toEqual([expect.objectContaining({input: volume})])
      expect(summary.problems.some((problem) => problem.kind === 'missing' && /cut short/.test(problem.reason))).toBe(true)
      expect((await target.api(`/instances/${entries[0]!.name.split('/').at(-1)!.replace('.dcm', '')}`)).status).toBe(404)
    })

    it('a missing volume is reported as k of n', async () => {
      const dir = await freshCopy('missing')
      const volumes = await volumeFiles(dir)
      await rm(volumes.at(-1)!)
      const result = await importInto(target, dir)
      expect(result.code).toBe(11)
      const summary = parseJson<ImportJson>(result)
      expect(summary.volumes.missing).toEqual([expect.objectContaining({from: volumes.length, to: volumes.length, volumeCount: volumes.length})])
      expect(summary.problems.some((problem) => problem.id === `volume ${volumes.length} of ${volumes.length}` && problem.kind === 'missing')).toBe(true)
    })

    it('refuses an oversized header without reading on: the volume is reported incomplete, not a crash', async () => {
      const dir = await freshCopy('oversized-header')
      const [volume] = await volumeFiles(dir)
      const bagName = volume!.split('/').at(-1)!.replace('.tar', '')
      const hostile = join(dir, 'oversized.tar')
      await addHostileEntries(volume!, hostile, [{name: `${bagName}/data/dicom/huge-header.dcm`, type: 'file', content: 'x', pax: {comment: 'x'.repeat(5 * 1024 * 1024)}}])
      await rm(volume!)
      const result = await importInto(target, hostile)
      expect(result.code).toBe(11)
      const summary = parseJson<ImportJson>(result)
      expect(summary.problems.some((problem) => /extended header|Header exceeds max size/.test(problem.reason))).toBe(true)
      expect(result.stderr).not.toMatch(/unexpected error|\n\s+at /)
      expect(summary.failed).toBe(0)
    })

    it('refuses traversal, absolute, link, device, duplicate and unlisted entries, and writes nothing outside', async () => {
      const dir = await freshCopy('hostile')
      const [volume] = await volumeFiles(dir)
      const bagName = volume!.split('/').at(-1)!.replace('.tar', '')
      const hostile = join(dir, 'hostile.tar')
      const escape = join(work, 'escaped.txt')
      await addHostileEntries(volume!, hostile, [
        {name: `${bagName}/../../escaped.txt`, type: 'file', content: 'escape'},
        {name: escape, type: 'file', content: 'absolute'},
        {name: `${bagName}/data/dicom/link.dcm`, type: 'symlink', linkname: '/etc/passwd'},
        {name: `${bagName}/data/dicom/hard.dcm`, type: 'link', linkname: `${bagName}/bagit.txt`},
        {name: `${bagName}/data/dicom/dev.dcm`, type: 'character-device', devmajor: 1, devminor: 3},
        {name: `${bagName}/bagit.txt`, type: 'file', content: 'BagIt-Version: 1.0\n'},
        {name: `${bagName}/data/dicom/unlisted.dcm`, type: 'file', content: 'DICM'},
      ])
      await rm(volume!)
      const result = await importInto(target, hostile)
      expect(result.code).toBe(11)
      const summary = parseJson<ImportJson>(result)
      const reasons = summary.problems.map((problem) => `${problem.path}: ${problem.id} => ${problem.reason}`).join('\n')
      expect(reasons).toMatch(/escaped\.txt.*=> .*"\.\."/)
      expect(reasons).toMatch(/absolute path/)
      expect(reasons).toMatch(/link\.dcm.*symbolic link/)
      expect(reasons).toMatch(/hard\.dcm.*hard link/)
      expect(reasons).toMatch(/dev\.dcm.*character-device/)
      expect(reasons).toMatch(/bagit\.txt.*same name/)
      expect(reasons).toMatch(/unlisted\.dcm.*not in the volume's manifests/)
      await expect(readFile(escape)).rejects.toThrow()
      // The genuine entries of the volume still went in, each checked.
      expect(summary.transferred).toBeGreaterThan(0)
    })
  })

  it('a DICOM folder: every file read recursively, junk skipped and counted', async () => {
    const target = await startOrthanc({name: 'folder-target'})
    try {
      const folder = join(work, 'fixtures')
      await writeFile(join(folder, 'notes.json'), '{"not": "dicom"}')
      const result = await importInto(target, folder)
      expect(result.code, result.stderr).toBe(0)
      const summary = parseJson<ImportJson>(result)
      expect(summary).toMatchObject({transferred: corpus.length, failed: 0})
      expect(summary.ignoredFiles).toBeGreaterThanOrEqual(1)
      expect(await instanceMd5s(target)).toEqual(new Map(corpus.map((record) => [record.orthancId, record.md5])))
    } finally {
      await target.dispose()
    }
  })

  // Protection from recycling was not carried: the far side could recycle (delete) a patient the
  // source kept on purpose. A volume declares version 4 only when it holds a protected patient.
  it('a patient protected from recycling on the source is protected on the target after export and import; volumes without one stay version 3', async () => {
    const protectedSource = await startOrthanc({name: 'protected-source'})
    const target = await startOrthanc({name: 'protected-target'})
    try {
      const [first, second] = corpus.filter((record, index, all) => all.findIndex((other) => other.patientId === record.patientId) === index)
      await uploadFiles(protectedSource, [first!.path, second!.path])
      const patientOf = async (server: OrthancServer, instance: string) => (await server.json<{ID: string}>(`/instances/${instance}/patient`)).ID
      const isProtected = async (server: OrthancServer, patient: string) => (await (await server.api(`/patients/${patient}/protected`)).text()).trim() === '1'
      const [protectedOne, plainOne] = [await patientOf(protectedSource, first!.orthancId), await patientOf(protectedSource, second!.orthancId)]
      await protectedSource.api(`/patients/${protectedOne}/protected`, {method: 'PUT', body: '1'})
      const volumes = join(work, 'protected-volumes')
      const exported = await runCli(['export', '--source', protectedSource.url, '--output', volumes, '--max-volume-instances', '1', '--json'])
      expect(exported.code, exported.stderr).toBe(0)
      const versions = await Promise.all((await volumeFiles(volumes)).map(async (volume) => (await readVolumeManifest(volume)).formatVersion))
      expect(versions.sort()).toEqual([3, 4])

      const result = await importInto(target, volumes)
      expect(result.code, result.stdout).toBe(0)
      expect(await isProtected(target, protectedOne)).toBe(true)
      expect(await isProtected(target, plainOne)).toBe(false)
    } finally {
      await Promise.all([protectedSource.dispose(), target.dispose()])
    }
  })

  // Read twice, the second time refused as "given twice (also <its own path>)": exit 11 and the
  // volumes under "Refused or missing", for a harmless repetition.
  it('the same volumes named twice (the folder, again as ./, one of its volumes) are read once: exit 0', async () => {
    const target = await startOrthanc({name: 'named-twice', ...targetConfig})
    try {
      const [firstVolume] = await volumeFiles(volumesDir)
      const result = await importInto(target, volumesDir, join(volumesDir, '.'), firstVolume!)
      expect(result.code, result.stdout).toBe(0)
      const summary = parseJson<ImportJson & {volumes: {read: number}; problems: unknown[]}>(result)
      expect(summary).toMatchObject({transferred: corpus.length, skipped: 0, failed: 0, problems: []})
      expect(summary.volumes.read).toBe((await volumeFiles(volumesDir)).length)
      expect(await instanceMd5s(target)).toEqual(sourceMd5s)
    } finally {
      await target.dispose()
    }
  })

  // Both copies were in flight at once, each finding the target without the instance: both were
  // sent, and a target that overwrites answered Success twice: each counted transferred twice.
  it('a folder and a copy of it, into a target that overwrites: each instance transferred once, its second copy skipped', async () => {
    const target = await startOrthanc({name: 'folder-twice', overwriteInstances: true})
    try {
      // Few enough that both copies of each are in flight at once.
      const few = corpus.slice(0, 3)
      const [folder, copy] = [join(work, 'few'), join(work, 'few-copy')]
      await mkdir(folder)
      for (const [index, record] of few.entries()) await copyFile(record.path, join(folder, `${index}.dcm`))
      await cp(folder, copy, {recursive: true})
      const result = await importInto(target, folder, copy)
      expect(result.code, result.stderr).toBe(0)
      expect(parseJson<ImportJson>(result)).toMatchObject({transferred: few.length, skipped: few.length, failed: 0})
      expect(await instanceMd5s(target)).toEqual(new Map(few.map((record) => [record.orthancId, record.md5])))
    } finally {
      await target.dispose()
    }
  })

  // Sent one after the other, an overwriting target kept the last with exit 0; one that keeps the
  // first failed the other as "an older file" on the target, pointing at OverwriteInstances.
  it('two folders holding different files of one instance: the first is sent, the other named (exit 10), on a target that overwrites too', async () => {
    const target = await startOrthanc({name: 'two-copies', overwriteInstances: true})
    try {
      const [first, second] = [join(work, 'copies-a'), join(work, 'copies-b')]
      await mkdir(first)
      await mkdir(second)
      const record = corpus[0]!
      await copyFile(record.path, join(first, 'x.dcm'))
      const altered = Buffer.from(await readFile(record.path))
      altered[0] = altered[0]! ^ 0x55
      await writeFile(join(second, 'x.dcm'), altered)
      await copyFile(corpus[1]!.path, join(second, 'y.dcm'))
      const result = await importInto(target, first, second)
      expect(result.code, result.stdout).toBe(10)
      const summary = parseJson<ImportJson & {failures: Array<{id: string; path?: string; kind: string; reason: string}>}>(result)
      expect(summary).toMatchObject({transferred: 2, failed: 1})
      expect(summary.failures).toEqual([{id: record.orthancId, path: join(second, 'x.dcm'), kind: 'contradiction', reason: expect.stringContaining(`with other bytes than ${join(first, 'x.dcm')} (the one taken), was left out`)}])
      expect((await instanceMd5s(target)).get(record.orthancId)).toBe(record.md5)
    } finally {
      await target.dispose()
    }
  })

  it('a folder and a stopped server\'s storage (with its index, or without) holding different files of one instance: the first input\'s is sent, the other named', async () => {
    const target = await startOrthanc({name: 'folder-and-storage', overwriteInstances: true})
    const dead = join(work, 'folder-and-storage-server')
    const storage = join(dead, 'storage')
    const server = await startOrthanc({name: 'folder-and-storage-source', dir: dead, extra: {IndexDirectory: storage}})
    try {
      const record = corpus[0]!
      await uploadFiles(server, [record.path])
      await server.stop()
      const folder = join(work, 'folder-and-storage-copy')
      await mkdir(folder)
      const altered = Buffer.from(await readFile(record.path))
      altered[0] = altered[0]! ^ 0x55
      await writeFile(join(folder, 'x.dcm'), altered)
      for (const route of [[], ['--ignore-index']]) {
        const result = await importInto(target, ...route, folder, storage)
        expect(result.code, result.stdout).toBe(10)
        const summary = parseJson<ImportJson & {failures: Array<{id: string; kind: string; reason: string}>; recovery: Array<Record<string, unknown>>}>(result)
        expect(summary.failures).toEqual([expect.objectContaining({id: record.orthancId, kind: 'contradiction', reason: expect.stringContaining(`with other bytes than ${join(folder, 'x.dcm')} (the one taken)`)})])
        // The server's own count: from its index, the instance it lists failed here; without it, a file that is no other instance.
        expect(summary.recovery[0]).toMatchObject(route.length === 0
          ? {route: 'sqlite-index', candidates: 1, recovered: 0, failed: 1, contradictions: 1}
          : {route: 'storage-folder-without-index', candidates: 0, recovered: 0, failed: 0, contradictions: 1})
      }
    } finally {
      await Promise.all([target.dispose(), server.dispose()])
    }
  })

  // Archives were read apart from the other inputs, each entry against its export's MD5 only: on
  // a target that overwrites, a folder's other copy replaced the archive's, exit 0.
  it('an export\'s volumes and a folder holding different files of one instance: the first is sent, the other named (exit 10)', async () => {
    const record = corpus[0]!
    const folder = join(work, 'archive-and-folder-copy')
    await mkdir(folder)
    await writeFile(join(folder, 'x.dcm'), await alteredCopy(record))
    const target = await startOrthanc({name: 'archive-and-folder', overwriteInstances: true, ...targetConfig})
    try {
      const result = await importInto(target, folder, volumesDir)
      expect(result.code, result.stdout).toBe(10)
      const summary = parseJson<ImportJson & {failures: Array<{id: string; path: string; kind: string; reason: string}>}>(result)
      expect(summary).toMatchObject({transferred: corpus.length, failed: 1})
      expect(summary.failures).toEqual([{id: record.orthancId, path: join(folder, 'x.dcm'), kind: 'contradiction', reason: expect.stringContaining(`with other bytes than ${volumesDir}`)}])
      expect(await instanceMd5s(target)).toEqual(sourceMd5s)
    } finally {
      await target.dispose()
    }
  })

  // Volumes were read in the order named: with the newer export named first, an overwriting
  // target kept the older export's copy of an instance stored anew on the source between them.
  it('the volumes of two exports, named in either order: an instance stored anew between them ends in its newer form, as imported one after the other', async () => {
    const record = corpus[0]!
    const newer = await alteredCopy(record)
    const laterSource = await startOrthanc({name: 'later-export-source', overwriteInstances: true})
    const laterExport = join(work, 'later-export-volumes')
    try {
      const [stored] = await uploadFiles(laterSource, [record.path])
      await laterSource.api('/instances', {method: 'POST', body: newer})
      expect(stored).toBe(record.orthancId)
      const newerMd5 = (await instanceMd5s(laterSource)).get(record.orthancId)
      expect(newerMd5).not.toBe(record.md5)
      const exported = await runCli(['export', '--source', laterSource.url, '--output', laterExport, '--json'])
      expect(exported.code, exported.stderr).toBe(0)
      // With a folder of other images beside them, the exports were met in the order named and
      // against each other as copies nobody could tell apart: the older one ended on the target,
      // the newer one was failed as a contradiction (exit 10).
      const [other] = await generateStudySet(join(work, 'beside-two-exports'), {patients: 1, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 1, pixelBytes: 1000, seed: 'beside-two-exports'})
      for (const order of [[volumesDir, laterExport], [laterExport, volumesDir], [laterExport, volumesDir, join(work, 'beside-two-exports')]]) {
        const target = await startOrthanc({name: 'two-exports', overwriteInstances: true, ...targetConfig})
        try {
          const result = await importInto(target, ...order)
          expect(result.code, `${order.length} inputs: ${result.stdout}`).toBe(0)
          const expected = new Map([...sourceMd5s, [record.orthancId, newerMd5]])
          if (order.length === 3) expected.set(other!.orthancId, other!.md5)
          expect(await instanceMd5s(target)).toEqual(expected)
        } finally {
          await target.dispose()
        }
      }

      // Encrypted, their order cannot be read before they are: named newest first, the older copy
      // ended on the target, exit 0. Now the first met is sent and the other named (exit 10).
      const passphrase = join(work, 'two-exports-passphrase')
      await writeFile(passphrase, 'two exports, one secret\n', {mode: 0o600})
      const [olderVolumes, newerVolumes] = [join(work, 'older-encrypted'), join(work, 'newer-encrypted')]
      expect((await runCli(['export', '--source', source.url, '--output', olderVolumes, '--passphrase-file', passphrase])).code).toBe(0)
      expect((await runCli(['export', '--source', laterSource.url, '--output', newerVolumes, '--passphrase-file', passphrase])).code).toBe(0)
      const target = await startOrthanc({name: 'two-encrypted-exports', overwriteInstances: true, ...targetConfig})
      try {
        const result = await importInto(target, '--passphrase-file', passphrase, newerVolumes, olderVolumes)
        expect(result.code, result.stdout).toBe(10)
        expect(parseJson<ImportJson & {failures: Array<{id: string; kind: string}>}>(result).failures).toEqual([expect.objectContaining({id: record.orthancId, kind: 'contradiction'})])
        expect((await instanceMd5s(target)).get(record.orthancId)).toBe(newerMd5)
      } finally {
        await target.dispose()
      }
    } finally {
      await laterSource.dispose()
    }
  })

  // The volumes of two exports holding one instance twice: the dry run planned both copies as
  // uploads and exited 0 where the run failed the second (a target that keeps the older file,
  // exit 10); the run counted an instance stored over its own earlier copy transferred twice,
  // and wrote a receipt line per copy.
  it('two exports holding one instance twice: the dry run foretells the run; the run counts it once, with one receipt line', async () => {
    const record = corpus[0]!
    const newer = await alteredCopy(record)
    const laterSource = await startOrthanc({name: 'twice-source', overwriteInstances: true})
    const laterExport = join(work, 'twice-later-export')
    try {
      await uploadFiles(laterSource, [record.path])
      await laterSource.api('/instances', {method: 'POST', body: new Uint8Array(newer)})
      const newerMd5 = (await instanceMd5s(laterSource)).get(record.orthancId)!
      expect((await runCli(['export', '--source', laterSource.url, '--output', laterExport])).code).toBe(0)
      // A target that says it overwrites (1.12 says, 1.10 does not), and one that keeps the older file.
      for (const overwrites of [false, true]) {
        const target = await startOrthanc({name: 'twice-target', overwriteInstances: overwrites, version: overwrites ? '1.12' : '1.10', ...targetConfig})
        try {
          const dry = await importInto(target, '--dry-run', volumesDir, laterExport)
          const receipt = join(work, `twice-receipt-${overwrites}.jsonl`)
          const real = await runCli(['import', '--target', target.url, '--json', '--receipt', receipt, volumesDir, laterExport])
          const [planned, done] = [parseJson<ImportJson & {planned: {instances: number}; superseded?: number}>(dry), parseJson<ImportJson & {superseded?: number}>(real)]
          expect({code: dry.code, instances: planned.planned.instances, skipped: planned.skipped, failed: planned.failed, superseded: planned.superseded}, dry.stdout)
            .toEqual({code: real.code, instances: done.transferred, skipped: done.skipped, failed: done.failed, superseded: done.superseded})
          expect(done.transferred).toBe(corpus.length)
          const lines = (await readFile(receipt, 'utf8')).trim().split('\n').slice(1).map((line) => JSON.parse(line) as {id: string; status: string; md5: string})
          expect(lines.map((line) => line.id).sort()).toEqual(corpus.map((entry) => entry.orthancId).sort())
          if (overwrites) {
            expect({code: real.code, superseded: done.superseded}).toEqual({code: 0, superseded: 1})
            expect(lines.find((line) => line.id === record.orthancId)).toEqual({id: record.orthancId, status: 'transferred', md5: newerMd5})
          } else {
            expect({code: real.code, failed: done.failed, superseded: done.superseded}).toEqual({code: 10, failed: 1, superseded: undefined})
            expect(lines.find((line) => line.id === record.orthancId)).toMatchObject({status: 'failed'})
          }
        } finally {
          await target.dispose()
        }
      }
    } finally {
      await laterSource.dispose()
    }
  })

  // The replacer wrote back what a killed import had journaled, and only sync said so.
  it('an import killed while it stores over a differing copy: the next one writes the target\'s own back and says so', async () => {
    const record = corpus[2]!
    const target = await startOrthanc({name: 'killed-store-over', overwriteInstances: true, ...targetConfig})
    const env = {XDG_STATE_HOME: join(work, 'killed-store-over-state')}
    try {
      await target.api('/instances', {method: 'POST', body: new Uint8Array(await alteredCopy(record))})
      expect((await target.api(`/instances/${record.orthancId}/metadata/2000`, {method: 'PUT', body: 'the target\'s own'})).status).toBe(200)
      const folder = join(work, 'killed-store-over-folder')
      await mkdir(folder)
      await copyFile(record.path, join(folder, 'x.dcm'))
      const killed = await runCli(['import', '--target', target.url, '--no-receipt', folder], {env: {...env, ORTHANC_REPLICATE_CRASH_AT: 'store:uploaded'}})
      expect(killed.code, killed.stderr).toBe(128)
      expect((await target.api(`/instances/${record.orthancId}/metadata/2000`)).status).toBe(404)
      const resumed = await runCli(['import', '--target', target.url, '--json', '--no-receipt', folder], {env})
      expect(resumed.code, resumed.stdout + resumed.stderr).toBe(0)
      expect(parseJson<{leftoversWrittenBack?: number}>(resumed).leftoversWrittenBack).toBe(1)
      expect(await (await target.api(`/instances/${record.orthancId}/metadata/2000`)).text()).toBe('the target\'s own')
      const told = await runCli(['import', '--target', target.url, '--no-receipt', folder], {env})
      expect(told.stdout).not.toMatch(/Wrote back/)
    } finally {
      await target.dispose()
    }
  })

  // Two exports holding one instance, the older copy's upload cut off and tried again: its turn
  // ended with the failed attempt, the newer copy went first, and the retry stored the older copy
  // over it (the target kept the old bytes, two transfers counted, exit 0).
  it('an older copy tried again after a failed upload never lands over the newer copy of a later export', async () => {
    const record = corpus[0]!
    const olderSource = await startOrthanc({name: 'retried-copy-source', overwriteInstances: true})
    const target = await startOrthanc({name: 'retried-copy-target', overwriteInstances: true, version: '1.12'})
    const [older, newer] = [join(work, 'retried-copy-older'), join(work, 'retried-copy-newer')]
    const proxy = await startFaultProxy(target.port)
    try {
      await uploadFiles(olderSource, [record.path])
      expect((await runCli(['export', '--source', olderSource.url, '--output', older])).code).toBe(0)
      await olderSource.api('/instances', {method: 'POST', body: new Uint8Array(await alteredCopy(record))})
      const newerMd5 = (await instanceMd5s(olderSource)).get(record.orthancId)!
      expect((await runCli(['export', '--source', olderSource.url, '--output', newer])).code).toBe(0)
      // The older copy's first upload is cut off, slowly enough that the newer copy is in flight by then.
      proxy.slow.push({match: /^POST \/instances/, ms: 300})
      proxy.faults.push({match: /^POST \/instances/, fault: 'reset-before-response'})
      const result = await runCli(['import', '--target', proxy.url, '--json', '--no-receipt', '--retries', '0', '--concurrency', '4', older, newer])
      const summary = parseJson<ImportJson & {retries: number}>(result)
      expect({code: result.code, transferred: summary.transferred, retried: summary.retries > 0}).toEqual({code: 0, transferred: 1, retried: true})
      expect((await instanceMd5s(target)).get(record.orthancId)).toBe(newerMd5)
    } finally {
      await proxy.close()
      await Promise.all([olderSource.dispose(), target.dispose()])
    }
  })

  // One aa/bb/uuid file makes a folder look like a storage folder: the DICOM files beside it were
  // set aside unread as outside the layout, exit 0.
  it('a folder taken for a storage folder reads the files outside the aa/bb/uuid layout too: no instance passed over', async () => {
    const target = await startOrthanc({name: 'mixed-folder'})
    try {
      const mixed = join(work, 'mixed')
      await mkdir(join(mixed, 'ab', 'cd'), {recursive: true})
      await mkdir(join(mixed, 'studies', 'p01'), {recursive: true})
      await copyFile(corpus[0]!.path, join(mixed, 'ab', 'cd', 'abcd0000-1111-2222-3333-444455556666'))
      await copyFile(corpus[1]!.path, join(mixed, 'studies', 'p01', 'x.dcm'))
      await copyFile(corpus[2]!.path, join(mixed, 'readme-scan.dcm'))
      await writeFile(join(mixed, 'notes.txt'), 'not dicom')
      const result = await importInto(target, mixed)
      expect(result.code, result.stdout).toBe(0)
      expect(parseJson<ImportJson>(result)).toMatchObject({transferred: 3, failed: 0})
      expect(await instanceMd5s(target)).toEqual(new Map(corpus.slice(0, 3).map((record) => [record.orthancId, record.md5])))
    } finally {
      await target.dispose()
    }
  })

  it('the storage folder of a stopped server with StorageCompression lands whole', async () => {
    const dead = await startOrthanc({name: 'dead-server', storageCompression: true})
    const target = await startOrthanc({name: 'recovery-target'})
    try {
      await uploadFiles(dead, corpus.map((record) => record.path))
      await dead.stop()
      const result = await importInto(target, dead.storageDir)
      expect(result.code, result.stderr).toBe(0)
      const summary = parseJson<ImportJson>(result)
      expect(summary).toMatchObject({transferred: corpus.length, failed: 0})
      expect(await instanceMd5s(target)).toEqual(new Map(corpus.map((record) => [record.orthancId, record.md5])))
      // Every instance has its pixel data: no header-only copy was stored in its place.
      for (const record of corpus.filter((entry) => entry.label !== 'tiny')) {
        const tags = await target.json<Record<string, unknown>>(`/instances/${record.orthancId}/tags?short`)
        expect(tags, record.label).toHaveProperty('7fe0,0010')
      }
    } finally {
      await Promise.all([dead.dispose(), target.dispose()])
    }
  })

  it('uploads cut off by connection resets and 503s are sent again and counted, none lost', async () => {
    const target = await startOrthanc({name: 'flaky-target'})
    const proxy = await startFaultProxy(target.port)
    proxy.faults.push(
      {match: /^POST \/instances$/, fault: 'reset-before-response'},
      {match: /^POST \/instances$/, fault: 'status-503'},
      {match: /^POST \/instances$/, fault: 'reset-before-response'},
      {match: /^GET \/instances\/.*\/attachments\/dicom\/info$/, fault: 'reset-mid-body'},
    )
    try {
      const result = await runCli(['import', '--target', proxy.url, '--json', '--no-receipt', volumesDir])
      expect(result.code, result.stderr).toBe(0)
      const summary = parseJson<ImportJson & {retries: number}>(result)
      expect(summary).toMatchObject({transferred: corpus.length, failed: 0})
      expect(summary.retries).toBeGreaterThanOrEqual(4)
      expect(proxy.faults).toEqual([])
      expect(await instanceMd5s(target)).toEqual(sourceMd5s)
    } finally {
      await proxy.close()
      await target.dispose()
    }
  })

  it('--concurrency N: never more than N uploads at once, though more instances are read ahead', async () => {
    const target = await startOrthanc({name: 'paced-target'})
    const proxy = await startFaultProxy(target.port)
    // Slow answers keep requests open long enough to overlap.
    proxy.delayMs = 20
    try {
      const result = await runCli(['import', '--target', proxy.url, '--json', '--no-receipt', '--concurrency', '2', join(work, 'fixtures')])
      expect(result.code, result.stderr).toBe(0)
      expect(parseJson<ImportJson>(result)).toMatchObject({transferred: corpus.length, failed: 0})
      expect(proxy.peakInFlight.get('POST /instances')).toBe(2)
      expect(await instanceMd5s(target)).toEqual(new Map(corpus.map((record) => [record.orthancId, record.md5])))
    } finally {
      await proxy.close()
      await target.dispose()
    }
  })

  it('a target killed mid-import: a clear error, then a second run completes it, nothing duplicated', async () => {
    const target = await startOrthanc({name: 'crashing-target'})
    const proxy = await startFaultProxy(target.port)
    proxy.delayMs = 30
    try {
      const child = spawn(process.execPath, [join(repoRoot, 'bin/run.js'), 'import', '--target', proxy.url, '--no-receipt', '--retries', '2', '--concurrency', '2', volumesDir], {stdio: ['ignore', 'ignore', 'pipe']})
      let stderr = ''
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk))
      const closed = new Promise<number>((resolve) => child.once('close', (code) => resolve(code ?? 1)))
      const deadline = Date.now() + 30_000
      while ((await target.json<string[]>('/instances')).length < 5 && Date.now() < deadline) await sleep(20)
      await target.kill()
      const code = await closed
      expect(code).toBe(4)
      expect(stderr).toMatch(/cannot connect|connection lost/)
      expect(stderr).toMatch(/run the same command again|Check that Orthanc is running/)

      await target.start()
      proxy.delayMs = 0
      const result = await runCli(['import', '--target', proxy.url, '--json', '--no-receipt', volumesDir])
      expect(result.code, result.stderr).toBe(0)
      const summary = parseJson<ImportJson>(result)
      expect(summary.transferred + summary.skipped).toBe(corpus.length)
      expect(summary.skipped).toBeGreaterThan(0)
      expect(await instanceMd5s(target)).toEqual(sourceMd5s)
    } finally {
      await proxy.close()
      await target.dispose()
    }
  })
})

/** The ID of a process that has ended: a killed run's. */
function deadProcessId(): number {
  return spawnSync('true').pid!
}
