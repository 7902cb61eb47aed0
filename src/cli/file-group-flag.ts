import {Flags} from '@oclif/core'

import {resolveGroup, shareWrittenFilesWith} from '../util/private-files.js'

/** export, import and sync: who besides the owner may read the files they write. */
export const fileGroupFlags = {
  'file-group': Flags.string({
    description: 'also let this group (name or number) read the files written: 0640 files and 0750 folders instead of 0600 and 0700',
  }),
}

/** Sets the process's sharing group from the flag; call before anything is written. */
export function applyFileGroup(flags: {'file-group'?: string}): void {
  shareWrittenFilesWith(flags['file-group'] === undefined ? undefined : resolveGroup(flags['file-group']))
}
