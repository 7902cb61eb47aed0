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
  for (const form of new Set([value, encodeURIComponent(value), Buffer.from(value, 'utf8').toString('base64')])) SECRETS.add(form)
}

/** Registers what an Authorization header would carry for these credentials. */
export function registerBasicCredentials(username: string, password: string): void {
  registerSecret(Buffer.from(`${username}:${password}`, 'utf8').toString('base64'))
}

/** Credentials in URLs (with or without a scheme) and every registered secret, masked. */
export function redactSecrets(text: string): string {
  let redacted = text
    // scheme://user:password@host: the userinfo goes (a user name alone, with no password, stays).
    .replace(/([a-z][a-z0-9+.-]*:\/\/)[^\s/?#@:]*:[^\s/?#]*@/gi, '$1')
    // user:password@host without a scheme. Not scheme://user@host, whose ':' is the scheme's:
    // a password here holds no '/', as in a URL's userinfo.
    .replace(/(^|[\s"'=(,])([^\s"'/@:]+):[^\s@"'/]*@(?=[\w.[])/g, '$1')
  // Longest first, so that a secret containing another is masked whole.
  for (const secret of [...SECRETS].sort((a, b) => b.length - a.length)) redacted = redacted.split(secret).join(MASK)
  return redacted
}

/** The passwords of URLs in command-line arguments, decoded as a URL parser would. */
export function passwordsInArguments(argv: string[]): string[] {
  const found: string[] = []
  for (const arg of argv) {
    for (const match of arg.matchAll(/(?:^|\/\/|=)([^\s/@:]*):([^\s@]*)@/g)) {
      const raw = match[2]!
      found.push(raw)
      try {
        found.push(decodeURIComponent(raw))
      } catch {
        // Not percent-encoded: the raw form is the one.
      }
      if (match[1]) found.push(Buffer.from(`${safeDecode(match[1])}:${safeDecode(raw)}`).toString('base64'))
    }
  }

  return found
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text)
  } catch {
    return text
  }
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
    stream.write = ((chunk: unknown, ...rest: unknown[]) => write(typeof chunk === 'string' ? redactSecrets(chunk) : chunk, ...rest)) as typeof stream.write
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
