import {createServer, request, type IncomingMessage, type Server, type ServerResponse} from 'node:http'
import type {Socket} from 'node:net'
import {setTimeout as sleep} from 'node:timers/promises'

export type Fault = 'reset-before-response' | 'reset-mid-body' | 'status-503' | 'status-404' | 'status-403'

export interface FaultProxy {
  url: string
  /** Delay added before forwarding each request. */
  delayMs: number
  /** Faults to inject, consumed one per matching request; with `after`, only once a request matching it has come. */
  faults: Array<{match: RegExp; fault: Fault; after?: RegExp}>
  /** Delays added before forwarding every matching request (not consumed). */
  slow: Array<{match: RegExp; ms: number}>
  /** Requests answered with another path's answer, headers and all, as a cache that mixed answers up would (not consumed). */
  mixUp: Array<{match: RegExp; path: string}>
  /** JSON answers (status 200) of matching requests, changed before they are sent on, as a broken or hostile server would answer (not consumed). */
  rewrite: Array<{match: RegExp; change: (answer: unknown) => unknown}>
  /** "> METHOD path" as each request arrives and "< METHOD path" once its answer is sent, in order. */
  events: string[]
  /** Requests forwarded, by "METHOD path". */
  log: string[]
  /** Requests the server answered with JSON (status 200), by "METHOD path". */
  jsonAnswered: string[]
  /** Most requests matching "METHOD path" that were open at the same time, by that line. */
  peakInFlight: Map<string, number>
  close(): Promise<void>
}

/**
 * A small HTTP proxy in front of a real Orthanc, for failures a real server cannot produce on
 * demand: slow answers, 503 storms, connections reset before or in the middle of a body, a route
 * refused with 404, an answer that belongs to another request.
 */
export async function startFaultProxy(upstreamPort: number): Promise<FaultProxy> {
  const sockets = new Set<Socket>()
  const proxy: FaultProxy = {url: '', delayMs: 0, faults: [], slow: [], mixUp: [], rewrite: [], events: [], log: [], jsonAnswered: [], peakInFlight: new Map(), close: async () => {}}
  const inFlight = new Map<string, number>()
  const server: Server = createServer(async (incoming: IncomingMessage, outgoing: ServerResponse) => {
    const line = `${incoming.method} ${incoming.url}`
    proxy.log.push(line)
    proxy.events.push(`> ${line}`)
    outgoing.once('finish', () => proxy.events.push(`< ${line}`))
    inFlight.set(line, (inFlight.get(line) ?? 0) + 1)
    proxy.peakInFlight.set(line, Math.max(proxy.peakInFlight.get(line) ?? 0, inFlight.get(line)!))
    outgoing.once('close', () => inFlight.set(line, inFlight.get(line)! - 1))
    if (proxy.delayMs > 0) await sleep(proxy.delayMs)
    const slow = proxy.slow.find((entry) => entry.match.test(line))
    if (slow) await sleep(slow.ms)
    const index = proxy.faults.findIndex((entry) => entry.match.test(line) && (!entry.after || proxy.log.some((earlier) => entry.after!.test(earlier))))
    const fault = index === -1 ? undefined : proxy.faults.splice(index, 1)[0]!.fault
    if (fault === 'reset-before-response') {
      incoming.resume()
      incoming.socket.destroy()
      return
    }

    if (fault === 'status-503') {
      incoming.resume()
      outgoing.writeHead(503, {'content-type': 'text/plain'})
      outgoing.end('busy')
      return
    }

    if (fault === 'status-404') {
      // A reverse proxy that refuses a route: its own answer, not Orthanc's.
      incoming.resume()
      outgoing.writeHead(404, {'content-type': 'text/html'})
      outgoing.end('<html><body>Not Found</body></html>')
      return
    }

    if (fault === 'status-403') {
      // An authorization layer that refuses this request: nothing reaches Orthanc.
      incoming.resume()
      outgoing.writeHead(403, {'content-type': 'text/plain'})
      outgoing.end('Forbidden')
      return
    }

    const path = proxy.mixUp.find((entry) => entry.match.test(line))?.path ?? incoming.url
    const upstream = request({host: '127.0.0.1', port: upstreamPort, method: incoming.method, path, headers: incoming.headers}, (answer) => {
      if (fault === 'reset-mid-body') {
        outgoing.writeHead(answer.statusCode ?? 502, answer.headers)
        answer.once('data', (chunk: Buffer) => {
          outgoing.write(chunk.subarray(0, Math.max(1, Math.floor(chunk.length / 2))), () => outgoing.socket?.destroy())
          answer.destroy()
        })
        return
      }

      const json = answer.statusCode === 200 && String(answer.headers['content-type']).includes('json')
      if (json) proxy.jsonAnswered.push(line)
      const rewrite = proxy.rewrite.find((entry) => entry.match.test(line))
      if (rewrite && json) {
        const chunks: Buffer[] = []
        answer.on('data', (chunk: Buffer) => chunks.push(chunk))
        answer.on('end', () => {
          const changed = Buffer.from(JSON.stringify(rewrite.change(JSON.parse(Buffer.concat(chunks).toString('utf8')))) ?? 'null')
          const {'transfer-encoding': _chunked, ...headers} = answer.headers
          outgoing.writeHead(200, {...headers, 'content-length': String(changed.length)})
          outgoing.end(changed)
        })
        return
      }

      outgoing.writeHead(answer.statusCode ?? 502, answer.headers)
      answer.pipe(outgoing)
    })
    upstream.on('error', () => outgoing.socket?.destroy())
    incoming.pipe(upstream)
  })
  server.on('connection', (socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  proxy.url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`
  proxy.close = async () => {
    for (const socket of sockets) socket.destroy()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }

  return proxy
}
