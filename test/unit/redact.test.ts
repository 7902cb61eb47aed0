import {describe, expect, it} from 'vitest'

import {passwordsInArguments, redactSecrets, registerBasicCredentials, registerSecret} from '../../src/util/redact.js'

describe('credentials in text', () => {
  it('masks user:password@ with or without a scheme, and keeps a URL that names a user alone', () => {
    expect(redactSecrets('http://alice:s3cret@pacs:8042/x')).toBe('http://pacs:8042/x')
    expect(redactSecrets('see alice:s3cret@pacs:8042')).toBe('see pacs:8042')
    // A user with no password is no secret: the database a recovery read stays named as it was given.
    expect(redactSecrets('"source": "postgresql://recovery_reader@127.0.0.1:5432/dead_db"')).toBe('"source": "postgresql://recovery_reader@127.0.0.1:5432/dead_db"')
  })
})

describe('passwords of URLs on the command line', () => {
  // Passwords of every awkward shape, in every way an argument can carry a URL: each must be
  // found as the URL parser decodes it, before any command has parsed its flags.
  const passwords = ['s3cretpw', 'my pass1', 'p@ss@word', 'with:colon', '50%off', 'Sw0rdf1sh-@/:%secret', 'naïve-ü€', '1234', 'a b:c@d%e']
  const argumentsOf = (url: string) => [[url], ['--source', url], [`--source=${url}`], [`-s=${url}`]]
  const urlsOf = (password: string) => {
    const encoded = encodeURIComponent(password)
    return [`http://replicator:${encoded}@pacs:8042`, `https://replicator:${encoded}@pacs/orthanc/`, `replicator:${encoded}@pacs:8042`, `http://replicator:${encoded}@[::1]:8042?x=1`]
  }

  for (const password of passwords) {
    it(`finds ${JSON.stringify(password)} whole, in every argument shape, with its Authorization form`, () => {
      for (const url of urlsOf(password)) {
        for (const argv of argumentsOf(url)) {
          const found = passwordsInArguments(argv)
          expect(found, `${argv.join(' ')}`).toContain(password)
          expect(found, `${argv.join(' ')}`).toContain(Buffer.from(`replicator:${password}`).toString('base64'))
        }
      }
    })
  }

  it('finds a password typed unencoded, spaces, ":" and "@" included', () => {
    expect(passwordsInArguments(['http://u:my pass1@127.0.0.1:9'])).toContain('my pass1')
    expect(passwordsInArguments(['http://u:a:b@c@127.0.0.1:9/x@y'])).toContain('a:b@c')
  })

  // A password with an unencoded '/', '?' or '#' ends the URL parser's authority before its '@':
  // nothing was found, so the command line (process.title) and the output kept it.
  it('finds a password holding an unencoded "/", "?" or "#", up to the last "@" before the host, and masks it in the command line', () => {
    let seed = 0x2024
    const random = () => (seed = (Math.imul(seed, 1_103_515_245) + 12_345) >>> 0) / 4_294_967_296
    const charset = [...'abcdefghijkmnpqrstuvwxyz23456789/?#@:%&=+ éü€']
    for (let round = 0; round < 200; round++) {
      const password = `${Array.from({length: 4 + Math.floor(random() * 12)}, () => charset[Math.floor(random() * charset.length)]).join('')}/x`
      for (const url of [`http://alice:${password}@127.0.0.1:37939`, `https://alice:${password}@pacs.example/orthanc`, `alice:${password}@[::1]:8042`]) {
        for (const argv of [['info', '--server', url], ['info', `--server=${url}`]]) {
          const found = passwordsInArguments(argv)
          expect(found, argv.join(' ')).toContain(password)
          for (const secret of found) registerSecret(secret)
          const title = redactSecrets(argv.join(' '))
          for (const fragment of password.split(/[/?#@:%&=+ ]/).filter((part) => part.length >= 4)) expect(title, argv.join(' ')).not.toContain(fragment)
        }
      }
    }

    expect(passwordsInArguments(['info', '--server', 'http://alice:2024/Spring@127.0.0.1:37939'])).toContain('2024/Spring')
  })

  it('finds nothing where no URL holds a password', () => {
    expect(passwordsInArguments(['sync', '--source', 'http://pacs:8042', '--target', 'https://user@mirror:443/orthanc', '/data/a:b@c', '--json'])).toEqual([])
  })
})

describe('registered secrets', () => {
  it('masks a password made of word characters where it stands alone, never inside the tool\'s own words or numbers', () => {
    // Orthanc's well-known default credentials, and a number.
    registerSecret('orthanc')
    registerBasicCredentials('orthanc', 'orthanc')
    registerSecret('8042')
    const own = '{"code": "not-orthanc", "bin": "orthanc-replicate", "volume": "orthanc-export-0001-of-0002.tar", "state": ".orthanc-replicate", "bytes": 18042, "ms": 80420}'
    expect(redactSecrets(own)).toBe(own)
    expect(JSON.parse(redactSecrets(own))).toEqual(JSON.parse(own))
    expect(redactSecrets('the password orthanc was refused')).toBe('the password [redacted] was refused')
    expect(redactSecrets('{"password": "orthanc"}')).toBe('{"password": "[redacted]"}')
    expect(redactSecrets('Basic b3J0aGFuYzpvcnRoYW5j, user orthanc:orthanc, port 127.0.0.1:8042/')).toBe('Basic [redacted], user [redacted]:[redacted], port 127.0.0.1:[redacted]/')
  })

  // A server's error body quoting the password JSON-escaped, or URL-encoded in lower case, showed it.
  it('masks a secret as an answer may quote it: JSON-escaped, URL-encoded in either case or as a form', () => {
    const password = 'p@ss w/rd+é"\\x'
    registerSecret(password)
    for (const quoted of [JSON.stringify(password).slice(1, -1), encodeURIComponent(password), encodeURIComponent(password).toLowerCase(), encodeURIComponent(password).replaceAll('%20', '+')]) {
      expect(redactSecrets(`refused "${quoted}" here`), quoted).toBe('refused "[redacted]" here')
    }
  })

  it('masks any other secret wherever it occurs', () => {
    registerSecret('p@ss w0rd!')
    expect(redactSecrets('xxp@ss w0rd!yy')).toBe('xx[redacted]yy')
  })
})

describe('passwords of every shape, in whatever message quotes them', () => {
  // A seeded generator: the same passwords on every run.
  let seed = 0x5eed_2024
  const random = () => {
    seed = (seed + 0x6d_2b_79_f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296
  }
  const SPECIAL = '@:/#%?&=+ '
  const CHARSET = [...`abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789${SPECIAL}${SPECIAL}éüß€漢`]
  const passwordOf = (length: number) => Array.from({length}, () => CHARSET[Math.floor(random() * CHARSET.length)]).join('')
  /** The runs of 4 or more characters between the password's special characters. */
  const fragmentsOf = (password: string) => password.split(/[@:/#%?&=+ ]/).filter((fragment) => [...fragment].length >= 4)
  const base64 = (text: string) => Buffer.from(text, 'utf8').toString('base64')
  const templates: Array<(password: string) => string> = [
    (pw) => pw,
    (pw) => `denied for alice:${pw}`,
    (pw) => `Bad file for bob:${pw}`,
    (pw) => `{"Message": "Bad file for bob:${pw}"}`,
    (pw) => `http://u:${pw}@h/`,
    (pw) => `see http://u:${pw}@127.0.0.1:8042/instances?x=1 now`,
    (pw) => `u:${pw}@h`,
    (pw) => `cannot connect to u:${pw}@[::1]:8042 (ECONNREFUSED)`,
    (pw) => `password=${pw}`,
    (pw) => `user=u&password=${pw}&x=1`,
    (pw) => `{"password":${JSON.stringify(pw)}}`,
    (pw) => `the password ${JSON.stringify(pw)} was refused`,
    (pw) => `encoded ${encodeURIComponent(pw)} here`,
    (pw) => `http://u:${encodeURIComponent(pw)}@h:8042/x`,
    (pw) => `lower ${encodeURIComponent(pw).replace(/%[0-9A-F]{2}/g, (escape) => escape.toLowerCase())}`,
    (pw) => `form ${encodeURIComponent(pw).replaceAll('%20', '+')}`,
    (pw) => `Authorization: Basic ${base64(`bob:${pw}`)}`,
    (pw) => `(${pw}), '${pw}'\n${pw}\n`,
  ]

  it('a registered one: neither it nor a fragment of 4 or more characters between its special characters', () => {
    const leaks: string[] = []
    for (let round = 0; round < 80; round++) {
      const password = passwordOf(6 + Math.floor(random() * 20))
      registerSecret(password)
      registerBasicCredentials('bob', password)
      for (const template of templates) {
        const text = template(password)
        const redacted = redactSecrets(text)
        const around = template('')
        const forms = [password, encodeURIComponent(password), base64(password), base64(`bob:${password}`), ...fragmentsOf(password)]
        for (const form of forms) {
          if (redacted.split(form).length > around.split(form).length) leaks.push(`${JSON.stringify(text)} -> ${JSON.stringify(redacted)} shows ${JSON.stringify(form)}`)
        }
      }
    }

    expect(leaks).toEqual([])
  })

  it('an unregistered password, URL-encoded in a URL or holding "@" and ":", goes with the URL\'s user information up to its last "@"', () => {
    const leaks: string[] = []
    for (let round = 0; round < 200; round++) {
      // No '/', '?', '#' or space: a URL's unencoded user information ends before them.
      const password = passwordOf(6 + Math.floor(random() * 20)).replace(/[/?# ]/g, '@')
      const encoded = encodeURIComponent(password)
      const cases = [`http://u:${encoded}@h/x`, `u:${encoded}@h:8042`, `http://u:${password}@h/x`, `denied u:${password}@h:8042 (401)`]
      for (const text of cases) {
        const redacted = redactSecrets(text)
        if (redacted.includes('u:') || fragmentsOf(password).some((fragment) => redacted.includes(fragment))) leaks.push(`${JSON.stringify(text)} -> ${JSON.stringify(redacted)}`)
      }
    }

    expect(leaks).toEqual([])
  })

  it('the review\'s case: a password holding "@" quoted after its user name', () => {
    registerSecret('p@ssw0rd')
    expect(redactSecrets('denied for alice:p@ssw0rd')).toBe('denied for alice:[redacted]')
    expect(redactSecrets('http://alice:p@ssw0rd@pacs:4242/x')).toBe('http://pacs:4242/x')
    expect(redactSecrets('alice:p@ssw0rd@pacs:4242')).toBe('pacs:4242')
  })
})
