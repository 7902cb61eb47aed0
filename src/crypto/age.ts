/**
 * Encrypted volumes in the age format: the one door to src/crypto. Export pipes its tar stream
 * through `createEncryptingWriter` into `NAME.tar.age`; import and verify read such a file
 * through `createDecryptingReader` into the tar reader. See age-stream.ts for what a reader
 * sees before a damaged file fails, and age-errors.ts for every failure and its problem kind.
 */

export * from './age-errors.js'
export * from './age-keys.js'
export {
  AGE_FILE_SUFFIX, type AgeDecryptOptions, createAgeDecryptor, createAgeEncryptor, createDecryptingReader, createEncryptingWriter, encryptedSizeBound, startsLikeAgeFile,
} from './age-stream.js'
