import {readFile} from 'node:fs/promises'
import {join} from 'node:path'

import {Pool} from 'undici'

import {mapConcurrent} from '../src/util/concurrency.js'
import {type OrthancOptions, type OrthancServer, startOrthanc} from '../test/helpers/orthanc.js'
import type {Cleanup} from './cleanup.js'
import type {Corpus} from './corpus.js'
import {postInstances} from './orthanc-upload.js'
import {pidByArgument} from './processes.js'

export interface BenchServer {
  server: OrthancServer
  pid?: number
  url: string
  /** The delay proxy `url` goes through, when the server is reached across a simulated network. */
  proxyPid?: number
}

/** Orthanc's Keep-Alive hint is timeout=1; undici must keep its sockets for less than that to reuse them. */
const KEEP_ALIVE_THRESHOLD_MS = 500

/** A pool of `connections` kept-alive connections to an Orthanc, for the bench's in-process clients. */
export function keptAlivePool(url: string, connections: number): Pool {
  return new Pool(url, {connections, keepAliveTimeoutThreshold: KEEP_ALIVE_THRESHOLD_MS})
}

/** GET `path` on such a pool, answered with HTTP 200 and JSON, or an error naming the request. */
export async function getJson(pool: Pool, path: string): Promise<unknown> {
  const response = await pool.request({path, method: 'GET'})
  if (response.statusCode !== 200) {
    await response.body.dump()
    throw new Error(`GET ${path}: HTTP ${response.statusCode}`)
  }

  return response.body.json()
}

/**
 * Starts a throwaway Orthanc in a folder of its own that `cleanup` deletes; `cleanup.release(name)`
 * stops the server early, and `cleanup.retire(server.dir)` then leaves the folder for later.
 */
export async function startServer(cleanup: Cleanup, name: string, options: OrthancOptions = {}): Promise<BenchServer & {name: string}> {
  const dir = await cleanup.tempDir(name)
  const server = await startOrthanc({name, dir, ...options})
  const key = `orthanc ${server.dir}`
  cleanup.defer(key, () => server.dispose())
  return {server, pid: await pidByArgument(join(server.dir, 'orthanc.json')), url: server.url, name: key}
}

/**
 * A source server holding the corpus, loaded with parallel keep-alive uploads (loading is not
 * measured), and checked to hold every instance.
 */
export async function startSource(cleanup: Cleanup, corpus: Corpus): Promise<BenchServer> {
  const source = await startServer(cleanup, `bench-source-${corpus.name}`)
  const pool = keptAlivePool(source.url, 4)
  try {
    await mapConcurrent(corpus.files, 4, async (path) => {
      const {statusCode, text} = await postInstances(pool, await readFile(path), 'application/dicom')
      if (statusCode !== 200) throw new Error(`loading ${path} into the source: HTTP ${statusCode} ${text}`)
    })
  } finally {
    await pool.close()
  }

  await expectInstances(source, corpus.count, `source for ${corpus.name}`)
  return source
}

export async function instanceCount(server: BenchServer): Promise<number> {
  const statistics = await server.server.json<{CountInstances: number}>('/statistics')
  return statistics.CountInstances
}

/** A run whose target does not end up with the whole corpus is broken: the bench stops rather than print its time. */
export async function expectInstances(server: BenchServer, expected: number, what: string): Promise<void> {
  const actual = await instanceCount(server)
  if (actual !== expected) throw new Error(`${what}: the server holds ${actual} instances, expected ${expected}`)
}

/** The version of the Orthanc the bench runs, asked of a throwaway server. */
export async function orthancVersion(): Promise<string> {
  const server = await startOrthanc({})
  try {
    return (await server.json<{Version: string}>('/system')).Version
  } finally {
    await server.dispose()
  }
}
