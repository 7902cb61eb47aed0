/**
 * A TCP proxy that delays each direction by a fixed time, for benchmarks across a network that
 * this machine does not have (its kernel has no netem). Every chunk is forwarded `delayMs` after
 * it arrived, in order, as it arrives: bodies are never gathered, and a direction whose queue
 * holds more than QUEUE_LIMIT bytes stops reading until it drains, as a full TCP window would.
 *
 * Run as its own process, so that its CPU is counted apart from the client's and the servers':
 * `node --import tsx bench/delay-proxy.ts <upstream port> <one-way delay ms>` prints its port.
 */
import {spawn} from 'node:child_process'
import {createConnection, createServer, type Socket} from 'node:net'
import {fileURLToPath} from 'node:url'

/** Bytes a direction may hold in its delay line: 4 MiB at 20 ms one way is 200 MiB/s per connection. */
const QUEUE_LIMIT = 4 * 1024 * 1024

/** Forwards `from` to `to`, each chunk `delayMs` after it arrived; the end and a reset travel the same way. */
export function delayedPipe(from: Socket, to: Socket, delayMs: number): void {
  if (delayMs <= 0) {
    from.pipe(to)
    from.on('error', () => to.destroy())
    return
  }

  const queue: Array<{due: number; chunk?: Buffer; end?: 'end' | 'reset'}> = []
  let queued = 0
  let timer: NodeJS.Timeout | undefined
  const schedule = () => {
    if (timer || queue.length === 0) return
    timer = setTimeout(release, Math.max(0, queue[0]!.due - performance.now()))
  }

  const release = () => {
    timer = undefined
    const now = performance.now()
    while (queue.length > 0 && queue[0]!.due <= now + 0.25) {
      const {chunk, end} = queue.shift()!
      if (end === 'end') to.end()
      else if (end === 'reset') to.destroy()
      else {
        queued -= chunk!.length
        to.write(chunk!)
      }
    }

    if (from.isPaused() && queued < QUEUE_LIMIT && !to.writableNeedDrain) from.resume()
    schedule()
  }

  from.on('data', (chunk: Buffer) => {
    queue.push({due: performance.now() + delayMs, chunk})
    queued += chunk.length
    if (queued >= QUEUE_LIMIT || to.writableNeedDrain) from.pause()
    schedule()
  })
  to.on('drain', () => {
    if (from.isPaused() && queued < QUEUE_LIMIT) from.resume()
  })
  from.on('end', () => {
    queue.push({due: performance.now() + delayMs, end: 'end'})
    schedule()
  })
  from.on('error', () => {
    queue.push({due: performance.now() + delayMs, end: 'reset'})
    schedule()
  })
}

/** Listens on a free loopback port and sends every connection on to `upstreamPort`, delayed both ways. */
export function listenDelayed(upstreamPort: number, delayMs: number): Promise<number> {
  const server = createServer({noDelay: true}, (client) => {
    const upstream = createConnection({host: '127.0.0.1', port: upstreamPort, noDelay: true})
    // The connection itself takes a round trip: the client's SYN and the server's answer each wait.
    client.pause()
    upstream.once('connect', () => {
      setTimeout(() => {
        delayedPipe(client, upstream, delayMs)
        delayedPipe(upstream, client, delayMs)
        client.resume()
      }, 2 * delayMs)
    })
    upstream.on('error', () => client.destroy())
    client.on('error', () => upstream.destroy())
    client.on('close', () => setTimeout(() => upstream.destroy(), delayMs + 50).unref())
    upstream.on('close', () => setTimeout(() => client.destroy(), delayMs + 50).unref())
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      resolve(typeof address === 'object' && address ? address.port : 0)
    })
  })
}

export interface DelayProxy {
  port: number
  pid: number
  stop(): Promise<void>
}

const thisFile = fileURLToPath(import.meta.url)

/** Starts the proxy as a child process; resolves once it listens. */
export function startDelayProxy(upstreamPort: number, oneWayDelayMs: number): Promise<DelayProxy> {
  const child = spawn(process.execPath, ['--import', 'tsx', thisFile, String(upstreamPort), String(oneWayDelayMs)], {stdio: ['ignore', 'pipe', 'inherit']})
  return new Promise((resolve, reject) => {
    let output = ''
    child.once('error', reject)
    child.once('exit', (code) => reject(new Error(`the delay proxy exited with code ${code} before listening`)))
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString('utf8')
      const line = /^(\d+)\n/.exec(output)
      if (!line) return
      child.removeAllListeners('exit')
      resolve({
        port: Number(line[1]),
        pid: child.pid!,
        stop: () => new Promise<void>((done) => {
          if (child.exitCode !== null || child.signalCode !== null) return done()
          child.once('exit', () => done())
          child.kill('SIGTERM')
        }),
      })
    })
  })
}

if (process.argv[1] === thisFile) {
  const [upstream, delay] = process.argv.slice(2).map(Number)
  if (!Number.isInteger(upstream) || !(delay! >= 0)) {
    console.error('usage: delay-proxy.ts <upstream port> <one-way delay ms>')
    process.exit(2)
  }

  const port = await listenDelayed(upstream!, delay!)
  process.stdout.write(`${port}\n`)
}
