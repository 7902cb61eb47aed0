/**
 * Secrets never reach an output, by construction: every credential the program learns (from a
 * URL on the command line, an environment variable, a password file, an age passphrase) is
 * registered here, and everything written as text to stdout or stderr (messages, JSON, help,
 * oclif's own errors, DEBUG stacks) passes through `redactSecrets` first. Binary output (an
 * archive on stdout) is written as Buffers and is not touched.
 */

const SECRETS = new Set<string>()
const MASK = '[redacted]'
/** Shorter values would mask innocent text ("a", "1"); credentials are never that short in practice. */
const MIN_SECRET_LENGTH = 3

export function registerSecret(value: string | undefined): void {
  if (value === undefined || value.length < MIN_SECRET_LENGTH) return
  for (const form of secretForms(value)) SECRETS.add(form)
}

/**
 * The ways a server's answer or a library's message may quote a secret back: as it is, URL-encoded
 * (upper- or lower-case hex, or as a form encodes it, '+' for a space), inside a JSON string, or
 * as Basic authentication's base64.
 */
function secretForms(value: string): Set<string> {
  const encoded = encodeURIComponent(value)
  return new Set([
    value, encoded, encoded.replace(/%[0-9A-F]{2}/g, (escape) => escape.toLowerCase()), encoded.replaceAll('%20', '+'),
    JSON.stringify(value).slice(1, -1), Buffer.from(value, 'utf8').toString('base64'),
  ])
}

/** Registers what an Authorization header would carry for these credentials. */
export function registerBasicCredentials(username: string, password: string): void {
  registerSecret(Buffer.from(`${username}:${password}`, 'utf8').toString('base64'))
}

/**
 * Every registered secret, then credentials in URLs (with or without a scheme), masked. The
 * secrets first: a password may hold the '@', ':' or '/' the URL patterns stop at, and a pattern
 * that took part of it would leave the rest for no secret to match ("alice:p@ssw0rd" became
 * "ssw0rd").
 */
export function redactSecrets(text: string): string {
  let redacted = text
  // Longest first, so that a secret containing another is masked whole.
  for (const secret of [...SECRETS].sort((a, b) => b.length - a.length)) redacted = redacted.replaceAll(patternOf(secret), MASK)
  return redacted
    // scheme://user:password@host: the userinfo to the last '@' of the authority goes (a user
    // name alone, with no password, stays).
    .replace(/([a-z][a-z0-9+.-]*:\/\/)[^\s/?#@:]*:[^\s/?#]*@/gi, '$1')
    // user:password@host without a scheme, alike: to the last '@' before the host. Not
    // scheme://user@host, whose ':' is the scheme's: a password here holds no '/', as in a URL's userinfo.
    .replace(/(^|[\s"'=(,])([^\s"'/@:]+):[^\s"'/]*@(?=[\w.[])/g, '$1')
}

/** A key of the tool's own JSON (`transferred`, `notCarried`): a word, never masked, or a password "failed" would rename fields. */
const SCHEMA_KEY = /^[A-Za-z][A-Za-z0-9]*$/

/**
 * A copy of `value` for JSON, every string in it masked, and every key but the tool's own field
 * names. JSON must be masked this way, before it is written, never as text: a password that is a
 * word or a number ("true", "12") would mask a literal or a count and leave the document
 * unreadable. Written with `unmasked`.
 */
export function redactedValue<T>(value: T): T {
  if (value === undefined) return value
  const masked = JSON.stringify(value, (_key, entry: unknown) => {
    if (typeof entry === 'string') return redactSecrets(entry)
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) return entry
    return Object.fromEntries(Object.entries(entry).map(([name, inner]) => [SCHEMA_KEY.test(name) ? name : redactSecrets(name), inner]))
  })
  return JSON.parse(masked) as T
}

let masking = true

/** Runs `write` (a synchronous write of text already masked, such as JSON from redactedValue) with stdout's and stderr's mask off. */
export function unmasked<T>(write: () => T): T {
  masking = false
  try {
    return write()
  } finally {
    masking = true
  }
}

/** Letters, digits, '_' and '-': what a word of the tool's own text is made of. */
const WORD_ONLY = /^[\w-]+$/
const patterns = new Map<string, RegExp>()
/** Secrets longer than this are masked as plain text, wherever they occur. */
const LITERAL_FROM = 256

/**
 * Where a secret is masked. One made of word characters only (Orthanc's well-known default
 * `orthanc`, a number) only where it stands alone: not inside a longer word, such as the tool's
 * own name `orthanc-replicate`, an error code `not-orthanc`, a volume `orthanc-export-0001` or the
 * digits of a byte count, which masking would garble (and JSON with them) while hiding nothing.
 * Where a secret leaks, it stands alone: in a URL (`:`, `@`), quoted, between spaces. Any other
 * secret is masked wherever it occurs.
 */
function patternOf(secret: string): RegExp | string {
  // A long one (a wrong file given as the password file) as plain text: V8 refuses a regular
  // expression past some 20,000 characters, and the mask must never fail.
  if (secret.length > LITERAL_FROM) return secret
  let pattern = patterns.get(secret)
  if (!pattern) {
    const escaped = secret.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
    pattern = new RegExp(WORD_ONLY.test(secret) ? `(?<![\\w-])${escaped}(?![\\w-])` : escaped, 'g')
    patterns.set(secret, pattern)
  }

  return pattern
}

/** What follows the '@' of a URL's user information: a host (a name or a bracketed IPv6 address), a port, then the path. */
const HOST_AFTER_AT = /^(?:\[[^\]\s]*\]|[^\s/?#@:[\]]+)(?::\d*)?(?:[/?#]|$)/

/**
 * The passwords of URLs in command-line arguments, as typed and decoded as a URL parser would,
 * with what an Authorization header would carry for them. An argument is read as a URL does:
 * after a flag's `--name=` and the scheme's `//` (when there is one), the authority runs to the
 * first '/', '?' or '#'; its user information to the last '@' in it; the password from the
 * first ':' of that. So a password may hold spaces, ':' and '@' and is still found whole. One
 * that holds an unencoded '/', '?' or '#' ends that authority early, and leaves an '@' after it
 * (`http://alice:2024/Spring@pacs:8042`, which a server URL's check refuses): then the user
 * information up to the last '@' followed by a host is taken too. And a `password=` in a URL's
 * query string, which libpq reads (`postgresql://user@host/db?password=...`).
 */
export function passwordsInArguments(argv: string[]): string[] {
  const found: string[] = []
  for (const arg of argv) {
    const value = arg.replace(/^--?[a-z][\w-]*=/i, '')
    const afterScheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(value) ? value.slice(value.indexOf('//') + 2) : value
    const authority = afterScheme.split(/[/?#]/, 1)[0]!
    const userinfos = [authority.slice(0, authority.lastIndexOf('@') + 1)]
    if (afterScheme.indexOf('@', authority.length) >= 0) {
      const beforeHost = [...afterScheme.matchAll(/@/g)].map((match) => match.index).filter((at) => HOST_AFTER_AT.test(afterScheme.slice(at + 1))).at(-1)
      if (beforeHost !== undefined && beforeHost >= authority.length) userinfos.push(afterScheme.slice(0, beforeHost + 1))
    }

    // libpq's ?password= (postgresql://user@host/db?password=...), as typed and as decoded.
    if (/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) {
      for (const match of value.matchAll(/[?&]password=([^&#]*)/gi)) found.push(match[1]!, decodeQueryValue(match[1]!))
    }

    for (const userinfo of userinfos) {
      const colon = userinfo.indexOf(':')
      // No password; or a path (`/data/a:b@c`), not a URL: a user name holds no '/', '?' or '#'.
      if (colon < 0 || /[/?#]/.test(userinfo.slice(0, colon))) continue
      const user = userinfo.slice(0, colon)
      const raw = userinfo.slice(colon + 1, -1)
      found.push(raw, decodeUserinfo(raw), Buffer.from(`${decodeUserinfo(user)}:${decodeUserinfo(raw)}`).toString('base64'))
    }
  }

  return found
}

/**
 * A URL's user name or password as typed: percent-escapes decoded, and a '%' that begins none
 * (`50%off`) kept as the character it is, as the URL parser itself keeps it.
 */
export function decodeUserinfo(text: string): string {
  return text.replace(/%[0-9a-f]{2}(?:%[0-9a-f]{2})*/gi, (escapes) => {
    try {
      return decodeURIComponent(escapes)
    } catch {
      return escapes
    }
  })
}

/** A query string's value as URLSearchParams reads it: '+' a space, a '%' that begins no escape kept. */
function decodeQueryValue(text: string): string {
  return new URLSearchParams(`v=${text}`).get('v') ?? text
}

let guarded = false

/**
 * Makes every text write to stdout and stderr go through redactSecrets; registers the passwords
 * of URLs on the command line and in the environment; and hides them from the process's
 * command line (what `ps` and /proc/PID/cmdline show), as far as Node lets a process rewrite it.
 */
export function guardOutputs(argv: string[] = process.argv, env: NodeJS.ProcessEnv = process.env): void {
  if (guarded) return
  guarded = true
  const inArguments = passwordsInArguments(argv.slice(2))
  for (const secret of inArguments) registerSecret(secret)
  for (const [name, value] of Object.entries(env)) if (/PASSWORD$/.test(name) && !/_FILE$/.test(name)) registerSecret(value)
  for (const stream of [process.stdout, process.stderr]) {
    const write = stream.write.bind(stream) as (chunk: unknown, ...rest: unknown[]) => boolean
    stream.write = ((chunk: unknown, ...rest: unknown[]) => write(typeof chunk === 'string' && masking ? redactSecrets(chunk) : chunk, ...rest)) as typeof stream.write
  }

  if (inArguments.length > 0) {
    // Node rewrites the memory the kernel shows as the command line (Linux), within its length.
    process.title = redactSecrets(argv.join(' '))
    // Not before Node has started, though: from 0.1 s on an idle machine to over a second on a
    // loaded one, any local user could read it. Say so, once, where no JSON goes.
    process.stderr.write(PASSWORD_IN_URL_WARNING)
  }
}

export const PASSWORD_IN_URL_WARNING =
  'Warning: a password given in a URL can be read by other users of this machine (ps) until the program has started. ' +
  'Give it with --password-file or ORTHANC_PASSWORD instead.\n'
