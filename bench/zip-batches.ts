import {readFile, stat} from 'node:fs/promises'
import {crc32} from 'node:zlib'

import {postInstances} from './orthanc-upload.js'
import {keptAlivePool} from './servers.js'

/** Files per ZIP: a few hundred kilobytes of small instances per request. */
const FILES_PER_ZIP = 64
/** Larger files go alone, as plain uploads: Orthanc holds a whole ZIP body in memory. */
const ZIP_MAX_BYTES = 16 * 1024 * 1024

/**
 * The fields a local file header and a central directory entry share, in the same order from
 * `at`: version needed (2.0), flags, method (0, stored), time, date, CRC-32, both sizes, name length.
 */
function writeEntryFields(header: Buffer, at: number, crc: number, size: number, nameLength: number): void {
  header.writeUInt16LE(20, at)
  header.writeUInt32LE(crc, at + 10)
  header.writeUInt32LE(size, at + 14)
  header.writeUInt32LE(size, at + 18)
  header.writeUInt16LE(nameLength, at + 22)
}

/**
 * A stored (uncompressed) ZIP of `files`, as Orthanc 1.8.2+ accepts on POST /instances. Entry
 * names carry no meaning for Orthanc, so they are numbers.
 */
export function storedZip(files: Buffer[]): Buffer {
  const parts: Buffer[] = []
  const directory: Buffer[] = []
  let offset = 0
  for (const [index, data] of files.entries()) {
    const name = Buffer.from(`${index}.dcm`)
    const crc = crc32(data) >>> 0
    const local = Buffer.alloc(30)
    local.writeUInt32LE(0x04034b50, 0)
    writeEntryFields(local, 4, crc, data.length, name.length)
    const central = Buffer.alloc(46)
    central.writeUInt32LE(0x02014b50, 0)
    central.writeUInt16LE(20, 4)
    writeEntryFields(central, 6, crc, data.length, name.length)
    central.writeUInt32LE(offset, 42)
    parts.push(local, name, data)
    directory.push(central, name)
    offset += local.length + name.length + data.length
  }

  const centralBytes = Buffer.concat(directory)
  const end = Buffer.alloc(22)
  end.writeUInt32LE(0x06054b50, 0)
  end.writeUInt16LE(files.length, 8)
  end.writeUInt16LE(files.length, 10)
  end.writeUInt32LE(centralBytes.length, 12)
  end.writeUInt32LE(offset, 16)
  return Buffer.concat([...parts, centralBytes, end])
}

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
