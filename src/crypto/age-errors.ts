/**
 * What can go wrong when encrypting or decrypting age files, each as its own type, with the
 * problem kind an import or verify reports and the category the CLI turns into an exit code.
 *
 * No message ever carries key material. age-encryption's own errors quote the string they
 * failed on ("Invalid checksum in AGE-SECRET-KEY-1..."), so they are never passed on, not even
 * as a `cause`: each is replaced here by a sentence of ours.
 */

import {type ErrorCategory, UserFacingError} from '../errors.js'
import type {KindedError, ProblemKind} from '../problems.js'

/** Any error of this module. */
export abstract class AgeError extends UserFacingError implements KindedError {
  abstract readonly problemKind: ProblemKind

  constructor(message: string, suggestion: string, category: ErrorCategory, code: string, fatal: boolean) {
    super(message, suggestion, category, code, fatal)
    this.name = new.target.name
  }
}

// ---------------------------------------------------------------------------------------------
// Keys given by the user: wrong before any file is read, so they stop the whole job.

/** A recipient, identity, or passphrase given by the user cannot be used. */
export abstract class AgeKeyError extends AgeError {
  readonly problemKind: ProblemKind = 'unreadable'
}

/**
 * A recipient string (flag value or recipients-file line) that is not an X25519 age recipient.
 * `shown` is the string when it looks like a public key, and is left out otherwise: a secret key
 * pasted in place of a recipient must not be echoed.
 */
export class InvalidAgeRecipientError extends AgeKeyError {
  constructor(readonly shown: string | undefined, readonly reason: string, readonly origin?: string) {
    super(
      `${origin ? `${origin}: ` : ''}${shown ? `"${shown}" ` : ''}is not a usable age recipient: ${reason}`,
      'Give X25519 recipients as printed by `age-keygen -y KEYFILE` (age1 followed by 58 characters).',
      'usage', 'invalid-recipient', true)
  }
}

/** More recipients than a volume may hold (each costs every reader's identity an X25519 operation). */
export class TooManyAgeRecipientsError extends AgeKeyError {
  constructor(readonly count: number, readonly max: number) {
    super(`${count} recipients given: a volume is encrypted to ${max} at most`,
      'Give fewer recipients: one per receiving site or person is enough, each opens every volume.', 'usage', 'too-many-recipients', true)
  }
}

/**
 * A secret key given where the path of a key file belongs (`--identity AGE-SECRET-KEY-1...`).
 * The value is not echoed: it is a secret, now in the shell's history and in `ps`.
 */
export class SecretKeyAsPathError extends AgeKeyError {
  constructor(readonly what: 'identity file' | 'recipients file' | 'passphrase file') {
    const flag = what === 'identity file' ? '--identity' : what === 'recipients file' ? '--recipients-file' : '--passphrase-file'
    super(`${flag} (${what}): the value given looks like a secret key, not a file: put the key in a file (mode 0600) and give its path`,
      'Write the key to a file readable by you alone (age-keygen -o FILE does), give that path, and consider the key exposed: it was on the command line.',
      'usage', 'secret-key-as-path', true)
  }
}

export type AgeKeyFileProblem =
  /** The file cannot be read (missing, no permission, a directory, too large). */
  | 'unreadable'
  /** It is read, but a line is not what the file should hold, or it holds nothing. */
  | 'malformed'
  /** It holds a kind of key this tool does not take (SSH, plugin, post-quantum, an encrypted identity file). */
  | 'unsupported'

/**
 * An identity, recipients or passphrase file that cannot be used. The message names the file
 * and line, never the line's content.
 */
export class AgeKeyFileError extends AgeKeyError {
  constructor(readonly path: string, readonly what: 'identity file' | 'recipients file' | 'passphrase file', readonly problem: AgeKeyFileProblem, readonly detail: string, readonly line?: number) {
    super(
      `${what} ${path}${line === undefined ? '' : ` line ${line}`}: ${detail}`,
      problem === 'unreadable'
        ? 'Check the path and that this user may read the file.'
        : what === 'identity file'
          ? 'Give a file written by `age-keygen` (AGE-SECRET-KEY-1... lines, # comments allowed).'
          : what === 'recipients file'
            ? 'Give one age1... recipient per line (# comments and blank lines allowed), e.g. from `age-keygen -y KEYFILE`.'
            : 'Give a file whose content is the passphrase (one trailing newline is ignored).',
      'usage', problem === 'unreadable' ? 'unreadable-key-file' : problem === 'malformed' ? 'malformed-key-file' : 'unsupported-key-file', true)
  }
}

/** Encryption or decryption was asked for without any key to do it with. */
export class MissingAgeKeyError extends AgeKeyError {
  constructor(readonly operation: 'encrypt' | 'decrypt') {
    super(
      operation === 'encrypt' ? 'nothing to encrypt to: no recipient and no passphrase' : 'nothing to decrypt with: no identity and no passphrase',
      operation === 'encrypt' ? 'Give --recipient, --recipients-file or --passphrase-file.' : 'Give --identity or --passphrase-file.',
      'usage', 'no-key-given', true)
  }
}

// ---------------------------------------------------------------------------------------------
// The file being decrypted: bad input, reported against that file; other files may still be read.

/** Where in an age file the trouble is. */
export type AgeFilePart =
  /** The text header: version line, recipient stanzas, MAC line. */
  | 'header'
  /** The header's MAC: it does not match the header, for the file key the identity unwrapped. */
  | 'header-mac'
  /** The 16-byte nonce between header and payload. */
  | 'nonce'
  /** A payload chunk that is not the last. */
  | 'chunk'
  /** The payload's last chunk: the only one flagged as last. */
  | 'final-chunk'

/** What every error about the age file itself carries: which file, where. */
export abstract class AgeFileError extends AgeError {
  constructor(message: string, suggestion: string, code: string, readonly source: string | undefined) {
    super(source ? `${source}: ${message}` : message, suggestion, 'bad-input', code, false)
  }
}

/** The input does not start as an age file does (`age-encryption.org/v1`). */
export class NotAgeFileError extends AgeFileError {
  readonly problemKind: ProblemKind = 'not-archive'
  constructor(source?: string) {
    super('not an age-encrypted file (it does not start with "age-encryption.org/v1")',
      'Give the .tar.age volume itself; a plain .tar volume is read without --identity or --passphrase-file.', 'not-age-file', source)
  }
}

/** An age file this tool cannot read although it may be sound: ASCII armour, too costly a passphrase. */
export class UnsupportedAgeFileError extends AgeFileError {
  readonly problemKind: ProblemKind = 'unsupported'
  constructor(readonly reason: string, suggestion: string, source?: string) {
    super(`unsupported age file: ${reason}`, suggestion, 'unsupported-age-file', source)
  }
}

/**
 * None of the identities or passphrases given opens the file. age does not say whom a file is
 * for, so this is also what an altered recipient stanza looks like: the header MAC can only be
 * checked with the file key, which no identity could unwrap.
 */
export class AgeWrongKeyError extends AgeFileError {
  readonly problemKind: ProblemKind = 'wrong-key'
  constructor(
    /** Recipient stanzas of the file, by type ('X25519', 'scrypt', ...): public, written in clear in the header. */
    readonly stanzaTypes: string[],
    readonly identitiesTried: number,
    readonly passphrasesTried: number,
    source?: string,
  ) {
    super(describeWrongKey(stanzaTypes, identitiesTried, passphrasesTried), suggestWrongKey(stanzaTypes, identitiesTried, passphrasesTried), 'wrong-key', source)
  }
}

/** The file ends before its end: inside the header or nonce, or with a last chunk too short to be one. */
export class AgeTruncatedError extends AgeFileError {
  readonly problemKind: ProblemKind = 'truncated'
  constructor(readonly part: Extract<AgeFilePart, 'header' | 'nonce' | 'final-chunk'>, readonly length: number, source?: string) {
    super(`truncated age file: it ends ${part === 'header' ? 'inside its header' : part === 'nonce' ? 'inside its nonce, before any payload' : 'with a last chunk too short to be one'} (${length} bytes)`,
      'The copy was cut short: copy the volume again from the export side.', 'age-truncated', source)
  }
}

/**
 * The file was changed after it was written: its header does not parse or does not match its
 * MAC, or a payload chunk that is not the last fails authentication.
 */
export class AgeAlteredError extends AgeFileError {
  /** 'damaged' for a header that does not even parse, 'checksum' for a failed authentication. */
  readonly problemKind: ProblemKind
  readonly chunk?: number
  /** Where the altered chunk starts in the file. */
  readonly offset?: number

  constructor(readonly part: Extract<AgeFilePart, 'header' | 'header-mac' | 'chunk'>, where: {chunk?: number; offset?: number; source?: string} = {}) {
    super(
      part === 'header' ? 'altered age file: its header is malformed'
        : part === 'header-mac' ? 'altered age file: its header does not match its MAC'
          : `altered age file: payload chunk ${where.chunk} (from byte ${where.offset}) fails authentication`,
      'The volume was damaged or tampered with after it was written: copy it again from the export side, and check the drive.', 'age-altered', where.source)
    this.problemKind = part === 'header' ? 'damaged' : 'checksum'
    this.chunk = where.chunk
    this.offset = where.offset
  }
}

/**
 * The payload's last chunk fails authentication. To the cipher this is one event with two
 * causes it cannot tell apart: the file was cut short (at a chunk boundary or inside a chunk, so
 * that a chunk that is not the last now ends it), or its last chunk was altered. It is reported
 * as damage ('damaged', an integrity kind), not as mere incompleteness, so that no verdict calls
 * the volume valid when it may have been tampered with.
 */
export class AgeTruncatedOrAlteredError extends AgeFileError {
  readonly problemKind: ProblemKind = 'damaged'
  constructor(readonly chunk: number, readonly offset: number, readonly length: number, source?: string) {
    super(`truncated or altered age file: its last chunk (chunk ${chunk}, from byte ${offset}; the file has ${length} bytes) fails authentication: the file was cut short, or its end was changed`,
      'Compare the volume\'s size with the export side\'s and copy it again.', 'age-truncated-or-altered', source)
  }
}

/** A payload chunk as stored: 64 KiB of plaintext and its 16-byte Poly1305 tag (age's STREAM). */
export const ENCRYPTED_CHUNK_BYTES = 64 * 1024 + 16

function describeWrongKey(stanzaTypes: string[], identities: number, passphrases: number): string {
  const scrypt = stanzaTypes.includes('scrypt')
  const recipients = stanzaTypes.filter((type) => type !== 'scrypt').length
  const tried = [identities ? `${identities} ${identities === 1 ? 'identity' : 'identities'}` : '', passphrases ? `${passphrases === 1 ? 'the passphrase' : `${passphrases} passphrases`}` : ''].filter(Boolean).join(' and ')
  const encryptedTo = scrypt ? 'a passphrase' : `${recipients} recipient${recipients === 1 ? '' : 's'} (${[...new Set(stanzaTypes)].join(', ')})`
  return `cannot decrypt: the file is encrypted to ${encryptedTo}, and ${tried || 'no key'} given ${identities + passphrases === 1 ? 'does' : 'do'} not open it`
}

function suggestWrongKey(stanzaTypes: string[], identities: number, passphrases: number): string {
  if (stanzaTypes.includes('scrypt') && passphrases === 0) return 'This volume was encrypted with a passphrase: give --passphrase-file.'
  if (!stanzaTypes.includes('scrypt') && identities === 0) return 'This volume was encrypted to recipients: give --identity with the matching AGE-SECRET-KEY file.'
  return 'Give the identity (or passphrase) the export was encrypted for. If it is the right one, the volume\'s header was altered: copy it again.'
}
