import {randomBytes} from 'node:crypto'
import {createReadStream} from 'node:fs'
import {access, constants, realpath, rename, rm} from 'node:fs/promises'
import {dirname, join, resolve} from 'node:path'

import {hop, isoTime, MAX_HOPS, md5, orthancId, shortText, uuid} from '../archive/manifest-schema.js'
import {type Check, exactly, list, object, parseStrictJson, text} from '../archive/strict-json.js'
import {UserFacingError} from '../errors.js'
import type {Hop} from '../model.js'
import {BatchedLineWriter} from '../util/batched-line-writer.js'
import {crashPoint} from '../util/crash-points.js'
import {boundedLines} from '../util/json-lines.js'
import {syncDirectory} from '../util/json-file.js'
import {openPrivateFile} from '../util/private-files.js'
import {pathExists} from '../util/file-exists.js'
import {redactSecrets} from '../util/redact.js'
import {LockUnwritableError, RunLock} from '../util/run-lock.js'

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
 * leaves out what has arrived. A receipt is never overwritten: it is created new (its lines
 * gathered in `NAME.partial`), and takes its name only when complete.
 */
export class ReceiptWriter {
  private readonly groups = new Set<string>()
  private readonly hops = new Map<string, Hop>()
  /** Instances a line was written for again (another copy in the job): one line each is kept, the final one. */
  private readonly again = new Set<string>()

  private constructor(
    readonly path: string, private readonly header: Omit<ReceiptHeader, 'groups' | 'hops'>, private readonly lines: BatchedLineWriter, private readonly lock: RunLock,
  ) {}

  /** Starts a receipt at `path`, which must not exist yet. Fails at once if its folder cannot be written. */
  static async create(path: string, header: Omit<ReceiptHeader, 'groups' | 'hops'>): Promise<ReceiptWriter> {
    if (await pathExists(path)) throw receiptError(path, 'exists already, and a receipt is never overwritten', 'Give --receipt a new file name, or leave it out for a unique one.')
    // Another import writing the same receipt holds its lock; one that was killed left a lock whose
    // process is gone, and its .partial (lines of a receipt never finished) is started over.
    let lock: RunLock
    try {
      lock = await RunLock.acquire(`${path}.lock`, `The receipt ${path}`)
    } catch (error) {
      if (error instanceof LockUnwritableError) throw receiptError(path, `cannot be written (${error.reason})`, 'Give --receipt a file in a folder you can write, or --no-receipt.')
      throw error
    }

    try {
      await openPrivateFile(`${path}.partial`, 'w').then((handle) => handle.close())
      return new ReceiptWriter(path, header, await BatchedLineWriter.create(`${path}.partial`), lock)
    } catch (error) {
      await lock.release()
      const code = (error as NodeJS.ErrnoException).code
      throw receiptError(path, `cannot be written (${code ?? (error as Error).message})`, 'Give --receipt a file in a folder you can write, or --no-receipt.')
    }
  }

  addGroup(group: string, hops: Hop[]): void {
    this.groups.add(group)
    for (const hop of hops) this.hops.set(hop.group, hop)
  }

  /** `again`: another copy of an instance met earlier in the job, whose line this one settles (see finalLine). */
  async write(line: ReceiptLine, options: {again?: boolean} = {}): Promise<void> {
    if (options.again) this.again.add(line.id)
    // Through the same mask as everything printed: a receipt names no password, whatever an error quoted.
    const reason = line.reason === undefined ? undefined : redactSecrets(line.reason)
    await this.lines.write(`${JSON.stringify(reason === undefined ? line : {...line, reason: reason.length > REASON_CHARS ? `${reason.slice(0, REASON_CHARS)}...` : reason})}\n`)
  }

  /** The header, which names the groups seen, goes first: the lines are copied behind it, then the whole takes its name. */
  async close(): Promise<void> {
    try {
      await this.finish()
    } finally {
      await this.lock.release()
    }
  }

  private async finish(): Promise<void> {
    await this.lines.end()
    // More hops than a volume records are no use to --hops-from (it refuses them), and could make a
    // header line no reader takes: one past the limit is kept, so that it still says so.
    const header: ReceiptHeader = {...this.header, groups: [...this.groups].slice(0, MAX_RECEIPT_HOPS), hops: [...this.hops.values()].slice(0, MAX_HOPS + 1)}
    const temporary = `${this.path}.tmp`
    const output = await openPrivateFile(temporary, 'w')
    try {
      await output.write(`${JSON.stringify(header)}\n`)
      if (this.again.size === 0) {
        for await (const chunk of createReadStream(`${this.path}.partial`)) await output.write(chunk as Buffer)
      } else {
        // An instance met more than once has one line, its final one, written after the others.
        const settled = new Map<string, ReceiptLine>()
        for await (const {line} of boundedLines(`${this.path}.partial`, RECEIPT_LINE_BYTES)) {
          const entry = JSON.parse(line) as ReceiptLine
          if (this.again.has(entry.id)) settled.set(entry.id, finalLine(settled.get(entry.id), entry))
          else await output.write(`${line}\n`)
        }
        for (const entry of settled.values()) await output.write(`${JSON.stringify(entry)}\n`)
      }
      await output.sync()
    } finally {
      await output.close()
    }

    crashPoint('import:receipt-written')
    if (await pathExists(this.path)) throw receiptError(this.path, 'appeared while the import ran, and a receipt is never overwritten', `The receipt is left in ${temporary}.`)
    await rename(temporary, this.path)
    await rm(`${this.path}.partial`, {force: true})
    await syncDirectory(dirname(this.path))
  }

  /** Removes what was written: nothing was imported after all. */
  async discard(): Promise<void> {
    await this.lines.abandon()
    await rm(`${this.path}.partial`, {force: true})
    await this.lock.release()
  }
}

/**
 * Of two lines for one instance, the one that says what became of it: the later, except a copy
 * found on the target with the bytes an earlier one of this run transferred, which leaves it
 * transferred.
 */
function finalLine(earlier: ReceiptLine | undefined, later: ReceiptLine): ReceiptLine {
  return earlier?.status === 'transferred' && later.status === 'skipped' && earlier.md5 === later.md5 ? earlier : later
}

/** A receipt name no other import picks: the time to the second, and a random suffix. */
export function uniqueReceiptName(now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')
  return `import-receipt-${stamp}-${randomBytes(3).toString('hex')}.jsonl`
}

/**
 * Where a receipt goes when none is named: beside the first archive imported, when that folder
 * can be written (the receipt then travels with the drive), otherwise the current folder.
 */
export async function defaultReceiptPath(archivePaths: string[], cwd = process.cwd()): Promise<string> {
  const name = uniqueReceiptName()
  const [first] = archivePaths
  if (first !== undefined) {
    const folder = dirname(resolve(first))
    try {
      await access(folder, constants.W_OK)
      return join(folder, name)
    } catch {
      // A read-only medium: the receipt goes to the current folder.
    }
  }

  return join(cwd, name)
}

/** A receipt written where an input is would destroy it: refused before anything happens. */
export async function refuseReceiptOverInput(receipt: string, inputs: string[]): Promise<void> {
  const target = await canonical(receipt)
  for (const input of inputs) {
    const source = await canonical(input)
    if (target === source || target.startsWith(`${source}/`)) {
      throw receiptError(receipt, `is ${target === source ? 'one of the inputs' : 'inside an input folder'} (${input})`, 'Give --receipt a file outside what is being imported.')
    }
  }
}

async function canonical(path: string): Promise<string> {
  const absolute = resolve(path)
  try {
    return await realpath(absolute)
  } catch {
    // Not there yet: its folder's real path and its name.
    try {
      return join(await realpath(dirname(absolute)), absolute.slice(dirname(absolute).length + 1))
    } catch {
      return absolute
    }
  }
}

function receiptError(path: string, what: string, suggestion: string): UserFacingError {
  return new UserFacingError(`the receipt ${path} ${what}`, suggestion, 'usage', 'bad-receipt-path')
}

/** Archives a receipt's header may name; the line holding them stays within RECEIPT_LINE_BYTES. */
const MAX_RECEIPT_HOPS = 100_000
/** A header of MAX_RECEIPT_HOPS hops fits; a failure's reason is cut far below it (REASON_CHARS). */
const RECEIPT_LINE_BYTES = 64 * 1024 * 1024
/** A failure's reason as a receipt keeps it. */
const REASON_CHARS = 4096

/** The header line: its hops go into the manifests of an export --hops-from it. */
const receiptHeader = object({
  format: exactly(RECEIPT_FORMAT),
  version: exactly(1),
  target: object({server: shortText, name: shortText, version: shortText}),
  createdAt: isoTime,
  // One of each per archive ever imported by that run: a target fed daily for years has thousands.
  groups: list(uuid, MAX_RECEIPT_HOPS),
  hops: list(hop, MAX_RECEIPT_HOPS),
})
/** An instance's line: an arrived instance's ID and MD5 decide what an export leaves out. */
const receiptLine = object({
  id: text({maxLength: 1024}),
  status: text({pattern: /^(transferred|skipped|failed)$/, what: 'transferred, skipped or failed'}),
  md5: text({pattern: /^([0-9a-f]{32})?$/, what: 'an MD5 in hex, or nothing'}),
  reason: text({maxLength: RECEIPT_LINE_BYTES}),
}, ['reason'])
const arrivedLine = object({id: orthancId, status: text(), md5, reason: text({maxLength: RECEIPT_LINE_BYTES})}, ['reason'])

/**
 * Instances a receipt shows as safely on the far side, with the MD5 the far side holds. A
 * receipt comes back from the far side: it is read as untrusted, each line held to the shape
 * import writes, none longer than RECEIPT_LINE_BYTES, and a regular file only.
 */
export async function readReceipt(path: string): Promise<{header: ReceiptHeader; arrived: Map<string, string>}> {
  let header: ReceiptHeader | undefined
  const arrived = new Map<string, string>()
  for await (const {line, number} of boundedLines(path, RECEIPT_LINE_BYTES)) {
    if (!header) {
      header = parsedLine<ReceiptHeader>(path, number, line, receiptHeader, 'is not an import receipt (its first line is not a receipt\'s header)')
      continue
    }

    const entry = parsedLine<ReceiptLine>(path, number, line, receiptLine)
    if (entry.status !== 'failed') arrived.set(parsedLine<ReceiptLine>(path, number, line, arrivedLine).id, entry.md5)
  }

  if (!header) throw new Error(`${path} is empty`)
  return {header, arrived}
}

function parsedLine<T>(path: string, number: number, line: string, check: Check, what?: string): T {
  const parsed = parseStrictJson<T>(Buffer.from(line), check)
  if ('value' in parsed) return parsed.value
  throw new Error(`${path} ${what ?? 'is damaged'}: line ${number}: ${parsed.violations.join('; ')}`)
}
