import {spawnSync} from 'node:child_process'
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {RECEIPT_FORMAT, readReceipt, ReceiptWriter} from '../../src/import/receipt.js'

const ID = '0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d'
const MD5 = '0123456789abcdef0123456789abcdef'
const header = {format: RECEIPT_FORMAT, version: 1, target: {server: 'http://127.0.0.1:1', name: 't', version: '1.10.1'}, createdAt: new Date(0).toISOString(), groups: [], hops: []}

/** A receipt comes back across the gap from the far side: read as untrusted, in bounded time and memory. */
describe('reading a receipt', () => {
  let work: string
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'receipt-read-'))
  })
  afterAll(async () => {
    await rm(work, {recursive: true, force: true})
  })

  it('reads what import writes: arrived instances with their MD5s, failed ones left out', async () => {
    const path = join(work, 'written.jsonl')
    const receipt = await ReceiptWriter.create(path, {format: RECEIPT_FORMAT, version: 1, target: header.target, createdAt: header.createdAt})
    await receipt.write({id: ID, status: 'transferred', md5: MD5})
    await receipt.write({id: 'not an id', status: 'failed', md5: '', reason: 'refused'})
    await receipt.close()
    const read = await readReceipt(path)
    expect([...read.arrived]).toEqual([[ID, MD5]])
    expect(read.header.target).toEqual(header.target)
  })

  it('a receipt of a target fed for years (1,500 archives) and a failure with a very long reason: written, and read back (hops kept to one past what a volume records)', async () => {
    const path = join(work, 'long.jsonl')
    const receipt = await ReceiptWriter.create(path, {format: RECEIPT_FORMAT, version: 1, target: header.target, createdAt: header.createdAt})
    for (let index = 0; index < 1500; index++) {
      const group = `00000000-0000-4000-8000-${String(index).padStart(12, '0')}`
      receipt.addGroup(group, [{group, source: {server: 'http://127.0.0.1:1', name: 's', version: '1.10.1', databaseBackend: 'SQLite', storageBackend: 'Filesystem'}, exportedAt: header.createdAt}])
    }
    await receipt.write({id: ID, status: 'failed', md5: '', reason: 'x'.repeat(100_000)})
    await receipt.write({id: ID, status: 'transferred', md5: MD5})
    await receipt.close()
    const read = await readReceipt(path)
    expect(read.header.hops).toHaveLength(1001)
    expect(read.header.groups).toHaveLength(1500)
    expect([...read.arrived]).toEqual([[ID, MD5]])
  })

  it('a device, a FIFO or one endless line is refused at once, never read to the end of memory', async () => {
    const fifo = join(work, 'fifo')
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0)
    const endless = join(work, 'endless.jsonl')
    await writeFile(endless, Buffer.alloc(65 * 1024 * 1024, 0x61))
    await expect(readReceipt('/dev/zero')).rejects.toMatchObject({code: expect.stringMatching(/^ENOTFILE/)})
    await expect(readReceipt(fifo)).rejects.toMatchObject({code: expect.stringMatching(/^ENOTFILE/)})
    await expect(readReceipt(endless)).rejects.toMatchObject({code: expect.stringMatching(/^ELINETOOLONG: line 1/)})
  })

  it.each([
    ['hops that are not hops', {...header, hops: [{group: '../../etc', evil: true}]}, undefined, /line 1: field hops\[0\]\.group is the string/],
    ['an arrived instance whose ID is a path', header, {id: '../../tools/reset', status: 'transferred', md5: MD5}, /line 2: field id is the string/],
    ['an arrived instance without its MD5', header, {id: ID, status: 'skipped', md5: ''}, /line 2: field md5 is the string "", expected an MD5 in hex/],
    ['a status import never writes', header, {id: ID, status: 'maybe', md5: MD5}, /line 2: field status/],
  ])('%s: refused, naming the line and field, never quoting more of it', async (_what, first, second, reason) => {
    const path = join(work, 'hostile.jsonl')
    await writeFile(path, [first, second].filter(Boolean).map((line) => `${JSON.stringify(line)}\n`).join(''))
    await expect(readReceipt(path)).rejects.toThrow(reason)
  })
})
