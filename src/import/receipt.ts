import {createReadStream, createWriteStream} from 'node:fs'
import {rm} from 'node:fs/promises'
import {createInterface} from 'node:readline'

import type {Hop} from '../model.js'
import {BatchedLineWriter} from '../util/batched-line-writer.js'
import {endStream, writeWithBackpressure} from '../util/streams.js'

export const RECEIPT_FORMAT = 'orthanc-replicate-receipt'

export interface ReceiptHeader {
  format: typeof RECEIPT_FORMAT
  version: 1
  target: {server: string; name: string; version: string}
  createdAt: string
  /** Bag-Group-Identifiers of the archives imported, when the input was an archive. */
  groups: string[]
  /**
   * Where the imported data came from: each archive's own earlier hops, then the archive itself.
   * An export from this target can carry it on (`export --hops-from RECEIPT`).
   */
  hops: Hop[]
}

export interface ReceiptLine {
  id: string
  status: 'transferred' | 'skipped' | 'failed'
  /** The target's MD5 of the stored instance ('' when it failed). */
  md5: string
  reason?: string
}

/**
 * The import receipt: a JSON-lines file, a header line then one line per instance. It holds
 * no patient data, so it can be carried back across the gap, where `export --exclude-receipt`
 * leaves out what has arrived.
 */
export class ReceiptWriter {
  private readonly lines: BatchedLineWriter
  private readonly groups = new Set<string>()
  private readonly hops = new Map<string, Hop>()

  constructor(readonly path: string, private readonly header: Omit<ReceiptHeader, 'groups' | 'hops'>) {
    // Batched writes lose nothing here: the receipt only exists once close() has written it whole.
    this.lines = new BatchedLineWriter(createWriteStream(`${path}.partial`))
  }

  addGroup(group: string, hops: Hop[]): void {
    this.groups.add(group)
    for (const hop of hops) this.hops.set(hop.group, hop)
  }

  async write(line: ReceiptLine): Promise<void> {
    await this.lines.write(`${JSON.stringify(line)}\n`)
  }

  /** The header, which names the groups seen, goes first: the lines are written behind it at the end. */
  async close(): Promise<void> {
    await this.lines.end()
    const header: ReceiptHeader = {...this.header, groups: [...this.groups], hops: [...this.hops.values()]}
    const output = createWriteStream(this.path)
    output.write(`${JSON.stringify(header)}\n`)
    for await (const chunk of createReadStream(`${this.path}.partial`)) {
      await writeWithBackpressure(output, chunk as Buffer)
    }

    await endStream(output)
    await rm(`${this.path}.partial`, {force: true})
  }
}

/** Instances a receipt shows as safely on the far side, with the MD5 the far side holds. */
export async function readReceipt(path: string): Promise<{header: ReceiptHeader; arrived: Map<string, string>}> {
  const lines = createInterface({input: createReadStream(path), crlfDelay: Number.POSITIVE_INFINITY})
  let header: ReceiptHeader | undefined
  const arrived = new Map<string, string>()
  for await (const line of lines) {
    if (!line.trim()) continue
    const parsed = JSON.parse(line) as ReceiptHeader | ReceiptLine
    if (!header) {
      if ((parsed as ReceiptHeader).format !== RECEIPT_FORMAT) throw new Error(`${path} is not an import receipt`)
      header = parsed as ReceiptHeader
      continue
    }

    const entry = parsed as ReceiptLine
    if (entry.status !== 'failed') arrived.set(entry.id, entry.md5)
  }

  if (!header) throw new Error(`${path} is empty`)
  return {header, arrived}
}
