import {describe, expect, it} from 'vitest'

import {UserFacingError} from '../../src/errors.js'
import {resolvePostgresSource} from '../../src/recovery/postgres-index.js'
import {passwordsInArguments, redactSecrets} from '../../src/util/redact.js'

/** The error resolvePostgresSource throws for `input`, as one text: message and suggestion. */
function refusal(input: string): {error: UserFacingError; text: string} {
  try {
    resolvePostgresSource(input)
  } catch (error) {
    expect(error).toBeInstanceOf(UserFacingError)
    const refused = error as UserFacingError
    return {error: refused, text: `${refused.message}\n${refused.suggestion}`}
  }

  throw new Error(`${input} was taken`)
}

describe('a PostgreSQL URL in an error shows no password', () => {
  // "not a PostgreSQL URL: postgresql://127.0.0.1:99999/db?password=pa55word": the query string was shown.
  it('a URL that does not parse is shown without its user information, query string or fragment', () => {
    const {error, text} = refusal('postgresql://u@127.0.0.1:99999/db?password=pa55word')
    expect(error).toMatchObject({category: 'usage', code: 'invalid-database-url'})
    expect(error.message).toBe('not a PostgreSQL URL: postgresql://127.0.0.1:99999/db')
    expect(text).not.toContain('pa55word')
  })

  // postgresql://u:2024/Spring@db/orthanc parses as the host "u", the port 2024 and the database
  // "Spring@db/orthanc": the database's name, as shown, held the password.
  it('an "@" after the host (a password holding an unencoded "/", "?" or "#") is refused, and not shown', () => {
    for (const input of ['postgresql://u:2024/Spring@127.0.0.1:5432/orthanc', 'postgresql://u:2024?Spring@127.0.0.1/orthanc', 'postgresql://u:2024#Spring@127.0.0.1/orthanc', 'postgresql://u:Sp@ring/2024x@127.0.0.1/orthanc']) {
      const {error, text} = refusal(input)
      expect(error, input).toMatchObject({category: 'usage', code: 'invalid-database-url'})
      expect(text, input).toMatch(/%2F, %3F, %23, %40/)
      expect(text, input).not.toMatch(/Spr|2024/)
    }

    // But in ?password=, its own place, an '@' is the password's.
    expect(resolvePostgresSource('postgresql://u@127.0.0.1/orthanc?password=p@ss&sslmode=disable').password?.reveal()).toBe('p@ss')
  })

  it('any password, in the user information or the query: no part of it in the error, or in the name shown', () => {
    let seed = 0xdb
    const random = () => (seed = (Math.imul(seed, 1_103_515_245) + 12_345) >>> 0) / 4_294_967_296
    const charset = [...'abcdefghijkmnpqrstuvwxyz23456789@:/#%?&=+ éü€']
    for (let round = 0; round < 300; round++) {
      const password = Array.from({length: 6 + Math.floor(random() * 14)}, () => charset[Math.floor(random() * charset.length)]).join('')
      const encoded = encodeURIComponent(password)
      const forms = [password, encoded, ...password.split(/[@:/#%?&=+ ]/).filter((part) => part.length >= 4)]
      for (const input of [`postgresql://u@127.0.0.1:99999/db?password=${encoded}`, `postgresql://u@h:99999/db?sslmode=require&password=${encoded}#x`, `postgresql://u:${encoded}@h:99999/db`, `postgresql://u:${password}@h:99999/db`, `postgres://u@[::1/db?password=${encoded}`]) {
        const {text} = refusal(input)
        for (const form of forms) expect(text, input).not.toContain(form)
      }

      // Typed as it is, with a port that parses: refused, or taken as the password.
      for (const input of [`postgresql://u:${password}@127.0.0.1:5432/db`, `postgresql://u:${password}@127.0.0.1/db?sslmode=disable`]) {
        let text: string
        try {
          text = resolvePostgresSource(input).display
        } catch (error) {
          expect(error, input).toBeInstanceOf(UserFacingError)
          text = `${(error as UserFacingError).message}\n${(error as UserFacingError).suggestion}`
        }

        for (const form of forms) expect(text, input).not.toContain(form)
      }
    }
  })

  // "postgresql://u:50%zzpw@host/db" failed with "URI malformed", as a bug (exit 1).
  it('a "%" that begins no percent-escape is refused as bad usage, not shown', () => {
    for (const [input, what] of [['postgresql://u:50%zzpw@127.0.0.1/db', 'password'], ['postgresql://u%zz@127.0.0.1/db', 'user name'], ['postgresql://u@127.0.0.1/d%zzb', 'database name']] as const) {
      const {error, text} = refusal(input)
      expect(error, input).toMatchObject({category: 'usage', code: 'invalid-database-url'})
      expect(error.message, input).toContain(what)
      expect(text, input).toContain('%25')
      expect(text, input).not.toMatch(/zz|URI malformed/)
    }
  })

  it('a password in the query (?password=, as libpq takes it) is read, and masked from then on', () => {
    const source = resolvePostgresSource('postgresql://reader@127.0.0.1:5432/db?password=qu3ry%2Bpw&sslmode=disable')
    expect(source.password?.reveal()).toBe('qu3ry+pw')
    expect(source.display).toBe('postgresql://reader@127.0.0.1:5432/db')
    expect(redactSecrets('refused qu3ry+pw')).toBe('refused [redacted]')
    // And found on the command line, before any command has read it.
    expect(passwordsInArguments(['import', '--from-postgres', 'postgresql://u@127.0.0.1:99999/db?password=pa55word&x=1'])).toContain('pa55word')
    expect(passwordsInArguments(['import', '--from-postgres=postgresql://u@h/db?sslmode=require&password=a%26b+c'])).toContain('a&b c')
  })
})
