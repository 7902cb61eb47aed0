import {readFile, stat} from 'node:fs/promises'

import {storedZip} from '../src/sinks/upload-batcher.js'

import {postInstances} from './orthanc-upload.js'
import {keptAlivePool} from './servers.js'

/** Files per ZIP: a few hundred kilobytes of small instances per request. */
const FILES_PER_ZIP = 64
/** Larger files go alone, as plain uploads: Orthanc holds a whole ZIP body in memory. */
const ZIP_MAX_BYTES = 16 * 1024 * 1024

/** Groups the files into ZIP batches of at most FILES_PER_ZIP files and ZIP_MAX_BYTES; a larger file is a batch of its own. */
function batches(files: string[], sizes: number[]): string[][] {
  const result: string[][] = []
  let current: string[] = []
  let bytes = 0
  for (const [index, file] of files.entries()) {
    const size = sizes[index]!
    if (current.length > 0 && (current.length >= FILES_PER_ZIP || bytes + size > ZIP_MAX_BYTES)) {
      result.push(current)
      current = []
      bytes = 0
    }

    current.push(file)
    bytes += size
  }

  if (current.length > 0) result.push(current)
  return result
}

/**
 * Whether batching pays on this server: the corpus uploaded as stored ZIPs of up to 64 files,
 * over `streams` kept-alive connections, every answer checked to report each file stored.
 * Files are read and zipped as each request goes out, as a batching client would do.
 */
export async function uploadZipBatches(files: string[], targetUrl: string, streams = 4): Promise<void> {
  const sizes = await Promise.all(files.map(async (file) => (await stat(file)).size))
  const pool = keptAlivePool(targetUrl, streams)
  const queue = batches(files, sizes)
  try {
    const worker = async () => {
      for (let batch = queue.shift(); batch; batch = queue.shift()) {
        const contents = await Promise.all(batch.map((file) => readFile(file)))
        const single = contents.length === 1
        const body = single ? contents[0]! : storedZip(contents)
        const {statusCode, text} = await postInstances(pool, body, single ? 'application/dicom' : 'application/zip')
        if (statusCode !== 200) throw new Error(`ZIP upload: HTTP ${statusCode} ${text.slice(0, 300)}`)
        const answers = single ? [JSON.parse(text) as {Status: string}] : JSON.parse(text) as Array<{Status: string}>
        // Orthanc passes over what it cannot read in a ZIP without a word: count the answers.
        const stored = answers.filter((answer) => answer.Status === 'Success' || answer.Status === 'AlreadyStored').length
        if (stored !== batch.length) throw new Error(`ZIP upload: ${stored} of ${batch.length} files stored (${text.slice(0, 300)})`)
      }
    }

    await Promise.all(Array.from({length: streams}, worker))
  } finally {
    await pool.close()
  }
}
