/**
 * Streaming encryption and decryption in the age v1 format (https://age-encryption.org/v1),
 * by age-encryption (the TypeScript implementation by age's author), adapted to Node streams.
 * No cryptography is written here: this module feeds bytes in and out, and names failures.
 *
 * What a reader of the plaintext must know: age cuts the payload into 64 KiB chunks, each
 * authenticated on its own, the last one flagged as last. A chunk's plaintext is released only
 * once that chunk has been authenticated, but it is released before the chunks after it have
 * been read. So a stream cut short or altered in its 10th chunk first yields 9 chunks of
 * genuine plaintext, then fails. Only the stream's end without an error (the Readable's 'end',
 * a pipeline that resolves) proves that the whole file was there and unaltered. A reader that
 * acts on early bytes (uploads an instance as soon as its tar entry is read) acts on authentic
 * data from a file that may turn out incomplete; import holds a volume's uploads until its
 * whole trust chain is proven, so for it this is enough.
 */

import {type Duplex, pipeline, type Readable, Writable} from 'node:stream'
import {pipeline as pipelineAsync} from 'node:stream/promises'

import type {Identity, Stanza} from 'age-encryption'

import {
  AgeAlteredError, AgeError, AgeTruncatedError, AgeTruncatedOrAlteredError, AgeWrongKeyError,
  ENCRYPTED_CHUNK_BYTES, MissingAgeKeyError, NotAgeFileError, UnsupportedAgeFileError,
} from './age-errors.js'
import {
  type AgeDecryptionKeys, type AgeEncryptionKeys, checkRecipientCount, DEFAULT_SCRYPT_WORK_FACTOR, MAX_AGE_RECIPIENTS, MAX_SCRYPT_WORK_FACTOR, parseRecipient,
} from './age-keys.js'
import type {Secret} from '../util/secret.js'
import {loadAgeLibrary} from './age-library.js'
import {WebTransformDuplex} from './web-stream-bridge.js'

/** The volume file name's ending: `orthanc-export-0001-of-0003.tar.age`. */
export const AGE_FILE_SUFFIX = '.age'

/** Every age v1 file starts with this line. */
const AGE_MAGIC = Buffer.from('age-encryption.org/v1\n')
/** `age -a` output, which this module does not read. */
const ARMOR_START = Buffer.from('-----BEGIN AGE ENCRYPTED FILE-----')
const PLAINTEXT_CHUNK_BYTES = 64 * 1024
const NONCE_BYTES = 16
const TAG_BYTES = 16
/**
 * A real header is about 100 bytes per recipient. The library reads header lines without a
 * length limit; this bounds what it may hold before the header has proven to be one.
 */
const MAX_HEADER_BYTES = 1024 * 1024

export interface AgeDecryptOptions {
  /** Names the file in error messages: the volume's path, or "stdin". */
  source?: string
}

/**
 * A Duplex that takes plaintext and gives the age file encrypting it, for
 * `pipeline(tarStream, createAgeEncryptor(keys), file)`. Throws AgeKeyError at once for
 * unusable keys.
 */
export function createAgeEncryptor(keys: AgeEncryptionKeys): Duplex {
  return new AgeEncryptor(checkEncryptionKeys(keys))
}

/**
 * A Duplex that takes an age file and gives its plaintext, for
 * `pipeline(file, createAgeDecryptor(keys), tarReader)`. Fails with an AgeFileError (typed, with
 * a problem kind) for a file that is not age, that no key given opens, or that is truncated or
 * altered anywhere; see the module comment for what is released before such a failure.
 */
export function createAgeDecryptor(keys: AgeDecryptionKeys, options: AgeDecryptOptions = {}): Duplex {
  const identities = keys.identities ?? []
  const passphrases = keys.passphrases ?? []
  if (identities.length === 0 && passphrases.length === 0) throw new MissingAgeKeyError('decrypt')
  return new AgeDecryptor({identities, passphrases}, options.source)
}

/**
 * A Writable that encrypts into `destination` and finishes only once `destination` has
 * finished: when `pipeline(tar, createEncryptingWriter(file, keys))` resolves, the file holds
 * every byte of the age file (what an export must know before it fsyncs and renames a volume).
 */
export function createEncryptingWriter(destination: Writable, keys: AgeEncryptionKeys): Writable {
  return new EncryptingWriter(createAgeEncryptor(keys), destination)
}

/**
 * The plaintext of an age file read from `ciphertext` (a file stream, stdin), as one Readable
 * for a tar reader. An error of `ciphertext` (EIO, a vanished file) reaches the reader as it
 * is; decryption failures as AgeFileErrors.
 */
export function createDecryptingReader(ciphertext: Readable, keys: AgeDecryptionKeys, options: AgeDecryptOptions = {}): Readable {
  const decryptor = createAgeDecryptor(keys, options)
  // The reader of the returned stream sees every error through it; the callback has nothing to add.
  return pipeline(ciphertext, decryptor, () => {})
}

/**
 * Whether bytes are the start of an age file (binary, not armoured): for an input that may be
 * either a plain tar or an encrypted one, such as stdin. Needs the first 22 bytes; a tar never
 * starts so (its first 100 bytes are a file name, here one that would end in a newline).
 */
export function startsLikeAgeFile(firstBytes: Uint8Array): boolean {
  return firstBytes.length >= AGE_MAGIC.length && AGE_MAGIC.equals(firstBytes.subarray(0, AGE_MAGIC.length))
}

/**
 * The most bytes an age file of `plaintextBytes` takes: header, nonce and one tag per 64 KiB
 * chunk (0.025 %). For free-space checks and volume size limits (a 4 GiB FAT32 volume grows by
 * 1 MiB).
 */
export function encryptedSizeBound(plaintextBytes: number, keys: AgeEncryptionKeys): number {
  const stanzas = 'recipients' in keys ? keys.recipients.length : 1
  // Version line 22, MAC line 48; an X25519 stanza is 98 bytes, a scrypt one about 80: 128 leaves room.
  const header = 22 + 48 + 128 * stanzas
  const chunks = Math.max(1, Math.ceil(plaintextBytes / PLAINTEXT_CHUNK_BYTES))
  return header + NONCE_BYTES + plaintextBytes + chunks * TAG_BYTES
}

/** The passphrase stays a Secret until the library takes it: a logged or inspected stream shows no key. */
type CheckedEncryptionKeys = {recipients: string[]} | {passphrase: Secret; scryptWorkFactor: number}

function checkEncryptionKeys(keys: AgeEncryptionKeys): CheckedEncryptionKeys {
  if ('recipients' in keys) {
    if (keys.recipients.length === 0) throw new MissingAgeKeyError('encrypt')
    checkRecipientCount(keys.recipients.length)
    // Each is checked in full (which needs the age library) when the encryption starts.
    return {recipients: [...keys.recipients]}
  }

  if (keys.passphrase.reveal() === '') throw new MissingAgeKeyError('encrypt')
  const scryptWorkFactor = keys.scryptWorkFactor ?? DEFAULT_SCRYPT_WORK_FACTOR
  // Decryption refuses more than MAX_SCRYPT_WORK_FACTOR. No flag sets it: outside the range is a caller's mistake.
  if (!Number.isInteger(scryptWorkFactor) || scryptWorkFactor < 1 || scryptWorkFactor > MAX_SCRYPT_WORK_FACTOR) {
    throw new RangeError(`scrypt work factor ${scryptWorkFactor} is outside 1..${MAX_SCRYPT_WORK_FACTOR}`)
  }

  return {passphrase: keys.passphrase, scryptWorkFactor}
}

class AgeEncryptor extends WebTransformDuplex {
  constructor(private readonly keys: CheckedEncryptionKeys) {
    super(PLAINTEXT_CHUNK_BYTES)
  }

  protected override async transform(input: ReadableStream<Uint8Array>): Promise<ReadableStream<Uint8Array>> {
    const encrypter = new (await loadAgeLibrary()).Encrypter()
    if ('passphrase' in this.keys) {
      encrypter.setScryptWorkFactor(this.keys.scryptWorkFactor)
      encrypter.setPassphrase(this.keys.passphrase.reveal())
    } else {
      for (const recipient of this.keys.recipients) encrypter.addRecipient(await parseRecipient(recipient))
    }

    return encrypter.encrypt(input)
  }
}

/**
 * Decrypts, and keeps what it needs to name a failure: the first bytes (is it age at all?),
 * where the header ends, how many bytes the library took, how many chunks came out
 * authenticated. age-encryption's errors say only "invalid tag"; which chunk, and whether it
 * is the last, is known here.
 */
class AgeDecryptor extends WebTransformDuplex {
  /** Bytes held back until there are enough to tell an age file; undefined once told. */
  private head: Buffer | undefined = Buffer.alloc(0)
  private readonly headerEnd = new HeaderEndFinder()
  /** Ciphertext bytes given to the library. */
  private fed = 0
  private headerAccepted = false
  private chunksOut = 0
  private readonly probe: StanzaProbe

  constructor(private readonly keys: Required<AgeDecryptionKeys>, private readonly source: string | undefined) {
    super(ENCRYPTED_CHUNK_BYTES)
    this.probe = new StanzaProbe(source)
  }

  protected override async transform(input: ReadableStream<Uint8Array>): Promise<ReadableStream<Uint8Array>> {
    const decrypter = new (await loadAgeLibrary()).Decrypter()
    // Tried first, opens nothing: it notes the header's stanza types, for the wrong-key message, and
    // refuses a header that would cost too much to try (before any scrypt, or any identity, runs).
    decrypter.addIdentity(this.probe)
    for (const identity of this.keys.identities) decrypter.addIdentity(identity.secret.reveal())
    for (const passphrase of this.keys.passphrases) decrypter.addPassphrase(passphrase.reveal())
    const output = await decrypter.decrypt(input)
    this.headerAccepted = true
    return output
  }

  override _write(chunk: Buffer, encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.head !== undefined) {
      this.head = Buffer.concat([this.head, chunk])
      if (this.head.length < AGE_MAGIC.length) {
        callback()
        return
      }

      chunk = this.head
      this.head = undefined
      if (!chunk.subarray(0, AGE_MAGIC.length).equals(AGE_MAGIC)) {
        callback(this.refuseStart(chunk))
        return
      }
    }

    if (this.headerEnd.length === undefined) {
      this.headerEnd.scan(chunk)
      if (this.headerEnd.length === undefined && this.fed + chunk.length > MAX_HEADER_BYTES) {
        callback(new AgeAlteredError('header', {source: this.source}))
        return
      }
    }

    this.fed += chunk.length
    super._write(chunk, encoding, callback)
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (this.head !== undefined) {
      // Shorter than the version line: cut short if it is the start of one, not age otherwise.
      const head = this.head
      callback(AGE_MAGIC.subarray(0, head.length).equals(head) ? new AgeTruncatedError('header', head.length, this.source) : this.refuseStart(head))
      return
    }

    super._final(callback)
  }

  protected override onOutputChunk(): void {
    // Pieces fed are at most one encrypted chunk, so each output is exactly one authenticated chunk.
    this.chunksOut++
  }

  protected override describeFailure(error: unknown): Error {
    if (error instanceof AgeError || !(error instanceof Error)) return super.describeFailure(error)
    return this.headerAccepted ? this.describePayloadFailure(error) : this.describeHeaderFailure(error)
  }

  private refuseStart(head: Buffer): Error {
    if (head.subarray(0, ARMOR_START.length).equals(ARMOR_START.subarray(0, Math.min(head.length, ARMOR_START.length)))) {
      return new UnsupportedAgeFileError('it is ASCII-armoured (age -a)', 'Decrypt it with `age -d`, or encrypt without -a.', this.source)
    }

    return new NotAgeFileError(this.source)
  }

  /**
   * Errors before the payload. These come from age-encryption's header parser with fixed
   * messages (checked by the tests against the pinned version): a recipient no identity opens,
   * a MAC that does not match, a work factor it will not pay, a nonce cut short. Any other
   * message means the header does not parse: cut short if it ends before its MAC line and the
   * library read to the end of the input for it, altered if not.
   *
   * Whether the library read to the end says nothing about a header it parsed whole: it reads
   * on past the header at once, so a file that arrives in one read (a short last volume) has
   * been read to its end before the MAC is even checked. A verdict on the header comes first.
   */
  private describeHeaderFailure(error: Error): Error {
    if (error.message === 'no identity matched any of the file\'s recipients') {
      return new AgeWrongKeyError(this.probe.stanzaTypes, this.keys.identities.length, this.keys.passphrases.length, this.source)
    }

    if (error.message === 'scrypt work factor is too high') {
      return new UnsupportedAgeFileError('its passphrase was stretched with a scrypt work factor over 2^20', 'Encrypt it again with `age -p` (work factor 2^18).', this.source)
    }

    if (error.message === 'invalid header HMAC') return new AgeAlteredError('header-mac', {source: this.source})
    if (this.input.readAfterEnd) {
      if (this.headerEnd.length === undefined) return new AgeTruncatedError('header', this.fed, this.source)
      // The header was there in full: only a nonce cut short is truncation, a header that does not parse is damage.
      if (error.message.startsWith('stream ended before reading') && this.fed < this.headerEnd.length + NONCE_BYTES) return new AgeTruncatedError('nonce', this.fed, this.source)
    }

    return new AgeAlteredError('header', {source: this.source})
  }

  /**
   * Errors in the payload: a chunk failed authentication. Each output chunk was one
   * authenticated chunk, so the failed one is number `chunksOut`; it is the last one when the
   * library had read the whole input and no chunk remains after it.
   */
  private describePayloadFailure(error: Error): Error {
    const known = error.message === 'invalid tag' || error.message === 'final chunk is empty' || /expected length >= tagLength/.test(error.message)
    if (!known) return error
    const payloadStart = this.headerEnd.length! + NONCE_BYTES
    const chunk = this.chunksOut
    const offset = payloadStart + chunk * ENCRYPTED_CHUNK_BYTES
    if (!this.input.readAfterEnd) return new AgeAlteredError('chunk', {chunk, offset, source: this.source})
    const payloadBytes = this.fed - payloadStart
    const chunks = Math.max(1, Math.ceil(payloadBytes / ENCRYPTED_CHUNK_BYTES))
    if (chunk < chunks - 1) return new AgeAlteredError('chunk', {chunk, offset, source: this.source})
    // No file age writes ends in a chunk shorter than a tag, nor in an empty chunk after full ones.
    const lastChunkBytes = payloadBytes - (chunks - 1) * ENCRYPTED_CHUNK_BYTES
    if (lastChunkBytes < TAG_BYTES || (lastChunkBytes === TAG_BYTES && chunks > 1)) return new AgeTruncatedError('final-chunk', this.fed, this.source)
    return new AgeTruncatedOrAlteredError(chunk, offset, this.fed, this.source)
  }
}

/**
 * Finds where an age header ends: after its MAC line, the first line that starts with "--- ".
 * No other header line can start so (stanza lines start with "->", body lines are base64), so
 * when the library accepts a header, it ends here.
 */
class HeaderEndFinder {
  /** The header's length in bytes, once its end has been seen. */
  length?: number
  private scanned = 0
  /** How much of "--- " the current line starts with; -1 once it cannot be the MAC line. */
  private matched = 0
  private onMacLine = false

  scan(bytes: Uint8Array): void {
    for (let index = 0; index < bytes.length && this.length === undefined; index++) {
      const byte = bytes[index]!
      if (this.onMacLine) {
        if (byte === NEWLINE) this.length = this.scanned + index + 1
      } else if (byte === NEWLINE) {
        this.matched = 0
      } else if (this.matched >= 0) {
        this.matched = byte === MAC_LINE_START[this.matched] ? this.matched + 1 : -1
        if (this.matched === MAC_LINE_START.length) this.onMacLine = true
      }
    }

    this.scanned += bytes.length
  }
}

const NEWLINE = 0x0a
const MAC_LINE_START = Buffer.from('--- ')

/**
 * The kinds of recipient stanzas a header holds: public, and what a wrong-key message can say.
 * Given the stanzas before any identity or passphrase is tried, it refuses a header whose trial
 * would cost what no volume of this tool's needs: a scrypt work factor above the one export
 * writes (each step doubles time and memory: 2^20 is 1 GiB), or more recipient stanzas than
 * export writes (each one costs every identity an X25519 operation; 1 MiB of header holds
 * 10,000). The header is already bounded by MAX_HEADER_BYTES when the library parses it.
 */
class StanzaProbe implements Identity {
  stanzaTypes: string[] = []

  constructor(private readonly source: string | undefined) {}

  unwrapFileKey(stanzas: Stanza[]): null {
    // Header lines are printable ASCII (the parser checks), but types are shown only when known.
    this.stanzaTypes = stanzas.map((stanza) => (KNOWN_STANZA_TYPES.has(stanza.args[0] ?? '') ? stanza.args[0]! : 'other'))
    if (stanzas.length > MAX_AGE_RECIPIENTS) {
      throw new UnsupportedAgeFileError(`its header holds ${stanzas.length} recipient stanzas, more than the ${MAX_AGE_RECIPIENTS} this tool writes and reads`,
        'No volume written by this tool holds more: this one was made elsewhere or altered. Copy it again from the export side.', this.source)
    }

    for (const stanza of stanzas) {
      const workFactor = stanza.args[0] === 'scrypt' && /^[0-9]{1,9}$/.test(stanza.args[2] ?? '') ? Number(stanza.args[2]) : undefined
      if (workFactor !== undefined && workFactor > MAX_SCRYPT_WORK_FACTOR) {
        throw new UnsupportedAgeFileError(`its passphrase was stretched with scrypt work factor 2^${workFactor}, above the 2^${MAX_SCRYPT_WORK_FACTOR} this tool writes and reads`,
          `Encrypt it again with \`age -p\` or this tool (work factor 2^${MAX_SCRYPT_WORK_FACTOR}); if it was written so, it was altered.`, this.source)
      }
    }

    return null
  }
}

const KNOWN_STANZA_TYPES = new Set(['X25519', 'scrypt', 'mlkem768x25519', 'p256tag', 'mlkem768p256tag', 'ssh-ed25519', 'ssh-rsa'])

/** Writes go to the encryptor; finishing waits until the destination has every byte. */
class EncryptingWriter extends Writable {
  private readonly written: Promise<void>

  constructor(private readonly encryptor: Duplex, destination: Writable) {
    super()
    this.written = pipelineAsync(encryptor, destination)
    this.written.catch((error: Error) => this.destroy(error))
  }

  override _write(chunk: Buffer, encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.encryptor.write(chunk, encoding, (error) => {
      if (!error) callback()
      // The encryptor was destroyed because the destination failed: report why (ENOSPC), not "write after destroy".
      else this.written.then(() => callback(error), callback)
    })
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.encryptor.end()
    this.written.then(() => callback(), callback)
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (error) this.encryptor.destroy(error)
    callback(error)
  }
}
