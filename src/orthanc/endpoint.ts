import {createPrivateKey, X509Certificate} from 'node:crypto'

import {CREDENTIAL_FILE_BYTES, readSmallFile} from '../util/small-file.js'

import {decodeUserinfo} from '../util/redact.js'
import {Secret} from '../util/secret.js'
import {InvalidServerUrlError} from './errors.js'

/** Where a server is and how to authenticate to it. Safe to log: see `display`. */
export interface ServerEndpoint {
  /** scheme://host:port, without credentials. */
  origin: string
  /** Path prefix when Orthanc sits behind a reverse proxy ('' or '/orthanc'). */
  basePath: string
  /** What messages call the server: origin + prefix, never credentials. */
  display: string
  username?: string
  password?: Secret
  tls: TlsFiles
}

export interface TlsFiles {
  /** PEM bundle of certificate authorities to trust instead of the system's. */
  ca?: Buffer
  /** PEM client certificate and key, for servers that require one. */
  cert?: Buffer
  key?: Buffer
}

/** What the user gave for one server: a URL plus optional credential sources. */
export interface EndpointInput {
  url: string
  username?: string
  passwordFile?: string
  caFile?: string
  clientCertFile?: string
  clientKeyFile?: string
  /**
   * Environment variable prefixes, most specific first: for a sync target,
   * ['ORTHANC_TARGET', 'ORTHANC'] reads ORTHANC_TARGET_USERNAME, then ORTHANC_USERNAME.
   */
  envPrefixes?: string[]
  env?: NodeJS.ProcessEnv
}

/**
 * Resolves a server URL and its credentials. Precedence, as a user expects it: credentials in
 * the URL (`http://user:pass@host:8042`, the form Orthanc's Replicate.py takes), then the
 * explicit flag or password file, then environment variables.
 */
export function resolveEndpoint(input: EndpointInput): ServerEndpoint {
  const url = parseServerUrl(input.url)
  const env = input.env ?? process.env
  const prefixes = input.envPrefixes ?? ['ORTHANC']
  // The variable that is set, most specific first: its value, and its name for messages.
  const envVariable = (name: string) => prefixes.map((prefix) => `${prefix}_${name}`).find((variable) => env[variable] !== undefined && env[variable] !== '')
  const fromEnv = (name: string) => {
    const variable = envVariable(name)
    return variable === undefined ? undefined : env[variable]
  }

  const username = decodeUserinfo(url.username) || input.username || fromEnv('USERNAME')
  let password: string | undefined = decodeUserinfo(url.password) || undefined
  if (password === undefined && input.passwordFile) password = readPasswordFile(input.passwordFile)
  if (password === undefined) {
    const variable = envVariable('PASSWORD_FILE')
    password = variable ? readPasswordFile(env[variable]!, `password file (${variable})`) : fromEnv('PASSWORD')
  }

  const basePath = url.pathname.replace(/\/+$/, '')
  return {
    origin: url.origin,
    basePath,
    display: url.origin + basePath,
    username: username || undefined,
    password: password === undefined ? undefined : new Secret(password),
    tls: {
      ca: readPemFile(input.caFile, 'CA file', certificatesProblem),
      cert: readPemFile(input.clientCertFile, 'client certificate', certificatesProblem),
      key: readPemFile(input.clientKeyFile, 'client key', privateKeyProblem),
    },
  }
}

function parseServerUrl(input: string): URL {
  let url: URL
  try {
    url = new URL(input)
  } catch {
    throw new InvalidServerUrlError(stripCredentials(input), 'not a URL; expected something like http://localhost:8042')
  }

  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    // "user:password@host" without a scheme parses as the scheme "user": show none of it.
    throw new InvalidServerUrlError(stripCredentials(input), `unsupported scheme "${url.protocol.replace(':', '')}"; use http:// or https://`)
  }

  // A password holding an unencoded '/', '?' or '#': the parser ends the host there and takes the
  // rest, password and all, for a path, a query or a fragment (http://alice:2024/Spring@pacs: the
  // host "alice", the port 2024). Only the part after the last '@' is shown.
  if (`${url.pathname}${url.search}${url.hash}`.includes('@')) {
    throw new InvalidServerUrlError(
      stripCredentials(input),
      'an \'@\' after the host: a password holding \'/\', \'?\' or \'#\' ends the host there',
      'Percent-encode a \'/\', \'?\', \'#\' or \'@\' in the password (%2F, %3F, %23, %40), or give the password in a file (--password-file, --source-password-file, --target-password-file) or in ORTHANC_PASSWORD.',
    )
  }

  if (url.search || url.hash) {
    throw new InvalidServerUrlError(stripCredentials(input), 'a server URL takes no query string or fragment')
  }

  return url
}

/** The URL as it may be shown: any user:password@ part removed. */
export function redactUrl(url: URL): string {
  const copy = new URL(url.href)
  copy.username = ''
  copy.password = ''
  return copy.href
}

/**
 * For strings that do not even parse as URLs, with a scheme or without one: drop everything
 * before the last '@' (after any "scheme://"), since a raw password may itself hold '/' or '@';
 * and any query string or fragment, which may carry a token (`?password=`, `?token=`).
 */
function stripCredentials(input: string): string {
  const at = input.lastIndexOf('@')
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(input)?.[0] ?? ''
  const rest = at === -1 ? input.slice(scheme.length) : input.slice(at + 1)
  const query = rest.search(/[?#]/)
  return scheme + (query === -1 ? rest : `${rest.slice(0, query)}${rest[query]}…`)
}

function readPasswordFile(path: string, what = 'password file'): string {
  try {
    // A trailing newline is what editors and `echo` leave; it is never part of the password.
    return readSmallFile(path, CREDENTIAL_FILE_BYTES).toString('utf8').replace(/\r?\n$/, '')
  } catch (error) {
    throw new CredentialFileError(path, what, error)
  }
}

/**
 * A certificate or key file, checked now: TLS reads it only at the first connection, where a
 * file that is not PEM showed as "the server went away", and a CA file as nothing at all.
 */
function readPemFile(path: string | undefined, what: string, problemOf: (pem: Buffer) => string | undefined): Buffer | undefined {
  if (!path) return undefined
  let pem: Buffer
  try {
    pem = readSmallFile(path, CREDENTIAL_FILE_BYTES)
  } catch (error) {
    throw new CredentialFileError(path, what, error)
  }

  const problem = problemOf(pem)
  if (problem) throw new CredentialFileError(path, what, undefined, problem)
  return pem
}

// OpenSSL's "TRUSTED CERTIFICATE" blocks (Fedora's ca-bundle.trust.crt) are taken by TLS too;
// they carry trust settings after the certificate, which X509Certificate does not parse.
const PEM_CERTIFICATE = /-----BEGIN (TRUSTED )?CERTIFICATE-----[^-]*-----END (TRUSTED )?CERTIFICATE-----/g

function certificatesProblem(pem: Buffer): string | undefined {
  const blocks = pem.toString('latin1').match(PEM_CERTIFICATE) ?? []
  if (blocks.length === 0) return 'it holds no PEM certificate (-----BEGIN CERTIFICATE-----); a DER one converts with: openssl x509 -inform der -in FILE -out FILE.pem'
  for (const [index, block] of blocks.entries()) {
    if (block.startsWith('-----BEGIN TRUSTED')) continue
    try {
      new X509Certificate(block) // parsed only to be checked
    } catch {
      return `its certificate ${index + 1} of ${blocks.length} does not parse`
    }
  }

  return undefined
}

function privateKeyProblem(pem: Buffer): string | undefined {
  try {
    createPrivateKey(pem)
    return undefined
  } catch (error) {
    // OpenSSL 3 asks for the passphrase and, given none, says "interrupted or cancelled".
    if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(pem.toString('latin1')) || /passphrase/i.test((error as Error).message)) return 'the key is encrypted, and no passphrase is taken: decrypt it with openssl pkey -in FILE -out FILE.plain (and keep that file private)'
    return 'it holds no private key this program can read (PEM: -----BEGIN PRIVATE KEY-----)'
  }
}

/** A credential or certificate file named by the user cannot be read, or holds no usable content. */
export class CredentialFileError extends Error {
  constructor(readonly path: string, readonly what: string, cause: unknown, readonly problem?: string) {
    super(problem ? `cannot use ${what} ${path}: ${problem}` : `cannot read ${what} ${path}: ${(cause as NodeJS.ErrnoException).code ?? String(cause)}`, {cause})
    this.name = 'CredentialFileError'
  }
}
