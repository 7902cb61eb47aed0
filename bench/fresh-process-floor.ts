import {readFile} from 'node:fs/promises'
import {fileURLToPath} from 'node:url'

import {tuneV8ForCommandLine} from '../src/cli/v8-flags.js'
import {checkedCopy, checkedUpload, losslessCheckedCopy} from './floors.js'

/**
 * The checked floors (floors.ts) run as the first and only job of a new Node process, as every
 * tool run is. In the bench's own process they run warm: V8 has long compiled undici's parser
 * (WebAssembly, tiered up) and the hot JavaScript, and the process's memory is already mapped.
 * A new process pays for all of that during its first thousand instances: measured here with
 * the same checked copy, 1,000 instances of 130 kB, the first copy in a new process took 1.9 to
 * 2.4 CPU-s and a second one in the same process 1.1 to 1.6 (perf: about a third of the first
 * copy's CPU was V8 compiling, JavaScript and WebAssembly). No command-line tool can start warm,
 * so the CPU targets are read against this floor too. It runs with the V8 settings bin/run.js
 * gives the tool (src/cli/v8-flags.ts): a minimal copier could use them as well.
 *
 * Run by the bench as `node --import tsx bench/fresh-process-floor.ts copy SOURCE TARGET`,
 * `... lossless-copy SOURCE TARGET` (floors.ts: losslessCheckedCopy) or `... upload TARGET
 * FILE-LIST`; prints {count, cpuMs, ms}: the CPU and time from the first request to the last
 * (module loading and TypeScript compilation not counted, V8's warm-up counted).
 */
export const FRESH_FLOOR_SCRIPT = fileURLToPath(import.meta.url)

export interface FreshFloorResult {
  count: number
  /** CPU of the process from the first request to the last. */
  cpuMs: number
  ms: number
}

async function main(argv: string[]): Promise<void> {
  tuneV8ForCommandLine()
  const [job, first, second] = argv
  const jobs = {copy: checkedCopy, 'lossless-copy': losslessCheckedCopy}
  if (!first || !second || (job !== 'upload' && !(job! in jobs))) throw new Error('usage: fresh-process-floor.ts copy|lossless-copy SOURCE TARGET | upload TARGET FILE-LIST')
  // Reading the file list is not part of the floor.
  const files = job === 'upload' ? (JSON.parse(await readFile(second, 'utf8')) as string[]) : []
  const started = performance.now()
  const before = process.cpuUsage()
  const count = job === 'upload' ? await checkedUpload(files, first) : await jobs[job as keyof typeof jobs](first, second)
  const used = process.cpuUsage(before)
  const result: FreshFloorResult = {count, cpuMs: (used.user + used.system) / 1000, ms: performance.now() - started}
  console.log(JSON.stringify(result))
}

if (process.argv[1] === FRESH_FLOOR_SCRIPT) await main(process.argv.slice(2))
