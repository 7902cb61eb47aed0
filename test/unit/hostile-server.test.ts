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

  /** Sends `start`, then `chunk` again and again until the client goes away. */
  const endless = (chunk: Buffer, start = '') => (response: ServerResponse) => {
    response.writeHead(200, {'content-type': 'application/json'})
    response.write(start)
    const pump = () => {
      while (response.write(chunk)) { /* until the socket's buffer is full */ }
    }
    response.on('drain', pump)
    response.on('close', () => response.off('drain', pump))
    pump()
  }

  /** Sends `start`, then a byte every 20 ms until the client goes away. */
  const dripping = (start: string) => (response: ServerResponse) => {
    response.writeHead(200, {'content-type': 'application/json'})
    response.write(start)
    const drip = setInterval(() => response.write(' '), 20)
    timers.add(drip)
    response.on('close', () => clearInterval(drip))
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
    routes.set('/system', dripping('{'))
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

  /** Collects what a streamed list yields, and how it ended. */
  const drain = async (list: AsyncGenerator<unknown>) => {
    let count = 0
    try {
      for await (const _ of list) count++
      return {count}
    } catch (error) {
      return {count, error: error as Error}
    }
  }

  it('a streamed list without end stops at the server\'s own count, asked once the list is long', async () => {
    routes.set('/statistics', (response) => {
      response.writeHead(200, {'content-type': 'application/json'})
      response.end(JSON.stringify({CountPatients: 1, CountStudies: 1, CountSeries: 1, CountInstances: 20_000}))
    })
    routes.set('/instances', endless(Buffer.from('"0123abcd-0123abcd-0123abcd-0123abcd-0123abcd",'.repeat(1000)), '['))
    const before = process.memoryUsage().rss
    const {count, error} = await drain(client().listInstanceIds())
    // At least 100,000 before asking; then twice the count and 10,000 more.
    expect(count).toBe(100_000)
    expect(error).toBeInstanceOf(OrthancHttpError)
    expect(error!.message).toMatch(/^GET \/instances on http:\/\/127\.0\.0\.1:\d+: HTTP 200 \(more than 100000 entries, far more than the server's own count: not an answer Orthanc gives\)/)
    expect(process.memoryUsage().rss - before).toBeLessThan(200 * 1024 * 1024)
  })

  it('one entry of a streamed list without end fails at the entry limit', async () => {
    routes.set('/studies?expand', endless(Buffer.alloc(64 * 1024, 0x61), '[{"ID":"'))
    const {count, error} = await drain(client().listStudies())
    expect(count).toBe(0)
    expect(error!.message).toMatch(/GET \/studies\?expand on .*: HTTP 200 \(an entry larger than 8388608 bytes/)
  })

  it('a streamed list sent a byte now and then times out, though no wait between two bytes is long', async () => {
    routes.set('/instances', dripping('['))
    const started = Date.now()
    const {error} = await drain(client({bodyTimeoutMs: 300}).listInstanceIds())
    expect(error).toBeInstanceOf(OrthancTimeoutError)
    expect(error!.message).toMatch(/GET \/instances on .*: no answer \(slow response body timeout\)/)
    expect(Date.now() - started).toBeLessThan(2000)
  })

  it('a streamed list read slowly by the tool itself is not taken for a slow server', async () => {
    routes.set('/instances', (response) => {
      response.writeHead(200, {'content-type': 'application/json'})
      response.end(JSON.stringify(Array.from({length: 3000}, (_, index) => `0123abcd-0123abcd-0123abcd-0123abcd-${String(index).padStart(8, '0')}`)))
    })
    let count = 0
    for await (const _ of client({bodyTimeoutMs: 200}).listInstanceIds()) {
      // Its reader waits (a look-up per entry, say): the server has sent all it could.
      if (++count % 500 === 0) await new Promise((resolve) => setTimeout(resolve, 300))
    }

    expect(count).toBe(3000)

    // A list longer than the socket's buffers: the server waits on the reader while it is still sending.
    const long = Buffer.from(JSON.stringify(Array.from({length: 90_000}, (_, index) => `0123abcd-0123abcd-0123abcd-0123abcd-${String(index).padStart(8, '0')}`)))
    routes.set('/instances', (response) => {
      response.writeHead(200, {'content-type': 'application/json'})
      response.end(long)
    })
    count = 0
    for await (const _ of client({bodyTimeoutMs: 200}).listInstanceIds()) {
      if (++count % 20_000 === 0) await new Promise((resolve) => setTimeout(resolve, 400))
    }

    expect(count).toBe(90_000)
  })

  it('answers of another shape fail naming the server and route; an ID that is a path is never asked for', async () => {
    const answer = (path: string, value: unknown) => routes.set(path, (response) => {
      response.writeHead(200, {'content-type': 'application/json'})
      response.end(JSON.stringify(value))
    })
    answer('/system', system)
    answer('/studies/0123abcd-0123abcd-0123abcd-0123abcd-0123abcd/instances', [{ID: '../../tools/reset', Type: 'Instance', ParentSeries: 'x', MainDicomTags: {}}])
    await expect(client().studyInstances('0123abcd-0123abcd-0123abcd-0123abcd-0123abcd')).rejects.toThrow(/instances on http:\/\/127\.0\.0\.1:\d+: HTTP 200 \(\[0\]: ID: a text of 17 character\(s\) is not an Orthanc ID: not an answer Orthanc gives\)/)
    // What stands where an ID should is never shown: it may be anything, a patient's name included.
    answer('/instances/i3', {ID: 'DOE^JANE', Type: 'Instance', ParentSeries: 'r1', MainDicomTags: {}})
    const named = (await client().instance('i3').then(() => undefined, (error: unknown) => error)) as Error
    expect(named.message).toMatch(/ID: a text of 8 character\(s\) is not an Orthanc ID/)
    expect(named.message).not.toContain('DOE')
    answer('/studies/s1', {ID: 's1', Type: 'Study', ParentPatient: 'p1', MainDicomTags: {StudyDate: 20240101}})
    await expect(client().study('s1')).rejects.toThrow(/GET \/studies\/s1 .*\(MainDicomTags: StudyDate: 20240101 is not text/)
    answer('/instances/i1/attachments/dicom/info', {UncompressedSize: '12', CompressedSize: 12, UncompressedMD5: '', CompressedMD5: ''})
    await expect(client().storedFileInfo('i1')).rejects.toThrow(/UncompressedSize: a text of 2 character\(s\) is not a count/)
    answer('/instances/i1/metadata?expand', null)
    await expect(client().instanceMetadata('i1')).rejects.toThrow(/metadata\?expand .*\(null is not an object/)
    // A server that stores no MD5s (StoreMD5ForAttachments off) answers '': that is Orthanc's.
    answer('/instances/i2/attachments/dicom/info', {UncompressedSize: 12, CompressedSize: 12, UncompressedMD5: '', CompressedMD5: ''})
    expect(await client().storedFileInfo('i2')).toEqual({size: 12, md5: '', compressed: false})
  })

  it('GET /system with a plugin of another kind than text fails naming the server; plugin text is kept printable and short', async () => {
    const answer = (value: unknown) => routes.set('/system', (response) => {
      response.writeHead(200, {'content-type': 'application/json'})
      response.end(JSON.stringify(value))
    })
    // These are recorded in an export's manifest, which its import reads as text.
    answer({...system, StorageAreaPlugin: {}})
    await expect(client().system()).rejects.toThrow(/GET \/system on http:\/\/127\.0\.0\.1:\d+: HTTP 200 \(StorageAreaPlugin: an object is not text: not an answer Orthanc gives\)/)
    answer({...system, DatabaseBackendPlugin: 2.5})
    await expect(client().system()).rejects.toThrow(/DatabaseBackendPlugin: .* is not text/)
    answer({...system, DatabaseBackendPlugin: null, StorageAreaPlugin: `lib\u001B[2J${'x'.repeat(2000)}.so`})
    const found = await client().system()
    expect(found.DatabaseBackendPlugin).toBeNull()
    expect(found.StorageAreaPlugin!.length).toBeLessThanOrEqual(1024)
    // eslint-disable-next-line no-control-regex -- what must not be there
    expect(found.StorageAreaPlugin).not.toMatch(/[\u0000-\u001F]/)
  })

  it('an error answer\'s Details, free text that may quote the request\'s data, are not shown; its Message is', async () => {
    routes.set('/system', (response) => {
      response.writeHead(400, {'content-type': 'application/json'})
      response.end(JSON.stringify({HttpError: 'Bad Request', Message: 'Bad request', Details: 'Store has failed for the following instance: PatientID=DOE123, PatientName=DOE^JANE', OrthancStatus: 8}))
    })
    const error = (await client().system().catch((caught: unknown) => caught)) as Error
    expect(error.message).toMatch(/GET \/system on .*: HTTP 400 \(Bad request\)$/)
    expect(error.message).not.toMatch(/DOE/)
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
