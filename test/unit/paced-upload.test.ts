import {execFile} from 'node:child_process'
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

const source = (path: string) => fileURLToPath(new URL(`../../src/${path}`, import.meta.url))

/**
 * An upload at 1 KiB/s (each 64 KiB chunk waits about a minute for the pace), aborted while it
 * waits, in a process of its own: what matters is whether anything still holds that process.
 */
const abortedUpload = `
import {createServer} from 'node:http'
import {setTimeout as sleep} from 'node:timers/promises'
import {resolveEndpoint} from ${JSON.stringify(source('orthanc/endpoint.ts'))}
import {OrthancHttp} from ${JSON.stringify(source('orthanc/http.ts'))}
import {TokenBucket} from ${JSON.stringify(source('transfer/bandwidth.ts'))}

// Reads what comes and never answers.
const server = createServer((request) => request.resume())
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
const http = new OrthancHttp(resolveEndpoint({url: 'http://127.0.0.1:' + server.address().port, env: {}}), {
  retry: {retries: 0, minDelayMs: 1, maxDelayMs: 1},
  bandwidth: {upload: new TokenBucket(() => 1024)},
})
const controller = new AbortController()
const sending = http.bytes('POST', '/instances', {body: Buffer.alloc(256 * 1024), paced: true, signal: controller.signal})
await sleep(200)
controller.abort()
await sending.then(() => console.log('answered'), (error) => console.log(error.name))
await http.close()
server.closeAllConnections()
server.close()
`

describe('a paced upload (--bwlimit)', () => {
  let work: string
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'paced-upload-'))
  })
  afterAll(async () => {
    await rm(work, {recursive: true, force: true})
  })

  it('stops waiting for the pace when its request is aborted: nothing keeps an interrupted job alive', async () => {
    const script = join(work, 'aborted-upload.mts')
    await writeFile(script, abortedUpload)
    // Killed after 10 s, long before the minute the pace would hold it.
    const run = await new Promise<{stdout: string; killed: boolean}>((resolve) => {
      execFile(process.execPath, ['--import', 'tsx', script], {cwd: fileURLToPath(new URL('../..', import.meta.url)), timeout: 10_000}, (error, stdout) => resolve({stdout, killed: error?.killed ?? false}))
    })
    expect(run.stdout.trim()).toBe('AbortError')
    expect(run.killed, 'the process was still alive after 10 s').toBe(false)
  }, 20_000)
})
