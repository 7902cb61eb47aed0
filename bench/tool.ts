import {readFile} from 'node:fs/promises'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'

import {measureProcess, type ProcessRun} from './processes.js'

export const repoRoot = fileURLToPath(new URL('..', import.meta.url))
const runScript = join(repoRoot, 'bin', 'run.js')

export interface TransferSummary {
  transferred: number
  skipped: number
  failed: number
  bytes: number
  durationMs: number
  /** Uploads at once the tool settled on (or was fixed to). */
  concurrency?: number
  /** What a sync planned to move (a dry run moves nothing and says this). */
  planned?: {instances: number; bytes: number}
  /** The ZIP uploads it made (sync and import): requests, and the instances they carried. */
  zipUploads?: {requests: number; instances: number}
}

export interface ToolRun extends ProcessRun {
  summary: TransferSummary
}

const TIMEOUT_MS = 60 * 60 * 1000

/** The environment without credentials or debugging the caller may have set for other servers. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {...process.env, ...extra}
  for (const key of Object.keys(env)) if (key.startsWith('ORTHANC_') || key === 'DEBUG') delete env[key]
  return env
}

/**
 * Runs `node bin/run.js ARGS --json` as a user would, and insists on a clean, complete summary:
 * `expected` instances transferred, or for a `sync --dry-run`, that many planned and none moved.
 */
export async function runTool(args: string[], expected: number, what: string): Promise<ToolRun> {
  const run = await measureProcess(process.execPath, [runScript, ...args, '--json'], {cwd: repoRoot, env: cleanEnv(), timeoutMs: TIMEOUT_MS})
  const parsed = parseSummary(run.stdout, `${what} (exit ${run.code}, stderr: ${run.stderr.trim().slice(0, 500)})`)
  const summary = args.includes('--dry-run') ? checkPlan(parsed, expected, what) : checkSummary(parsed, expected, what)
  if (run.code !== 0) throw new Error(`${what} exited with code ${run.code}: ${run.stderr.trim().slice(0, 500)}`)
  return {...run, summary}
}

/** export --output - | import -, in one shell with pipefail, so either side's failure fails the run. */
export async function runPipe(sourceUrl: string, targetUrl: string, scratch: string, expected: number): Promise<ToolRun & {exportSummary: TransferSummary}> {
  const exportJson = join(scratch, 'export-summary.json')
  const script = '"$NODE" "$RUN" export --source "$SOURCE" --output - --json 2>"$EXPORT_JSON" | "$NODE" "$RUN" import --target "$TARGET" --json --no-receipt -'
  const env = cleanEnv({NODE: process.execPath, RUN: runScript, SOURCE: sourceUrl, TARGET: targetUrl, EXPORT_JSON: exportJson})
  const run = await measureProcess('bash', ['-o', 'pipefail', '-c', script], {cwd: repoRoot, env, timeoutMs: TIMEOUT_MS})
  const exportText = await readFile(exportJson, 'utf8').catch(() => '')
  if (run.code !== 0) {
    throw new Error(`export | import exited with code ${run.code}: ${run.stderr.trim().slice(0, 500)}\nexport: ${exportText.slice(0, 500)}\nimport: ${run.stdout.slice(0, 3000)}`)
  }

  // With --output -, the export's summary goes to stderr, the import's to stdout.
  const exportSummary = checkSummary(parseSummary(exportText, 'export --output -'), expected, 'export --output -')
  const summary = checkSummary(parseSummary(run.stdout, 'import -'), expected, 'import -')
  return {...run, summary, exportSummary}
}

function parseSummary(text: string, what: string): TransferSummary {
  // Anything written before the summary (a warning) is passed over: the summary is the last JSON object.
  const start = text.indexOf('{')
  try {
    return JSON.parse(start >= 0 ? text.slice(start) : text) as TransferSummary
  } catch {
    throw new Error(`${what}: no JSON summary in the output:\n${text.slice(0, 1000)}`)
  }
}

function checkPlan(summary: TransferSummary, expected: number, what: string): TransferSummary {
  if (summary.failed !== 0 || summary.transferred !== 0 || summary.planned?.instances !== expected) {
    throw new Error(`${what}: planned ${summary.planned?.instances}, transferred ${summary.transferred}, failed ${summary.failed}, expected ${expected} planned and none moved or failed`)
  }

  return summary
}

function checkSummary(summary: TransferSummary, expected: number, what: string): TransferSummary {
  if (summary.failed !== 0 || summary.transferred !== expected) {
    throw new Error(`${what}: transferred ${summary.transferred}, failed ${summary.failed}, expected ${expected} transferred and none failed`)
  }

  return summary
}
