import {writeFile, mkdtemp, rm} from 'node:fs/promises'
import {createServer as createHttpServer, type Server} from 'node:http'
import {createServer as createTcpServer, type Server as TcpServer, type Socket} from 'node:net'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {parseJson, runCli} from '../helpers/cli.js'
import {startOrthanc, type OrthancServer} from '../helpers/orthanc.js'
import {freePort} from '../helpers/ports.js'
import {startTlsProxy, type TlsProxy} from '../helpers/tls-proxy.js'
import {startFaultProxy} from '../helpers/fault-proxy.js'
import {generateStudySet} from '../../fixtures/generate.js'
import {uploadFiles} from '../helpers/orthanc.js'

const PASSWORD = 'Tr0ub4dor&3-horse'
const noCredentialsEnv = {ORTHANC_USERNAME: undefined, ORTHANC_PASSWORD: undefined, ORTHANC_PASSWORD_FILE: undefined, ORTHANC_URL: undefined}

interface InfoJson {
  name: string
  version: string
  databaseBackend: string
  storageBackend: string
  counts: {patients: number; studies: number; series: number; instances: number}
  disk: {storedBytes: number; uncompressedBytes: number}
  features: {labels: boolean; attachmentInfo: boolean; storageCompression: boolean | null}
}

function listen(server: Server | TcpServer): Promise<number> {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      resolve(typeof address === 'object' && address ? address.port : 0)
    })
  })
}

describe('info', () => {
  let plain: OrthancServer
  let compressed: OrthancServer
  let workDir: string

  beforeAll(async () => {
    workDir = await mkdtemp(join(tmpdir(), 'info-test-'))
    const files = await generateStudySet(join(workDir, 'dicom'), {patients: 2, studiesPerPatient: 1, seriesPerStudy: 2, instancesPerSeries: 2, pixelBytes: 4096, seed: 'info'})
    ;[plain, compressed] = await Promise.all([
      startOrthanc({name: 'plain-server', users: {alice: PASSWORD}}),
      startOrthanc({name: 'compressed-server', users: {alice: PASSWORD}, storageCompression: true}),
    ])
    await uploadFiles(plain, files.map((file) => file.path))
    await uploadFiles(compressed, files.map((file) => file.path))
  })
  afterAll(async () => {
    await Promise.all([plain?.dispose(), compressed?.dispose()])
    await rm(workDir, {recursive: true, force: true})
  })

  it('prints name, version, back-ends, counts, sizes and features as JSON', async () => {
    const result = await runCli(['info', '--server', plain.authUrl, '--json'], {env: noCredentialsEnv})
    expect(result.code).toBe(0)
    const info = parseJson<InfoJson>(result)
    expect(info.name).toBe('plain-server')
    expect(info.version).toBe('1.10.1')
    expect(info.databaseBackend).toBe('SQLite (built-in)')
    expect(info.storageBackend).toBe('filesystem (built-in)')
    expect(info.counts).toEqual({patients: 2, studies: 2, series: 4, instances: 8})
    expect(info.disk.storedBytes).toBeGreaterThan(8 * 4096)
    expect(info.features).toMatchObject({labels: false, attachmentInfo: true, storageCompression: false})
    expect(result.stdout).not.toContain(PASSWORD)
  })

  it('detects storage compression from what is stored', async () => {
    const result = await runCli(['info', '--server', compressed.authUrl, '--json'], {env: noCredentialsEnv})
    const info = parseJson<InfoJson>(result)
    expect(info.features.storageCompression).toBe(true)
    expect(info.disk.storedBytes).toBeLessThan(info.disk.uncompressedBytes)
  })

  it('a byte total or a name of the wrong kind in the server\'s answers: exit 9 naming the route, never NaN or a number for a name', async () => {
    const proxy = await startFaultProxy(plain.port)
    const env = {...process.env, ...noCredentialsEnv, ORTHANC_USERNAME: 'alice', ORTHANC_PASSWORD: PASSWORD}
    try {
      proxy.rewrite = [{match: /^GET \/statistics$/, change: (answer) => ({...(answer as object), TotalDiskSize: 'lots'})}]
      const statistics = await runCli(['info', '--server', proxy.url, '--json'], {env})
      expect(statistics.code).toBe(9)
      expect(JSON.parse(statistics.stdout).error.message).toMatch(/GET \/statistics .*TotalDiskSize: .* is not a byte count/)
      proxy.rewrite = [{match: /^GET \/system$/, change: (answer) => ({...(answer as object), Name: 123})}]
      const system = await runCli(['info', '--server', proxy.url, '--json'], {env})
      expect(system.code).toBe(9)
      expect(JSON.parse(system.stdout).error.message).toMatch(/GET \/system .*Name: .* is not text/)
    } finally {
      await proxy.close()
    }
  })

  it('prints a readable report without --json', async () => {
    const result = await runCli(['info', '--server', plain.authUrl], {env: noCredentialsEnv})
    expect(result.code).toBe(0)
    expect(result.stdout).toMatch(/Version:\s+Orthanc 1\.10\.1/)
    expect(result.stdout).toMatch(/2 patients, 2 studies, 4 series, 8 instances/)
    expect(result.stdout).toMatch(/labels:\s+no/)
    expect(result.stdout).not.toContain(PASSWORD)
  })

  it('takes credentials from environment variables', async () => {
    const result = await runCli(['info', '--server', plain.url, '--json'], {env: {...noCredentialsEnv, ORTHANC_USERNAME: 'alice', ORTHANC_PASSWORD: PASSWORD}})
    expect(result.code).toBe(0)
    expect(parseJson<InfoJson>(result).name).toBe('plain-server')
  })

  it('takes the password from a file', async () => {
    const passwordFile = join(workDir, 'password')
    await writeFile(passwordFile, `${PASSWORD}\n`, {mode: 0o600})
    const result = await runCli(['info', '--server', plain.url, '--username', 'alice', '--password-file', passwordFile, '--json'], {env: noCredentialsEnv})
    expect(result.code).toBe(0)
    expect(parseJson<InfoJson>(result).name).toBe('plain-server')
  })

  it('a wrong password: exit 5, one message, no password and no stack trace', async () => {
    const wrong = 'not-the-Password-42'
    const url = plain.authUrl.replace(encodeURIComponent(PASSWORD), wrong)
    const result = await runCli(['info', '--server', url], {env: noCredentialsEnv})
    expect(result.code).toBe(5)
    expect(result.stderr).toMatch(/refused the credentials \(HTTP 401\)/)
    expect(result.stderr).toMatch(/password-file/)
    expect(result.stderr + result.stdout).not.toContain(wrong)
    expect(result.stderr).not.toMatch(/\n\s+at /)
    const asJson = await runCli(['info', '--server', url, '--json'], {env: noCredentialsEnv})
    expect(asJson.code).toBe(5)
    expect(parseJson<{error: {code: string}}>(asJson).error.code).toBe('authentication')
    expect(asJson.stdout + asJson.stderr).not.toContain(wrong)
  })

  it('a URL that is not a URL: exit 3', async () => {
    const result = await runCli(['info', '--server', 'localhost 8042'], {env: noCredentialsEnv})
    expect(result.code).toBe(3)
    expect(result.stderr).toMatch(/invalid server URL/)
    expect(result.stderr).toMatch(/http:\/\/localhost:8042/)
  })

  it('a wrong scheme does not echo the password: exit 3', async () => {
    const result = await runCli(['info', '--server', `ftp://alice:${PASSWORD}@127.0.0.1:21`], {env: noCredentialsEnv})
    expect(result.code).toBe(3)
    expect(result.stderr).not.toContain(PASSWORD)
  })

  // http://alice:2024/Spring@host parses as the host "alice", the port 2024 and the path
  // "/Spring@host": the password was shown as part of the server's name ("cannot connect to
  // http://alice:2024/Spring@127.0.0.1:37939 (ENOTFOUND)"), and the output guard missed it.
  it('a password holding an unencoded "/", "?" or "#": exit 3, saying to percent-encode it, and no part of it shown', async () => {
    for (const password of ['2024/Spring', '2024?Spring', '2024#Spring', '2024/Spr@ing']) {
      for (const json of [[], ['--json']]) {
        for (const url of [`http://alice:${password}@127.0.0.1:37939`, `http://alice:${password}@127.0.0.1:37939/orthanc`]) {
          const result = await runCli(['info', '--server', url, ...json], {env: noCredentialsEnv})
          const output = result.stdout + result.stderr
          expect(result.code, output).toBe(3)
          expect(output, url).toMatch(/%2F, %3F, %23, %40/)
          expect(output, url).toContain('--password-file')
          expect(output, url).not.toMatch(/Spr|2024/)
          if (json.length > 0) expect(parseJson<{error: {code: string}}>(result).error.code).toBe('invalid-url')
        }
      }
    }
  })

  // "a server URL takes no query string or fragment (http://127.0.0.1:1/?token=...)": it was shown.
  it('a URL with a query string or fragment: exit 3, and neither shown', async () => {
    for (const url of ['http://127.0.0.1:1/?token=s3cr3tT0ken', 'http://127.0.0.1:1/orthanc#s3cr3tT0ken', 'http://127.0.0.1:1?access_token=s3cr3tT0ken&x=1']) {
      for (const json of [[], ['--json']]) {
        const result = await runCli(['info', '--server', url, ...json], {env: noCredentialsEnv})
        expect(result.code, url).toBe(3)
        expect(result.stdout + result.stderr, url).toMatch(/takes no query string or fragment/)
        expect(result.stdout + result.stderr, url).not.toContain('s3cr3tT0ken')
      }
    }
  })

  it('a refused connection: exit 4, quickly', async () => {
    const closed = await freePort()
    const started = Date.now()
    const result = await runCli(['info', '--server', `http://127.0.0.1:${closed}`], {env: noCredentialsEnv})
    expect(result.code).toBe(4)
    expect(result.stderr).toMatch(/ECONNREFUSED/)
    expect(result.stderr).toMatch(/Check that Orthanc is running/)
    expect(Date.now() - started).toBeLessThan(5000)
  })

  describe('servers that are not Orthanc, or do not answer', () => {
    let web: Server
    let silent: TcpServer
    const sockets: Socket[] = []
    let webPort = 0
    let silentPort = 0
    beforeAll(async () => {
      web = createHttpServer((_request, response) => {
        response.writeHead(200, {'content-type': 'text/html'})
        response.end('<html><body>It works!</body></html>')
      })
      silent = createTcpServer((socket) => sockets.push(socket))
      webPort = await listen(web)
      silentPort = await listen(silent)
    })
    afterAll(() => {
      for (const socket of sockets) socket.destroy()
      web.close()
      silent.close()
    })

    it('a web server that is not Orthanc: exit 6', async () => {
      const result = await runCli(['info', '--server', `http://127.0.0.1:${webPort}`], {env: noCredentialsEnv})
      expect(result.code).toBe(6)
      expect(result.stderr).toMatch(/does not look like an Orthanc server/)
    })

    it('sync and diff from or to a web server that is not Orthanc: exit 6 naming it, though the comparison starts beside GET /system', async () => {
      const web = `http://127.0.0.1:${webPort}`
      for (const command of ['sync', 'diff']) {
        for (const [from, to] of [[web, plain.authUrl], [plain.authUrl, web]]) {
          const result = await runCli([command, '--source', from!, '--target', to!], {env: noCredentialsEnv})
          expect(result.code, `${command} ${from} -> ${to}`).toBe(6)
          expect(result.stderr).toContain(`${web} does not look like an Orthanc server`)
          expect(result.stderr).not.toMatch(/\n\s+at /)
        }
      }
    })

    it('sync and diff with a server that refuses the password: exit 5 as an authentication error, though the comparison starts beside GET /system, and no password shown', async () => {
      const wrong = plain.authUrl.replace(encodeURIComponent(PASSWORD), 'not-the-Password-42')
      for (const [command, from, to] of [['sync', plain.authUrl, wrong], ['diff', plain.authUrl, wrong], ['diff', wrong, plain.authUrl]]) {
        const result = await runCli([command!, '--source', from!, '--target', to!, '--json'], {env: noCredentialsEnv})
        expect(result.code, `${command} ${from === wrong ? 'source' : 'target'} refusing`).toBe(5)
        expect(parseJson<{error: {code: string}}>(result).error.code).toBe('authentication')
        expect(result.stdout + result.stderr).not.toContain('not-the-Password-42')
      }
    })

    it('a server that never answers: exit 7', async () => {
      const result = await runCli(['info', '--server', `http://127.0.0.1:${silentPort}`, '--timeout', '1', '--retries', '1'], {env: noCredentialsEnv})
      expect(result.code).toBe(7)
      expect(result.stderr).toMatch(/no answer/)
      expect(result.stderr).toMatch(/--timeout/)
    })
  })

  describe('HTTPS through a TLS-terminating nginx', () => {
    let proxy: TlsProxy
    let mutual: TlsProxy
    beforeAll(async () => {
      ;[proxy, mutual] = await Promise.all([startTlsProxy(plain.port), startTlsProxy(plain.port, {requireClientCert: true})])
    })
    afterAll(async () => Promise.all([proxy?.dispose(), mutual?.dispose()]))

    const withAuth = (url: string) => url.replace('https://', `https://alice:${encodeURIComponent(PASSWORD)}@`)

    it('trusts a custom CA given with --ca-file', async () => {
      const result = await runCli(['info', '--server', withAuth(proxy.url), '--ca-file', proxy.caFile, '--json'], {env: noCredentialsEnv})
      expect(result.code).toBe(0)
      expect(parseJson<InfoJson>(result).name).toBe('plain-server')
    })

    it('refuses an unknown CA: exit 8 with a hint', async () => {
      const result = await runCli(['info', '--server', withAuth(proxy.url)], {env: noCredentialsEnv})
      expect(result.code).toBe(8)
      expect(result.stderr).toMatch(/--ca-file/)
    })

    it('presents a client certificate when the server requires one', async () => {
      const refused = await runCli(['info', '--server', withAuth(mutual.url), '--ca-file', mutual.caFile], {env: noCredentialsEnv})
      expect(refused.code).not.toBe(0)
      const result = await runCli([
        'info', '--server', withAuth(mutual.url), '--ca-file', mutual.caFile,
        '--client-cert', mutual.clientCertFile, '--client-key', mutual.clientKeyFile, '--json',
      ], {env: noCredentialsEnv})
      expect(result.code).toBe(0)
      expect(parseJson<InfoJson>(result).name).toBe('plain-server')
    })
  })
})
