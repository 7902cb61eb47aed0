import {crc32} from 'node:zlib'

import {MockAgent} from 'undici'
import {describe, expect, it} from 'vitest'

import {OrthancClient} from '../../src/orthanc/client.js'
import {resolveEndpoint} from '../../src/orthanc/endpoint.js'
import {UploadRejectedError} from '../../src/orthanc/errors.js'
import {SMALL_INSTANCE_BYTES, storedZip, UploadBatcher, ZIP_BY_DEFAULT_MEAN_BYTES, ZIP_BY_DEFAULT_MIN_ANSWER_MS, ZIP_BY_DEFAULT_MIN_INSTANCES, zipUploadsFor} from '../../src/sinks/upload-batcher.js'

const origin = 'http://orthanc.test'

/** The files of a stored ZIP, read back from its central directory. */
function unzip(zip: Buffer): Buffer[] {
  const end = zip.length - 22
  expect(zip.readUInt32LE(end)).toBe(0x06054b50)
  const count = zip.readUInt16LE(end + 10)
  let at = zip.readUInt32LE(end + 16)
  const files: Buffer[] = []
  for (let index = 0; index < count; index++) {
    expect(zip.readUInt32LE(at)).toBe(0x02014b50)
    expect(zip.readUInt16LE(at + 10)).toBe(0)
    const size = zip.readUInt32LE(at + 20)
    const nameLength = zip.readUInt16LE(at + 28)
    const local = zip.readUInt32LE(at + 42)
    expect(zip.readUInt32LE(local)).toBe(0x04034b50)
    const data = zip.subarray(local + 30 + zip.readUInt16LE(local + 26), local + 30 + zip.readUInt16LE(local + 26) + size)
    expect(crc32(data) >>> 0).toBe(zip.readUInt32LE(at + 16))
    files.push(data)
    at += 46 + nameLength
  }

  return files
}

const idOf = (data: Buffer) => `id-${data.toString('latin1', 0, 8).trim()}`
const answerFor = (data: Buffer, Status = 'Success') => ({ID: idOf(data), Path: '', ParentPatient: 'patient', ParentStudy: 'study', ParentSeries: 'series', Status})
const file = (name: string, size = 100) => Buffer.concat([Buffer.from(name.padEnd(8)), Buffer.alloc(Math.max(0, size - 8), 1)])

/**
 * A mocked Orthanc that answers uploads slowly (so that others queue meanwhile), a ZIP with one
 * answer per file, and records each request: how many files it carried.
 */
function server(options: {version?: string; zipAnswer?: (files: Buffer[]) => {status: number; data: object}; delayMs?: number} = {}) {
  const agent = new MockAgent()
  agent.disableNetConnect()
  const pool = agent.get(origin)
  pool.intercept({path: '/system', method: 'GET'}).reply(200, {Name: 'MOCK', Version: options.version ?? '1.10.1', ApiVersion: 16}).persist()
  const requests: string[][] = []
  /** When each request was sent, in ms since the server was made. */
  const sentAt: number[] = []
  const made = Date.now()
  pool.intercept({path: '/instances', method: 'POST'}).reply<object>((request) => {
    sentAt.push(Date.now() - made)
    const body = Buffer.from(request.body as Buffer)
    const zipped = String((request.headers as Record<string, string>)['content-type']) === 'application/zip'
    const files = zipped ? unzip(body) : [body]
    requests.push(files.map(idOf))
    if (!zipped) return {statusCode: 200, data: answerFor(body, body.includes('refuse') ? 'FilteredOut' : 'Success')}
    if (!options.zipAnswer) return {statusCode: 200, data: files.map((data) => answerFor(data, data.includes('refuse') ? 'FilteredOut' : 'Success'))}
    const {status, data} = options.zipAnswer(files)
    return {statusCode: status, data}
  }).delay(options.delayMs ?? 20).persist()
  const client = new OrthancClient(resolveEndpoint({url: origin, env: {}}), {dispatcher: agent, retry: {retries: 0, minDelayMs: 1, maxDelayMs: 1}})
  return {client, requests, sentAt}
}

/**
 * Uploads `names` at once (files of `size` bytes) and checks that each went alone and all at the
 * same moment: none waited for another's answer (the target answers in 200 ms) as small instances
 * waiting for a ZIP do.
 */
async function expectEachAloneAtOnce(batcher: UploadBatcher, target: {requests: string[][]; sentAt: number[]}, names: string[], size?: number): Promise<void> {
  const started = target.requests.length
  await Promise.all(names.map((name) => batcher.upload(file(name, size))))
  expect(target.requests.slice(started)).toEqual(names.map((name) => [`id-${name}`]))
  const sent = target.sentAt.slice(started)
  // All sent before the first answer (the target takes 200 ms): one after another would be 200 ms apart.
  expect(Math.max(...sent) - Math.min(...sent)).toBeLessThan(150)
}

describe('UploadBatcher', () => {
  it('sends what waits while the target is busy in one ZIP, and gives each instance its own answer', async () => {
    const {client, requests} = server()
    const batcher = new UploadBatcher(client, 1, true)
    const names = ['a', 'b', 'c', 'd', 'e']
    const answers = await Promise.all(names.map((name) => batcher.upload(file(name))))
    expect(answers.map((answer) => answer.ID)).toEqual(names.map((name) => `id-${name}`))
    // The first found the target idle and went alone; the others waited for it, together.
    expect(requests).toEqual([['id-a'], ['id-b', 'id-c', 'id-d', 'id-e']])
    expect(batcher.zipped).toEqual({requests: 1, instances: 4, refusedAsTooLarge: 0})
  })

  it('keeps large instances out of ZIPs, and sends nothing zipped without being asked to', async () => {
    const {client, requests} = server()
    const batcher = new UploadBatcher(client, 1, true)
    await Promise.all([batcher.upload(file('a')), batcher.upload(file('large', SMALL_INSTANCE_BYTES + 1)), batcher.upload(file('b')), batcher.upload(file('c'))])
    expect(requests).toEqual([['id-a'], ['id-large'], ['id-b', 'id-c']])

    const plain = server()
    const unzipped = new UploadBatcher(plain.client, 1, false)
    await Promise.all(['a', 'b', 'c'].map((name) => unzipped.upload(file(name))))
    expect(plain.requests).toEqual([['id-a'], ['id-b'], ['id-c']])
  })

  it('keeps small instances to a few requests when many slots are open, so that they share them', async () => {
    // The adaptive concurrency opens up to 32 slots, and the engine keeps 8 instances in flight
    // per slot: as each instance's upload is answered, the next one comes ready.
    const {client, requests} = server()
    const batcher = new UploadBatcher(client, 32, true)
    let next = 0
    const worker = async () => {
      while (next < 1024) await batcher.upload(file(`s${next++}`))
    }
    await Promise.all(Array.from({length: 256}, worker))
    expect(requests.flat()).toHaveLength(1024)
    // 4 requests at once (32 slots / 8), each carrying what waited for it. With all 32 slots
    // open to them, ZIPs carried a few instances each.
    expect(requests.length).toBeLessThanOrEqual(40)
  })

  it('sends a large instance at once while the small ones\' requests are all under way', async () => {
    const {client, requests} = server()
    const batcher = new UploadBatcher(client, 8, true)
    const first = batcher.upload(file('a'))
    const waiting = batcher.upload(file('b'))
    const large = batcher.upload(file('large', SMALL_INSTANCE_BYTES + 1))
    expect((await large).ID).toBe('id-large')
    await Promise.all([first, waiting])
    // 8 slots give small instances one request at a time: b waited for a, the large one did not.
    expect(requests).toEqual([['id-a'], ['id-large'], ['id-b']])
  })

  it('rejects only the instance the target refused inside a ZIP', async () => {
    const {client} = server()
    const batcher = new UploadBatcher(client, 1, true)
    const results = await Promise.allSettled(['a', 'b', 'refuse', 'c'].map((name) => batcher.upload(file(name))))
    expect(results.map((result) => result.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled'])
    expect((results[2] as PromiseRejectedResult).reason).toBeInstanceOf(UploadRejectedError)
  })

  it('sends the files one by one when the ZIP\'s answer does not account for every file, or is refused', async () => {
    for (const zipAnswer of [
      (files: Buffer[]) => ({status: 200, data: files.slice(1).map((data) => answerFor(data))}),
      () => ({status: 400, data: {Message: 'Bad file format'}}),
    ]) {
      const {client, requests} = server({zipAnswer})
      const batcher = new UploadBatcher(client, 1, true)
      const answers = await Promise.all(['a', 'b', 'c'].map((name) => batcher.upload(file(name))))
      expect(answers.map((answer) => answer.ID)).toEqual(['id-a', 'id-b', 'id-c'])
      expect(requests).toEqual([['id-a'], ['id-b', 'id-c'], ['id-b'], ['id-c']])
      expect(batcher.zipped.requests).toBe(0)
    }
  })

  it('fails the waiting uploads, and leaves none hanging, when the target cannot even say what it is', async () => {
    const agent = new MockAgent()
    agent.disableNetConnect()
    agent.get(origin).intercept({path: '/system', method: 'GET'}).reply(503, 'down').persist()
    agent.get(origin).intercept({path: '/instances', method: 'POST'}).reply(200, answerFor(file('a'))).delay(20).persist()
    const client = new OrthancClient(resolveEndpoint({url: origin, env: {}}), {dispatcher: agent, retry: {retries: 0, minDelayMs: 1, maxDelayMs: 1}})
    const batcher = new UploadBatcher(client, 1, true)
    const results = await Promise.allSettled(['a', 'b', 'c'].map((name) => batcher.upload(file(name))))
    expect(results.map((result) => result.status)).toEqual(['fulfilled', 'rejected', 'rejected'])
  })

  it('gives small instances every slot again once the target turns out to take no ZIP', async () => {
    const target = server({version: '1.8.1', delayMs: 200})
    const batcher = new UploadBatcher(target.client, 8, true)
    // Three at once: the first goes alone, the other two wait for it, and their batch finds out
    // that ZIPs are not taken (each is then sent alone).
    await Promise.all(['a', 'b', 'c'].map((name) => batcher.upload(file(name))))
    await new Promise((resolve) => setTimeout(resolve, 20))
    await expectEachAloneAtOnce(batcher, target, ['d', 'e', 'f', 'g', 'h', 'i', 'j', 'k'])
  })

  /** A proxy before the target that refuses a request body larger than `limit` bytes (nginx: client_max_body_size), counting its refusals. */
  const bodyLimit = (limit: number) => {
    const refusals: number[] = []
    const zipAnswer = (files: Buffer[]) => {
      const bytes = storedZip(files).length
      if (bytes <= limit) return {status: 200, data: files.map((data) => answerFor(data))}
      refusals.push(bytes)
      return {status: 413, data: {Message: 'Request Entity Too Large'}}
    }
    return {refusals, zipAnswer}
  }
  /** `count` files of 1,000 bytes, uploaded at once: the first finds the target idle, the rest wait and go together. */
  const wave = (batcher: UploadBatcher, prefix: string, count: number) =>
    Promise.all(Array.from({length: count}, (_, index) => batcher.upload(file(`${prefix}${index}`, 1000))))

  it('makes ZIPs smaller when one is refused as too large (HTTP 413, a proxy\'s body limit): a refusal per halving, not per ZIP', async () => {
    const limit = bodyLimit(20_000)
    const {client, requests} = server({zipAnswer: limit.zipAnswer})
    const batcher = new UploadBatcher(client, 1, true)
    for (const prefix of ['a', 'b', 'c', 'd']) {
      const answers = await wave(batcher, prefix, 61)
      expect(answers.map((answer) => answer.ID)).toEqual(Array.from({length: 61}, (_, index) => `id-${prefix}${index}`))
    }

    // 60 files of a wave in one ZIP make about 65 kB: refused, then about 32 kB: refused, then ZIPs under 16 kB pass.
    expect(limit.refusals).toHaveLength(2)
    expect(batcher.zipped.refusedAsTooLarge).toBe(2)
    // Every file of these waves has 1,000 bytes: a ZIP's size follows from its count.
    let lastRefused = -1
    for (const [index, files] of requests.entries()) if (files.length > 1 && storedZip(files.map(() => Buffer.alloc(1000))).length > 20_000) lastRefused = index
    const after = requests.slice(lastRefused + 1)
    expect(after.filter((files) => files.length > 1).length).toBeGreaterThan(4)
    expect(batcher.zipped.requests).toBe(after.filter((files) => files.length > 1).length)
  })

  it('starts the next job with the same target (a sync --follow pass) under the size it learned was refused', async () => {
    const limit = bodyLimit(20_000)
    const {client, requests} = server({zipAnswer: limit.zipAnswer})
    for (const prefix of ['a', 'b']) await wave(new UploadBatcher(client, 1, true), prefix, 61)
    expect(limit.refusals).toHaveLength(2)
    const next = new UploadBatcher(client, 1, true)
    const started = requests.length
    await wave(next, 'c', 61)
    expect(limit.refusals).toHaveLength(2)
    expect(next.zipped.refusedAsTooLarge).toBe(0)
    expect(next.zipped.requests).toBe(requests.slice(started).filter((files) => files.length > 1).length)
    expect(next.zipped.requests).toBeGreaterThan(2)
  })

  it('stops making ZIPs when even small ones are refused as too large, and gives small instances every slot again', async () => {
    const limit = bodyLimit(0)
    const target = server({zipAnswer: limit.zipAnswer, delayMs: 200})
    const batcher = new UploadBatcher(target.client, 8, true)
    await wave(batcher, 'a', 61)
    await wave(batcher, 'b', 61)
    // Halved from about 65 kB to below 16 KiB: two or three refusals, then no more ZIPs.
    expect(limit.refusals.length).toBeGreaterThanOrEqual(2)
    expect(limit.refusals.length).toBeLessThanOrEqual(3)
    await expectEachAloneAtOnce(batcher, target, ['c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'])
    expect(batcher.zipped).toEqual({requests: 0, instances: 0, refusedAsTooLarge: limit.refusals.length})
  })

  it('stops making ZIPs once those let through cannot hold two of its instances, rather than send each alone in few requests', async () => {
    const limit = bodyLimit(20_000)
    const target = server({zipAnswer: limit.zipAnswer, delayMs: 200})
    const batcher = new UploadBatcher(target.client, 8, true)
    // Instances of 12 kB, a wave of 61 at a time: a ZIP of the 60 that wait (about 725 kB) is
    // refused, then one of 30, 15, 7 and 3; under half of that, about 18 kB, two no longer fit.
    for (const prefix of ['a', 'b', 'c', 'd', 'e']) {
      await Promise.all(Array.from({length: 61}, (_, index) => batcher.upload(file(`${prefix}${index}`, 12_000))))
    }

    expect(limit.refusals).toHaveLength(5)
    await expectEachAloneAtOnce(batcher, target, ['g', 'h', 'i', 'j', 'k', 'l', 'm', 'n'], 12_000)
  })

  it('sends no ZIP to a target older than Orthanc 1.8.2', async () => {
    const {client, requests} = server({version: '1.8.1'})
    const batcher = new UploadBatcher(client, 1, true)
    await Promise.all(['a', 'b', 'c'].map((name) => batcher.upload(file(name))))
    expect(requests).toEqual([['id-a'], ['id-b'], ['id-c']])
  })
})

describe('storedZip', () => {
  it('holds every file unchanged, in order, with its CRC-32', () => {
    const files = [Buffer.from('first'), Buffer.alloc(0), Buffer.alloc(70_000, 7)]
    expect(unzip(storedZip(files))).toEqual(files)
  })
})

describe('zipUploadsFor', () => {
  const many = ZIP_BY_DEFAULT_MIN_INSTANCES
  const far = ZIP_BY_DEFAULT_MIN_ANSWER_MS
  const answering = (ms: number | undefined) => async () => ms
  it('batches a job of many small instances for a target far enough away, and nothing else', async () => {
    expect(await zipUploadsFor(undefined, {instances: many, bytes: many * ZIP_BY_DEFAULT_MEAN_BYTES}, answering(far))).toBe(true)
    expect(await zipUploadsFor(undefined, {instances: 10 * many, bytes: 10 * many * 4096}, answering(40))).toBe(true)
    // Larger on average: more in flight per upload costs more than the requests it saves.
    expect(await zipUploadsFor(undefined, {instances: many, bytes: many * ZIP_BY_DEFAULT_MEAN_BYTES + 1}, answering(40))).toBe(false)
    // Too few to share requests.
    expect(await zipUploadsFor(undefined, {instances: many - 1, bytes: 4096}, answering(40))).toBe(false)
    expect(await zipUploadsFor(undefined, {instances: 0, bytes: 0}, answering(40))).toBe(false)
    // Nothing known of the job beforehand (a stream, a stopped server's storage).
    expect(await zipUploadsFor(undefined, undefined, answering(40))).toBe(false)
    // A target close by (or not heard from): one request per instance costs little there.
    expect(await zipUploadsFor(undefined, {instances: 10 * many, bytes: 10 * many * 4096}, answering(far - 0.1))).toBe(false)
    expect(await zipUploadsFor(undefined, {instances: 10 * many, bytes: 10 * many * 4096}, answering(undefined))).toBe(false)
  })

  it('measures the distance only for a job that could use ZIPs, and does what the user asked', async () => {
    const unasked = async () => {
      throw new Error('the distance was measured')
    }
    expect(await zipUploadsFor(undefined, {instances: 1, bytes: 100}, unasked)).toBe(false)
    expect(await zipUploadsFor(true, undefined, unasked)).toBe(true)
    expect(await zipUploadsFor(true, {instances: 1, bytes: 10_000_000}, unasked)).toBe(true)
    expect(await zipUploadsFor(false, {instances: 10 * many, bytes: 10 * many * 4096}, unasked)).toBe(false)
  })
})
