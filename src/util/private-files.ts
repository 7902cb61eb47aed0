import {readFileSync} from 'node:fs'
import {chmod, chown, type FileHandle, mkdir, open, stat} from 'node:fs/promises'
import {dirname, join, relative, resolve, sep} from 'node:path'

import {UserFacingError} from '../errors.js'

/**
 * Who may read what the tool writes and keeps (volumes, plans, state, receipts, the patient
 * index): its owner alone by default (files 0600, folders 0700), or also the members of one group
 * (files 0640, folders 0750, that group set on each), for a team that shares an export folder.
 * The group is a policy of the process, like the umask: a command sets it once, from
 * --file-group, before it writes anything. Temporary files (spools, copies of an index) stay the
 * owner's alone whatever it is: nobody else has a reason to read them.
 */
let sharingGroup: number | undefined

export function shareWrittenFilesWith(gid: number | undefined): void {
  sharingGroup = gid
}

export function privateFileMode(): number {
  return sharingGroup === undefined ? 0o600 : 0o640
}

/** Opens (creates) a file with the private mode, and the sharing group when there is one. */
export async function openPrivateFile(path: string, flags: 'w' | 'wx' | 'wx+'): Promise<FileHandle> {
  const handle = await open(path, flags, privateFileMode())
  // A device named as an output (/dev/null) is never given away: run as root, that would change it for everyone.
  if (sharingGroup !== undefined && (await handle.stat()).isFile()) {
    try {
      await handle.chown(-1, sharingGroup)
      // The umask may have taken the group's read bit away.
      await handle.chmod(0o640)
    } catch (error) {
      await handle.close()
      throw groupError(path, error)
    }
  }

  return handle
}

/** Creates a folder (and its parents) for private files; a folder created here gets the sharing group. */
export async function makePrivateFolder(path: string): Promise<void> {
  const created = await makeFolders(resolve(path), sharingGroup === undefined ? 0o700 : 0o750)
  if (created !== undefined && sharingGroup !== undefined) {
    // Every folder made here, not only the last: the group must be able to walk down to it.
    for (const folder of foldersFrom(resolve(created), resolve(path))) {
      try {
        await chown(folder, -1, sharingGroup)
        await chmod(folder, 0o750)
      } catch (error) {
        throw groupError(folder, error)
      }
    }
  }
}

/**
 * mkdir -p: the first folder it made, or undefined when the folder was there (as Node's recursive
 * mkdir answers). Node's own spins forever where the system refuses a folder whose parent exists
 * with ENOENT (under /proc): here each level is made once, and that ENOENT is the answer.
 */
async function makeFolders(path: string, mode: number): Promise<string | undefined> {
  const made = async (folder: string) => {
    try {
      await mkdir(folder, {mode})
      return true
    } catch (error) {
      // There already (made by another run meanwhile, or before): fine if it is a folder.
      if ((error as NodeJS.ErrnoException).code === 'EEXIST' && (await stat(folder)).isDirectory()) return false
      throw error
    }
  }

  try {
    return (await made(path)) ? path : undefined
  } catch (error) {
    const parent = dirname(path)
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || parent === path || (await stat(parent).catch(() => undefined))) throw error
    const first = await makeFolders(parent, mode)
    return (await made(path)) ? first ?? path : first
  }
}

/** `first`, then each folder below it down to `last` (which is inside it, or it). */
function foldersFrom(first: string, last: string): string[] {
  const below = relative(first, last).split(sep).filter((part) => part !== '')
  return [first, ...below.map((_, index) => join(first, ...below.slice(0, index + 1)))]
}

/** A group name (from /etc/group) or number, as --file-group takes it. */
export function resolveGroup(value: string, groupFile = '/etc/group'): number {
  if (/^\d+$/.test(value)) {
    // A group ID is 32 bits, and 2^32 - 1 means "no group" to chown.
    if (Number(value) < 2 ** 32 - 1) return Number(value)
    throw new UserFacingError(`--file-group ${value} is no group number (at most ${2 ** 32 - 2})`, 'Give a group name from /etc/group, or a group number.', 'usage', 'bad-group')
  }

  for (const line of readLines(groupFile)) {
    const [name, , gid] = line.split(':')
    if (name === value && gid && /^\d+$/.test(gid)) return Number(gid)
  }

  throw new UserFacingError(`--file-group "${value}" is no group of this machine`, 'Give a group name from /etc/group, or a group number.', 'usage', 'bad-group')
}

function readLines(path: string): string[] {
  try {
    return readFileSync(path, 'utf8').split('\n')
  } catch {
    // No group file: only numbers name groups here.
    return []
  }
}

function groupError(path: string, error: unknown): UserFacingError {
  const code = (error as NodeJS.ErrnoException).code
  return new UserFacingError(
    `${path} cannot be given group ${sharingGroup} (${code ?? (error as Error).message})`,
    'Give --file-group a group you are a member of (see the groups command), or leave it out for files private to you.',
    'usage', 'bad-group',
  )
}
