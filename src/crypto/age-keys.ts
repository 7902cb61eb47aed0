/**
 * The keys age encrypts to and decrypts with, read the way the `age` tool reads them:
 * recipients (`age1...`) from flags or a recipients file, identities (`AGE-SECRET-KEY-1...`)
 * from identity files, a passphrase from a file. Only X25519 keys and passphrases: the kinds
 * that Debian's age 1.1 reads, so a volume always opens with the standard tool.
 *
 * Secrets never leave this module in the clear except through `Secret.reveal()`, at the one
 * place that hands them to age-encryption; error messages name the file and line, never the
 * content.
 */

import {open} from 'node:fs/promises'
import {inspect} from 'node:util'

import {Secret} from '../util/secret.js'
import {AgeKeyFileError, InvalidAgeRecipientError, SecretKeyAsPathError, TooManyAgeRecipientsError} from './age-errors.js'
import {loadAgeLibrary} from './age-library.js'

/** An X25519 identity (private key) and the recipient (public key) it answers to. */
export class AgeIdentity {
  private constructor(
    readonly secret: Secret,
    /** The public key, `age1...`: safe to show, and what an export encrypts to. */
    readonly recipient: string,
    /** Where it was read: "identity file PATH line N". */
    readonly origin: string,
  ) {}

  /**
   * Checks an `AGE-SECRET-KEY-1...` string and derives its recipient; undefined when it is not
   * a valid identity (age-encryption's own message quotes the key, so it is not passed on).
   */
  static async parse(text: string, origin: string): Promise<AgeIdentity | undefined> {
    if (!text.startsWith('AGE-SECRET-KEY-1')) return undefined
    const {identityToRecipient} = await loadAgeLibrary()
    try {
      return new AgeIdentity(new Secret(text), await identityToRecipient(text), origin)
    } catch {
      return undefined
    }
  }

  toString(): string {
    return `age identity for ${this.recipient}`
  }

  toJSON(): string {
    return this.toString()
  }

  [inspect.custom](): string {
    return this.toString()
  }
}

/** What an export encrypts to: recipients, or one passphrase (age allows no mix of the two). */
export type AgeEncryptionKeys =
  | {recipients: readonly string[]}
  | {
    passphrase: Secret
    /** log2 of scrypt's cost; 18 as the age tool uses. Lower only in tests: each step halves an attacker's work. */
    scryptWorkFactor?: number
  }

/** What an import tries, all of them, on each file. */
export interface AgeDecryptionKeys {
  identities?: readonly AgeIdentity[]
  passphrases?: readonly Secret[]
}

/** age's own default, and what `age -p` writes. */
export const DEFAULT_SCRYPT_WORK_FACTOR = 18

/**
 * The most a passphrase-encrypted volume may ask of the reader: what export writes, 2^18 (about
 * 256 MiB and a second). A header asking more is refused before any scrypt runs.
 */
export const MAX_SCRYPT_WORK_FACTOR = DEFAULT_SCRYPT_WORK_FACTOR

/**
 * The most recipients export encrypts to, and the most recipient stanzas a volume may hold when
 * read: each costs every identity tried one X25519 operation.
 */
export const MAX_AGE_RECIPIENTS = 256

/** Refuses more recipients than a volume may hold (MAX_AGE_RECIPIENTS). */
export function checkRecipientCount(count: number): void {
  if (count > MAX_AGE_RECIPIENTS) throw new TooManyAgeRecipientsError(count, MAX_AGE_RECIPIENTS)
}

/** Larger than any real key file; a guard against being handed a volume or a device by mistake. */
const MAX_KEY_FILE_BYTES = 1024 * 1024

/** A public-looking recipient string, safe to echo in an error. */
const PUBLIC_LOOKING = /^age1[02-9ac-hj-np-z]{1,100}$/

/**
 * An age secret key anywhere in a string, in either case: `AGE-SECRET-KEY-1...`,
 * `AGE-SECRET-KEY-PQ-1...`, or a plugin identity `AGE-PLUGIN-NAME-1...` (bech32 data after the
 * "1"; file names such as `age-plugin-yubikey.txt` or `age-secret-key-backup.txt` do not match).
 */
const SECRET_KEY_LOOKING = /AGE-SECRET-KEY-(?:PQ-)?1[02-9AC-HJ-NP-Z]{8,}|AGE-PLUGIN-[A-Z0-9+._-]*-1[02-9AC-HJ-NP-Z]{8,}/i

/** Whether a string given as a recipient or a path holds what looks like an age secret key: never to be echoed. */
export function looksLikeSecretKey(text: string): boolean {
  return SECRET_KEY_LOOKING.test(text)
}

/**
 * Checks a recipient given on the command line or in a recipients file and returns it as age
 * writes it. Refuses secret keys pasted by mistake without echoing them.
 */
export async function parseRecipient(text: string, origin?: string): Promise<string> {
  const recipient = text.trim()
  const shown = PUBLIC_LOOKING.test(recipient) ? recipient : undefined
  if (looksLikeSecretKey(recipient)) {
    throw new InvalidAgeRecipientError(undefined, 'this is a secret key (an identity), not a recipient; give its public key, printed by `age-keygen -y KEYFILE`', origin)
  }

  if (/^age1(pq|tag|tagpq)1/.test(recipient)) throw new InvalidAgeRecipientError(shown, 'post-quantum and tag recipients are not read by age 1.1; give an X25519 recipient', origin)
  if (/^(ssh-|ecdsa-)/.test(recipient)) throw new InvalidAgeRecipientError(undefined, 'SSH public keys are not supported; give an age X25519 recipient', origin)
  if (!recipient.startsWith('age1')) throw new InvalidAgeRecipientError(undefined, 'it does not start with "age1"', origin)
  const {Encrypter} = await loadAgeLibrary()
  try {
    new Encrypter().addRecipient(recipient)
  } catch {
    throw new InvalidAgeRecipientError(shown, 'wrong length or checksum', origin)
  }

  return recipient
}

/** A recipients file in age's format: one recipient per line, `#` comments and blank lines ignored. */
export async function parseRecipientsFile(text: string, path: string): Promise<string[]> {
  const recipients: string[] = []
  for (const [index, raw] of text.split('\n').entries()) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) continue
    recipients.push(await parseRecipient(line, `recipients file ${path} line ${index + 1}`))
  }

  if (recipients.length === 0) throw new AgeKeyFileError(path, 'recipients file', 'malformed', 'holds no recipient')
  return recipients
}

export async function readRecipientsFile(path: string): Promise<string[]> {
  return parseRecipientsFile(await readKeyFile(path, 'recipients file'), path)
}

/**
 * An identity file in age's format, as `age-keygen` writes it: one `AGE-SECRET-KEY-1...` per
 * line, `#` comments and blank lines ignored. Kinds of identity file that the age tool also
 * takes but this tool does not (SSH keys, plugins, an identity file itself encrypted with a
 * passphrase) are named as such.
 */
export async function parseIdentityFile(text: string, path: string): Promise<AgeIdentity[]> {
  const start = text.trimStart()
  if (start.startsWith('age-encryption.org/v1') || start.startsWith('-----BEGIN AGE ENCRYPTED FILE-----')) {
    throw new AgeKeyFileError(path, 'identity file', 'unsupported', 'it is itself encrypted (a passphrase-protected identity file); decrypt it first with `age -d`')
  }

  if (start.startsWith('-----BEGIN')) throw new AgeKeyFileError(path, 'identity file', 'unsupported', 'it holds an SSH or PEM private key; give an age identity from `age-keygen`')
  const identities: AgeIdentity[] = []
  for (const [index, raw] of text.split('\n').entries()) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) continue
    const lineNumber = index + 1
    const fail = (problem: 'malformed' | 'unsupported', detail: string) => new AgeKeyFileError(path, 'identity file', problem, detail, lineNumber)
    if (line.startsWith('AGE-PLUGIN-')) throw fail('unsupported', 'age plugin identities are not supported')
    if (line.startsWith('AGE-SECRET-KEY-PQ-1')) throw fail('unsupported', 'post-quantum identities are not supported (age 1.1 cannot use them either)')
    if (!line.startsWith('AGE-SECRET-KEY-1')) throw fail('malformed', 'not an age identity (expected AGE-SECRET-KEY-1...)')
    const identity = await AgeIdentity.parse(line, `${path} line ${lineNumber}`)
    if (!identity) throw fail('malformed', 'not a valid AGE-SECRET-KEY-1 identity (wrong length or checksum)')
    identities.push(identity)
  }

  if (identities.length === 0) throw new AgeKeyFileError(path, 'identity file', 'malformed', 'holds no identity')
  return identities
}

export async function readIdentityFile(path: string): Promise<AgeIdentity[]> {
  return parseIdentityFile(await readKeyFile(path, 'identity file'), path)
}

/**
 * A passphrase from a file (a passphrase never comes from argv, where `ps` shows it). One
 * trailing newline, as editors and `echo` leave, is not part of it; anything else is.
 */
export async function readPassphraseFile(path: string): Promise<Secret> {
  const passphrase = (await readKeyFile(path, 'passphrase file')).replace(/\r?\n$/, '')
  if (passphrase === '') throw new AgeKeyFileError(path, 'passphrase file', 'malformed', 'is empty')
  return new Secret(passphrase)
}

/**
 * Reads a small key file. Pipes are fine (`--identity <(pass show key)`), so the size is
 * checked while reading, not by stat.
 */
async function readKeyFile(path: string, what: 'identity file' | 'recipients file' | 'passphrase file'): Promise<string> {
  // A key pasted where its file's path belongs: refused before any message could quote it as a path.
  if (looksLikeSecretKey(path)) throw new SecretKeyAsPathError(what)
  let handle
  try {
    handle = await open(path, 'r')
    const chunks: Buffer[] = []
    let total = 0
    for (;;) {
      const chunk = Buffer.alloc(64 * 1024)
      const {bytesRead} = await handle.read(chunk, 0, chunk.length, null)
      if (bytesRead === 0) break
      total += bytesRead
      if (total > MAX_KEY_FILE_BYTES) throw new AgeKeyFileError(path, what, 'unreadable', `larger than ${MAX_KEY_FILE_BYTES} bytes: not a key file`)
      chunks.push(chunk.subarray(0, bytesRead))
    }

    return Buffer.concat(chunks).toString('utf8')
  } catch (error) {
    if (error instanceof AgeKeyFileError) throw error
    throw new AgeKeyFileError(path, what, 'unreadable', `cannot read it (${(error as NodeJS.ErrnoException).code ?? 'error'})`)
  } finally {
    await handle?.close()
  }
}
