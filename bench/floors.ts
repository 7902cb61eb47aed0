import {createHash} from 'node:crypto'
import {readFile} from 'node:fs/promises'

import type {Pool} from 'undici'

import {mapConcurrent} from '../src/util/concurrency.js'
import {postInstances} from './orthanc-upload.js'
import {getJson, keptAlivePool} from './servers.js'

/**
 * The least a checked copy can cost on this machine: every instance downloaded with the MD5
 * the source announces (ETag), hashed and compared, uploaded, and its MD5 on the target read
 * back and compared, over `connections` kept-alive connections per server, in this (already
 * warmed-up) process. Nothing else the tool does: no study listing, metadata, attachments,
 * labels, resume state, retries of resets or process start-up. It is a yardstick for sync,
 * not a tool: it shows what the sync targets ask of a client that checks what it copies.
 */
export function checkedCopy(sourceUrl: string, targetUrl: string, connections = 4): Promise<number> {
  return copyEveryInstance(sourceUrl, targetUrl, connections, async (source, target, id) => {
    const download = await source.request({path: `/instances/${id}/attachments/dicom/data`, method: 'GET'})
    const bytes = Buffer.from(await download.body.arrayBuffer())
    const md5 = md5Of(bytes)
    // Orthanc's ETag is "<content type>-<MD5>".
    const announced = /-([0-9a-f]{32})/.exec(String(download.headers.etag))?.[1]
    if (download.statusCode !== 200 || md5 !== announced) throw new Error(`checked copy: ${id} downloaded with HTTP ${download.statusCode}, MD5 ${md5}, ETag ${announced}`)
    await uploadAndConfirm(target, bytes, md5, `checked copy: ${id}`)
  })
}

/**
 * The least any copy can cost on this machine, checks or not: each instance downloaded and
 * uploaded, nothing hashed and nothing read back, otherwise as the checked-copy floor. What is
 * out of its reach is out of reach for every copier that moves as many instances at once on these
 * servers and cores.
 */
export function uncheckedCopy(sourceUrl: string, targetUrl: string, connections = 4): Promise<number> {
  return copyEveryInstance(sourceUrl, targetUrl, connections, async (source, target, id) => {
    const download = await source.request({path: `/instances/${id}/file`, method: 'GET'})
    const bytes = Buffer.from(await download.body.arrayBuffer())
    if (download.statusCode !== 200) throw new Error(`unchecked copy: ${id} downloaded with HTTP ${download.statusCode}`)
    const {statusCode, text} = await postInstances(target, bytes, 'application/dicom')
    if (statusCode !== 200) throw new Error(`unchecked copy: ${id}: upload answered HTTP ${statusCode} ${text.slice(0, 200)}`)
  })
}

/** Lists the source's instances and copies them `connections` at a time over kept-alive pools. */
async function copyEveryInstance(
  sourceUrl: string, targetUrl: string, connections: number, copyOne: (source: Pool, target: Pool, id: string) => Promise<void>,
): Promise<number> {
  const source = keptAlivePool(sourceUrl, connections)
  const target = keptAlivePool(targetUrl, connections)
  try {
    const ids = (await getJson(source, '/instances')) as string[]
    await mapConcurrent(ids, connections, (id) => copyOne(source, target, id))
    return ids.length
  } finally {
    await Promise.all([source.close(), target.close()])
  }
}

/**
 * The same yardstick for import: every file of the folder read, hashed, uploaded, and its MD5
 * on the target read back and compared, `connections` at a time over kept-alive connections,
 * in this process. No folder walk, DICOM parsing, receipt, resume state or start-up: what the
 * import target asks of a client that checks what it uploads.
 */
export async function checkedUpload(files: string[], targetUrl: string, connections = 4): Promise<number> {
  const target = keptAlivePool(targetUrl, connections)
  try {
    await mapConcurrent(files, connections, async (file) => {
      const bytes = await readFile(file)
      await uploadAndConfirm(target, bytes, md5Of(bytes), `checked upload: ${file}`)
    })
    return files.length
  } finally {
    await target.close()
  }
}

function md5Of(bytes: Buffer): string {
  return createHash('md5').update(bytes).digest('hex')
}

/** POST /instances, then the MD5 Orthanc stored, read back and compared with the one sent. */
async function uploadAndConfirm(target: Pool, bytes: Buffer, md5: string, what: string): Promise<void> {
  const {statusCode, text} = await postInstances(target, bytes, 'application/dicom')
  if (statusCode !== 200) throw new Error(`${what}: upload answered HTTP ${statusCode} ${text.slice(0, 200)}`)
  const stored = (await getJson(target, `/instances/${(JSON.parse(text) as {ID: string}).ID}/attachments/dicom/info`)) as {UncompressedMD5: string}
  if (stored.UncompressedMD5 !== md5) throw new Error(`${what}: stored with MD5 ${stored.UncompressedMD5}, sent ${md5}`)
}
