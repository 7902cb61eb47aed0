import {createServer, type IncomingHttpHeaders} from 'node:http'
import type {AddressInfo} from 'node:net'
import {pipeline} from 'node:stream/promises'

import {keptAlivePool} from './servers.js'

export interface CountingProxy {
  url: string
  /** Requests by method and route, instance IDs replaced by {id}. */
  requests: Map<string, number>
  /** When each route was first and last asked for (performance.now()), to show a command's phases. */
  times: Map<string, {first: number; last: number}>
  /** TCP connections clients opened to the proxy. */
  connections: number
  close(): Promise<void>
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'host', 'proxy-connection', 'upgrade', 'te', 'trailer'])
const ORTHANC_ID = /[0-9a-f]{8}(?:-[0-9a-f]{8}){4}/g

export function routeOf(method: string, url: string): string {
  return `${method} ${url.replace(ORTHANC_ID, '{id}').replace(/=\d+/g, '=N')}`
}

function endToEnd(headers: IncomingHttpHeaders | Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const kept: Record<string, string | string[]> = {}
  for (const [name, value] of Object.entries(headers)) if (value !== undefined && !HOP_BY_HOP.has(name.toLowerCase())) kept[name] = value
  return kept
}

/**
 * A reverse proxy in front of an Orthanc that only counts: which requests a command makes per
 * instance, and how many connections it opens. Its idle timeout copies Orthanc's 1 s, so clients
 * see the same keep-alive hint. Not used for timing.
 */
export async function startCountingProxy(upstream: string): Promise<CountingProxy> {
  const pool = keptAlivePool(upstream, 32)
  const requests = new Map<string, number>()
  const times = new Map<string, {first: number; last: number}>()
  const proxy: CountingProxy = {url: '', requests, times, connections: 0, close: async () => {}}
  const server = createServer((incoming, outgoing) => {
    const route = routeOf(incoming.method ?? 'GET', incoming.url ?? '/')
    const now = performance.now()
    requests.set(route, (requests.get(route) ?? 0) + 1)
    const seen = times.get(route)
    if (seen) seen.last = now
    else times.set(route, {first: now, last: now})
    const hasBody = incoming.method !== 'GET' && incoming.method !== 'HEAD'
    pool.request({method: incoming.method as 'GET', path: incoming.url ?? '/', headers: endToEnd(incoming.headers), body: hasBody ? incoming : undefined})
      .then(async (answer) => {
        outgoing.writeHead(answer.statusCode, endToEnd(answer.headers))
        await pipeline(answer.body, outgoing)
      })
      .catch((error: Error) => {
        if (!outgoing.headersSent) outgoing.writeHead(502, {'content-type': 'text/plain'})
        outgoing.end(`proxy: ${error.message}`)
      })
  })
  server.keepAliveTimeout = 1000
  server.on('connection', () => {
    proxy.connections++
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  proxy.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  proxy.close = async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
    await pool.close()
  }

  return proxy
}
