/**
 * Broken and hostile answers from a server: every route that `sync` reads on either server,
 * `export` on its source or `import` on its target, one change at a time (see answer-mutations.ts), through a proxy in
 * front of real Orthanc servers. Whatever the change, the run must end as the tool promises: exit
 * 0 only with every instance on the target (for an export: in the archive, imported to check)
 * with the source's MD5, otherwise an error that names the server, never an "unexpected error"
 * (exit 1) or a stack trace. `replace` is `sync --checksum` over a target that holds other bytes
 * for every instance and metadata of its own on each series: these are deleted with the copies
 * replaced, so they must be back at exit 0, and listed as not carried wherever they are not.
 * `diff` and `verify` (an archive of the source, `--target`) run against a target that lacks one
 * of the source's instances: whatever the change, they must not exit 0 (the servers are the same,
 * the archive is all there); their verdict's own exit code needs no server named.
 */
import {rm} from 'node:fs/promises'
import {join} from 'node:path'

import {type CliResult, runCli} from '../helpers/cli.js'
import {type FaultProxy, startFaultProxy} from '../helpers/fault-proxy.js'
import {instanceMd5s, type OrthancServer} from '../helpers/orthanc.js'
import {answerMutation, choiceOf} from './answer-mutations.js'

export interface AnswerFuzzOptions {
  command: 'sync' | 'export' | 'import' | 'replace' | 'diff' | 'verify'
  /** A folder for the exports. */
  work: string
  source: OrthancServer
  /** Emptied before each run. */
  target: OrthancServer
  /** Changes tried per route. */
  perRoute: number
  seed: string
  /** Told of each run as it ends. */
  onCase?: (found: AnswerFuzzCase) => void
}

export interface AnswerFuzzCase {
  command: AnswerFuzzOptions['command']
  side: 'source' | 'target'
  route: string
  what: string
  code: number
  /** What broke the promise; undefined when the run kept it. */
  problem?: string
}

const ID = /[0-9a-f]{8}(?:-[0-9a-f]{8}){4}/g

/** A request line with its IDs and numbers written as patterns: one route, whatever it is asked about. */
function routeOf(line: string): string {
  return line.replace(ID, '{id}').replace(/=\d+/g, '={n}')
}

function matcherOf(route: string): RegExp {
  const escaped = route.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  return new RegExp(`^${escaped.replaceAll('\\{id\\}', ID.source).replaceAll('=\\{n\\}', '=\\d+')}$`)
}

export async function emptyServer(server: OrthancServer): Promise<void> {
  for (const id of await server.json<string[]>('/patients')) await server.api(`/patients/${id}`, {method: 'DELETE'})
}

/** The target's own metadata on each series, which `replace` runs expect to find again. */
const OWN = {name: '2007', value: 'the target\'s own'}

/** Puts on the target a copy with other bytes of every instance of the source, and metadata of its own on each series. */
async function differingTarget(source: OrthancServer, target: OrthancServer): Promise<void> {
  await emptyServer(target)
  for (const id of await source.json<string[]>('/instances')) {
    const bytes = Buffer.from(await (await source.api(`/instances/${id}/file`)).arrayBuffer())
    bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 0x55
    await target.api('/instances', {method: 'POST', body: new Uint8Array(bytes)})
  }

  for (const series of await target.json<string[]>('/series')) await target.api(`/series/${series}/metadata/${OWN.name}`, {method: 'PUT', body: OWN.value})
}

/** Puts on the target every instance of the source but one: what diff and verify --target must find short. */
async function targetShortOfOne(source: OrthancServer, target: OrthancServer): Promise<void> {
  await emptyServer(target)
  for (const id of (await source.json<string[]>('/instances')).sort().slice(1)) {
    await target.api('/instances', {method: 'POST', body: new Uint8Array(await (await source.api(`/instances/${id}/file`)).arrayBuffer())})
  }
}

/** A verdict's run (diff, verify --target, against a target short of one instance): exit 0 says a falsehood. */
function brokenVerdict(result: CliResult, proxies: FaultProxy[], verdictCode: number): string | undefined {
  const output = `${result.stdout}\n${result.stderr}`
  if (result.code === 1 || /unexpected error/i.test(output)) return `unexpected error (exit ${result.code})`
  if (/^\s+at .+:\d+:\d+\)?$/m.test(output)) return 'a stack trace in the output'
  if (result.code === 0) return 'exit 0 while the target lacks one of the source\'s instances'
  if (result.code === verdictCode) return undefined
  const ports = proxies.map((proxy) => new URL(proxy.url).port)
  return ports.some((port) => output.includes(`:${port}`)) ? undefined : `exit ${result.code} without naming the server`
}

/**
 * Series whose own metadata is not on the target and not listed as lost in the run's JSON. A value
 * the changed answer gave for it (another text: a plausible lie, no client can tell) is what the
 * tool was told the target kept, and found there is carried.
 */
async function ownLostUnsaid(result: CliResult, source: OrthancServer, target: OrthancServer, told?: string): Promise<string | undefined> {
  let listed = 0
  try {
    const json = JSON.parse(result.stdout) as {notCarried?: Array<{level: string; name?: string; reason: string; count: number}>}
    listed = (json.notCarried ?? []).filter((entry) => entry.level === 'series' && entry.name === OWN.name && /not written back/.test(entry.reason)).reduce((sum, entry) => sum + entry.count, 0)
  } catch {
    // No JSON (a run that died): nothing listed.
  }
  let missing = 0
  for (const series of await source.json<string[]>('/series')) {
    const found = await target.api(`/series/${series}/metadata/${OWN.name}`)
    const value = found.status === 200 ? await found.text() : undefined
    if (value !== OWN.value && (told === undefined || value !== told)) missing++
  }

  if (missing === 0) return undefined
  if (result.code === 0) return `exit 0 with the target's own metadata gone from ${missing} series`
  return missing > listed ? `the target's own metadata gone from ${missing} series, ${listed} listed as not carried` : undefined
}

/** Whether a run kept the promise; see the file's comment. */
async function brokenPromise(result: CliResult, proxies: FaultProxy[], source: OrthancServer, target: OrthancServer, exported?: string, replaced = false, told?: string): Promise<string | undefined> {
  const output = `${result.stdout}\n${result.stderr}`
  if (result.code === 1 || /unexpected error/i.test(output)) return `unexpected error (exit ${result.code})`
  if (/^\s+at .+:\d+:\d+\)?$/m.test(output)) return 'a stack trace in the output'
  const lost = replaced ? await ownLostUnsaid(result, source, target, told) : undefined
  if (lost) return lost
  if (result.code === 0) {
    if (exported) {
      const imported = await runCli(['import', '--target', target.url, '--json', exported])
      if (imported.code !== 0) return `exit 0 with an archive that does not import (exit ${imported.code}: ${imported.stderr.slice(0, 500)})`
    }

    const [expected, found] = await Promise.all([instanceMd5s(source), instanceMd5s(target)])
    const wrong = [...expected].filter(([id, md5]) => found.get(id) !== md5)
    return wrong.length > 0 ? `exit 0 with ${wrong.length} of ${expected.size} instances missing or altered on the target` : undefined
  }

  const ports = proxies.map((proxy) => new URL(proxy.url).port)
  return ports.some((port) => output.includes(`:${port}`)) ? undefined : `exit ${result.code} without naming the server`
}

/** The text a change of a series' metadata answer gave as the target's own value, if it did. */
function toldOwnValue(route: string, what: string | undefined): string | undefined {
  const told = /^\/series\/\{id\}\/metadata/.test(route.split(' ')[1] ?? '') ? new RegExp(`^${OWN.name} -> (".*")$`).exec(what ?? '')?.[1] : undefined
  return told === undefined ? undefined : JSON.parse(told) as string
}

export async function answerFuzz(options: AnswerFuzzOptions): Promise<AnswerFuzzCase[]> {
  const {source, target} = options
  const proxies = {source: await startFaultProxy(source.port), target: await startFaultProxy(target.port)}
  const transport = ['--json', '--retries', '1', '--timeout', '10']
  let runs = 0
  const output = () => join(options.work, `answer-fuzz-${options.command}-${runs}`)
  const run = async () => {
    runs++
    await rm(output(), {recursive: true, force: true})
    if (options.command === 'export') return runCli(['export', '--source', proxies.source.url, '--output', output(), ...transport], {timeoutMs: 90_000})
    if (options.command === 'import') return runCli(['import', '--target', proxies.target.url, ...transport, archive], {timeoutMs: 90_000})
    if (options.command === 'replace') return runCli(['sync', '--checksum', '--source', proxies.source.url, '--target', proxies.target.url, ...transport], {timeoutMs: 90_000})
    if (options.command === 'diff') return runCli(['diff', '--source', proxies.source.url, '--target', proxies.target.url, ...transport], {timeoutMs: 90_000})
    if (options.command === 'verify') return runCli(['verify', '--target', proxies.target.url, ...transport, archive], {timeoutMs: 90_000})
    return runCli(['sync', '--source', proxies.source.url, '--target', proxies.target.url, ...transport], {timeoutMs: 90_000})
  }

  // What import reads: an archive of the source, exported once without the proxy.
  const archive = join(options.work, 'answer-fuzz-archive')
  if (options.command === 'import' || options.command === 'verify') {
    await rm(archive, {recursive: true, force: true})
    const exported = await runCli(['export', '--source', source.url, '--output', archive, '--json'])
    if (exported.code !== 0) throw new Error(`the archive for import could not be made (exit ${exported.code}): ${exported.stderr}`)
  }

  const cases: AnswerFuzzCase[] = []
  try {
    const verdict = options.command === 'diff' || options.command === 'verify'
    const prepareTarget = () => (options.command === 'replace' ? differingTarget(source, target) : verdict ? targetShortOfOne(source, target) : emptyServer(target))
    // A clean run first: the routes each server answers with JSON (a verdict's: its exit code).
    await prepareTarget()
    const clean = await run()
    const cleanProblem = verdict
      ? (clean.code === 0 || clean.code === 1 ? `exit ${clean.code} over a target short of one instance` : undefined)
      : clean.code === 0 ? await brokenPromise(clean, Object.values(proxies), source, target, options.command === 'export' ? output() : undefined, options.command === 'replace') : `exit ${clean.code}`
    if (cleanProblem) throw new Error(`the clean run failed (${cleanProblem}): ${clean.stderr}`)
    const routes = Object.entries(proxies).flatMap(([side, proxy]) => [...new Set(proxy.jsonAnswered.map(routeOf))].sort().map((route) => ({side: side as 'source' | 'target', route})))
    for (const {side, route} of routes) {
      for (let index = 0; index < options.perRoute; index++) {
        await prepareTarget()
        const mutation = answerMutation(choiceOf(`${options.seed}:${side}:${route}`, index))
        proxies[side].rewrite = [{match: matcherOf(route), change: mutation.change}]
        const result = await run()
        proxies[side].rewrite = []
        const exported = options.command === 'export' ? output() : undefined
        const problem = verdict
          ? brokenVerdict(result, Object.values(proxies), clean.code)
          : await brokenPromise(result, Object.values(proxies), source, target, exported, options.command === 'replace', toldOwnValue(route, mutation.what))
        if (exported) await rm(exported, {recursive: true, force: true})
        const found: AnswerFuzzCase = {command: options.command, side, route, what: mutation.what ?? '(not asked this time)', code: result.code, problem}
        if (found.problem) found.problem += `\n${result.stdout.slice(0, 2000)}\n${result.stderr.slice(0, 2000)}`
        cases.push(found)
        options.onCase?.(found)
      }
    }
  } finally {
    await Promise.all(Object.values(proxies).map((proxy) => proxy.close()))
    await rm(output(), {recursive: true, force: true})
    await rm(archive, {recursive: true, force: true})
  }

  return cases
}
