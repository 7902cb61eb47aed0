import {randomBytes} from 'node:crypto'

import {beforeAll, describe, expect, it, vi} from 'vitest'

import {
  type AgeIdentity, AgeWrongKeyError, createAgeEncryptor, MAX_AGE_RECIPIENTS, MAX_SCRYPT_WORK_FACTOR, TooManyAgeRecipientsError, UnsupportedAgeFileError,
} from '../../src/crypto/age.js'
import {isCompletenessProblem} from '../../src/problems.js'
import {Secret} from '../../src/util/secret.js'
import {decryptFailure, newIdentity} from '../helpers/age.js'

/** Every identity and passphrase the decryptor hands the library, counted when the library tries it (an X25519 operation, a scrypt). */
const tried = vi.hoisted(() => ({identities: 0, passphrases: 0}))

vi.mock('../../src/crypto/age-library.js', async () => {
  const library = await import('age-encryption')
  class CountingDecrypter extends library.Decrypter {
    override addIdentity(identity: Parameters<InstanceType<typeof library.Decrypter>['addIdentity']>[0]): void {
      // The decryptor's own stanza probe is an object; keys given by the user are strings.
      if (typeof identity !== 'string') return super.addIdentity(identity)
      super.addIdentity({
        unwrapFileKey: () => {
          tried.identities++
          return null
        },
      })
    }

    override addPassphrase(): void {
      super.addIdentity({
        unwrapFileKey: () => {
          tried.passphrases++
          return null
        },
      })
    }
  }

  return {loadAgeLibrary: () => Promise.resolve({...library, Decrypter: CountingDecrypter})}
})

const base64 = (bytes: number) => randomBytes(bytes).toString('base64').replace(/=+$/, '')

/** An age file by hand: these stanzas, a MAC (not a valid one: nothing here gets that far), a nonce and a short payload. */
function handMade(stanzas: string[]): Buffer {
  return Buffer.concat([Buffer.from(`age-encryption.org/v1\n${stanzas.join('')}--- ${base64(32)}\n`), randomBytes(16 + 100)])
}

const scryptStanza = (workFactor: number) => `-> scrypt ${base64(16)} ${workFactor}\n${base64(32)}\n`
const x25519Stanza = () => `-> X25519 ${base64(32)}\n${base64(32)}\n`

let alice: AgeIdentity
beforeAll(async () => {
  alice = await newIdentity()
})

describe('headers that would cost too much to try are refused before any key is tried', () => {
  it('a scrypt work factor above the one export writes: no scrypt runs', async () => {
    expect(MAX_SCRYPT_WORK_FACTOR).toBe(18)
    for (const workFactor of [19, 20, 21, 99]) {
      tried.passphrases = 0
      const started = Date.now()
      const {error, released} = await decryptFailure(handMade([scryptStanza(workFactor)]), {passphrases: [new Secret('a passphrase')]}, 1024 * 1024)
      expect(error, String(error)).toBeInstanceOf(UnsupportedAgeFileError)
      expect(error.message).toContain('test.tar.age: unsupported age file: its passphrase was stretched with scrypt work factor 2^')
      expect((error as UnsupportedAgeFileError).problemKind).toBe('unsupported')
      expect(isCompletenessProblem({kind: (error as UnsupportedAgeFileError).problemKind})).toBe(false)
      expect(tried.passphrases, `work factor ${workFactor}`).toBe(0)
      expect(released.length).toBe(0)
      expect(Date.now() - started).toBeLessThan(5000)
    }

    // The work factor export writes gets to the passphrase.
    tried.passphrases = 0
    expect((await decryptFailure(handMade([scryptStanza(18)]), {passphrases: [new Secret('a passphrase')]})).error).toBeInstanceOf(AgeWrongKeyError)
    expect(tried.passphrases).toBe(1)
  })

  it(`more than ${MAX_AGE_RECIPIENTS} recipient stanzas: no identity is tried`, async () => {
    tried.identities = 0
    const tooMany = handMade(Array.from({length: MAX_AGE_RECIPIENTS + 1}, x25519Stanza))
    const {error} = await decryptFailure(tooMany, {identities: [alice, alice]}, 1024 * 1024)
    expect(error, String(error)).toBeInstanceOf(UnsupportedAgeFileError)
    expect(error.message).toContain(`its header holds ${MAX_AGE_RECIPIENTS + 1} recipient stanzas, more than the ${MAX_AGE_RECIPIENTS}`)
    expect(tried.identities).toBe(0)

    const atTheLimit = handMade(Array.from({length: MAX_AGE_RECIPIENTS}, x25519Stanza))
    expect((await decryptFailure(atTheLimit, {identities: [alice]})).error).toBeInstanceOf(AgeWrongKeyError)
    expect(tried.identities).toBe(1)
  })

  it(`export writes nothing its reader refuses: ${MAX_AGE_RECIPIENTS} recipients at most, work factor ${MAX_SCRYPT_WORK_FACTOR} at most`, () => {
    expect(() => createAgeEncryptor({recipients: Array.from({length: MAX_AGE_RECIPIENTS + 1}, () => alice.recipient)})).toThrow(TooManyAgeRecipientsError)
    expect(() => createAgeEncryptor({recipients: Array.from({length: MAX_AGE_RECIPIENTS}, () => alice.recipient)})).not.toThrow()
    expect(() => createAgeEncryptor({passphrase: new Secret('a passphrase'), scryptWorkFactor: MAX_SCRYPT_WORK_FACTOR + 1})).toThrow(RangeError)
  })
})
