import {spawnSync} from 'node:child_process'
import {mkdir, mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {generateIdentity} from 'age-encryption'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {repoRoot, runCli} from '../helpers/cli.js'

/**
 * Arguments that once did harm or hung (a review probed the command line): each is refused at
 * once as bad usage (exit 2), naming the flag, before any server is asked.
 */
describe('arguments refused before anything is done', () => {
  let work: string
  const nowhere = 'http://127.0.0.1:1'

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'bad-arguments-'))
  })
  afterAll(async () => {
    await rm(work, {recursive: true, force: true})
  })

  it('sync --follow --dry-run: a mirror always changes the target, so the two are refused together', async () => {
    const result = await runCli(['sync', '--source', nowhere, '--target', nowhere, '--follow', '--dry-run'])
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/--dry-run=true cannot also be provided when using --follow|--follow=true cannot also be provided when using --dry-run/)
  })

  it('a filter given but naming nothing (an empty file, "") is refused, never taken as no filter', async () => {
    const empty = join(work, 'no-ids.txt')
    await writeFile(empty, '# none\n\n')
    for (const value of [`@${empty}`, '', ' , ']) {
      const result = await runCli(['export', '--source', nowhere, '--output', join(work, 'out'), '--patient-id', value, '--json'])
      expect(result.code, value).toBe(2)
      expect(JSON.parse(result.stdout).error).toMatchObject({code: 'empty-filter', message: '--patient-id was given but names no value'})
    }
  })

  it('a wait longer than a timer holds (24 days) is refused, not turned into a wait of 1 ms', async () => {
    for (const args of [['export', '--output', join(work, 'out'), '--stats', '600h'], ['sync', '--target', nowhere, '--follow', '--interval', '99999999999']]) {
      const result = await runCli([...args, '--source', nowhere])
      expect(result.code, args.join(' ')).toBe(2)
    }
  })

  // A file given as --spool-dir failed when the stream's first volume came: exit 16, "check the drive... it resumes".
  it('a --spool-dir that is a file or is missing: exit 2 before anything is read', async () => {
    const file = join(work, 'spool-is-a-file')
    await writeFile(file, '')
    for (const [spool, why] of [[file, 'is not a folder'], [join(work, 'no-such-spool'), 'does not exist']] as const) {
      const result = await runCli(['import', '--target', nowhere, '--spool-dir', spool, '-', '--json'], {stdin: 'x'.repeat(1024)})
      expect(result.code, result.stdout).toBe(2)
      expect(JSON.parse(result.stdout).error).toMatchObject({code: 'unusable-spool-dir', message: `--spool-dir ${spool} ${why}`})
    }
  })

  // The receipt's default place asked for the current folder: "unexpected error ... uv_cwd", exit 1.
  it('a current folder removed since the shell entered it: exit 2 saying so, no "bug"', () => {
    const gone = join(work, 'gone')
    const result = spawnSync('bash', ['-c', `mkdir "$1" && cd "$1" && rmdir "$1" && exec "$2" "$3" import --target ${nowhere} "$4" --json`, 'bash', gone, process.execPath, join(repoRoot, 'bin', 'run.js'), work], {encoding: 'utf8', timeout: 30_000})
    expect(result.status, result.stdout).toBe(2)
    expect(JSON.parse(result.stdout).error).toMatchObject({code: 'no-current-folder', message: expect.stringContaining('the current folder no longer exists')})
  })

  it('a pipe or a device given to import or verify is refused naming the way through stdin; an unwritable --log-file names the flag', async () => {
    const fifo = join(work, 'volume-fifo')
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0)
    for (const args of [['verify', fifo], ['verify', '/dev/zero'], ['import', '--target', nowhere, '/dev/zero']]) {
      const result = await runCli([...args, '--json'], {timeoutMs: 20_000})
      expect(result.code, args.join(' ')).toBe(2)
      expect(JSON.parse(result.stdout).error.suggestion).toMatch(/give - and send it to stdin/)
    }

    for (const path of [work, join(work, 'no-such-folder', 'run.log')]) {
      const result = await runCli(['export', '--source', nowhere, '--output', join(work, 'out'), '--log-file', path, '--json'])
      expect(result.code, path).toBe(2)
      expect(JSON.parse(result.stdout).error).toMatchObject({code: 'unwritable-log-file', message: expect.stringContaining(`--log-file ${path} cannot be written`)})
    }
  })

  it('a password file that is a FIFO or a device is refused at once, not waited on; a huge one does not break the mask', async () => {
    const fifo = join(work, 'fifo')
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0)
    for (const file of [fifo, '/dev/zero']) {
      const result = await runCli(['info', '--server', nowhere, '--username', 'u', '--password-file', file, '--json'], {timeoutMs: 20_000})
      expect(result.code, file).toBe(2)
      expect(JSON.parse(result.stdout).error.message).toMatch(/not a regular file/)
    }

    const huge = join(work, 'huge-password')
    await writeFile(huge, 'a'.repeat(40_000))
    const result = await runCli(['info', '--server', nowhere, '--username', 'u', '--password-file', huge, '--json'])
    expect(result.code).toBe(4)
    expect(result.stderr).not.toMatch(/SyntaxError|Regular expression/)
    expect(result.stdout + result.stderr).not.toContain('a'.repeat(100))
  })
  it('a certificate, key or CA file that is not PEM is refused naming it, not found out at the first connection', async () => {
    const notPem = join(work, 'not-pem')
    await writeFile(notPem, 'this is no certificate\n')
    const broken = join(work, 'broken.pem')
    await writeFile(broken, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n')
    const https = 'https://127.0.0.1:1'
    for (const [flags, what] of [
      [['--ca-file', notPem], 'CA file'], [['--ca-file', broken], 'CA file'],
      [['--client-cert', notPem, '--client-key', notPem], 'client certificate'],
    ] as const) {
      const result = await runCli(['info', '--server', https, ...flags, '--json'])
      expect(result.code, flags.join(' ')).toBe(2)
      expect(JSON.parse(result.stdout).error).toMatchObject({code: 'unusable-file', message: expect.stringContaining(`cannot use ${what} ${flags[1]}`)})
    }
  })

  it('a CA file of OpenSSL "TRUSTED CERTIFICATE" blocks (Fedora\'s bundle form) is taken, as TLS takes it', async () => {
    const cert = join(work, 'ca-cert.pem')
    expect(spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(work, 'ca.key'), '-out', cert, '-subj', '/CN=ca', '-days', '1']).status).toBe(0)
    const trusted = join(work, 'ca-trusted.pem')
    expect(spawnSync('openssl', ['x509', '-in', cert, '-addtrust', 'serverAuth', '-out', trusted]).status).toBe(0)
    const result = await runCli(['info', '--server', 'https://127.0.0.1:1', '--ca-file', trusted, '--json'])
    // Refused only by the server's absence (exit 4), not as a file.
    expect(result.code).toBe(4)
  })

  it('an encrypted client key is refused saying so', async () => {
    const key = join(work, 'encrypted.key')
    expect(spawnSync('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-aes256', '-pass', 'pass:x', '-out', key]).status).toBe(0)
    const cert = join(work, 'cert.pem')
    expect(spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(work, 'plain.key'), '-out', cert, '-subj', '/CN=test', '-days', '1']).status).toBe(0)
    const result = await runCli(['info', '--server', 'https://127.0.0.1:1', '--client-cert', cert, '--client-key', key, '--json'])
    expect(result.code).toBe(2)
    expect(JSON.parse(result.stdout).error.message).toBe(`cannot use client key ${key}: the key is encrypted, and no passphrase is taken: decrypt it with openssl pkey -in FILE -out FILE.plain (and keep that file private)`)
  })

  it('a password file named by the environment that cannot be read names the variable', async () => {
    const result = await runCli(['info', '--server', nowhere, '--username', 'u', '--json'], {env: {ORTHANC_PASSWORD_FILE: work}})
    expect(result.code).toBe(2)
    expect(JSON.parse(result.stdout).error.message).toContain(`password file (ORTHANC_PASSWORD_FILE) ${work}`)
  })
  it('a flag given an empty value is refused naming it, never taken as not given; --receipt and --no-receipt together are refused', async () => {
    for (const args of [
      ['export', '--source', nowhere, '--output', join(work, 'out'), '--log-file='],
      ['export', '--source', nowhere, '--output', join(work, 'out'), '--hops-from='],
      ['info', '--server', nowhere, '--username', 'u', '--password-file', ''],
      ['import', '--target', nowhere, '--receipt=', work],
    ]) {
      const result = await runCli([...args, '--json'])
      expect(result.code, args.join(' ')).toBe(2)
      expect(JSON.parse(result.stdout).error.message).toMatch(/^--(log-file|hops-from|password-file|receipt) was given an empty value$/)
    }

    const both = await runCli(['import', '--target', nowhere, '--receipt', join(work, 'r.jsonl'), '--no-receipt', work, '--json'])
    expect(both.code).toBe(2)
  })

  it('--exclude-receipt or --hops-from naming no file: a usage error naming its own flag', async () => {
    const missing = join(work, 'no-such-receipt.jsonl')
    const receipt = await runCli(['export', '--source', nowhere, '--output', join(work, 'out'), '--exclude-receipt', missing, '--json'])
    expect(receipt.code).toBe(2)
    expect(JSON.parse(receipt.stdout).error.message).toBe(`cannot read --exclude-receipt ${missing}: ENOENT`)
    const hops = await runCli(['export', '--source', nowhere, '--output', join(work, 'out'), '--hops-from', join(work, 'no-such-archive'), '--json'])
    expect(hops.code).toBe(2)
    expect(JSON.parse(hops.stdout).error.suggestion).toMatch(/^Give --hops-from /)
  })
  it('sync --follow --state naming a file that is not a mirror\'s state: refused, and the file left as it was', async () => {
    const notes = join(work, 'notes.json')
    await writeFile(notes, '{"my": "notes"}\n')
    for (const state of [notes, '/dev/zero']) {
      const result = await runCli(['sync', '--source', nowhere, '--target', nowhere, '--follow', '--state', state, '--json'], {timeoutMs: 20_000})
      expect(result.code, state).toBe(2)
      expect(JSON.parse(result.stdout).error).toMatchObject({code: 'not-a-state-file'})
    }

    expect(await readFile(notes, 'utf8')).toBe('{"my": "notes"}\n')

    // Another mirror's state was taken as no state and written over: that mirror lost its cursor.
    const other = join(work, 'other-mirror.json')
    const otherState = `${JSON.stringify({version: 1, source: 'http://127.0.0.1:1', target: 'http://127.0.0.1:2', cursor: 42, lastFullPass: null})}\n`
    await writeFile(other, otherState)
    const taken = await runCli(['sync', '--source', nowhere, '--target', nowhere, '--follow', '--state', other, '--json'], {timeoutMs: 20_000})
    expect(taken.code).toBe(2)
    expect(JSON.parse(taken.stdout).error).toMatchObject({code: 'other-mirrors-state', message: expect.stringContaining('a mirror of http://127.0.0.1:1 into http://127.0.0.1:2')})
    expect(await readFile(other, 'utf8')).toBe(otherState)
  })

  it('a secret key given where a key file\'s path belongs is refused without being echoed, with or without --json', async () => {
    const key = await generateIdentity()
    const archive = join(work, 'some-export')
    const commands: Array<[string, string[]]> = [
      ['--identity', ['verify', '--identity', key, archive]],
      ['--identity', ['import', '--target', nowhere, '--identity', key, archive]],
      ['--recipients-file', ['export', '--source', nowhere, '--output', join(work, 'never'), '--recipients-file', key]],
      ['--passphrase-file', ['verify', '--passphrase-file', key, archive]],
    ]
    for (const [flag, args] of commands) {
      for (const json of [[], ['--json']]) {
        const result = await runCli([...args, ...json])
        const what = `${args[0]} ${flag} ${json.join('')}`
        expect(result.code, what).toBe(2)
        expect(result.stdout + result.stderr, what).toContain(`${flag} (`)
        expect(result.stdout + result.stderr, what).toContain('looks like a secret key, not a file: put the key in a file (mode 0600) and give its path')
        expect(result.stdout + result.stderr, what).not.toContain(key)
        expect(result.stdout + result.stderr, what).not.toContain(key.slice(20, 40))
      }
    }
  })

  // "not a PostgreSQL URL: postgresql://127.0.0.1:99999/db?password=pa55word", and "URI malformed"
  // (exit 1) for a '%' in a password that begins no escape.
  it('import --from-postgres: a URL refused shows no password, from its query or its user information', async () => {
    for (const [url, password] of [['postgresql://u@127.0.0.1:99999/db?password=pa55word', 'pa55word'], ['postgresql://u:50%zzpw@127.0.0.1/db', 'zzpw'], ['postgresql://u:2024/Spring@127.0.0.1/db', 'Spring']] as const) {
      for (const json of [[], ['--json']]) {
        const result = await runCli(['import', '--from-postgres', url, '--target', nowhere, ...json])
        const output = result.stdout + result.stderr
        expect(result.code, output).toBe(2)
        expect(output, url).toMatch(/PostgreSQL URL/)
        expect(output, url).not.toContain(password)
        expect(output, url).not.toMatch(/URI malformed/)
        if (json.length > 0) expect(JSON.parse(result.stdout).error).toMatchObject({code: 'invalid-database-url', exitCode: 2})
      }
    }
  })

  // oclif named an unknown flag with its value: "Nonexistent flag: --passphrase=hunter2".
  it('an unknown flag is named without its value, with --json and without', async () => {
    for (const json of [[], ['--json']]) {
      for (const args of [['--passphrase=hunter2'], ['--passphrase=hunter2, --x=y', '-Phunter2']]) {
        const result = await runCli(['verify', ...json, ...args, join(work, 'none')])
        const output = result.stdout + result.stderr
        expect(result.code, output).toBe(2)
        expect(output).toMatch(/Nonexistent flags?: --passphrase/)
        expect(output).not.toContain('hunter2')
        if (json.length > 0) expect(JSON.parse(result.stdout).error).toMatchObject({code: 'usage', exitCode: 2, message: args.length === 1 ? 'Nonexistent flag: --passphrase' : 'Nonexistent flags: --passphrase, -P'})
      }
    }
  })

  // "Unexpected argument: hunter2": a passphrase typed after a flag that takes none was shown.
  it('an unexpected argument is named by where it stands, never shown, with --json and without', async () => {
    for (const json of [[], ['--json']]) {
      const afterFlag = await runCli(['sync', '--source', 'http://127.0.0.1:9', '--target', 'http://127.0.0.1:9', '--dry-run', 'hunter2-Secret', ...json])
      const tooMany = await runCli(['sync', ...json, '--source', 'http://127.0.0.1:9', '--target', 'http://127.0.0.1:9', 'hunter2-Secret', 'Second-Secret'])
      for (const [result, places] of [[afterFlag, 'the word after --dry-run'], [tooMany, `the ${5 + json.length}th word after the command's name, the ${6 + json.length}th word after the command's name`]] as const) {
        const output = result.stdout + result.stderr
        expect(result.code, output).toBe(2)
        expect(output).not.toMatch(/hunter2|Secret/)
        expect(output).toContain(`(not shown: it may be a secret): ${places}.`)
        if (json.length > 0) expect(JSON.parse(result.stdout).error).toMatchObject({code: 'usage', exitCode: 2})
      }
    }
  })

  // "hunter2-Secret: no such file or folder": a word after a flag that takes no value is read as a
  // path by import and verify, and a secret typed there was shown as the path that was not found.
  it('a word after a flag that takes no value, naming no file, is named by where it stands, never shown', async () => {
    const folder = join(work, 'an-existing-folder')
    await mkdir(folder, {recursive: true})
    for (const args of [['verify', '--json', 'hunter2-Secret', folder], ['verify', '-q', 'hunter2-Secret'], ['import', '--target', 'http://127.0.0.1:9', '--dry-run', 'hunter2-Secret', '--json']]) {
      const result = await runCli(args)
      const output = result.stdout + result.stderr
      expect(result.code, output).toBe(2)
      expect(output).not.toContain('hunter2')
      expect(output).toContain(`the word after ${args[args.indexOf('hunter2-Secret') - 1]} names no file or folder (not shown`)
    }
    // A path that is there, after such a flag, is read as ever; one that is not, elsewhere, is named.
    expect((await runCli(['verify', '--json', folder])).stdout).not.toContain('names no file or folder')
    expect((await runCli(['verify', join(work, 'no-such-volume'), '--json'])).stdout).toContain(`${join(work, 'no-such-volume')}: no such file or folder`)
  })

  it('a group number past 32 bits, and a date range that ends before it starts, are refused naming the flags', async () => {
    const group = await runCli(['export', '--source', nowhere, '--output', join(work, 'out'), '--file-group', '99999999999999', '--json'])
    expect(group.code).toBe(2)
    expect(JSON.parse(group.stdout).error.message).toBe('--file-group 99999999999999 is no group number (at most 4294967294)')
    const dates = await runCli(['export', '--source', nowhere, '--output', join(work, 'out'), '--study-date-from', '20250101', '--study-date-to', '20200101', '--json'])
    expect(dates.code).toBe(2)
    expect(JSON.parse(dates.stdout).error).toMatchObject({code: 'reversed-dates', message: '--study-date-from 20250101 is after --study-date-to 20200101'})
  })
})
