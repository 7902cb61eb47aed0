/**
 * Broken and hostile answers from a server: every route that `sync` reads on either server,
 * `export` on its source or `import` on its target, one change at a time (see answer-mutations.ts), through a proxy in
 * front of real Orthanc servers. Whatever the change, the run must end as the tool promises: exit
 * 0 only with every instance on the target (for an export: in the archive, imported to check)
 * with the source's MD5, otherwise an error that names the server, never an "unexpected error"
 * (exit 1) or a stack trace.
 */
import {rm} from 'node:fs/promises'
import {join} from 'node:path'

import {type CliResult, runCli} from '../helpers/cli.js'
import {type FaultProxy, startFaultProxy} from '../helpers/fault-proxy.js'
import {instanceMd5s, type OrthancServer} from '../helpers/orthanc.js'
import {answerMutation, choiceOf} from './answer-mutations.js'

export interface AnswerFuzzOptions {
  command: 'sync' | 'export' | 'import'
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

/** Whether a run kept the promise; see the file's comment. */
async function brokenPromise(result: CliResult, proxies: FaultProxy[], source: OrthancServer, target: OrthancServer, exported?: string): Promise<string | undefined> {
  const output = `${result.stdout}\n${result.stderr}`
  if (result.code === 1 || /unexpected error/i.test(output)) return `unexpected error (exit ${result.code})`
  if (/^\s+at .+:\d+:\d+\)?$/m.test(output)) return 'a stack trace in the output'
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
    return runCli(['sync', '--source', proxies.source.url, '--target', proxies.target.url, ...transport], {timeoutMs: 90_000})
  }

  // What import reads: an archive of the source, exported once without the proxy.
  const archive = join(options.work, 'answer-fuzz-archive')
  if (options.command === 'import') {
    await rm(archive, {recursive: true, force: true})
    const exported = await runCli(['export', '--source', source.url, '--output', archive, '--json'])
    if (exported.code !== 0) throw new Error(`the archive for import could not be made (exit ${exported.code}): ${exported.stderr}`)
  }

  const cases: AnswerFuzzCase[] = []
  try {
    // A clean run first: the routes each server answers with JSON.
    await emptyServer(target)
    const clean = await run()
    if (clean.code !== 0) throw new Error(`the clean run failed (exit ${clean.code}): ${clean.stderr}`)
    const routes = Object.entries(proxies).flatMap(([side, proxy]) => [...new Set(proxy.jsonAnswered.map(routeOf))].sort().map((route) => ({side: side as 'source' | 'target', route})))
    for (const {side, route} of routes) {
      for (let index = 0; index < options.perRoute; index++) {
        await emptyServer(target)
        const mutation = answerMutation(choiceOf(`${options.seed}:${side}:${route}`, index))
        proxies[side].rewrite = [{match: matcherOf(route), change: mutation.change}]
        const result = await run()
        proxies[side].rewrite = []
        const exported = options.command === 'export' ? output() : undefined
        const problem = await brokenPromise(result, Object.values(proxies), source, target, exported)
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
