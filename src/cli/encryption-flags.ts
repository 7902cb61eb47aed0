import {Flags} from '@oclif/core'

import {
  type AgeDecryptionKeys, type AgeEncryptionKeys, checkRecipientCount, parseRecipient, readIdentityFile, readPassphraseFile, readRecipientsFile,
} from '../crypto/age.js'
import {UserFacingError} from '../errors.js'

/** export: volumes encrypted in the age format, to recipients or to a passphrase. */
export const encryptionFlags = {
  recipient: Flags.string({description: 'encrypt every volume to this age recipient (age1...); repeatable', multiple: true, multipleNonGreedy: true, helpGroup: 'ENCRYPTION'}),
  'recipients-file': Flags.string({description: 'encrypt to the age recipients listed in this file (one per line, # comments); repeatable', multiple: true, multipleNonGreedy: true, helpGroup: 'ENCRYPTION'}),
  'passphrase-file': Flags.string({description: 'encrypt with the passphrase in this file (never give a passphrase as a flag value: ps shows it)', helpGroup: 'ENCRYPTION'}),
}

/** import and verify: what opens encrypted volumes. */
export const decryptionFlags = {
  identity: Flags.string({description: 'age identity file (age-keygen\'s format) that opens encrypted volumes; repeatable', multiple: true, multipleNonGreedy: true, helpGroup: 'ENCRYPTION'}),
  'passphrase-file': Flags.string({description: 'file holding the passphrase of passphrase-encrypted volumes', helpGroup: 'ENCRYPTION'}),
}

export async function encryptionKeysFromFlags(flags: {recipient?: string[]; 'recipients-file'?: string[]; 'passphrase-file'?: string}): Promise<AgeEncryptionKeys | undefined> {
  const recipients = await Promise.all((flags.recipient ?? []).map((recipient) => parseRecipient(recipient, '--recipient')))
  for (const file of flags['recipients-file'] ?? []) recipients.push(...await readRecipientsFile(file))
  const passphraseFile = flags['passphrase-file']
  if (recipients.length > 0 && passphraseFile) {
    throw new UserFacingError('--passphrase-file cannot be combined with recipients', 'An age file is encrypted to recipients or to one passphrase, not both: choose one.', 'usage', 'mixed-encryption')
  }

  if (passphraseFile) return {passphrase: await readPassphraseFile(passphraseFile)}
  checkRecipientCount(recipients.length)
  return recipients.length > 0 ? {recipients} : undefined
}

export async function decryptionKeysFromFlags(flags: {identity?: string[]; 'passphrase-file'?: string}): Promise<AgeDecryptionKeys | undefined> {
  const identities = (await Promise.all((flags.identity ?? []).map((path) => readIdentityFile(path)))).flat()
  const passphrases = flags['passphrase-file'] ? [await readPassphraseFile(flags['passphrase-file'])] : []
  return identities.length + passphrases.length > 0 ? {identities, passphrases} : undefined
}
