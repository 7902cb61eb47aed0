import {createServer, type Server, type ServerResponse} from 'node:http'
import type {AddressInfo} from 'node:net'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {OrthancClient} from '../../src/orthanc/client.js'
import {resolveEndpoint} from '../../src/orthanc/endpoint.js'
import {OrthancHttpError, OrthancTimeoutError} from '../../src/orthanc/errors.js'

const system = {Name: 'HOSTILE', Version: '1.10.1', ApiVersion: 18, DatabaseVersion: 6}

/**
 * A server that is not what it says: answers without end, a byte now and then, words that would
 * rewrite the terminal. Memory and time stay bounded, and what it says is shown as text.
 */
describe('a hostile or broken server', () => {
  let server: Server
  let url: string
  const routes = new Map<string, (response: ServerResponse) => void>()
  const timers = new Set<NodeJS.Timeout>()

  beforeAll(async () => {
    server = createServer((request, response) => {
      const route = routes.get(request.url ?? '')
      if (route) route(response)
      else {
        response.writeHead(404)
        response.end()
      }
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })
  afterAll(async () => {
    for (const timer of timers) clearInterval(timer)
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  })

  const client = (options: {bodyTimeoutMs?: number} = {}) => new OrthancClient(resolveEndpoint({url, env: {}}), {retry: {retries: 0, minDelayMs: 1, maxDelayMs: 1}, ...options})

  /** Sends `chunk` again and again until the client goes away. */
  const endless = (chunk: Buffer) => (response: ServerResponse) => {
    response.writeHead(200, {'content-type': 'application/json'})
    const pump = () => {
      while (response.write(chunk)) { /* until the socket's buffer is full */ }
    }
    response.on('drain', pump)
    response.on('close', () => response.off('drain', pump))
    pump()
  }

  it('an API answer without end fails at its limit, naming the request, instead of filling the memory', async () => {
    routes.set('/system', endless(Buffer.alloc(1024 * 1024, 0x20)))
    const before = process.memoryUsage().rss
    const error = await client().system().catch((caught: unknown) => caught)
    expect(error).toBeInstanceOf(OrthancHttpError)
    expect((error as Error).message).toMatch(/^GET \/system on http:\/\/127\.0\.0\.1:\d+: HTTP 200 \(answer larger than 268435456 bytes/)
    expect(process.memoryUsage().rss - before).toBeLessThan(600 * 1024 * 1024)
  })

  it('a download that brings more than twice the size the server gave fails there', async () => {
    routes.set('/instances/big/attachments/dicom/data', endless(Buffer.alloc(64 * 1024, 1)))
    await expect(client().downloadInstance('big', undefined, 1000)).rejects.toThrow(/answer larger than 1050576 bytes/)
  })

  it('an answer sent a byte now and then times out, though no wait between two bytes is long', async () => {
    routes.set('/system', (response) => {
      response.writeHead(200, {'content-type': 'application/json'})
      response.write('{')
      const drip = setInterval(() => response.write(' '), 20)
      timers.add(drip)
      response.on('close', () => clearInterval(drip))
    })
    const started = Date.now()
    const error = await client({bodyTimeoutMs: 300}).system().catch((caught: unknown) => caught)
    expect(error).toBeInstanceOf(OrthancTimeoutError)
    expect((error as Error).message).toMatch(/GET \/system on .*: no answer \(slow response body timeout\)/)
    expect(Date.now() - started).toBeLessThan(2000)
  })

  it('a timeout of 0 (no limit, for the library) leaves a download in several chunks alone', async () => {
    routes.set('/instances/chunked/attachments/dicom/data', (response) => {
      response.writeHead(200, {'content-type': 'application/dicom'})
      let sent = 0
      const next = setInterval(() => {
        response.write(Buffer.alloc(1000, 7))
        if (++sent === 5) {
          clearInterval(next)
          response.end()
        }
      }, 10)
      timers.add(next)
    })
    expect((await client({bodyTimeoutMs: 0}).downloadInstance('chunked')).bytes.length).toBe(5000)
  })

  it('control characters in what the server says are written out, never sent to the terminal', async () => {
    routes.set('/system', (response) => {
      response.writeHead(500, {'content-type': 'application/json'})
      response.end(JSON.stringify({Message: 'Bad\u001B[2J\u001B[31m\nFAKE: all 1000 instances verified OK', OrthancStatus: 1}))
    })
    const error = (await client().system().catch((caught: unknown) => caught)) as Error
    expect(error.message).toContain('Bad\\x1b[2J\\x1b[31m\\x0aFAKE')
    // eslint-disable-next-line no-control-regex -- what must not be there
    expect(error.message).not.toMatch(/[\u0000-\u001F]/)

    routes.set('/system', (response) => {
      response.writeHead(200, {'content-type': 'application/json'})
      response.end(JSON.stringify({...system, Name: 'PACS\u001B]0;owned\u0007', Version: '1.10.1\r\nFAKE'}))
    })
    expect(await client().system()).toMatchObject({Name: 'PACS\\x1b]0;owned\\x07', Version: '1.10.1\\x0d\\x0aFAKE'})
  })
})
