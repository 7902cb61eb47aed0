import {createHash} from 'node:crypto'
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {PassThrough, Readable, Writable} from 'node:stream'
import {pipeline} from 'node:stream/promises'
import {inspect} from 'node:util'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {
  AgeAlteredError, type AgeEncryptionKeys, AgeError, type AgeIdentity, AgeKeyFileError, AgeTruncatedError, AgeTruncatedOrAlteredError, AgeWrongKeyError,
  createAgeDecryptor, createAgeEncryptor, createDecryptingReader, createEncryptingWriter, encryptedSizeBound, InvalidAgeRecipientError, MissingAgeKeyError,
  NotAgeFileError, parseIdentityFile, parseRecipient, parseRecipientsFile, readIdentityFile, readPassphraseFile, readRecipientsFile, SecretKeyAsPathError, startsLikeAgeFile,
  UnsupportedAgeFileError,
} from '../../src/crypto/age.js'
import {isCompletenessProblem, isInputProblem, isIntegrityProblem} from '../../src/problems.js'
import {Secret} from '../../src/util/secret.js'
import {ageLayout, CHUNK, chunked, decryptBuffer, decryptFailure, encryptBuffer, flipped, newIdentity, pseudoRandomBytes} from '../helpers/age.js'

/** Fast enough for tests; real exports use age's 18. */
const TEST_WORK_FACTOR = 10
const PASSPHRASE = 'correct-horse-battery-staple-4711'
const KIB64 = 64 * 1024

let alice: AgeIdentity
let bob: AgeIdentity
let carol: AgeIdentity
/** Every secret of this file: no error message, suggestion, JSON or inspect output may hold one. */
const secrets: string[] = [PASSPHRASE]
/** Every error the tests provoke, checked for secrets at the end. */
const seenErrors: unknown[] = []

function expectError<T extends Error>(error: unknown, type: abstract new (...args: never[]) => T): T {
  seenErrors.push(error)
  expect(error, String(error)).toBeInstanceOf(type)
  return error as T
}

beforeAll(async () => {
  alice = await newIdentity()
  bob = await newIdentity()
  carol = await newIdentity()
  secrets.push(...[alice, bob, carol].map((identity) => identity.secret.reveal()))
})

describe('round trips', () => {
  it('recipients: empty, one byte, at and around chunk boundaries, several chunks', async () => {
    for (const size of [0, 1, KIB64 - 1, KIB64, KIB64 + 1, 2 * KIB64, 3 * KIB64 + 1000]) {
      const plaintext = pseudoRandomBytes(size, size + 1)
      const ciphertext = await encryptBuffer(plaintext, {recipients: [alice.recipient]})
      expect(ciphertext.subarray(0, 22).toString()).toBe('age-encryption.org/v1\n')
      expect(ciphertext.length).toBeLessThanOrEqual(encryptedSizeBound(size, {recipients: [alice.recipient]}))
      expect(ciphertext.length).toBeGreaterThan(encryptedSizeBound(size, {recipients: [alice.recipient]}) - 128)
      expect((await decryptBuffer(ciphertext, {identities: [alice]})).equals(plaintext), `size ${size}`).toBe(true)
    }
  })

  it('writes of any size: one byte at a time, and a megabyte at once', async () => {
    const plaintext = pseudoRandomBytes(200_000)
    const oneByOne = await encryptBuffer(plaintext.subarray(0, 3000), {recipients: [alice.recipient]}, 1)
    expect((await decryptBuffer(oneByOne, {identities: [alice]}, 1)).equals(plaintext.subarray(0, 3000))).toBe(true)
    const big = await encryptBuffer(plaintext, {recipients: [alice.recipient]}, 1024 * 1024)
    expect((await decryptBuffer(big, {identities: [alice]}, 1024 * 1024)).equals(plaintext)).toBe(true)
  })

  it('passphrase', async () => {
    const plaintext = pseudoRandomBytes(150_000)
    const ciphertext = await encryptBuffer(plaintext, {passphrase: new Secret(PASSPHRASE), scryptWorkFactor: TEST_WORK_FACTOR})
    expect(ciphertext.toString('latin1')).toContain(`-> scrypt `)
    expect((await decryptBuffer(ciphertext, {passphrases: [new Secret(PASSPHRASE)]})).equals(plaintext)).toBe(true)
    // A stream logged or inspected shows no key.
    const streams = [createAgeEncryptor({passphrase: new Secret(PASSPHRASE), scryptWorkFactor: TEST_WORK_FACTOR}), createAgeDecryptor({identities: [alice], passphrases: [new Secret(PASSPHRASE)]})]
    // Once started: the library holds the keys by then.
    await new Promise((resolve) => setImmediate(resolve))
    for (const stream of streams) {
      const shown = inspect(stream, {depth: 10})
      for (const secret of secrets) expect(shown).not.toContain(secret)
      stream.destroy()
    }
    // Identities and passphrases may be given together; the passphrase opens it.
    expect((await decryptBuffer(ciphertext, {identities: [alice], passphrases: [new Secret('other'), new Secret(PASSPHRASE)]})).equals(plaintext)).toBe(true)
  })

  it('several recipients: each identity alone decrypts', async () => {
    const plaintext = pseudoRandomBytes(70_000)
    const ciphertext = await encryptBuffer(plaintext, {recipients: [alice.recipient, bob.recipient]})
    expect((await decryptBuffer(ciphertext, {identities: [alice]})).equals(plaintext)).toBe(true)
    expect((await decryptBuffer(ciphertext, {identities: [bob]})).equals(plaintext)).toBe(true)
    expect((await decryptBuffer(ciphertext, {identities: [carol, bob]})).equals(plaintext)).toBe(true)
    const {error} = await decryptFailure(ciphertext, {identities: [carol]})
    expect(expectError(error, AgeWrongKeyError).message).toContain('2 recipients (X25519)')
  })

  it('createEncryptingWriter finishes only once the destination has every byte', async () => {
    const plaintext = pseudoRandomBytes(300_000)
    const written: Buffer[] = []
    const slowFile = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        setTimeout(() => {
          written.push(chunk)
          callback()
        }, 2)
      },
    })
    await pipeline(chunked(plaintext, 50_000), createEncryptingWriter(slowFile, {recipients: [alice.recipient]}))
    const ciphertext = Buffer.concat(written)
    expect(ciphertext.length).toBe(ageLayout(ciphertext).payloadStart + plaintext.length + 5 * 16)
    expect((await decryptBuffer(ciphertext, {identities: [alice]})).equals(plaintext)).toBe(true)
  })

  it('createEncryptingWriter fails when its destination fails', async () => {
    const failing = new Writable({
      write(_chunk, _encoding, callback) {
        callback(Object.assign(new Error('no space left on device'), {code: 'ENOSPC'}))
      },
    })
    await expect(pipeline(chunked(pseudoRandomBytes(200_000)), createEncryptingWriter(failing, {recipients: [alice.recipient]}))).rejects.toMatchObject({code: 'ENOSPC'})
  })

  it('createDecryptingReader passes an error of its source on as it is', async () => {
    const ciphertext = await encryptBuffer(pseudoRandomBytes(200_000), {recipients: [alice.recipient]})
    const source = new PassThrough()
    const plaintext = createDecryptingReader(source, {identities: [alice]}, {source: 'vol.tar.age'})
    source.write(ciphertext.subarray(0, 100_000))
    setTimeout(() => source.destroy(Object.assign(new Error('i/o error'), {code: 'EIO'})), 10)
    await expect(pipeline(plaintext, new Writable({write: (_chunk, _encoding, callback) => callback()}))).rejects.toMatchObject({code: 'EIO'})
  })
})

describe('refusals, each named', () => {
  let plaintext: Buffer
  let ciphertext: Buffer
  let layout: ReturnType<typeof ageLayout>

  beforeAll(async () => {
    // Four chunks: three full, the last one 1000 bytes.
    plaintext = pseudoRandomBytes(3 * KIB64 + 1000, 7)
    ciphertext = await encryptBuffer(plaintext, {recipients: [alice.recipient, bob.recipient]})
    layout = ageLayout(ciphertext)
    expect(layout.chunks).toBe(4)
  })

  it('a wrong identity, naming what the file is for and no key', async () => {
    const {error, released} = await decryptFailure(ciphertext, {identities: [carol]})
    const wrongKey = expectError(error, AgeWrongKeyError)
    expect(wrongKey.problemKind).toBe('wrong-key')
    expect(wrongKey.category).toBe('bad-input')
    expect(wrongKey.stanzaTypes).toEqual(['X25519', 'X25519'])
    expect(wrongKey.message).toBe('test.tar.age: cannot decrypt: the file is encrypted to 2 recipients (X25519), and 1 identity given does not open it')
    expect(released.length).toBe(0)
    expect(isInputProblem({kind: wrongKey.problemKind})).toBe(true)
    expect(isIntegrityProblem({kind: wrongKey.problemKind})).toBe(false)
  })

  it('a wrong passphrase, and a key of the other kind', async () => {
    const withPassphrase = await encryptBuffer(plaintext.subarray(0, 1000), {passphrase: new Secret(PASSPHRASE), scryptWorkFactor: TEST_WORK_FACTOR})
    const wrongPassphrase = expectError((await decryptFailure(withPassphrase, {passphrases: [new Secret('not it')]})).error, AgeWrongKeyError)
    expect(wrongPassphrase.message).toContain('encrypted to a passphrase, and the passphrase given does not open it')
    const identityForPassphrase = expectError((await decryptFailure(withPassphrase, {identities: [alice]})).error, AgeWrongKeyError)
    expect(identityForPassphrase.suggestion).toContain('--passphrase-file')
    const passphraseForRecipients = expectError((await decryptFailure(ciphertext, {passphrases: [new Secret(PASSPHRASE)]})).error, AgeWrongKeyError)
    expect(passphraseForRecipients.suggestion).toContain('--identity')
  })

  it('input that is not age: a tar, random bytes, text, armour; an empty file is cut short', async () => {
    const tarBlock = Buffer.concat([Buffer.from('orthanc-export-0001-of-0001/bagit.txt'), Buffer.alloc(1000)])
    for (const garbage of [tarBlock, pseudoRandomBytes(100_000), Buffer.from('hello\n'), Buffer.from('age-encryption.org/v2\n-> X25519 abc\n')]) {
      const notAge = expectError((await decryptFailure(garbage, {identities: [alice]})).error, NotAgeFileError)
      expect(notAge.problemKind).toBe('not-archive')
      expect(notAge.message).toBe('test.tar.age: not an age-encrypted file (it does not start with "age-encryption.org/v1")')
    }

    expect(startsLikeAgeFile(ciphertext)).toBe(true)
    expect(startsLikeAgeFile(ciphertext.subarray(0, 21))).toBe(false)
    expect(startsLikeAgeFile(tarBlock)).toBe(false)

    const armoured = Buffer.from('-----BEGIN AGE ENCRYPTED FILE-----\nYWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOSB0QXVkQmNwZ3ZzYnNRZDJP\n')
    expect(expectError((await decryptFailure(armoured, {identities: [alice]})).error, UnsupportedAgeFileError).problemKind).toBe('unsupported')
    expect(expectError((await decryptFailure(Buffer.alloc(0), {identities: [alice]})).error, AgeTruncatedError).part).toBe('header')
  })

  it('a header that never ends is refused after 1 MiB, not read on', async () => {
    const endless = Buffer.concat([Buffer.from('age-encryption.org/v1\n-> X25519 '), Buffer.alloc(3 * 1024 * 1024, 'A')])
    expectError((await decryptFailure(endless, {identities: [alice]}, 64 * 1024)).error, AgeAlteredError)
  })

  it('truncation anywhere: inside the header and nonce, at and inside chunk boundaries, just before the end', async () => {
    const {headerEnd, payloadStart} = layout
    const cases: Array<[string, number, abstract new (...args: never[]) => Error, number]> = [
      ['inside the version line', 10, AgeTruncatedError, 0],
      ['after the version line', 22, AgeTruncatedError, 0],
      ['inside the first stanza', 60, AgeTruncatedError, 0],
      ['inside the MAC line', headerEnd - 10, AgeTruncatedError, 0],
      ['right after the header', headerEnd, AgeTruncatedError, 0],
      ['inside the nonce', headerEnd + 8, AgeTruncatedError, 0],
      ['after the nonce, no payload', payloadStart, AgeTruncatedError, 0],
      ['5 bytes into the first chunk', payloadStart + 5, AgeTruncatedError, 0],
      ['inside the first chunk', payloadStart + 30_000, AgeTruncatedOrAlteredError, 0],
      ['at the first chunk boundary', payloadStart + CHUNK, AgeTruncatedOrAlteredError, 0],
      ['one tag after the first chunk boundary', payloadStart + CHUNK + 16, AgeTruncatedError, 1],
      ['inside the second chunk', payloadStart + CHUNK + 1000, AgeTruncatedOrAlteredError, 1],
      ['at the last chunk boundary', payloadStart + 3 * CHUNK, AgeTruncatedOrAlteredError, 2],
      ['one byte before the end', ciphertext.length - 1, AgeTruncatedOrAlteredError, 3],
    ]
    for (const [what, length, type, authenticatedChunks] of cases) {
      for (const writeSize of [7000, 1024 * 1024]) {
        const {error, released} = await decryptFailure(ciphertext.subarray(0, length), {identities: [alice]}, writeSize)
        expectError(error, type)
        // Never any plaintext past the damage: at most the chunks before it, all authentic.
        expect(released.length, what).toBeLessThanOrEqual(authenticatedChunks * KIB64)
        expect(released.equals(plaintext.subarray(0, released.length)), what).toBe(true)
      }
    }

    const atBoundary = expectError((await decryptFailure(ciphertext.subarray(0, payloadStart + 2 * CHUNK), {identities: [alice]})).error, AgeTruncatedOrAlteredError)
    expect(atBoundary.chunk).toBe(1)
    expect(atBoundary.problemKind).toBe('damaged')
    expect(atBoundary.message).toContain('its last chunk (chunk 1, from byte')
    const inHeader = expectError((await decryptFailure(ciphertext.subarray(0, 60), {identities: [alice]})).error, AgeTruncatedError)
    expect(isCompletenessProblem({kind: inHeader.problemKind})).toBe(true)
  })

  it('truncation at a chunk boundary of a file whose last chunk is full', async () => {
    const twoFullChunks = pseudoRandomBytes(2 * KIB64, 3)
    const encrypted = await encryptBuffer(twoFullChunks, {recipients: [alice.recipient]})
    const {payloadStart} = ageLayout(encrypted)
    expect(encrypted.length).toBe(payloadStart + 2 * CHUNK)
    expect((await decryptBuffer(encrypted, {identities: [alice]})).equals(twoFullChunks)).toBe(true)
    expectError((await decryptFailure(encrypted.subarray(0, payloadStart + CHUNK), {identities: [alice]})).error, AgeTruncatedOrAlteredError)
  })

  it('a flipped byte anywhere: header stanza, header MAC, nonce, first, middle and last chunk; and bytes appended', async () => {
    const {macLineStart, headerEnd, payloadStart} = layout
    const lastStanzaBodyLine = ciphertext.lastIndexOf('\n', macLineStart - 2) + 1
    const cases: Array<[string, number, abstract new (...args: never[]) => Error]> = [
      ['the version line', 3, NotAgeFileError],
      ['the first stanza type', 25, AgeWrongKeyError],
      // Alice's stanza is the first: a flip in Bob's is caught by the MAC, with Alice's key.
      ['the second stanza body', lastStanzaBodyLine + 5, AgeAlteredError],
      ['the MAC line marker', macLineStart + 1, AgeAlteredError],
      ['the MAC', macLineStart + 10, AgeAlteredError],
      ['the MAC line end', headerEnd - 1, AgeAlteredError],
      ['the nonce', headerEnd + 3, AgeAlteredError],
      ['the first chunk', payloadStart + 100, AgeAlteredError],
      ['the first chunk tag', payloadStart + CHUNK - 1, AgeAlteredError],
      ['the middle chunk', payloadStart + CHUNK + 5000, AgeAlteredError],
      ['the last chunk', payloadStart + 3 * CHUNK + 10, AgeTruncatedOrAlteredError],
      ['the last byte', ciphertext.length - 1, AgeTruncatedOrAlteredError],
    ]
    for (const [what, offset, type] of cases) {
      const {error, released} = await decryptFailure(flipped(ciphertext, offset), {identities: [alice]})
      expectError(error, type)
      expect(released.equals(plaintext.subarray(0, released.length)), what).toBe(true)
    }

    const inChunk = expectError((await decryptFailure(flipped(ciphertext, payloadStart + CHUNK + 5000), {identities: [alice]})).error, AgeAlteredError)
    expect(inChunk).toMatchObject({part: 'chunk', chunk: 1, offset: payloadStart + CHUNK, problemKind: 'checksum'})
    expect(isIntegrityProblem({kind: inChunk.problemKind})).toBe(true)
    // A MAC character swapped for another base64 one still parses, and fails as a MAC (a flipped bit may not even parse).
    expect(expectError((await decryptFailure(otherBase64(ciphertext, macLineStart + 10), {identities: [alice]})).error, AgeAlteredError).part).toBe('header-mac')
    // Bob's stanza altered: Alice still opens the file, and its MAC shows the change; for Bob it opens for nobody.
    const bobAltered = otherBase64(ciphertext, lastStanzaBodyLine + 5)
    expect(expectError((await decryptFailure(bobAltered, {identities: [alice]})).error, AgeAlteredError).part).toBe('header-mac')
    expectError((await decryptFailure(bobAltered, {identities: [bob]})).error, AgeWrongKeyError)

    // Bytes appended: the last chunk no longer ends the file; once it is followed by a whole chunk's worth, it fails as one that is not the last.
    expectError((await decryptFailure(Buffer.concat([ciphertext, Buffer.from('extra')]), {identities: [alice]})).error, AgeTruncatedOrAlteredError)
    const appended = Buffer.concat([ciphertext, Buffer.alloc(CHUNK)])
    expect(expectError((await decryptFailure(appended, {identities: [alice]})).error, AgeAlteredError)).toMatchObject({part: 'chunk', chunk: 3})
  })

  it('a header MAC altered is altered whatever the file size, also when the file arrives in one read', async () => {
    // A short last volume arrives in one read, and the library reads on to its end before checking the MAC.
    const small = await encryptBuffer(plaintext.subarray(0, 1000), {recipients: [alice.recipient]})
    for (const [what, file] of [['small', small], ['several chunks', ciphertext]] as const) {
      const macFlipped = otherBase64(file, file.indexOf('\n--- ') + 5)
      for (const writeSize of [7000, 1024 * 1024]) {
        const {error, released} = await decryptFailure(macFlipped, {identities: [alice]}, writeSize)
        const altered = expectError(error, AgeAlteredError)
        expect(altered.part, `${what}, writes of ${writeSize}`).toBe('header-mac')
        expect(altered.problemKind).toBe('checksum')
        expect(isIntegrityProblem({kind: altered.problemKind})).toBe(true)
        expect(released.length).toBe(0)
      }
    }

    // A header that does not parse, on a small file read whole: damaged, not cut short.
    const stanzaTypeBroken = Buffer.from(small)
    stanzaTypeBroken.write('-> X25519  ', small.indexOf('-> X25519 '))
    for (const writeSize of [7000, 1024 * 1024]) {
      expect(expectError((await decryptFailure(stanzaTypeBroken, {identities: [alice]}, writeSize)).error, AgeAlteredError).problemKind).toBe('damaged')
    }
  })

  it('every refusal is a bad-input AgeError that fails one file, not the job', () => {
    const fileErrors = seenErrors.filter((error) => !(error instanceof AgeKeyFileError))
    expect(fileErrors.length).toBeGreaterThan(20)
    for (const error of fileErrors) {
      expect(error).toBeInstanceOf(AgeError)
      expect(error).toMatchObject({category: 'bad-input', fatal: false})
      expect(isInputProblem({kind: (error as AgeError).problemKind})).toBe(true)
    }
  })
})

describe('keys', () => {
  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'age-keys-'))
  })
  afterAll(async () => {
    await rm(dir, {recursive: true, force: true})
  })

  it('recipients: valid ones pass, secrets pasted by mistake are refused without being echoed', async () => {
    expect(await parseRecipient(`  ${alice.recipient}\n`)).toBe(alice.recipient)
    const secret = expectError(await catchError(() => parseRecipient(alice.secret.reveal())), InvalidAgeRecipientError)
    expect(secret.message).toContain('this is a secret key')
    expect(secret.shown).toBeUndefined()
    const badChecksum = `${alice.recipient.slice(0, -1)}${alice.recipient.endsWith('q') ? 'p' : 'q'}`
    expect(expectError(await catchError(() => parseRecipient(badChecksum)), InvalidAgeRecipientError).message).toContain(`"${badChecksum}" is not a usable age recipient: wrong length or checksum`)
    expectError(await catchError(() => parseRecipient('age1pq1abcdef')), InvalidAgeRecipientError)
    expectError(await catchError(() => parseRecipient('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI')), InvalidAgeRecipientError)
    const passphraseByMistake = expectError(await catchError(() => parseRecipient(PASSPHRASE)), InvalidAgeRecipientError)
    expect(passphraseByMistake.message).not.toContain(PASSPHRASE)
    expect(passphraseByMistake.category).toBe('usage')
    expect(() => createAgeEncryptor({recipients: []})).toThrow(MissingAgeKeyError)
    // A recipient is checked in full by the age library, which loads only when encryption starts:
    // a bad one fails the encryption before a byte comes out.
    const output: Buffer[] = []
    const collect = new Writable({write(chunk: Buffer, _, done) {
      output.push(chunk)
      done()
    }})
    expectError(await catchError(() => pipeline(Readable.from([Buffer.from('plaintext')]), createAgeEncryptor({recipients: ['age1nope']}), collect)), InvalidAgeRecipientError)
    expect(output).toEqual([])
    expect(() => createAgeDecryptor({})).toThrow(MissingAgeKeyError)
    expect(() => createAgeEncryptor({passphrase: new Secret('')})).toThrow(MissingAgeKeyError)
    expect(() => createAgeEncryptor({passphrase: new Secret(PASSPHRASE), scryptWorkFactor: 21})).toThrow(RangeError)
  })

  it('recipients file: comments, blank lines and CRLF; errors name the line', async () => {
    const text = `# the archive team\r\n${alice.recipient}\r\n\r\n   # backup key\n${bob.recipient}\n`
    expect(await parseRecipientsFile(text, 'team.txt')).toEqual([alice.recipient, bob.recipient])
    const bad = expectError(await catchError(() => parseRecipientsFile(`${alice.recipient}\n${carol.secret.reveal()}\n`, 'team.txt')), InvalidAgeRecipientError)
    expect(bad.message).toMatch(/^recipients file team\.txt line 2: is not a usable age recipient: this is a secret key/)
    expect(expectError(await catchError(() => parseRecipientsFile('# nobody\n', 'empty.txt')), AgeKeyFileError).problem).toBe('malformed')
    const path = join(dir, 'recipients.txt')
    await writeFile(path, text)
    expect(await readRecipientsFile(path)).toEqual([alice.recipient, bob.recipient])
  })

  it('identity file as age-keygen writes it, with several identities', async () => {
    const text = `# created: 2024-06-01T10:00:00Z\n# public key: ${alice.recipient}\n${alice.secret.reveal()}\n\n# second\n${bob.secret.reveal()}\r\n`
    const identities = await parseIdentityFile(text, 'key.txt')
    expect(identities.map((identity) => identity.recipient)).toEqual([alice.recipient, bob.recipient])
    expect(identities[0]!.origin).toBe('key.txt line 3')
    // Printing an identity shows its public key only.
    for (const shown of [String(identities[0]), JSON.stringify(identities), inspect(identities)]) {
      expect(shown).toContain(alice.recipient)
      expect(shown).not.toContain(alice.secret.reveal())
    }
  })

  it('identity files that cannot be used are named, with the line, never the content', async () => {
    const broken = `${alice.secret.reveal().slice(0, -1)}${alice.secret.reveal().endsWith('Q') ? 'P' : 'Q'}`
    const cases: Array<[string, 'malformed' | 'unsupported', string]> = [
      [`# ok\n${broken}\n`, 'malformed', 'key.txt line 2: not a valid AGE-SECRET-KEY-1 identity (wrong length or checksum)'],
      [`${alice.secret.reveal()}\n${alice.recipient}\n`, 'malformed', 'key.txt line 2: not an age identity'],
      ['AGE-PLUGIN-YUBIKEY-1QQQQQQ\n', 'unsupported', 'age plugin identities'],
      ['AGE-SECRET-KEY-PQ-1QQQQQQ\n', 'unsupported', 'post-quantum'],
      ['age-encryption.org/v1\n-> scrypt abc 18\n', 'unsupported', 'it is itself encrypted'],
      ['-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEA\n', 'unsupported', 'SSH or PEM private key'],
      ['# only comments\n\n', 'malformed', 'holds no identity'],
    ]
    for (const [text, problem, message] of cases) {
      const error = expectError(await parseIdentityFile(text, 'key.txt').catch((caught: unknown) => caught), AgeKeyFileError)
      expect(error.problem).toBe(problem)
      expect(error.message).toContain(message)
      expect(error.category).toBe('usage')
      expect(error.message).not.toContain(broken)
    }

    const missing = expectError(await readIdentityFile(join(dir, 'nope.txt')).catch((caught: unknown) => caught), AgeKeyFileError)
    expect(missing.message).toBe(`identity file ${join(dir, 'nope.txt')}: cannot read it (ENOENT)`)
    expect(missing.code).toBe('unreadable-key-file')
    expect(expectError(await readIdentityFile(dir).catch((caught: unknown) => caught), AgeKeyFileError).message).toContain('EISDIR')
    const huge = join(dir, 'huge.txt')
    await writeFile(huge, Buffer.alloc(2 * 1024 * 1024, 'a'))
    expect(expectError(await readIdentityFile(huge).catch((caught: unknown) => caught), AgeKeyFileError).message).toContain('not a key file')
  })

  it('a secret key given where a key file\'s path belongs is refused without being echoed', async () => {
    const key = alice.secret.reveal()
    const pluginKey = 'AGE-PLUGIN-YUBIKEY-1QXZ3J8F5M9LKPDSVW7N0'
    for (const given of [key, key.toLowerCase(), `./${key}`, pluginKey, pluginKey.toLowerCase()]) {
      for (const read of [readIdentityFile, readRecipientsFile, readPassphraseFile]) {
        const error = expectError(await catchError(() => read(given)), SecretKeyAsPathError)
        expect(error.message).toMatch(/^--(identity|recipients-file|passphrase-file) \(\w+ file\): the value given looks like a secret key, not a file: put the key in a file \(mode 0600\) and give its path$/)
        expect(error).toMatchObject({category: 'usage', fatal: true})
        for (const text of [error.message, error.suggestion, JSON.stringify(error), inspect(error)]) expect(text.toLowerCase()).not.toContain(given.toLowerCase())
      }
    }

    // File names that merely mention age keys are paths.
    for (const name of ['age-plugin-yubikey-identity.txt', 'age-secret-key-backup.txt']) {
      expect(expectError(await catchError(() => readIdentityFile(join(dir, name))), AgeKeyFileError).message).toContain(`${join(dir, name)}: cannot read it (ENOENT)`)
    }
  })

  it('passphrase file: one trailing newline is not part of it; an empty one is refused', async () => {
    const path = join(dir, 'pass.txt')
    await writeFile(path, `${PASSPHRASE}\n`)
    const passphrase = await readPassphraseFile(path)
    expect(passphrase.reveal()).toBe(PASSPHRASE)
    expect(String(passphrase)).toBe('[redacted]')
    await writeFile(path, ' spaces count \r\n')
    expect((await readPassphraseFile(path)).reveal()).toBe(' spaces count ')
    await writeFile(path, '\n')
    expect(expectError(await readPassphraseFile(path).catch((caught: unknown) => caught), AgeKeyFileError).message).toBe(`passphrase file ${path}: is empty`)
  })

  it('no secret in any error message, suggestion, JSON or inspect output', () => {
    expect(seenErrors.length).toBeGreaterThan(30)
    for (const error of seenErrors) {
      const texts = [String(error), (error as AgeError).suggestion ?? '', JSON.stringify(error), inspect(error, {depth: 5}), String((error as Error).stack)]
      for (const text of texts) for (const secret of secrets) expect(text).not.toContain(secret)
      // No stray cause from age-encryption, whose messages quote keys.
      expect((error as Error).cause).toBeUndefined()
    }
  })
})

describe('bounded memory and backpressure', () => {
  it('a producer faster than the consumer is held back, both ways: nothing piles up in between', async () => {
    const plaintext = pseudoRandomBytes(4 * 1024 * 1024, 5)
    const ciphertext = await encryptBuffer(plaintext, {recipients: [alice.recipient]}, 1024 * 1024)
    for (const [stream, input] of [[createAgeEncryptor({recipients: [alice.recipient]}), plaintext], [createAgeDecryptor({identities: [alice]}), ciphertext]] as const) {
      let written = 0
      // Nobody reads the output: writes must stop completing after a few chunks.
      const writer = (async () => {
        for (let offset = 0; offset < input.length; offset += KIB64) {
          await new Promise<void>((resolve) => stream.write(input.subarray(offset, offset + KIB64), () => resolve()))
          written += KIB64
        }
      })()
      await new Promise((resolve) => setTimeout(resolve, 300))
      expect(written).toBeLessThan(1024 * 1024)
      stream.destroy()
      void writer.catch(() => {})
    }
  })

  it('an abort stops the pipeline, with no stray error after it', async () => {
    const controller = new AbortController()
    const block = Buffer.alloc(1024 * 1024)
    setTimeout(() => controller.abort(), 100)
    await expect(pipeline(
      Readable.from(blocks(block, 1000)),
      createAgeEncryptor({recipients: [alice.recipient]}),
      createAgeDecryptor({identities: [alice]}),
      new Writable({write: (_chunk, _encoding, callback) => callback()}),
      {signal: controller.signal},
    )).rejects.toMatchObject({name: 'AbortError'})
    await new Promise((resolve) => setTimeout(resolve, 100))
  })

  it(`${process.env.AGE_MEMORY_TEST_MB ?? 200} MB through encryption and decryption with the footprint of 32 MB`, async () => {
    // 200 MB take about 3 s on an idle 2-core machine; AGE_MEMORY_TEST_MB=20 for a quick run.
    const total = Number(process.env.AGE_MEMORY_TEST_MB ?? 200) * 1024 * 1024
    const block = pseudoRandomBytes(1024 * 1024, 11)

    /** Streams `bytes` through both and back, checks it came back whole, and returns the peak RSS meanwhile. */
    const peakRssOfRoundTrip = async (bytes: number): Promise<number> => {
      const sent = createHash('sha256')
      const received = createHash('sha256')
      let peak = process.memoryUsage().rss
      let chunks = 0
      const sample = () => (peak = Math.max(peak, process.memoryUsage().rss))
      const sampler = setInterval(sample, 20)
      try {
        await pipeline(
          Readable.from(blocks(block, bytes / block.length, (sentBlock) => sent.update(sentBlock))),
          createAgeEncryptor({recipients: [alice.recipient]} satisfies AgeEncryptionKeys),
          createAgeDecryptor({identities: [alice]}),
          new Writable({
            write(chunk: Buffer, _encoding, callback) {
              received.update(chunk)
              // Sampled here too, so that the figure does not depend on the timer getting its turns.
              if (++chunks % 64 === 0) sample()
              callback()
            },
          }),
        )
      } finally {
        clearInterval(sampler)
      }

      expect(received.digest('hex')).toBe(sent.digest('hex'))
      return peak
    }

    // The small run pays the warm-up (compiled code, the library's first buffers); the large one must add nothing that grows with its size.
    const small = await peakRssOfRoundTrip(32 * 1024 * 1024)
    const large = await peakRssOfRoundTrip(total)
    console.log(`age memory test: peak RSS ${small >> 20} MiB for 32 MiB, ${large >> 20} MiB for ${total >> 20} MiB`)
    expect(large - small).toBeLessThan(24 * 1024 * 1024)
  }, 60_000)
})

/**
 * `count` times `block`, handing the event loop a turn after each as a file or socket source
 * would: an in-memory source that never yields starves timers (any Node stream pipeline does).
 */
async function* blocks(block: Buffer, count: number, onBlock?: (block: Buffer) => void): AsyncGenerator<Buffer> {
  for (let index = 0; index < count; index++) {
    onBlock?.(block)
    yield block
    await new Promise((resolve) => setImmediate(resolve))
  }
}

/** The character at `offset` replaced by another base64 one, so that the header still parses. */
function otherBase64(bytes: Buffer, offset: number): Buffer {
  const copy = Buffer.from(bytes)
  copy[offset] = copy[offset] === 0x41 ? 0x42 : 0x41
  return copy
}

async function catchError(action: () => unknown): Promise<unknown> {
  try {
    await action()
  } catch (error) {
    return error
  }

  throw new Error('no error')
}
