import {setMaxListeners} from 'node:events'
import type {IncomingHttpHeaders} from 'node:http'
import {Readable, Transform} from 'node:stream'
import {setTimeout as sleep} from 'node:timers/promises'

import type {Dispatcher} from 'undici'

import type {TokenBucket} from '../transfer/bandwidth.js'
import {defaultRetryPolicy, parseRetryAfter, type RetryPolicy, waitBeforeRetry} from '../util/backoff.js'
import {registerBasicCredentials} from '../util/redact.js'
import {printable} from '../util/printable.js'
import {readAll} from '../util/streams.js'
import type {ServerEndpoint} from './endpoint.js'
import {
  OrthancAuthError,
  OrthancConnectionError,
  OrthancError,
  OrthancHttpError,
  OrthancTimeoutError,
  OrthancTlsError,
  OrthancUnreachableError,
  shownRequest,
} from './errors.js'
import {loadPool} from './undici-pool.js'

const {Pool} = loadPool()

export interface HttpOptions {
  /** Parallel connections to this server. */
  connections?: number
  connectTimeoutMs?: number
  /** Time allowed for the response headers (Orthanc answers big POSTs only after storing them). */
  headersTimeoutMs?: number
  /** Time allowed between two chunks of a response body. */
  bodyTimeoutMs?: number
  retry?: RetryPolicy
  /** Told of each request sent again (for logs): the request as messages show it (shownRequest), the attempt, and why. */
  onRetry?: (retry: {request: string; attempt: number; reason: string}) => void
  /** Replaces the pool, for tests that inject faults (undici MockAgent). */
  dispatcher?: Dispatcher
  /** --bwlimit: the pace of instance data (requests marked `paced`) in each direction. */
  bandwidth?: {upload?: TokenBucket; download?: TokenBucket}
}

/** A body that can be sent again on retry: bytes, or a factory that opens a fresh stream. */
export type ReplayableBody = Buffer | string | (() => Readable)

export interface RequestOptions {
  headers?: Record<string, string>
  body?: ReplayableBody
  /** Whether sending this request twice is harmless. Only those are retried. */
  idempotent?: boolean
  /**
   * Instance or attachment data, held to the --bwlimit pace: a body sent goes out 64 KiB at a
   * time at the pace, a download starts when the pace allows one of the usual size.
   */
  paced?: boolean
  /** The most the answer may hold; beyond it the request fails (default: ANSWER_LIMIT). */
  maxBytes?: number
  signal?: AbortSignal
}

export interface StreamedResponse {
  statusCode: number
  headers: IncomingHttpHeaders
  body: Readable
}

export interface BufferedResponse {
  statusCode: number
  headers: IncomingHttpHeaders
  body: Buffer
}

type Answer = StreamedResponse | BufferedResponse

export interface TransportStats {
  requests: number
  retries: number
  connectionsOpened: number
  /**
   * Answers and failures that say the server or the link has more than it can take: 429, 502,
   * 503, 504, timeouts, resets, refused connections. Adaptive concurrency backs off on them.
   */
  congestion: number
  /**
   * The quickest answer so far (from sending a request to its status line, over the buffered
   * exchanges that carry API calls and instances), in ms: about the link's round trip plus the
   * least the server takes, a new connection's set-up included when it is the first. Undefined
   * until one has been answered.
   */
  fastestAnswerMs?: number
}

/**
 * Orthanc answers `Keep-Alive: timeout=1`. undici subtracts keepAliveTimeoutThreshold from that
 * hint and, when nothing is left, closes the socket after every response: with its defaults each
 * request opens a new connection. 500 ms keeps the socket for half of Orthanc's idle window,
 * which is enough for back-to-back requests and well clear of the server's own close.
 */
const KEEP_ALIVE_THRESHOLD_MS = 500

const RETRYABLE_STATUS = new Set([429, 502, 503, 504])
const RETRYABLE_NETWORK_CODES = new Set([
  'ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED',
  'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT',
])
/**
 * Orthanc's "Unable to create a subdirectory or a file in the file storage". Orthanc 1.10 and
 * older fail an upload this way when two threads create the same storage subdirectory at once,
 * which concurrent uploads into a new storage area do now and then (seen here on 1.10.1; later
 * versions retry inside Orthanc). The same code stands for a full disk: a few retries with
 * backoff tell the two apart.
 */
const ORTHANC_FILE_STORAGE_CANNOT_WRITE = 2001

function isStorageWriteRace(error: OrthancHttpError): boolean {
  return error.status === 500 && error.orthancStatus === ORTHANC_FILE_STORAGE_CANNOT_WRITE
}

const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL'])
/**
 * An answer is read whole into memory: at most this much for an API answer (the largest Orthanc
 * gives, a study's expanded instances, is tens of MiB), so that no server can make the client hold
 * more; instance and attachment data are bounded by what the caller expects (maxBytes).
 */
const ANSWER_LIMIT = 256 * 1024 * 1024
/**
 * undici's body timeout is the wait between two chunks: a server that sends a byte now and then
 * would hold a request forever. An answer must also bring at least this much in each timeout
 * window until it ends.
 */
const SLOW_BODY_BYTES = 16 * 1024
const SLOW_BODY_CODE = 'ORTHANC_REPLICATE_SLOW_BODY'

/** An answer under the slow-answer window: bytes since its window began, and how to end it. */
interface SlowAnswerWatch {
  windowStart: number
  bytes: number
  stop: (reason: Error) => void
  /** Whether the reader has all it can take: the wait is then the reader's, not the server's. */
  readerFull?: () => boolean
}

const TIMEOUT_PHASES: Record<string, string> = {
  UND_ERR_CONNECT_TIMEOUT: 'connect',
  UND_ERR_HEADERS_TIMEOUT: 'response headers',
  UND_ERR_BODY_TIMEOUT: 'response body',
  [SLOW_BODY_CODE]: 'slow response body',
}

/**
 * One undici pool per Orthanc server, with authentication, timeouts, retries and error
 * classification. Everything above it speaks in paths and typed errors.
 */
export class OrthancHttp {
  readonly endpoint: ServerEndpoint
  readonly stats: TransportStats = {requests: 0, retries: 0, connectionsOpened: 0, congestion: 0}
  private readonly dispatcher: Dispatcher
  private readonly ownsDispatcher: boolean
  // An ES private field: util.inspect and console.log cannot show it (the header is the password in base64).
  readonly #authorization?: string
  private readonly retry: RetryPolicy
  private readonly onRetry?: HttpOptions['onRetry']
  private readonly bandwidth: NonNullable<HttpOptions['bandwidth']>
  /** Paced downloads so far: their mean size is what the next one reserves before it is sent. */
  private readonly downloads = {count: 0, bytes: 0}
  private readonly headersTimeout: number
  private readonly bodyTimeout: number
  /** Answers being read, for the slow-answer window (see watchSlowAnswers), and the clock that looks at them. */
  private readonly answering = new Set<SlowAnswerWatch>()
  private slowAnswerClock?: NodeJS.Timeout
  /** Set by the first answer: from then on a refused connection means a restart, worth waiting for. */
  private reachedOnce = false
  /** Set by the first successful answer: from then on the credentials are known to be good. */
  private acceptedOnce = false

  constructor(endpoint: ServerEndpoint, options: HttpOptions = {}) {
    this.endpoint = endpoint
    this.retry = options.retry ?? defaultRetryPolicy
    this.onRetry = options.onRetry
    this.bandwidth = options.bandwidth ?? {}
    this.headersTimeout = options.headersTimeoutMs ?? 120_000
    this.bodyTimeout = options.bodyTimeoutMs ?? 60_000
    if (endpoint.username !== undefined || endpoint.password !== undefined) {
      const pair = `${endpoint.username ?? ''}:${endpoint.password?.reveal() ?? ''}`
      this.#authorization = `Basic ${Buffer.from(pair, 'utf8').toString('base64')}`
      registerBasicCredentials(endpoint.username ?? '', endpoint.password?.reveal() ?? '')
    }

    if (options.dispatcher) {
      this.dispatcher = options.dispatcher
      this.ownsDispatcher = false
    } else {
      const pool = new Pool(endpoint.origin, {
        connections: options.connections ?? 8,
        keepAliveTimeoutThreshold: KEEP_ALIVE_THRESHOLD_MS,
        connect: {
          timeout: options.connectTimeoutMs ?? 10_000,
          ca: endpoint.tls.ca,
          cert: endpoint.tls.cert,
          key: endpoint.tls.key,
        },
      })
      pool.on('connect', () => {
        this.stats.connectionsOpened++
      })
      this.dispatcher = pool
      this.ownsDispatcher = true
    }
  }

  /** GET/PUT/POST/DELETE returning parsed JSON; the whole exchange is retried when allowed. */
  async json<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const text = await this.text(method, path, options)
    try {
      return JSON.parse(text) as T
    } catch {
      throw new OrthancHttpError(this.endpoint.display, method, path, 200, 'answer is not JSON')
    }
  }

  /** The body as text; see `bytes`. */
  async text(method: string, path: string, options: RequestOptions = {}): Promise<string> {
    return (await this.bytes(method, path, options)).body.toString('utf8')
  }

  /** Sends a request and discards the answer body (after checking the status). */
  async send(method: string, path: string, options: RequestOptions = {}): Promise<void> {
    await this.bytes(method, path, options)
  }

  /**
   * The whole answer in memory. The body is read inside the retry loop, so a connection reset
   * mid-body is retried like any other. For bodies known to fit in memory: answers to API
   * calls, and instance files, which the tool holds whole anyway to check their MD5 first.
   */
  async bytes(method: string, path: string, options: RequestOptions = {}): Promise<BufferedResponse> {
    const pace = options.paced ? this.bandwidth.download : undefined
    if (!pace) return this.withRetries(method, path, options, () => this.exchangeOnce(method, path, options))
    return this.withRetries(method, path, options, async () => {
      // Paced before the request, on the sizes seen so far, and set right once the size is known:
      // pausing the socket instead would not hold back what the server has already sent, and
      // Orthanc closes a connection left unread for its keep-alive second.
      const expected = this.downloads.count === 0 ? 0 : this.downloads.bytes / this.downloads.count
      const wait = pace.reserve(expected)
      if (wait > 0) await sleep(wait, undefined, {signal: options.signal})
      const answer = await this.exchangeOnce(method, path, options)
      pace.reserve(answer.body.length - expected)
      this.downloads.count++
      this.downloads.bytes += answer.body.length
      return answer
    })
  }

  /**
   * Opens a streamed response. Retries cover reaching the headers; a failure while the
   * caller reads the body surfaces as an error on the stream, for the caller to retry whole.
   * The body is under the slow-answer window while the caller waits for it.
   */
  async stream(method: string, path: string, options: RequestOptions = {}): Promise<StreamedResponse> {
    const answer = await this.withRetries(method, path, options, () => this.dispatchOnce(method, path, options))
    return {...answer, body: this.watchedBody(answer.body, method, path)}
  }

  async close(): Promise<void> {
    clearInterval(this.slowAnswerClock)
    this.slowAnswerClock = undefined
    if (this.ownsDispatcher) await this.dispatcher.close()
  }

  /**
   * Watches an answer being read for the slow-answer window. One clock per client looks at every
   * answer under way, not a timer per request: the tool makes several small requests per instance.
   * A timeout of 0 waits as long as it takes (undici's meaning): then no window either.
   */
  private watchSlowAnswers(answer: SlowAnswerWatch): void {
    if (this.bodyTimeout <= 0) return
    answer.windowStart = performance.now()
    answer.bytes = 0
    this.answering.add(answer)
    if (this.slowAnswerClock) return
    this.slowAnswerClock = setInterval(() => {
      const now = performance.now()
      for (const watched of this.answering) {
        if (now - watched.windowStart < this.bodyTimeout && !watched.readerFull?.()) continue
        if (watched.bytes < SLOW_BODY_BYTES && !watched.readerFull?.()) {
          this.answering.delete(watched)
          watched.stop(Object.assign(new Error('answer too slow'), {code: SLOW_BODY_CODE}))
        } else {
          watched.windowStart = now
          watched.bytes = 0
        }
      }
    }, Math.max(1, this.bodyTimeout / 4))
    this.slowAnswerClock.unref()
  }

  /** A streamed body passed on through a meter that the slow-answer window watches. */
  private watchedBody(body: Readable, method: string, path: string): Readable {
    const watched: SlowAnswerWatch = {windowStart: 0, bytes: 0, stop: (reason) => metered.destroy(this.classifyNetworkError(reason, method, path))}
    const metered = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        watched.bytes += chunk.length
        done(null, chunk)
      },
    })
    watched.readerFull = () => metered.readableLength >= metered.readableHighWaterMark
    body.on('error', (error) => metered.destroy(error))
    // All of it has come: what is left to read waits on the reader.
    body.on('end', () => this.answering.delete(watched))
    metered.on('close', () => {
      this.answering.delete(watched)
      body.destroy()
    })
    this.watchSlowAnswers(watched)
    return body.pipe(metered)
  }

  /** Sends with `once` until a 2xx answer, retrying what may be retried; the answer's body is read by `once` or by the caller. */
  private async withRetries<A extends Answer>(method: string, path: string, options: RequestOptions, once: () => Promise<A>): Promise<A> {
    if (options.signal) allowListenersInFlight(options.signal)
    const idempotent = options.idempotent ?? (method === 'GET' || method === 'HEAD' || method === 'PUT' || method === 'DELETE')
    for (let attempt = 0; ; attempt++) {
      const mayRetry = idempotent && attempt < this.retry.retries && !options.signal?.aborted
      let retryAfterMs: number | undefined
      let reason = ''
      try {
        const answer = await once()
        this.reachedOnce = true
        if (answer.statusCode >= 200 && answer.statusCode < 300) {
          this.acceptedOnce = true
          return answer
        }
        const error = await this.statusError(method, path, answer)
        this.noteCongestion(error)
        if (!(mayRetry && this.isRetryable(error))) throw error
        reason = error.message
        retryAfterMs = parseRetryAfter(answer.headers['retry-after'])
      } catch (error) {
        if (options.signal?.aborted) throw options.signal.reason ?? error
        if (error instanceof OrthancHttpError) throw error
        const classified = error instanceof OrthancError ? error : this.classifyNetworkError(error, method, path)
        this.noteCongestion(classified)
        if (!(mayRetry && this.isRetryable(classified))) throw classified
        reason = classified.message
      }

      this.stats.retries++
      this.onRetry?.({request: shownRequest(method, path), attempt: attempt + 1, reason})
      await waitBeforeRetry(this.retry, attempt, options.signal, retryAfterMs)
    }
  }

  /** What undici needs for one attempt; a replayable body is opened afresh each time. */
  private dispatchOptions(method: string, path: string, options: RequestOptions): Dispatcher.DispatchOptions {
    const headers: Record<string, string> = {...options.headers}
    if (this.#authorization) headers.authorization = this.#authorization
    let body = typeof options.body === 'function' ? options.body() : options.body
    const pace = options.paced ? this.bandwidth.upload : undefined
    if (pace && Buffer.isBuffer(body)) {
      headers['content-length'] = String(body.length)
      body = Readable.from(pacedChunks(body, pace, options.signal), {objectMode: false})
    }

    return {
      origin: this.endpoint.origin,
      path: this.endpoint.basePath + path,
      method: method as Dispatcher.HttpMethod,
      headers,
      body,
      headersTimeout: this.headersTimeout,
      bodyTimeout: this.bodyTimeout,
    }
  }

  private async dispatchOnce(method: string, path: string, options: RequestOptions): Promise<StreamedResponse> {
    this.stats.requests++
    const response = await this.dispatcher.request({...this.dispatchOptions(method, path, options), signal: options.signal})
    return {statusCode: response.statusCode, headers: response.headers, body: response.body}
  }

  /**
   * One exchange, the body gathered as it arrives. undici's lower-level dispatch, not request():
   * no stream object per answer. A small GET to Orthanc then cost about 50 µs of client CPU
   * instead of 75 to 100 µs (measured, 1,000 requests, 4 at a time), and the tool makes several
   * small requests per instance.
   */
  private exchangeOnce(method: string, path: string, options: RequestOptions): Promise<BufferedResponse> {
    const {signal} = options
    if (signal?.aborted) return Promise.reject(signal.reason)
    this.stats.requests++
    const {stats} = this
    const sent = performance.now()
    return new Promise<BufferedResponse>((resolve, reject) => {
      let controller: Dispatcher.DispatchController | undefined
      let abortReason: Error | undefined
      const onAbort = (): void => {
        abortReason = signal?.reason instanceof Error ? signal.reason : new Error('aborted')
        controller?.abort(abortReason)
      }

      signal?.addEventListener('abort', onAbort, {once: true})
      let statusCode = 0
      let headers: IncomingHttpHeaders = {}
      let chunks: Buffer[] = []
      const limit = options.maxBytes ?? ANSWER_LIMIT
      let received = 0
      const {display} = this.endpoint
      const stop = (reason: Error): void => {
        abortReason = reason
        controller?.abort(reason)
      }
      const watched: SlowAnswerWatch = {windowStart: 0, bytes: 0, stop}
      const {answering} = this
      const settled = (): void => {
        signal?.removeEventListener('abort', onAbort)
        answering.delete(watched)
      }
      const watchAnswer = (): void => this.watchSlowAnswers(watched)
      this.dispatcher.dispatch(this.dispatchOptions(method, path, options), {
        onRequestStart(started) {
          controller = started
          if (abortReason) started.abort(abortReason)
        },
        onResponseStart(_, status, responseHeaders) {
          const answeredMs = performance.now() - sent
          if (stats.fastestAnswerMs === undefined || answeredMs < stats.fastestAnswerMs) stats.fastestAnswerMs = answeredMs
          statusCode = status
          headers = responseHeaders
          chunks = []
          received = 0
          watchAnswer()
        },
        onResponseData(_, chunk) {
          received += chunk.length
          watched.bytes += chunk.length
          if (received > limit) {
            stop(new OrthancHttpError(display, method, path, statusCode, `answer larger than ${limit} bytes, more than this request can bring: not read further`))
            return
          }
          chunks.push(chunk)
        },
        onResponseEnd() {
          settled()
          resolve({statusCode, headers, body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)})
        },
        onResponseError(_, error) {
          settled()
          reject(error)
        },
      })
    })
  }

  private async statusError(method: string, path: string, answer: Answer): Promise<OrthancHttpError> {
    const {detail, orthancStatus} = readErrorDetail(await answerText(answer))
    // A 403 after the server has answered us is about this request (a write Orthanc keeps to
    // itself, such as a content type below 1024), not about who we are.
    const refusesUs = answer.statusCode === 401 || (answer.statusCode === 403 && !this.acceptedOnce)
    const ErrorClass = refusesUs ? OrthancAuthError : OrthancHttpError
    // Orthanc sets no limit on a request's body; a proxy before it does, and answers in HTML.
    const explained = detail || (answer.statusCode === 413 ? TOO_LARGE_DETAIL : '')
    return new ErrorClass(this.endpoint.display, method, path, answer.statusCode, explained, orthancStatus)
  }

  /** Counts what says "too much": an overloaded server or link, not a refusal or a storage race. */
  private noteCongestion(error: OrthancError): void {
    const congested = error instanceof OrthancHttpError
      ? RETRYABLE_STATUS.has(error.status)
      : error instanceof OrthancTimeoutError || error instanceof OrthancConnectionError || (error instanceof OrthancUnreachableError && this.reachedOnce)
    if (congested) this.stats.congestion++
  }

  /**
   * A wrong port should fail at once, but a server that answered before and now refuses is
   * restarting: that is worth the backoff.
   */
  private isRetryable(error: OrthancError): boolean {
    if (error instanceof OrthancHttpError) return RETRYABLE_STATUS.has(error.status) || isStorageWriteRace(error)
    if (error instanceof OrthancTimeoutError) return true
    if (error instanceof OrthancUnreachableError) return this.reachedOnce && error.code === 'ECONNREFUSED'
    if (error instanceof OrthancConnectionError) return RETRYABLE_NETWORK_CODES.has(error.code) || error.code === 'UNKNOWN'
    return false
  }

  private classifyNetworkError(error: unknown, method: string, path: string): OrthancError {
    if (error instanceof OrthancError) return error
    const code = errorCode(error)
    const server = this.endpoint.display
    if (code in TIMEOUT_PHASES) return new OrthancTimeoutError(server, method, path, TIMEOUT_PHASES[code] ?? code, {cause: error})
    if (UNREACHABLE_CODES.has(code)) return new OrthancUnreachableError(server, code, {cause: error})
    if (isTlsCode(code)) return new OrthancTlsError(server, code, {cause: error})
    return new OrthancConnectionError(server, method, path, code, {cause: error})
  }
}


/**
 * What the pace allows of a body, 64 KiB at a time: the rate holds within the send, not only
 * between requests. The wait ends with the request's signal: at a low rate it can last minutes,
 * and its timer would otherwise keep an interrupted job alive until it ran out.
 */
async function* pacedChunks(bytes: Buffer, pace: TokenBucket, signal?: AbortSignal): AsyncGenerator<Buffer> {
  const size = 64 * 1024
  for (let at = 0; at < bytes.length; at += size) {
    const chunk = bytes.subarray(at, at + size)
    const wait = pace.reserve(chunk.length)
    if (wait > 0) await sleep(wait, undefined, {signal})
    yield chunk
  }
}

/** The most telling error code along the cause chain. */
function errorCode(error: unknown): string {
  const codes: string[] = []
  let current = error
  for (let depth = 0; current && depth < 5; depth++) {
    const {code, cause} = current as {code?: unknown; cause?: unknown}
    if (typeof code === 'string') codes.push(code)
    current = cause
  }

  // undici reports a broken socket as UND_ERR_SOCKET with the errno (ECONNRESET...) as its cause.
  return codes.find((code) => code !== 'UND_ERR_SOCKET') ?? codes[0] ?? 'UNKNOWN'
}

function isTlsCode(code: string): boolean {
  return code.startsWith('ERR_TLS') || code.startsWith('ERR_SSL') || code.includes('CERT') || code === 'EPROTO' || code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'
}

/** An error answer's body as text, or '' when it cannot be read. */
async function answerText(answer: Answer): Promise<string> {
  if (Buffer.isBuffer(answer.body)) return answer.body.toString('utf8')
  try {
    return (await readAll(answer.body)).toString('utf8')
  } catch {
    return ''
  }
}

const TOO_LARGE_DETAIL = 'request body too large for the server or a proxy before it, such as nginx, whose client_max_body_size is 1 MiB unless set: raise that limit'

/**
 * Orthanc explains errors in a JSON body: Message, the description of its error code (a fixed
 * text), and Details, free text that may quote what the request carried: "Store has failed ...
 * PatientID=...". Only the Message is kept. An error's text becomes a failure's reason, and
 * reasons reach JSON summaries, logs, receipts and an export's manifest, which name no patient;
 * the Details are in the server's own log.
 */
function readErrorDetail(text: string): {detail: string; orthancStatus?: number} {
  try {
    const parsed = JSON.parse(text) as {Message?: string; Details?: string; OrthancStatus?: number}
    return {
      // The server's words, shown as text: no control character of theirs reaches the terminal.
      detail: typeof parsed.Message === 'string' ? printable(parsed.Message) : '',
      orthancStatus: typeof parsed.OrthancStatus === 'number' ? parsed.OrthancStatus : undefined,
    }
  } catch {
    return {detail: ''}
  }
}

const signalsAllowed = new WeakSet<AbortSignal>()

/**
 * Every request in flight listens on its signal, and the jobs keep tens of them in flight on one
 * signal by design (a comparison's reads and look-ups, a transfer's chains): Node's warning about
 * more than 10 listeners is for leaks, and would be printed to the caller's output.
 */
function allowListenersInFlight(signal: AbortSignal): void {
  if (signalsAllowed.has(signal)) return
  signalsAllowed.add(signal)
  setMaxListeners(0, signal)
}
