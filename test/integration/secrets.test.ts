import {spawn} from 'node:child_process'
import {createServer, request} from 'node:http'
import {mkdir, mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {generateStudySet} from '../../fixtures/generate.js'
import {type CliResult, repoRoot, runCli} from '../helpers/cli.js'
import {extractWithTar, listFiles, volumeFiles} from '../helpers/corpus.js'
import {type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'

/**
 * A hunt for secrets: every command, run with known credentials given each way (in the URL, in
 * a file, in the environment) and against data with known patient names and IDs, failing and
 * succeeding, with --json and DEBUG=1; every byte of output and every file written is searched
 * for the password (plain, URL-encoded, base64 as in an Authorization header) and, outside the
 * DICOM payload itself and the opt-in patient index, for the patients' names and IDs.
 */

const USER = 'replicator'
const PASSWORD = 'Sw0rdf1sh-@/:%secret'
const ENCODED = encodeURIComponent(PASSWORD)
/** A second user's, for a server that quotes it back after the user name, as "bob:PASSWORD". */
const ECHOED_USER = 'bob'
const ECHOED = 'p@ss/w0rd:#Tr1cky'

describe('no secret in any output', () => {
  let work: string
  let server: OrthancServer
  let target: OrthancServer
  let passwordFile: string
  let patients: Array<{id: string; name: string}>
  const outputs: Array<{what: string; text: string}> = []

  const secretsIn = (text: string, what: string): string[] => {
    const found: string[] = []
    const forms = [PASSWORD, ENCODED, Buffer.from(`${USER}:${PASSWORD}`).toString('base64'), Buffer.from(PASSWORD).toString('base64')]
    for (const form of forms) if (text.includes(form)) found.push(`${what} holds the password (${form === PASSWORD ? 'plain' : form === ENCODED ? 'URL-encoded' : 'base64'})`)
    return found
  }

  const patientDataIn = (text: string, what: string): string[] => {
    const found: string[] = []
    for (const patient of patients) {
      if (text.includes(patient.id)) found.push(`${what} names patient ID ${patient.id}`)
      if (patient.name && text.includes(patient.name)) found.push(`${what} names patient ${patient.name}`)
      const base64 = Buffer.from(patient.id).toString('base64')
      if (text.includes(base64)) found.push(`${what} holds a patient ID in base64`)
    }
    return found
  }

  const record = (what: string, result: CliResult) => outputs.push({what: `${what} (stdout)`, text: result.stdout}, {what: `${what} (stderr)`, text: result.stderr})

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'secrets-'))
    const fixtures = await generateStudySet(join(work, 'fixtures'), {patients: 2, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 2, pixelBytes: 2000, seed: 'secrets'})
    ;[server, target] = await Promise.all([startOrthanc({name: 'secret-source', users: {[USER]: PASSWORD, [ECHOED_USER]: ECHOED}}), startOrthanc({name: 'secret-target', users: {[USER]: PASSWORD, [ECHOED_USER]: ECHOED}})])
    await uploadFiles(server, fixtures.map((record) => record.path))
    patients = (await server.json<Array<{MainDicomTags: {PatientID: string; PatientName?: string}}>>('/patients?expand')).map((patient) => ({id: patient.MainDicomTags.PatientID, name: (patient.MainDicomTags.PatientName ?? '').replace(/\^/g, ' ').trim().split(' ')[0]!}))
    passwordFile = join(work, 'password')
    await writeFile(passwordFile, `${PASSWORD}\n`, {mode: 0o600})
  })
  afterAll(async () => {
    await Promise.all([server?.dispose(), target?.dispose()])
    await rm(work, {recursive: true, force: true})
  })

  const inUrl = (url: string) => url.replace('http://', `http://${USER}:${ENCODED}@`)

  it('runs every command every way, and finds no password anywhere', async () => {
    const volumes = join(work, 'volumes')
    const ways: Array<{name: string; args: (role: 'server' | 'source' | 'target', url: string) => string[]; env: Record<string, string | undefined>}> = [
      {name: 'in the URL', args: (role, url) => [`--${role}`, inUrl(url)], env: {}},
      {name: 'in a file', args: (role, url) => [`--${role}`, url, `--${role === 'server' ? '' : `${role}-`}username`, USER, `--${role === 'server' ? '' : `${role}-`}password-file`, passwordFile], env: {}},
      {name: 'in the environment', args: (role, url) => [`--${role}`, url], env: {ORTHANC_USERNAME: USER, ORTHANC_PASSWORD: PASSWORD}},
    ]
    for (const way of ways) {
      for (const debug of [undefined, '1']) {
        const env = {...way.env, DEBUG: debug}
        const label = `${way.name}${debug ? ', DEBUG=1' : ''}`
        const output = join(volumes, `${ways.indexOf(way)}-${debug ?? '0'}`)
        for (const json of [[], ['--json']]) {
          record(`info ${label} ${json}`, await runCli(['info', ...way.args('server', server.url), ...json], {env}))
          // Failures: a wrong password, an unknown flag, an unreachable server.
          record(`info (401) ${label} ${json}`, await runCli(['info', ...way.args('server', server.url).map((arg) => arg.replace(ENCODED, 'wrong')), ...json], {env: {...env, ORTHANC_PASSWORD: way.env.ORTHANC_PASSWORD ? 'wrong' : undefined}}))
          record(`info --bogus ${label} ${json}`, await runCli(['info', ...way.args('server', server.url), '--bogus', ...json], {env}))
          record(`info (unreachable) ${label} ${json}`, await runCli(['info', ...way.args('server', 'http://127.0.0.1:9'), ...json], {env}))
          // DEBUG=1 prints stacks: the failures above are what it is for.
          if (debug) continue
          record(`export ${label} ${json}`, await runCli(['export', ...way.args('source', server.url), '--output', `${output}${json.length}`, '--patient-id', patients.map((patient) => patient.id).join(','), ...json], {env}))
          record(`verify ${label} ${json}`, await runCli(['verify', `${output}${json.length}`, ...way.args('target', target.url), ...json], {env}))
          record(`import ${label} ${json}`, await runCli(['import', ...way.args('target', target.url), `${output}${json.length}`, '--receipt', join(work, `receipt-${ways.indexOf(way)}-${debug ?? 0}-${json.length}.jsonl`), ...json], {env}))
          record(`sync ${label} ${json}`, await runCli(['sync', ...way.args('source', server.url), ...way.args('target', target.url), ...json], {env}))
          record(`diff ${label} ${json}`, await runCli(['diff', ...way.args('source', server.url), ...way.args('target', target.url), '--side-data', ...json], {env}))
        }
      }
    }

    record('info, no scheme', await runCli(['info', '--server', `${USER}:${PASSWORD}@127.0.0.1:${server.port}`]))
    record('info, no scheme, --json', await runCli(['info', '--server', `${USER}:${PASSWORD}@127.0.0.1:${server.port}`, '--json']))
    // Servers given as arguments, before any flag (as to Orthanc's Replicate.py): no command parses
    // them, and oclif's not-found path printed them back with their ':' turned to spaces.
    const asArguments = await runCli(['sync', inUrl(server.url), inUrl(target.url)])
    expect(asArguments.code).toBe(2)
    expect(asArguments.stderr).toMatch(/sync takes no arguments here/)
    record('sync, URLs as arguments', asArguments)
    const asArgumentJson = await runCli(['info', inUrl(server.url), '--json'])
    expect(asArgumentJson.code).toBe(2)
    // Under --json, the one JSON document every refusal gives.
    expect(JSON.parse(asArgumentJson.stdout)).toEqual({error: expect.objectContaining({code: 'usage', exitCode: 2, message: expect.stringMatching(/^info takes no arguments here/)})})
    record('info, a URL as an argument, --json', asArgumentJson)
    record('a URL in place of the command', await runCli([inUrl(server.url)]))
    // A password typed with a space: the URL parser takes it, so the output guard must find it too.
    const spaced = 'my pass1'
    for (const args of [['info', `http://${USER}:${spaced}@127.0.0.1:9`, '--json'], ['info', '--server', `http://${USER}:${spaced}@127.0.0.1:9`, '--json'], ['sync', `http://${USER}:${spaced}@127.0.0.1:9`]]) {
      const result = await runCli(args)
      expect(`${result.stdout}${result.stderr}`, args.join(' ')).not.toContain(spaced)
    }
    const found = outputs.flatMap((output) => secretsIn(output.text, output.what))
    expect(found).toEqual([])
    // Flag errors are one line, or one JSON object, with exit 2; not oclif's dump of its parse.
    const bogus = outputs.filter((output) => output.what.startsWith('info --bogus') && output.what.endsWith('(stdout)') && output.what.includes('--json'))
    for (const output of bogus) expect(JSON.parse(output.text)).toEqual({error: expect.objectContaining({code: 'usage', exitCode: 2})})
  }, 600_000)

  it('every file written: no password, and no patient name or ID outside the DICOM payload and the opt-in index', async () => {
    const files = [...await listFiles(join(work, 'volumes')), ...(await listFiles(work)).filter((file) => file.includes('receipt-'))]
    const found: string[] = []
    for (const file of files) {
      if (file.endsWith('.tar')) {
        // A volume: its tag files are searched, its DICOM payload is the patient data it carries.
        const extracted = await extractWithTar([file])
        for (const entry of await listFiles(extracted)) {
          const text = await readFile(entry, 'latin1')
          found.push(...secretsIn(text, entry))
          if (!entry.includes('/data/')) found.push(...patientDataIn(text, entry))
        }
        continue
      }
      const text = await readFile(file, 'latin1')
      found.push(...secretsIn(text, file))
      // The export's state too: it is on the drive beside the volumes by default.
      found.push(...patientDataIn(text, file))
    }
    expect(files.length).toBeGreaterThan(10)
    expect(await volumeFiles(join(work, 'volumes', '0-00'))).not.toEqual([])
    expect(found).toEqual([])
  })

  // A password holding '@' was cut at it by the URL pattern before the password itself was masked:
  // "Bad file for bob:p@ss/w0rd" came out as "Bad file for ss/w0rd", in the archive's manifest,
  // the receipt, the log and the JSON.
  it('a password holding "@", "/", ":" and "#", quoted after its user name by a failing server, is in no output or file', async () => {
    const dir = join(work, 'echoed')
    await mkdir(dir)
    const env = {...process.env, ORTHANC_USERNAME: ECHOED_USER, ORTHANC_PASSWORD: ECHOED}
    const forms = [ECHOED, encodeURIComponent(ECHOED), Buffer.from(`${ECHOED_USER}:${ECHOED}`).toString('base64'), ...ECHOED.split(/[@/:#]/).filter((part) => part.length >= 4)]
    const leaks = (text: string, what: string) => forms.filter((form) => text.includes(form)).map((form) => `${what} holds ${form}`)
    // In front of a server: a download (GET .../file, .../attachments/dicom/data) or an upload
    // (POST /instances) answered with HTTP 500, its JSON quoting the credentials of the request.
    const echoing = async (port: number) => {
      const proxy = createServer((incoming, outgoing) => {
        if (/^\/instances\/[^/]+\/(file|attachments\/dicom\/data)/.test(incoming.url ?? '') || (incoming.method === 'POST' && incoming.url === '/instances')) {
          incoming.resume()
          const credentials = Buffer.from(String(incoming.headers.authorization).replace(/^Basic /, ''), 'base64').toString('utf8')
          outgoing.writeHead(500, {'content-type': 'application/json'})
          outgoing.end(JSON.stringify({HttpError: 'Internal Server Error', HttpStatus: 500, Message: `Bad file for ${credentials}`, Details: `denied for ${credentials}`, OrthancStatus: 15}))
          return
        }
        const upstream = request({host: '127.0.0.1', port, method: incoming.method, path: incoming.url, headers: incoming.headers}, (answer) => {
          outgoing.writeHead(answer.statusCode ?? 502, answer.headers)
          answer.pipe(outgoing)
        })
        upstream.on('error', () => outgoing.destroy())
        incoming.pipe(upstream)
      })
      await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve))
      const address = proxy.address()
      return {url: `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`, close: () => new Promise<void>((resolve) => proxy.close(() => resolve()))}
    }
    // A target of its own: the shared one holds the instances already, and an import would store nothing.
    const empty = await startOrthanc({name: 'secret-echo-target', users: {[USER]: PASSWORD, [ECHOED_USER]: ECHOED}})
    const [source, sink] = await Promise.all([echoing(server.port), echoing(empty.port)])
    const found: string[] = []
    try {
      const failed = await runCli(['export', '--source', source.url, '--output', join(dir, 'failed'), '--retries', '0', '--json', '--log-file', join(dir, 'export.log')], {env})
      expect(failed.code, failed.stderr).not.toBe(0)
      found.push(...leaks(failed.stdout, 'export --json'), ...leaks(failed.stderr, 'export stderr'))
      const exported = await runCli(['export', '--source', server.url, '--output', join(dir, 'archive')], {env})
      expect(exported.code, exported.stderr).toBe(0)
      for (const json of [[], ['--json']]) {
        const imported = await runCli(['import', '--target', sink.url, join(dir, 'archive'), '--retries', '0', '--receipt', join(dir, `receipt${json.length}.jsonl`), '--log-file', join(dir, 'import.log'), '-v', ...json], {env})
        expect(imported.code, imported.stderr).not.toBe(0)
        found.push(...leaks(imported.stdout, `import ${json} stdout`), ...leaks(imported.stderr, `import ${json} stderr`))
      }
    } finally {
      await Promise.all([source.close(), sink.close()])
      await empty.dispose()
    }

    const files = await listFiles(dir)
    // The failed export's manifest names the server's reason, masked.
    let reasons = 0
    for (const file of files) {
      if (file.endsWith('.tar')) {
        const extracted = await extractWithTar([file])
        for (const entry of await listFiles(extracted)) {
          const text = await readFile(entry, 'latin1')
          if (text.includes('Bad file for')) reasons++
          found.push(...leaks(text, entry))
        }
        await rm(extracted, {recursive: true, force: true})
        continue
      }
      const text = await readFile(file, 'latin1')
      if (text.includes('Bad file for')) reasons++
      found.push(...leaks(text, file))
    }
    expect(reasons).toBeGreaterThan(0)
    expect(found).toEqual([])
  }, 120_000)

  it('Orthanc\'s default password `orthanc` does not garble the tool\'s own words: its name, its JSON', async () => {
    const env = {...process.env, ORTHANC_USERNAME: 'orthanc', ORTHANC_PASSWORD: 'orthanc'}
    const version = await runCli(['--version'], {env})
    expect(version.stdout).toMatch(/^orthanc-replicate\/\d/)
    const refused = await runCli(['info', '--server', server.url, '--json'], {env})
    expect(refused.code).toBe(5)
    expect(JSON.parse(refused.stdout)).toEqual({error: expect.objectContaining({code: 'authentication', exitCode: 5})})
  })

  it('a password that is a JSON word or number leaves every JSON document whole, and is still masked inside its strings', async () => {
    const archive = join(work, 'json-words')
    const exported = await runCli(['export', '--source', server.url, '--output', archive, '--json'], {env: {...process.env, ORTHANC_USERNAME: USER, ORTHANC_PASSWORD: PASSWORD}})
    expect(exported.code, exported.stderr).toBe(0)
    for (const word of ['true', 'false', 'null', '2000', 'complete']) {
      const env = {...process.env, ORTHANC_PASSWORD: word}
      const log = join(work, `json-words-${word}.log`)
      const verified = await runCli(['verify', archive, '--json', '--stats', '1', '--log-file', log], {env})
      expect(verified.code, verified.stdout).toBe(0)
      for (const line of (await readFile(log, 'utf8')).trim().split('\n')) expect(() => JSON.parse(line), line).not.toThrow()
      expect(JSON.parse(verified.stdout)).toMatchObject({complete: true, valid: true})
      for (const line of verified.stderr.split('\n').filter((text) => text.startsWith('{'))) expect(() => JSON.parse(line), line).not.toThrow()
      const missing = await runCli(['verify', join(work, 'no-such', word), '--json'], {env})
      expect(JSON.parse(missing.stdout).error.message).toContain('[redacted]')
      expect(JSON.parse(missing.stdout).error.message).not.toMatch(new RegExp(`\\b${word}\\b`))
    }
  })

  it('a password in the URL brings one warning on stderr, which names the safer ways; a password file none', async () => {
    const inTheUrl = await runCli(['info', '--server', inUrl(server.url), '--json'])
    expect(inTheUrl.code, inTheUrl.stderr).toBe(0)
    expect(inTheUrl.stderr.match(/can be read by other users of this machine \(ps\)/g)).toHaveLength(1)
    expect(inTheUrl.stderr).toContain('--password-file')
    expect(() => JSON.parse(inTheUrl.stdout)).not.toThrow()
    const inAFile = await runCli(['info', '--server', server.url, '--username', USER, '--password-file', passwordFile, '--json'])
    expect(inAFile.code, inAFile.stderr).toBe(0)
    expect(inAFile.stderr).not.toMatch(/other users of this machine/)
  })

  it('a password in the URL is not in the process\'s command line once it runs (ps, /proc/PID/cmdline)', async () => {
    // In the test's folder: the mirror leaves its state file where it runs.
    const child = spawn(process.execPath, [join(repoRoot, 'bin/run.js'), 'sync', '--source', inUrl(server.url), '--target', inUrl(target.url), '--follow', '--interval', '1'], {stdio: 'ignore', cwd: work})
    try {
      await sleep(2500)
      const cmdline = (await readFile(`/proc/${child.pid}/cmdline`)).toString('latin1')
      expect(cmdline).toContain('sync')
      expect(secretsIn(cmdline, 'cmdline')).toEqual([])
    } finally {
      child.kill('SIGKILL')
    }
  })
})
