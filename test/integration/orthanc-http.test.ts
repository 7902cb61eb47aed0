import {execFileSync} from 'node:child_process'
import {Readable} from 'node:stream'
import {fileURLToPath} from 'node:url'

import {MockAgent, Pool} from 'undici'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {resolveEndpoint} from '../../src/orthanc/endpoint.js'
import {OrthancAuthError, OrthancConnectionError, OrthancHttpError} from '../../src/orthanc/errors.js'
import {OrthancHttp} from '../../src/orthanc/http.js'
import {OrthancClient} from '../../src/orthanc/client.js'
import {loadPool} from '../../src/orthanc/undici-pool.js'
import {startOrthanc, type OrthancServer} from '../helpers/orthanc.js'

const fastRetry = {retries: 3, minDelayMs: 1, maxDelayMs: 5}

describe('connection reuse against a real Orthanc', () => {
  let server: OrthancServer
  beforeAll(async () => {
    server = await startOrthanc({users: {alice: 'wonder-land'}})
  })
  afterAll(async () => server?.dispose())

  it('opens a handful of connections for 100 sequential requests, despite Keep-Alive: timeout=1', async () => {
    const client = new OrthancClient(resolveEndpoint({url: server.authUrl}))
    try {
      for (let index = 0; index < 100; index++) await client.http.json('GET', '/system')
      expect(client.http.stats.requests).toBe(100)
      expect(client.http.stats.connectionsOpened).toBeLessThanOrEqual(3)
    } finally {
      await client.close()
    }
  })

  it('(control) undici with its default keep-alive threshold opens one connection per request', async () => {
    // This is the behaviour the client's pool settings exist to avoid; if Orthanc or undici
    // change it, the test above no longer proves anything and this one says so.
    const pool = new Pool(server.url)
    let opened = 0
    pool.on('connect', () => opened++)
    const authorization = `Basic ${Buffer.from('alice:wonder-land').toString('base64')}`
    for (let index = 0; index < 20; index++) {
      const response = await pool.request({path: '/system', method: 'GET', headers: {authorization}})
      await response.body.dump()
    }

    await pool.close()
    expect(opened).toBeGreaterThanOrEqual(15)
  })
})

describe('loading undici', () => {
  it('takes its pool and request API alone, not fetch, WebSocket or the mocks', () => {
    const {Pool: SlimPool, slim} = loadPool()
    expect(slim).toBe(true)
    expect(typeof SlimPool.prototype.request).toBe('function')
    expect(typeof SlimPool.prototype.dispatch).toBe('function')
    // In a fresh process, as the CLI starts: which of undici's files did loading the HTTP client pull in?
    const built = fileURLToPath(new URL('../../dist/src/orthanc/http.js', import.meta.url))
    const loaded = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e',
      `import(${JSON.stringify(built)}).then(async () => { const {createRequire} = await import('node:module'); console.log(JSON.stringify(Object.keys(createRequire(${JSON.stringify(built)}).cache))) })`,
    ], {encoding: 'utf8'})) as string[]
    const undiciFiles = loaded.filter((file) => file.includes('/node_modules/undici/'))
    expect(undiciFiles.some((file) => file.endsWith('/lib/dispatcher/pool.js'))).toBe(true)
    expect(undiciFiles.filter((file) => /\/lib\/(web|mock)\/|\/undici\/index\.js$/.test(file))).toEqual([])
  })
})

describe('retries', () => {
  const origin = 'http://orthanc.test'
  const endpoint = resolveEndpoint({url: origin})

  function mockServer() {
    const agent = new MockAgent()
    agent.disableNetConnect()
    return {agent, pool: agent.get(origin)}
  }

  it('retries idempotent requests on 503 and 429, then succeeds', async () => {
    const {agent, pool} = mockServer()
    pool.intercept({path: '/statistics', method: 'GET'}).reply(503, 'busy')
    pool.intercept({path: '/statistics', method: 'GET'}).reply(429, 'slow down', {headers: {'retry-after': '0'}})
    pool.intercept({path: '/statistics', method: 'GET'}).reply(200, {CountInstances: 7})
    const http = new OrthancHttp(endpoint, {dispatcher: agent, retry: fastRetry})
    await expect(http.json('GET', '/statistics')).resolves.toEqual({CountInstances: 7})
    expect(http.stats.retries).toBe(2)
  })

  it('does not retry other 4xx answers', async () => {
    const {agent, pool} = mockServer()
    pool.intercept({path: '/instances/x', method: 'GET'}).reply(404, {Message: 'Unknown resource'})
    pool.intercept({path: '/system', method: 'GET'}).reply(401, '')
    const http = new OrthancHttp(endpoint, {dispatcher: agent, retry: fastRetry})
    const missing = await http.json('GET', '/instances/x').catch((error: unknown) => error)
    expect(missing).toBeInstanceOf(OrthancHttpError)
    expect((missing as OrthancHttpError).status).toBe(404)
    expect((missing as OrthancHttpError).detail).toBe('Unknown resource')
    await expect(http.json('GET', '/system')).rejects.toBeInstanceOf(OrthancAuthError)
    expect(http.stats.retries).toBe(0)
  })

  it('gives up after the configured number of retries', async () => {
    const {agent, pool} = mockServer()
    pool.intercept({path: '/statistics', method: 'GET'}).reply(503, '').times(4)
    const http = new OrthancHttp(endpoint, {dispatcher: agent, retry: fastRetry})
    const error = await http.json('GET', '/statistics').catch((error_: unknown) => error_)
    expect((error as OrthancHttpError).status).toBe(503)
    expect(http.stats.requests).toBe(4)
  })

  it('does not retry a non-idempotent POST', async () => {
    const {agent, pool} = mockServer()
    pool.intercept({path: '/tools/reset', method: 'POST'}).reply(503, '')
    const http = new OrthancHttp(endpoint, {dispatcher: agent, retry: fastRetry})
    await expect(http.send('POST', '/tools/reset', {body: ''})).rejects.toBeInstanceOf(OrthancHttpError)
    expect(http.stats.requests).toBe(1)
  })

  it('re-sends an instance upload from a fresh body after the connection is reset', async () => {
    const {agent, pool} = mockServer()
    pool.intercept({path: '/instances', method: 'POST'}).replyWithError(Object.assign(new Error('other side closed'), {code: 'UND_ERR_SOCKET'}))
    pool.intercept({path: '/instances', method: 'POST'}).reply(200, {ID: 'abc', Status: 'Success', Path: '', ParentPatient: 'p', ParentStudy: 's', ParentSeries: 'r'})
    const client = new OrthancClient(endpoint, {dispatcher: agent, retry: fastRetry})
    let opened = 0
    const answer = await client.uploadInstance(() => {
      opened++
      return Readable.from([Buffer.from('DICM-bytes')])
    })
    expect(answer.ID).toBe('abc')
    expect(opened).toBe(2)
    expect(client.http.stats.retries).toBe(1)
  })

  it('stops waiting for an answer when its signal is aborted, and does not retry', async () => {
    const {agent, pool} = mockServer()
    pool.intercept({path: '/statistics', method: 'GET'}).reply(200, {CountInstances: 1}).delay(10_000)
    const http = new OrthancHttp(endpoint, {dispatcher: agent, retry: fastRetry})
    const controller = new AbortController()
    const started = performance.now()
    setTimeout(() => controller.abort(new Error('stopped by the user')), 50)
    await expect(http.json('GET', '/statistics', {signal: controller.signal})).rejects.toThrow('stopped by the user')
    expect(performance.now() - started).toBeLessThan(5000)
    expect(http.stats.requests).toBe(1)
    expect(http.stats.retries).toBe(0)
  })

  it('sends nothing when its signal is already aborted', async () => {
    const {agent} = mockServer()
    const http = new OrthancHttp(endpoint, {dispatcher: agent, retry: fastRetry})
    await expect(http.bytes('GET', '/statistics', {signal: AbortSignal.abort(new Error('too late'))})).rejects.toThrow('too late')
    expect(http.stats.requests).toBe(0)
  })

  it('reports a reset that persists as a connection error naming the request', async () => {
    const {agent, pool} = mockServer()
    pool.intercept({path: '/instances', method: 'GET'}).replyWithError(Object.assign(new Error('reset'), {code: 'ECONNRESET'})).times(4)
    const http = new OrthancHttp(endpoint, {dispatcher: agent, retry: fastRetry})
    const error = await http.json('GET', '/instances').catch((error_: unknown) => error_)
    expect(error).toBeInstanceOf(OrthancConnectionError)
    expect((error as Error).message).toContain('GET /instances')
  })
})
