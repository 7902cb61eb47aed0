import {Readable, Writable} from 'node:stream'
import {pipeline} from 'node:stream/promises'

import {generateIdentity} from 'age-encryption'

import {type AgeDecryptionKeys, type AgeEncryptionKeys, AgeIdentity, createAgeDecryptor, createAgeEncryptor} from '../../src/crypto/age.js'

/** A fresh X25519 identity, as age-keygen would make one. */
export async function newIdentity(): Promise<AgeIdentity> {
  return (await AgeIdentity.parse(await generateIdentity(), 'test identity'))!
}

/** Yields `bytes` in pieces of `size`, so that headers and chunks straddle writes. */
export function chunked(bytes: Uint8Array, size = 7000): Readable {
  return Readable.from((function* () {
    for (let offset = 0; offset < bytes.length; offset += size) yield Buffer.from(bytes.subarray(offset, offset + size))
  })(), {objectMode: false})
}

/** A sink that keeps everything written to it. */
export function collector(): {sink: Writable; bytes: () => Buffer} {
  const chunks: Buffer[] = []
  return {
    sink: new Writable({
      write(chunk: Buffer, _encoding, callback) {
        chunks.push(chunk)
        callback()
      },
    }),
    bytes: () => Buffer.concat(chunks),
  }
}

export async function encryptBuffer(plaintext: Uint8Array, keys: AgeEncryptionKeys, writeSize = 7000): Promise<Buffer> {
  const {sink, bytes} = collector()
  await pipeline(chunked(plaintext, writeSize), createAgeEncryptor(keys), sink)
  return bytes()
}

export async function decryptBuffer(ciphertext: Uint8Array, keys: AgeDecryptionKeys, writeSize = 7000): Promise<Buffer> {
  const {sink, bytes} = collector()
  await pipeline(chunked(ciphertext, writeSize), createAgeDecryptor(keys, {source: 'test.tar.age'}), sink)
  return bytes()
}

/** Decrypts and returns what came out before the failure, and the failure. */
export async function decryptFailure(ciphertext: Uint8Array, keys: AgeDecryptionKeys, writeSize = 7000): Promise<{error: Error; released: Buffer}> {
  const {sink, bytes} = collector()
  try {
    await pipeline(chunked(ciphertext, writeSize), createAgeDecryptor(keys, {source: 'test.tar.age'}), sink)
  } catch (error) {
    return {error: error as Error, released: bytes()}
  }

  throw new Error(`decryption succeeded (${bytes().length} bytes)`)
}

/** Deterministic bytes that do not compress or repeat at chunk size. */
export function pseudoRandomBytes(length: number, seed = 1): Buffer {
  const bytes = Buffer.alloc(length)
  let state = seed >>> 0 || 1
  for (let index = 0; index < length; index++) {
    state ^= state << 13
    state ^= state >>> 17
    state ^= state << 5
    bytes[index] = state & 0xff
  }

  return bytes
}

/** Where an age file's parts are, found by its text header (the MAC line ends it). */
export function ageLayout(ciphertext: Buffer): {headerEnd: number; macLineStart: number; payloadStart: number; chunks: number} {
  const macLineStart = ciphertext.indexOf('\n--- ') + 1
  const headerEnd = ciphertext.indexOf('\n', macLineStart) + 1
  const payloadStart = headerEnd + 16
  return {headerEnd, macLineStart, payloadStart, chunks: Math.max(1, Math.ceil((ciphertext.length - payloadStart) / CHUNK))}
}

/** One encrypted payload chunk: 64 KiB and its tag. */
export const CHUNK = 64 * 1024 + 16

export function flipped(bytes: Buffer, offset: number): Buffer {
  const copy = Buffer.from(bytes)
  copy[offset] = copy[offset]! ^ 0x01
  return copy
}
