import {createHash} from 'node:crypto'
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {inspect} from 'node:util'

import {MockAgent} from 'undici'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {OrthancClient} from '../../src/orthanc/client.js'
import {OrthancSink} from '../../src/sinks/orthanc-sink.js'
import {prefetchingSideData, SideDataReader} from '../../src/sources/side-data.js'
import {type EndpointInput, resolveEndpoint} from '../../src/orthanc/endpoint.js'
import {InvalidServerUrlError, NotOrthancError, OrthancAuthError, UploadRejectedError} from '../../src/orthanc/errors.js'
import type {OrthancChange} from '../../src/orthanc/types.js'
import {backoffDelay, parseRetryAfter, type RetryPolicy} from '../../src/util/backoff.js'
import {parseSize} from '../../src/util/size.js'

const origin = 'http://orthanc.test'
const retry: RetryPolicy = {retries: 2, minDelayMs: 1, maxDelayMs: 2}
const MD5_OF_ABC = createHash('md5').update('abc').digest('hex')
const MD5_OF_DICM = createHash('md5').update('DICM').digest('hex')

function mockServer() {
  const agent = new MockAgent()
  agent.disableNetConnect()
  return {agent, pool: agent.get(origin)}
}

/** A client on a mocked server; `env` is always given so that the caller's environment cannot add credentials. */
function clientFor(agent: MockAgent, input: Partial<EndpointInput> = {}): OrthancClient {
  return new OrthancClient(resolveEndpoint({url: origin, env: {}, ...input}), {dispatcher: agent, retry})
}

const system = (Version: string) => ({Name: 'MOCK', Version, ApiVersion: 20, DatabaseVersion: 6})

/** Intercepts GET /system and records the headers it was sent with. */
function interceptSystem(pool: ReturnType<MockAgent['get']>, version = '1.12.4'): Array<Record<string, string>> {
  const seen: Array<Record<string, string>> = []
  pool.intercept({
    path: '/system',
    method: 'GET',
    headers: (headers) => {
      seen.push(headers)
      return true
    },
  }).reply(200, system(version))
  return seen
}

const basic = (pair: string) => `Basic ${Buffer.from(pair, 'utf8').toString('base64')}`

describe('downloadInstance', () => {
  it('asks for the stored bytes as they are and reads the MD5 from the ETag', async () => {
    const {agent, pool} = mockServer()
    const dicom = Buffer.concat([Buffer.alloc(128), Buffer.from('DICM'), Buffer.alloc(64 * 1024, 7)])
    const md5 = createHash('md5').update(dicom).digest('hex')
    let sent: Record<string, string> | undefined
    pool.intercept({
      path: '/instances/abc/attachments/dicom/data',
      method: 'GET',
      headers: (headers) => {
        sent = headers
        return true
      },
    }).reply(200, dicom, {headers: {etag: `"3-${md5}"`, 'content-length': String(dicom.length), 'content-type': 'application/dicom'}})
    const client = clientFor(agent)

    const download = await client.downloadInstance('abc')
    expect(sent).toBeDefined()
    // Orthanc would gzip each file in memory on the fly, and the MD5 would no longer be of these bytes.
    expect(Object.keys(sent!).map((name) => name.toLowerCase())).not.toContain('accept-encoding')
    expect(download.announcedMd5).toBe(md5)
    expect(download.bytes.equals(dicom)).toBe(true)
    agent.assertNoPendingInterceptors()
  })

  it('leaves the MD5 unknown without an ETag, and lower-cases one in capitals', async () => {
    const {agent, pool} = mockServer()
    pool.intercept({path: '/instances/a/attachments/dicom/data', method: 'GET'}).reply(200, 'x')
    pool.intercept({path: '/instances/b/attachments/dicom/data', method: 'GET'}).reply(200, 'x', {headers: {etag: `"0-${'ABCDEF0123456789'.repeat(2)}"`}})
    const client = clientFor(agent)
    const withoutEtag = await client.downloadInstance('a')
    expect(withoutEtag.announcedMd5).toBeUndefined()
    const upper = await client.downloadInstance('b')
    expect(upper.announcedMd5).toBe('abcdef0123456789'.repeat(2))
  })
})

describe('credentials', () => {
  let work: string
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'client-credentials-test-'))
  })
  afterAll(async () => {
    await rm(work, {recursive: true, force: true})
  })

  it('sends Basic auth from a URL, percent-decoding the password', async () => {
    const {agent, pool} = mockServer()
    const seen = interceptSystem(pool)
    await clientFor(agent, {url: 'http://user:p%40ss@orthanc.test'}).system()
    expect(seen[0]?.authorization).toBe(basic('user:p@ss'))
  })

  it('sends no Authorization header without credentials', async () => {
    const {agent, pool} = mockServer()
    const seen = interceptSystem(pool)
    await clientFor(agent).system()
    expect(seen[0]).toBeDefined()
    expect(seen[0]!.authorization).toBeUndefined()
  })

  it('takes credentials from the most specific environment prefix first', async () => {
    const env = {ORTHANC_TARGET_USERNAME: 'target-user', ORTHANC_TARGET_PASSWORD: 'target-pass', ORTHANC_USERNAME: 'any-user', ORTHANC_PASSWORD: 'any-pass'}
    const {agent, pool} = mockServer()
    const seen = interceptSystem(pool)
    await clientFor(agent, {envPrefixes: ['ORTHANC_TARGET', 'ORTHANC'], env}).system()
    expect(seen[0]?.authorization).toBe(basic('target-user:target-pass'))

    // An empty variable counts as unset: the generic one applies.
    const fallback = resolveEndpoint({url: origin, envPrefixes: ['ORTHANC_TARGET', 'ORTHANC'], env: {...env, ORTHANC_TARGET_PASSWORD: ''}})
    expect(fallback.password?.reveal()).toBe('any-pass')
    // Credentials in the URL win over the environment.
    const fromUrl = resolveEndpoint({url: 'http://url-user:url-pass@orthanc.test', envPrefixes: ['ORTHANC_TARGET', 'ORTHANC'], env})
    expect([fromUrl.username, fromUrl.password?.reveal()]).toEqual(['url-user', 'url-pass'])
  })

  it('takes a password with a % that begins no escape as typed, and decodes those that do', () => {
    for (const [url, password] of [['http://u:50%off@orthanc.test', '50%off'], ['http://u:50%25off@orthanc.test', '50%off'], ['http://u:%C3%BC%zz%41@orthanc.test', 'ü%zzA']]) {
      expect(resolveEndpoint({url: url!, env: {}}).password?.reveal(), url).toBe(password)
    }
  })

  it('reads a password file without its trailing newline', async () => {
    const passwordFile = join(work, 'password')
    await writeFile(passwordFile, 'file pass \n')
    const {agent, pool} = mockServer()
    const seen = interceptSystem(pool)
    await clientFor(agent, {username: 'alice', passwordFile}).system()
    // Only the newline goes: spaces can be part of a password.
    expect(seen[0]?.authorization).toBe(basic('alice:file pass '))

    await writeFile(passwordFile, 'crlf-pass\r\n')
    expect(resolveEndpoint({url: origin, env: {}, passwordFile}).password?.reveal()).toBe('crlf-pass')
    const viaEnv = resolveEndpoint({url: origin, envPrefixes: ['ORTHANC_TARGET', 'ORTHANC'], env: {ORTHANC_PASSWORD_FILE: passwordFile, ORTHANC_PASSWORD: 'ignored'}})
    expect(viaEnv.password?.reveal()).toBe('crlf-pass')
  })
})

describe('no password in what can be shown', () => {
  it('keeps a password holding / or @ out of the error for a URL that does not parse', () => {
    for (const url of ['http://admin:se/cret@orthanc:8042', 'http://u:p@ss@host:99999']) {
      let error: InvalidServerUrlError | undefined
      try {
        resolveEndpoint({url, env: {}})
      } catch (caught) {
        error = caught as InvalidServerUrlError
      }

      expect(error).toBeInstanceOf(InvalidServerUrlError)
      expect(error!.input).not.toMatch(/se\/cret|p@ss|ss@/)
    }
  })

  it('keeps the Authorization header (the password in base64) out of util.inspect', () => {
    const client = new OrthancClient(resolveEndpoint({url: 'http://admin:Tr0ub4dor@orthanc.test', env: {}}), {dispatcher: new MockAgent()})
    const shown = inspect(client, {depth: 8, showHidden: true})
    expect(shown).not.toContain(Buffer.from('admin:Tr0ub4dor').toString('base64'))
    expect(shown).not.toContain('Tr0ub4dor')
  })

  const password = 'Tr0ub4dor-and-3'

  it('keeps the endpoint printable', () => {
    const endpoint = resolveEndpoint({url: `http://admin:${password}@orthanc.test:8042/orthanc/`, env: {}})
    expect(endpoint.password?.reveal()).toBe(password)
    expect(endpoint.display).toBe('http://orthanc.test:8042/orthanc')
    for (const shown of [JSON.stringify(endpoint), inspect(endpoint, {depth: 10}), String(endpoint.password), `${endpoint.password}`]) {
      expect(shown).not.toContain(password)
    }
  })

  it('keeps the password out of an authentication error', async () => {
    const {agent, pool} = mockServer()
    pool.intercept({path: '/system', method: 'GET'}).reply(401, {Message: 'Unauthorized'})
    const error = await clientFor(agent, {url: `http://admin:${password}@orthanc.test`}).system().catch((caught: unknown) => caught)
    expect(error).toBeInstanceOf(OrthancAuthError)
    expect((error as OrthancAuthError).status).toBe(401)
    const encoded = Buffer.from(`admin:${password}`).toString('base64')
    for (const shown of [(error as Error).message, inspect(error, {depth: 10}), JSON.stringify(error)]) {
      expect(shown).not.toContain(password)
      expect(shown).not.toContain(encoded)
    }
  })

  it('a 403 before any success is about the credentials; after one, it refuses that request only', async () => {
    const {agent, pool} = mockServer()
    pool.intercept({path: '/system', method: 'GET'}).reply(403, {Message: 'Forbidden'})
    const refused = await clientFor(agent).system().catch((caught: unknown) => caught)
    expect(refused).toBeInstanceOf(OrthancAuthError)
    expect((refused as OrthancAuthError).fatal).toBe(true)

    const second = mockServer()
    interceptSystem(second.pool)
    second.pool.intercept({path: '/instances/abc/attachments/1', method: 'PUT'}).reply(403, '')
    const client = clientFor(second.agent)
    await client.system()
    const error = await client.putAttachment('abc', '1', Buffer.from('x')).catch((caught: unknown) => caught)
    expect(error).not.toBeInstanceOf(OrthancAuthError)
    expect(error).toMatchObject({status: 403, fatal: false, problemKind: 'rejected'})
  })

  it('keeps the password out of an invalid URL error', () => {
    const error = (() => {
      try {
        resolveEndpoint({url: 'ftp://u:secret@host', env: {}})
      } catch (caught) {
        return caught
      }

      return undefined
    })()
    expect(error).toBeInstanceOf(InvalidServerUrlError)
    const invalid = error as InvalidServerUrlError
    expect(invalid.message).toMatch(/unsupported scheme "ftp"/)
    for (const shown of [invalid.message, invalid.input, invalid.server, inspect(invalid), JSON.stringify(invalid)]) expect(shown).not.toContain('secret')
  })

  it('keeps the password out of the error for a URL that does not parse', () => {
    expect(() => resolveEndpoint({url: 'http://u:secret@host:99999', env: {}})).toThrow(InvalidServerUrlError)
    try {
      resolveEndpoint({url: 'http://u:secret@host:99999', env: {}})
    } catch (error) {
      expect((error as InvalidServerUrlError).input).toBe('http://host:99999')
    }
  })
})

describe('system', () => {
  it('is not fooled by a web page answering 200', async () => {
    const {agent, pool} = mockServer()
    pool.intercept({path: '/system', method: 'GET'}).reply(200, '<!doctype html><html><body>It works!</body></html>', {headers: {'content-type': 'text/html'}})
    const error = await clientFor(agent).system().catch((caught: unknown) => caught)
    expect(error).toBeInstanceOf(NotOrthancError)
    expect((error as NotOrthancError).reason).toMatch(/did not answer JSON/)
  })

  it('reports a 404 as not Orthanc, without retrying', async () => {
    const {agent, pool} = mockServer()
    pool.intercept({path: '/system', method: 'GET'}).reply(404, 'Not Found')
    const client = clientFor(agent)
    const error = await client.system().catch((caught: unknown) => caught)
    expect(error).toBeInstanceOf(NotOrthancError)
    expect((error as NotOrthancError).reason).toMatch(/404/)
    expect(client.http.stats.requests).toBe(1)
  })

  it('wants Version and ApiVersion in the JSON', async () => {
    const {agent, pool} = mockServer()
    pool.intercept({path: '/system', method: 'GET'}).reply(200, {status: 'ok', Version: '1.12.4'})
    const error = await clientFor(agent).system().catch((caught: unknown) => caught)
    expect(error).toBeInstanceOf(NotOrthancError)
    expect((error as NotOrthancError).reason).toMatch(/no Version and ApiVersion/)
  })

  it('asks once and remembers the answer', async () => {
    const {agent, pool} = mockServer()
    interceptSystem(pool, '1.12.4')
    const client = clientFor(agent)
    expect((await client.system()).Version).toBe('1.12.4')
    expect((await client.features()).labels).toBe(true)
    expect(client.http.stats.requests).toBe(1)
  })
})

describe('changesSince', () => {
  const change = (Seq: number): OrthancChange => ({ChangeType: 'NewInstance', ID: `id-${Seq}`, ResourceType: 'Instance', Seq, Date: '20240501T000000', Path: `/instances/id-${Seq}`})

  it('pages through the change log and returns the last sequence number', async () => {
    const {agent, pool} = mockServer()
    pool.intercept({path: '/changes?since=0&limit=1000', method: 'GET'}).reply(200, {Changes: [1, 2, 3].map(change), Done: false, Last: 3})
    pool.intercept({path: '/changes?since=3&limit=1000', method: 'GET'}).reply(200, {Changes: [5, 8].map(change), Done: false, Last: 8})
    pool.intercept({path: '/changes?since=8&limit=1000', method: 'GET'}).reply(200, {Changes: [9].map(change), Done: true, Last: 9})
    const changes = clientFor(agent).changesSince(0)
    const seen: number[] = []
    let step = await changes.next()
    while (!step.done) {
      seen.push(step.value.Seq)
      step = await changes.next()
    }

    expect(seen).toEqual([1, 2, 3, 5, 8, 9])
    expect(step.value).toBe(9)
    agent.assertNoPendingInterceptors()
  })

  it('returns the cursor it started from when nothing changed', async () => {
    const {agent, pool} = mockServer()
    pool.intercept({path: '/changes?since=42&limit=1000', method: 'GET'}).reply(200, {Changes: [], Done: true, Last: 42})
    const changes = clientFor(agent).changesSince(42)
    const step = await changes.next()
    expect(step).toEqual({done: true, value: 42})
  })

  it('a log that says more follow without moving past the cursor, or gives no sequence number, is an error, not a loop', async () => {
    const {agent, pool} = mockServer()
    pool.intercept({path: '/changes?since=0&limit=1000', method: 'GET'}).reply(200, {Changes: [change(1)], Done: false, Last: 0}).persist()
    const stuck = clientFor(agent).changesSince(0)
    await stuck.next()
    await expect(stuck.next()).rejects.toThrow(/GET \/changes\?since=0&limit=1000 on http:\/\/orthanc\.test: HTTP 200 \(the change log says more follow, but does not move past 0: not an answer Orthanc gives\)/)
    pool.intercept({path: '/changes?since=5&limit=1000', method: 'GET'}).reply(200, {Changes: [change(6)], Done: true, Last: '6'})
    await expect(clientFor(agent).changesSince(5).next()).rejects.toThrow(/Last: a text of 1 character\(s\) is not a count: not an answer Orthanc gives/)
    pool.intercept({path: '/changes?last', method: 'GET'}).reply(200, {Changes: [], Done: true, Last: Number.NaN})
    await expect(clientFor(agent).lastChange()).rejects.toThrow(/changes\?last .*\(Last: null is not a count/)
  })
})

describe('storedFileInfo', () => {
  const md5 = '0123456789abcdef0123456789abcdef'

  it('uses the per-field routes on Orthanc 1.9', async () => {
    const {agent, pool} = mockServer()
    interceptSystem(pool, '1.9.7')
    pool.intercept({path: '/instances/abc/attachments/dicom/md5', method: 'GET'}).reply(200, `${md5}\n`)
    pool.intercept({path: '/instances/abc/attachments/dicom/size', method: 'GET'}).reply(200, '1234')
    pool.intercept({path: '/instances/abc/attachments/dicom/is-compressed', method: 'GET'}).reply(200, '1')
    const client = clientFor(agent)
    expect(await client.storedFileInfo('abc')).toEqual({size: 1234, md5, compressed: true})
    agent.assertNoPendingInterceptors()
  })

  it('says nothing for an instance a 1.9 server does not have', async () => {
    const {agent, pool} = mockServer()
    interceptSystem(pool, '1.9.7')
    for (const field of ['md5', 'size', 'is-compressed']) pool.intercept({path: `/instances/gone/attachments/dicom/${field}`, method: 'GET'}).reply(404, {Message: 'Unknown resource'})
    expect(await clientFor(agent).storedFileInfo('gone')).toBeUndefined()
  })

  it('uses /info on Orthanc 1.10', async () => {
    const {agent, pool} = mockServer()
    interceptSystem(pool, '1.10.1')
    pool.intercept({path: '/instances/abc/attachments/dicom/info', method: 'GET'})
      .reply(200, {Uuid: 'u', ContentType: 1, UncompressedSize: 1234, CompressedSize: 1234, UncompressedMD5: md5, CompressedMD5: md5})
    pool.intercept({path: '/instances/zip/attachments/dicom/info', method: 'GET'})
      .reply(200, {Uuid: 'v', ContentType: 1, UncompressedSize: 1234, CompressedSize: 321, UncompressedMD5: md5, CompressedMD5: 'f'.repeat(32)})
    const client = clientFor(agent)
    expect(await client.storedFileInfo('abc')).toEqual({size: 1234, md5, compressed: false})
    expect(await client.storedFileInfo('zip')).toEqual({size: 1234, md5, compressed: true})
    expect(client.http.stats.requests).toBe(3)
    agent.assertNoPendingInterceptors()
  })
})

describe('uploadInstance', () => {
  const answer = (Status: string) => ({ID: 'abc', Path: '/instances/abc', ParentPatient: 'p', ParentStudy: 's', ParentSeries: 'r', Status})

  it('throws UploadRejectedError when Orthanc filters the instance out', async () => {
    const {agent, pool} = mockServer()
    pool.intercept({path: '/instances', method: 'POST'}).reply(200, answer('FilteredOut'))
    const error = await clientFor(agent).uploadInstance(Buffer.from('DICM')).catch((caught: unknown) => caught)
    expect(error).toBeInstanceOf(UploadRejectedError)
    expect((error as UploadRejectedError).status).toBe('FilteredOut')
  })

  it('accepts AlreadyStored', async () => {
    const {agent, pool} = mockServer()
    pool.intercept({path: '/instances', method: 'POST'}).reply(200, answer('AlreadyStored'))
    expect((await clientFor(agent).uploadInstance(Buffer.from('DICM'))).Status).toBe('AlreadyStored')
  })

  it('retries an upload that Orthanc 1.10 failed while creating a storage folder, and no other 500', async () => {
    // Orthanc 1.10.1's answer when two uploads create the same storage subdirectory at once (seen in this project's bench).
    const storageRace = {HttpError: 'Internal Server Error', HttpStatus: 500, Message: 'Unable to create a subdirectory or a file in the file storage', OrthancStatus: 2001}
    const {agent, pool} = mockServer()
    pool.intercept({path: '/instances', method: 'POST'}).reply(500, storageRace)
    pool.intercept({path: '/instances', method: 'POST'}).reply(200, answer('Success'))
    const client = clientFor(agent)
    expect((await client.uploadInstance(Buffer.from('DICM-bytes'))).Status).toBe('Success')
    // A race inside Orthanc, not a sign of load: adaptive concurrency does not back off for it.
    expect(client.http.stats).toMatchObject({requests: 2, retries: 1, congestion: 0})

    const other = mockServer()
    other.pool.intercept({path: '/instances', method: 'POST'}).reply(500, {HttpStatus: 500, Message: 'Internal error', OrthancStatus: -1})
    const refused = clientFor(other.agent)
    await expect(refused.uploadInstance(Buffer.from('DICM-bytes'))).rejects.toMatchObject({status: 500, orthancStatus: -1})
    expect(refused.http.stats.retries).toBe(0)
  })

  it('retries after a 429 with Retry-After: 0', async () => {
    const {agent, pool} = mockServer()
    const bodies: string[] = []
    // The matcher is also asked about interceptors that do not end up answering: count the distinct bodies.
    const recordBody = (body: string | Buffer) => {
      bodies.push(String(body))
      return true
    }
    pool.intercept({path: '/instances', method: 'POST', body: recordBody}).reply(429, 'slow down', {headers: {'retry-after': '0'}})
    pool.intercept({path: '/instances', method: 'POST', body: recordBody}).reply(200, answer('Success'))
    const client = clientFor(agent)
    expect((await client.uploadInstance(Buffer.from('DICM-bytes'))).Status).toBe('Success')
    expect(client.http.stats).toMatchObject({requests: 2, retries: 1, congestion: 1})
    expect(bodies.length).toBeGreaterThanOrEqual(2)
    expect(new Set(bodies)).toEqual(new Set(['DICM-bytes']))
  })
})

describe('congestion, as adaptive concurrency reads it', () => {
  it('counts 503s, 502s and resets, retried or not, and no refusal', async () => {
    const {agent, pool} = mockServer()
    pool.intercept({path: '/a', method: 'GET'}).reply(503, 'busy')
    pool.intercept({path: '/a', method: 'GET'}).reply(502, 'bad gateway')
    pool.intercept({path: '/a', method: 'GET'}).reply(200, 'ok')
    pool.intercept({path: '/b', method: 'GET'}).replyWithError(Object.assign(new Error('reset'), {code: 'ECONNRESET'}))
    pool.intercept({path: '/b', method: 'GET'}).reply(200, 'ok')
    pool.intercept({path: '/c', method: 'GET'}).reply(404, 'no')
    pool.intercept({path: '/d', method: 'GET'}).reply(400, 'bad')
    const client = clientFor(agent)
    expect(await client.http.text('GET', '/a')).toBe('ok')
    expect(client.http.stats.congestion).toBe(2)
    expect(await client.http.text('GET', '/b')).toBe('ok')
    expect(client.http.stats.congestion).toBe(3)
    await expect(client.http.text('GET', '/c')).rejects.toMatchObject({status: 404})
    await expect(client.http.text('GET', '/d')).rejects.toMatchObject({status: 400})
    expect(client.http.stats.congestion).toBe(3)
  })
})

describe('instanceLabels', () => {
  it('asks nothing of a server older than 1.12, which has no labels', async () => {
    const {agent, pool} = mockServer()
    interceptSystem(pool, '1.10.1')
    const client = clientFor(agent)
    expect(await client.instanceLabels('abc')).toEqual([])
    expect(client.http.stats.requests).toBe(1)
  })

  it('reads the labels on 1.12.0', async () => {
    const {agent, pool} = mockServer()
    interceptSystem(pool, '1.12.0')
    pool.intercept({path: '/instances/abc/labels', method: 'GET'}).reply(200, ['reviewed', 'teaching'])
    const client = clientFor(agent)
    expect(await client.instanceLabels('abc')).toEqual(['reviewed', 'teaching'])
    agent.assertNoPendingInterceptors()
  })
})

describe('studySideData', () => {
  it('detects from the answer a server that ignores ResponseContent, falls back, and does not ask again', async () => {
    const {agent, pool} = mockServer()
    interceptSystem(pool, '1.12.4')
    let finds = 0
    // What a server without ResponseContent answers: the IDs alone.
    pool.intercept({path: '/tools/find', method: 'POST'}).reply(() => {
      finds++
      return {statusCode: 200, data: ['a', 'b']}
    }).persist()
    const client = clientFor(agent)
    expect(await client.studySideData('study', '1.2.3')).toBeUndefined()
    expect(await client.studySideData('study', '1.2.3')).toBeUndefined()
    expect(finds).toBe(1)
  })

  it('asks a server older than 1.12 nothing', async () => {
    const {agent, pool} = mockServer()
    interceptSystem(pool, '1.11.3')
    const client = clientFor(agent)
    expect(await client.studySideData('study', '1.2.3')).toBeUndefined()
    expect(client.http.stats.requests).toBe(1)
  })

  it('reads each instance\'s metadata, attachments and labels from one answer, narrowed to the study two ways', async () => {
    const {agent, pool} = mockServer()
    interceptSystem(pool, '1.12.7')
    let query: unknown
    pool.intercept({path: '/tools/find', method: 'POST'}).reply((request) => {
      query = JSON.parse(String(request.body))
      return {statusCode: 200, data: [{ID: 'a', Type: 'Instance', Metadata: {Note: 'x'}, Attachments: [{ContentType: 1, UncompressedMD5: MD5_OF_ABC, UncompressedSize: 3, CompressedMD5: MD5_OF_ABC, CompressedSize: 3}], Labels: ['l']}]}
    })
    const found = await clientFor(agent).studySideData('study', '1.2.3')
    expect(query).toEqual({Level: 'Instance', ParentStudy: 'study', Query: {StudyInstanceUID: '1.2.3'}, ResponseContent: ['Attachments', 'Metadata', 'Labels']})
    expect(found?.get('a')).toEqual({metadata: {Note: 'x'}, attachments: [{ContentType: 1, UncompressedMD5: MD5_OF_ABC, UncompressedSize: 3, CompressedMD5: MD5_OF_ABC, CompressedSize: 3}], labels: ['l']})
  })
})

describe('SideDataReader', () => {
  /** A 1.10.1 mock answering per-instance side-data requests for the given IDs, counting what is asked. */
  function sideDataServer(ids: string[], bulk: 'answers' | 'missing', bulkDelayMs = 0) {
    const {agent, pool} = mockServer()
    interceptSystem(pool, '1.10.1')
    const asked: string[] = []
    /** When each request was sent (ms since the mock was made), by request. */
    const sentAt = new Map<string, number>()
    const made = Date.now()
    const metadataOf = (id: string) => ({ReceptionDate: '20240101T000000', Reviewed: `yes-${id}`})
    const bulkReply = pool.intercept({path: '/tools/bulk-content', method: 'POST'}).reply<object>((request) => {
      const {Resources: resources, Level: level} = JSON.parse(String(request.body)) as {Resources: string[]; Level: string}
      asked.push(`POST /tools/bulk-content ${level === 'Instance' ? '' : `${level} `}${resources.join(',')}`)
      sentAt.set(`bulk ${level} ${resources.join(',')}`, Date.now() - made)
      if (bulk === 'missing') return {statusCode: 404, data: {HttpError: 'Not Found'}}
      // Study "study-X" belongs to patient "patient-X".
      const parent = (ID: string) => (level === 'Study' ? {ParentPatient: ID.replace('study', 'patient')} : {})
      return {statusCode: 200, data: resources.map((ID) => ({ID, Type: level, Metadata: metadataOf(ID), ...parent(ID)}))}
    })
    if (bulkDelayMs > 0) bulkReply.delay(bulkDelayMs)
    bulkReply.persist()
    // Every patient read asks whether it is protected from recycling: none is here.
    pool.intercept({path: /^\/patients\/[^/]+\/protected$/, method: 'GET'}).reply(200, '0').persist()
    for (const id of ids) {
      pool.intercept({path: `/instances/${id}/metadata?expand`, method: 'GET'}).reply(() => {
        asked.push(`GET metadata ${id}`)
        return {statusCode: 200, data: metadataOf(id)}
      }).persist()
      pool.intercept({path: `/instances/${id}/attachments`, method: 'GET'}).reply(() => {
        sentAt.set(`attachments ${id}`, Date.now() - made)
        return {statusCode: 200, data: ['dicom']}
      }).persist()
    }

    return {client: clientFor(agent), asked, metadataOf, pool, sentAt, made}
  }

  it('reads the metadata of a prefetched batch in one request and none per instance', async () => {
    const ids = ['a', 'b', 'c']
    const {client, asked} = sideDataServer(ids, 'answers')
    const reader = new SideDataReader(client)
    reader.prefetch(ids)
    const read = await Promise.all(ids.map((id) => reader.read(id)))
    expect(read.map((side) => side.userMetadata)).toEqual([{Reviewed: 'yes-a'}, {Reviewed: 'yes-b'}, {Reviewed: 'yes-c'}])
    expect(read[0]!.systemMetadata).toEqual({ReceptionDate: '20240101T000000'})
    expect(asked).toEqual(['POST /tools/bulk-content a,b,c'])
  })

  it('asks for an instance\'s attachment list beside its batch\'s metadata, not after it, on a server with no study-wide answer', async () => {
    // Across a link, waiting for the batch first costs the first instances a round trip.
    const ids = ['a', 'b', 'c']
    const {client, sentAt} = sideDataServer(ids, 'answers', 1000)
    const reader = new SideDataReader(client)
    // The first study's batch finds out that this 1.10.1 server has no study-wide answer.
    reader.prefetch(['a'], undefined, {id: 'study-a', uid: '1.2.3'})
    await reader.read('a')
    reader.prefetch(['b', 'c'])
    await Promise.all(['b', 'c'].map((id) => reader.read(id)))
    const bulkSent = sentAt.get('bulk Instance b,c')!
    // Both lists went out with the bulk request, well before its answer (1 s later) came back.
    for (const id of ['b', 'c']) expect(sentAt.get(`attachments ${id}`)! - bulkSent).toBeLessThan(500)
  })

  it('lets one bulk request span studies of one instance once the server is known to have no study-wide answer', async () => {
    // CR and DX archives: one instance per study. Batches of one would ask per instance.
    const ids = ['a', 'b', 'c', 'd', 'e', 'f']
    const {client, asked} = sideDataServer(ids, 'answers')
    const reader = new SideDataReader(client)
    const items = (async function* () {
      for (const id of ids) yield {id, studyId: `study-${id}`, studyInstanceUid: `1.2.${id.charCodeAt(0)}`}
    })()
    const handedOn = prefetchingSideData(items, reader)[Symbol.asyncIterator]()
    // The first study goes alone: whether the server answers per study is not known yet.
    const first = await handedOn.next()
    await reader.read(first.value!.id)
    const rest: string[] = []
    for (let next = await handedOn.next(); !next.done; next = await handedOn.next()) rest.push(next.value.id)
    const read = await Promise.all(rest.map((id) => reader.read(id)))
    expect(read.map((side) => side.userMetadata)).toEqual(rest.map((id) => ({Reviewed: `yes-${id}`})))
    expect(asked.filter((call) => !call.includes('Study') && !call.includes('Patient'))).toEqual(['GET metadata a', 'POST /tools/bulk-content b,c,d,e,f'])
  })

  it('reads the metadata of a batch\'s studies, their patients and series in three requests, not four per study', async () => {
    const ids = ['a', 'b', 'c']
    const {client, asked, metadataOf, pool} = sideDataServer(ids, 'answers')
    const perResource = (path: string, data: object) => {
      pool.intercept({path, method: 'GET'}).reply(() => {
        asked.push(`GET ${path}`)
        return {statusCode: 200, data}
      }).persist()
    }
    for (const id of ids) {
      perResource(`/patients/patient-${id}/attachments`, [])
      perResource(`/studies/study-${id}/attachments`, [])
      perResource(`/series/series-${id}/attachments`, [])
    }
    const reader = new SideDataReader(client)
    const items = (async function* () {
      for (const id of ids) yield {id, studyId: `study-${id}`, studyInstanceUid: `1.2.${id.charCodeAt(0)}`, seriesId: `series-${id}`}
    })()
    const resources: string[][] = []
    for await (const item of prefetchingSideData(items, reader)) {
      const records = await reader.resourcesOf({studyId: item.studyId, seriesId: `series-${item.id}`})
      resources.push(records.map((record) => `${record.level} ${JSON.stringify(record.userMetadata)}`))
    }
    // The patient's and the study's user metadata come from the bulk answers.
    expect(resources[2]).toEqual(['patient', 'study', 'series'].map((level) => `${level} ${JSON.stringify({Reviewed: metadataOf(`${level}-c`).Reviewed})}`))
    const oneByOne = asked.filter((call) => /^GET \/(studies|patients|series)\/[^/]+(\/metadata|$)/.test(call))
    expect(oneByOne).toEqual([])
    expect(asked.filter((call) => /(Study|Patient|Series) /.test(call))).toHaveLength(6)
  })

  it('asks for the study\'s and series\' attachment lists beside their bulk metadata, and the patient\'s one round trip in, not after it', async () => {
    // Across a link, a study's first instance waits for all of these before its upload.
    const {client, sentAt, pool, made} = sideDataServer(['a'], 'answers', 1000)
    for (const path of ['/patients/patient-a/attachments', '/studies/study-a/attachments', '/series/series-a/attachments']) {
      pool.intercept({path, method: 'GET'}).reply(() => {
        sentAt.set(`GET ${path}`, Date.now() - made)
        return {statusCode: 200, data: []}
      }).persist()
    }
    const reader = new SideDataReader(client)
    reader.prefetchResources(['study-a'], ['series-a'])
    expect(await reader.resourcesOf({studyId: 'study-a', seriesId: 'series-a'})).toHaveLength(3)
    const afterStudyBulk = (key: string) => sentAt.get(key)! - sentAt.get('bulk Study study-a')!
    // Each bulk answer takes 1 s: the study's and the series' lists went out well before the first
    // came back, the patient's with the patient's bulk request (which needs the study's answer).
    expect(afterStudyBulk('GET /studies/study-a/attachments')).toBeLessThan(500)
    expect(afterStudyBulk('GET /series/series-a/attachments')).toBeLessThan(500)
    expect(sentAt.get('GET /patients/patient-a/attachments')! - sentAt.get('bulk Patient patient-a')!).toBeLessThan(500)
  })

  it('asks for a resource\'s metadata beside its attachment list when nothing was read ahead', async () => {
    const {client, sentAt, pool, made} = sideDataServer([], 'answers')
    const paths = ['/patients/patient-a', '/studies/study-a', '/series/series-a']
    for (const path of paths) {
      pool.intercept({path: `${path}/attachments`, method: 'GET'}).reply(() => {
        sentAt.set(`GET ${path}/attachments`, Date.now() - made)
        return {statusCode: 200, data: []}
      }).delay(1000).persist()
      pool.intercept({path: `${path}/metadata?expand`, method: 'GET'}).reply(() => {
        sentAt.set(`GET ${path}/metadata`, Date.now() - made)
        return {statusCode: 200, data: {Reviewed: 'yes'}}
      }).persist()
    }
    pool.intercept({path: '/studies/study-a', method: 'GET'}).reply(200, {ID: 'study-a', Type: 'Study', ParentPatient: 'patient-a', MainDicomTags: {}}).persist()
    const reader = new SideDataReader(client)
    expect(await reader.resourcesOf({studyId: 'study-a', seriesId: 'series-a'})).toHaveLength(3)
    // Each list takes 1 s to answer: the metadata did not wait for it.
    for (const path of paths) expect(sentAt.get(`GET ${path}/metadata`)! - sentAt.get(`GET ${path}/attachments`)!).toBeLessThan(500)
  })

  it('asks for a study and a series that span several batches once', async () => {
    const ids = Array.from({length: 250}, (_, index) => `i${index}`)
    const {client, asked, pool} = sideDataServer(ids, 'answers')
    for (const path of ['/patients/patient-big/attachments', '/studies/study-big/attachments', '/series/series-big/attachments']) pool.intercept({path, method: 'GET'}).reply(200, []).persist()
    const reader = new SideDataReader(client)
    const items = (async function* () {
      for (const id of ids) yield {id, studyId: 'study-big', studyInstanceUid: '1.2.3', seriesId: 'series-big'}
    })()
    for await (const item of prefetchingSideData(items, reader)) await reader.resourcesOf({studyId: item.studyId, seriesId: item.seriesId})
    const bulk = asked.filter((call) => call.startsWith('POST /tools/bulk-content '))
    expect(bulk.filter((call) => /(Study|Patient|Series) /.test(call)).sort()).toEqual(['POST /tools/bulk-content Patient patient-big', 'POST /tools/bulk-content Series series-big', 'POST /tools/bulk-content Study study-big'])
    // The instances' metadata: one request per batch of 100.
    expect(bulk.filter((call) => !/(Study|Patient|Series) /.test(call))).toHaveLength(3)
  })

  it('asks per instance on a server without bulk metadata, and stops trying the bulk route', async () => {
    const ids = ['a', 'b']
    const {client, asked} = sideDataServer(ids, 'missing')
    const reader = new SideDataReader(client)
    reader.prefetch(ids)
    expect((await Promise.all(ids.map((id) => reader.read(id)))).map((side) => side.userMetadata)).toEqual([{Reviewed: 'yes-a'}, {Reviewed: 'yes-b'}])
    reader.prefetch(ids)
    await Promise.all(ids.map((id) => reader.read(id)))
    expect(asked.filter((call) => call.startsWith('POST'))).toHaveLength(1)
    expect(asked.filter((call) => call.startsWith('GET metadata'))).toHaveLength(4)
  })
})

describe('backoffDelay', () => {
  const policy: RetryPolicy = {retries: 10, minDelayMs: 100, maxDelayMs: 3000}

  it('doubles the bound with each attempt and stays between half the bound and the bound', () => {
    const bounds = [100, 200, 400, 800, 1600]
    for (const [attempt, bound] of bounds.entries()) {
      expect(backoffDelay(policy, attempt, () => 0)).toBe(bound / 2)
      expect(backoffDelay(policy, attempt, () => 0.999999)).toBe(bound)
      for (let sample = 0; sample < 50; sample++) {
        const delay = backoffDelay(policy, attempt)
        expect(delay).toBeGreaterThanOrEqual(bound / 2)
        expect(delay).toBeLessThanOrEqual(bound)
      }
    }
  })

  it('caps at maxDelayMs', () => {
    expect(backoffDelay(policy, 5, () => 0.999999)).toBe(3000)
    expect(backoffDelay(policy, 40, () => 0.999999)).toBe(3000)
    expect(backoffDelay(policy, 40, () => 0)).toBe(1500)
  })
})

describe('parseRetryAfter', () => {
  const now = Date.parse('2024-05-01T12:00:00Z')

  it('reads seconds', () => {
    expect(parseRetryAfter('0', now)).toBe(0)
    expect(parseRetryAfter('120', now)).toBe(120_000)
    expect(parseRetryAfter(['3', '9'], now)).toBe(3000)
  })

  it('reads HTTP dates, never giving a negative wait', () => {
    expect(parseRetryAfter('Wed, 01 May 2024 12:00:30 GMT', now)).toBe(30_000)
    expect(parseRetryAfter(new Date(now + 90_000).toUTCString(), now)).toBe(90_000)
    expect(parseRetryAfter('Wed, 01 May 2024 11:00:00 GMT', now)).toBe(0)
  })

  it('ignores what it cannot read', () => {
    expect(parseRetryAfter(undefined, now)).toBeUndefined()
    expect(parseRetryAfter('', now)).toBeUndefined()
    expect(parseRetryAfter('soon', now)).toBeUndefined()
  })
})

describe('parseSize', () => {
  it('reads binary and decimal units, with or without a space', () => {
    expect(parseSize('4GiB')).toBe(4 * 1024 ** 3)
    expect(parseSize('700MB')).toBe(700_000_000)
    expect(parseSize('700M')).toBe(700_000_000)
    expect(parseSize('1.5 GB')).toBe(1_500_000_000)
    expect(parseSize('65536')).toBe(65_536)
    expect(parseSize('2kib')).toBe(2048)
    expect(parseSize(' 10 B ')).toBe(10)
  })

  it('refuses junk', () => {
    for (const junk of ['', 'lots', 'GB', '4 XB', '4GiBs', '-1', '1e9', '1,5GB', '0x10', '4 G i B']) expect(parseSize(junk), junk).toBeUndefined()
  })
})

describe('restoring Orthanc-side data on a target without labels', () => {
  it('reports labels as not restored on Orthanc before 1.12, and writes metadata and attachments after the upload', async () => {
    const agent = new MockAgent()
    agent.disableNetConnect()
    const pool = agent.get('http://target.test')
    const calls: string[] = []
    pool.intercept({path: '/system', method: 'GET'}).reply(200, {Name: 't', Version: '1.10.1', ApiVersion: 16})
    pool.intercept({path: '/instances', method: 'POST'}).reply(() => {
      calls.push('POST /instances')
      return {statusCode: 200, data: {ID: 'i1', Status: 'Success', Path: '', ParentPatient: 'p1', ParentStudy: 's1', ParentSeries: 'r1'}}
    })
    pool.intercept({path: '/instances/i1/metadata/Reviewed', method: 'PUT'}).reply(() => {
      calls.push('PUT metadata')
      return {statusCode: 200, data: ''}
    })
    pool.intercept({path: '/instances/i1/attachments/1030', method: 'PUT'}).reply(() => {
      calls.push('PUT attachment')
      return {statusCode: 200, data: ''}
    })
    pool.intercept({path: '/instances/i1/attachments/dicom/info', method: 'GET'}).reply(200, {UncompressedSize: 4, CompressedSize: 4, UncompressedMD5: MD5_OF_DICM, CompressedMD5: MD5_OF_DICM})
    // The run's one read-back: the target hands back what it stored.
    pool.intercept({path: '/instances/i1/attachments/dicom/data', method: 'GET'}).reply(200, Buffer.from('DICM'))
    const client = new OrthancClient(resolveEndpoint({url: 'http://target.test', env: {}}), {dispatcher: agent, retry: {retries: 0, minDelayMs: 1, maxDelayMs: 1}})
    const sink = new OrthancSink(client, {dryRun: false, uploads: 1})
    const record = {
      id: 'i1', studyId: 's', seriesId: 'se', studyInstanceUid: '1', seriesInstanceUid: '2', sopInstanceUid: '3', size: 4, md5: MD5_OF_DICM, path: 'data/dicom/s/i1.dcm',
      userMetadata: {Reviewed: 'yes'}, systemMetadata: {ReceptionDate: '20240101T000000', RemoteAET: 'X'},
      attachments: [{name: 'Report', contentType: 1030, size: 3, md5: 'x', path: 'data/attachments/i1/1030.bin'}], labels: ['teaching', 'urgent'],
    }
    const outcome = await sink.store({label: 'i1', instanceId: 'i1', dicom: Buffer.from('DICM'), md5: MD5_OF_DICM, record, attachments: new Map([[1030, Buffer.from('pdf')]])}, undefined, {knownAbsent: true})
    expect(outcome).toMatchObject({kind: 'transferred', targetMd5: MD5_OF_DICM})
    expect(calls).toEqual(['POST /instances', 'PUT metadata', 'PUT attachment'])
    expect(sink.notCarried.list()).toEqual([
      {level: 'instance', kind: 'system-metadata', count: 1, reason: expect.stringMatching(/ReceptionDate, RemoteAET/)},
      // Two labels on one instance: one instance that lost its labels.
      {level: 'instance', kind: 'labels', count: 1, reason: expect.stringMatching(/older than Orthanc 1\.12/)},
    ])
  })
})
