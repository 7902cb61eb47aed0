import {createHash} from 'node:crypto'
import {readFile} from 'node:fs/promises'

import type {Pool} from 'undici'

import {storedZip} from '../src/sinks/upload-batcher.js'
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
    const {bytes, md5} = await downloadChecked(source, id, 'checked copy')
    await uploadAndConfirm(target, bytes, md5, `checked copy: ${id}`)
  })
}

/** An instance's file, checked against the MD5 Orthanc announces with it. */
async function downloadChecked(source: Pool, id: string, what: string): Promise<{bytes: Buffer; md5: string}> {
  const download = await source.request({path: `/instances/${id}/attachments/dicom/data`, method: 'GET'})
  const bytes = Buffer.from(await download.body.arrayBuffer())
  const md5 = md5Of(bytes)
  // Orthanc's ETag is "<content type>-<MD5>".
  const announced = /-([0-9a-f]{32})/.exec(String(download.headers.etag))?.[1]
  if (download.statusCode !== 200 || md5 !== announced) throw new Error(`${what}: ${id} downloaded with HTTP ${download.statusCode}, MD5 ${md5}, ETag ${announced}`)
  return {bytes, md5}
}

/** The same, with the instance's attachment list asked for beside it; any user attachment stops the floor: its corpus has none. */
async function downloadLossless(source: Pool, id: string, what: string): Promise<{bytes: Buffer; md5: string}> {
  const [file, attachments] = await Promise.all([downloadChecked(source, id, what), getJson(source, `/instances/${id}/attachments`) as Promise<string[]>])
  if (attachments.some((name) => /^\d+$/.test(name))) throw new Error(`${what}: ${id} has user attachments (${attachments.join(', ')}); the floor's corpus has none`)
  return file
}

/**
 * The checked copy plus the one request a copy that loses nothing must also make per instance on
 * Orthanc 1.10.1: the list of the instance's attachments, asked for beside the download. No bulk
 * route gives attachments there (`/tools/bulk-content` answers metadata only), and an empty user
 * attachment is invisible in every size total (`/instances/{id}/statistics`), so without the list
 * a user attachment can be lost.
 */
export function losslessCheckedCopy(sourceUrl: string, targetUrl: string, connections = 4): Promise<number> {
  return copyEveryInstance(sourceUrl, targetUrl, connections, async (source, target, id) => {
    const {bytes, md5} = await downloadLossless(source, id, 'lossless checked copy')
    await uploadAndConfirm(target, bytes, md5, `lossless checked copy: ${id}`)
  })
}

/** Instances per ZIP in the batched floor, as in bench/zip-batches.ts. */
const INSTANCES_PER_ZIP = 64

/**
 * The lossless checked copy with uploads batched: each instance downloaded with its announced
 * MD5 and its attachment list, checked, then uploaded with up to 63 others in one stored ZIP,
 * and each one's MD5 on the target read back. The requests a copy that loses nothing and proves
 * every instance must make per instance on 1.10.1 (three), with the upload's cost shared: for
 * small instances, the least such a copy costs. Batches go `batches` at a time.
 */
export function batchedLosslessCopy(sourceUrl: string, targetUrl: string, connections = 16, batches = 4): Promise<number> {
  return withPools(sourceUrl, targetUrl, connections, async (source, target, ids) => {
    const chunks: string[][] = []
    for (let start = 0; start < ids.length; start += INSTANCES_PER_ZIP) chunks.push(ids.slice(start, start + INSTANCES_PER_ZIP))
    await mapConcurrent(chunks, batches, async (chunk) => {
      const files = await Promise.all(chunk.map((id) => downloadLossless(source, id, 'batched lossless copy')))
      const {statusCode, text} = await postInstances(target, storedZip(files.map((file) => file.bytes)), 'application/zip')
      if (statusCode !== 200) throw new Error(`batched lossless copy: ZIP upload answered HTTP ${statusCode} ${text.slice(0, 200)}`)
      const answers = JSON.parse(text) as Array<{ID: string; Status: string}>
      if (answers.length !== files.length) throw new Error(`batched lossless copy: ${answers.length} answers for ${files.length} files`)
      // Orthanc answers in the ZIP's order.
      await Promise.all(answers.map(async (answer, index) => {
        const stored = (await getJson(target, `/instances/${answer.ID}/attachments/dicom/info`)) as {UncompressedMD5: string}
        if (stored.UncompressedMD5 !== files[index]!.md5) throw new Error(`batched lossless copy: ${answer.ID} stored with MD5 ${stored.UncompressedMD5}, sent ${files[index]!.md5}`)
      }))
    })
    return ids.length
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
function copyEveryInstance(
  sourceUrl: string, targetUrl: string, connections: number, copyOne: (source: Pool, target: Pool, id: string) => Promise<void>,
): Promise<number> {
  return withPools(sourceUrl, targetUrl, connections, async (source, target, ids) => {
    await mapConcurrent(ids, connections, (id) => copyOne(source, target, id))
    return ids.length
  })
}

/** Kept-alive pools of `connections` to each server, and the source's instance IDs, for `body`. */
async function withPools<T>(sourceUrl: string, targetUrl: string, connections: number, body: (source: Pool, target: Pool, ids: string[]) => Promise<T>): Promise<T> {
  const source = keptAlivePool(sourceUrl, connections)
  const target = keptAlivePool(targetUrl, connections)
  try {
    return await body(source, target, (await getJson(source, '/instances')) as string[])
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
