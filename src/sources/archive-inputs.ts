import {createReadStream} from 'node:fs'
import type {Readable} from 'node:stream'

import {AGE_FILE_SUFFIX, type AgeDecryptionKeys, createDecryptingReader, startsLikeAgeFile} from '../crypto/age.js'
import {UserFacingError} from '../errors.js'
import {type ArchiveInput, archiveFile, archiveStream} from './archive-source.js'
import {fileStart} from '../util/file-start.js'

/**
 * The archive inputs of a job, each as the reader takes it: a plain volume file is read by path
 * (its tag files first); an encrypted one (`.tar.age`), and stdin that turns out to be encrypted,
 * are decrypted as they stream and take the stream route, where every bag waits in the spool
 * until it is proven. Refuses at once, before any work, an encrypted input with no key to open it.
 */
export async function archiveInputs(
  inputs: Array<{kind: 'archive-file'; path: string} | {kind: 'archive-stream'; label: string; stream: Readable}>, keys: AgeDecryptionKeys | undefined,
): Promise<ArchiveInput[]> {
  const result: ArchiveInput[] = []
  for (const input of inputs) {
    if (input.kind === 'archive-file') {
      // By its name, or (renamed on the way) by its first bytes.
      const encrypted = input.path.endsWith(AGE_FILE_SUFFIX) || startsLikeAgeFile(await fileStart(input.path, 22))
      if (!encrypted) result.push(archiveFile(input.path))
      else result.push({label: input.path, open: () => createDecryptingReader(createReadStream(input.path), needKeys(keys, input.path), {source: input.path})})
      continue
    }

    const head = await peek(input.stream, 22)
    if (startsLikeAgeFile(head)) {
      const opened = needKeys(keys, input.label)
      result.push({label: input.label, open: () => createDecryptingReader(input.stream, opened, {source: input.label})})
    } else {
      result.push(archiveStream(input.label, input.stream))
    }
  }

  return result
}

function needKeys(keys: AgeDecryptionKeys | undefined, what: string): AgeDecryptionKeys {
  if (keys) return keys
  throw new UserFacingError(`${what} is encrypted (age)`, 'Give the identity that opens it with --identity FILE, or --passphrase-file FILE.', 'usage', 'encrypted-without-key')
}

/** The first bytes of a stream, handed back to it: enough to tell an encrypted archive from a plain one. */
async function peek(stream: Readable, bytes: number): Promise<Buffer> {
  const chunks: Buffer[] = []
  let total = 0
  while (total < bytes) {
    const chunk = stream.read() as Buffer | null
    if (chunk !== null) {
      chunks.push(chunk)
      total += chunk.length
      continue
    }
    if (stream.readableEnded || stream.destroyed) break
    await new Promise<void>((resolve) => {
      const done = () => {
        stream.off('readable', done)
        stream.off('end', done)
        stream.off('error', done)
        resolve()
      }
      stream.once('readable', done)
      stream.once('end', done)
      stream.once('error', done)
    })
    if (stream.readableEnded) break
  }

  const head = Buffer.concat(chunks)
  if (head.length > 0) stream.unshift(head)
  return head
}
