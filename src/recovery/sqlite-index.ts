import {copyFile, open, stat} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {UserFacingError} from '../errors.js'
import type {OrthancIndex} from './index-model.js'
import {type Row, type SqlConnection, SqlIndex} from './sql-index.js'
import {pathExists} from '../util/file-exists.js'
import {makeScratchFolder, removeScratchFolder} from '../util/scratch-folder.js'

/** The files SQLite keeps an Orthanc index in: the database, and what a killed server leaves beside it. */
const INDEX_FILE = 'index'
const COMPANIONS = ['-wal', '-journal']
const SQLITE_HEADER = Buffer.from('SQLite format 3\0', 'latin1')

/**
 * Opens the SQLite index of a stopped Orthanc (`IndexDirectory/index`, or the file itself) for reading.
 *
 * The original is never opened by SQLite: Orthanc 1.10 runs its index in WAL mode with exclusive
 * locking (SQLiteDatabaseWrapper.cpp: JOURNAL_MODE=WAL, LOCKING_MODE=EXCLUSIVE), so a server killed
 * with kill -9 leaves its committed changes in `index-wal` only (checked: after uploads and kill -9,
 * `index` alone held no table at all), and any connection to the original could write to it, fold the
 * WAL in, or leave a lock or a `-shm` file for the restarted server to trip on. So `index` and its
 * `-wal` (or `-journal`) are copied into a private (0700) temporary folder, and the copy is opened:
 * SQLite recovers the copy's WAL there, and the folder is removed on close.
 *
 * node-sqlite3-wasm reads through a file-system VFS, page by page: reading an index of 1.5 million
 * instances (2.5 GB) peaked at 95 MB. sql.js, the other candidate, loads the whole file into memory
 * (1.1 GB for a 1 GB index) and cannot open one over 2 GiB at all, nor a WAL.
 */
export async function openSqliteIndex(location: string): Promise<OrthancIndex> {
  const path = (await isDirectory(location)) ? join(location, INDEX_FILE) : location
  await checkSqliteHeader(path)
  const privateDir = await makeScratchFolder(tmpdir(), 'orthanc-replicate-index-')
  const removeCopy = () => removeScratchFolder(privateDir)
  try {
    const copy = join(privateDir, INDEX_FILE)
    await copyPrivately(path, copy)
    let lastWrittenAt = (await stat(path)).mtimeMs
    for (const suffix of COMPANIONS) {
      if (!(await pathExists(`${path}${suffix}`))) continue
      await copyPrivately(`${path}${suffix}`, `${copy}${suffix}`)
      lastWrittenAt = Math.max(lastWrittenAt, (await stat(`${path}${suffix}`)).mtimeMs)
    }

    const {default: sqlite} = await import('node-sqlite3-wasm')
    const database = new sqlite.Database(copy, {fileMustExist: true})
    // Exclusive locking lets SQLite read a WAL without shared memory, which this VFS lacks.
    database.exec('PRAGMA locking_mode = EXCLUSIVE; PRAGMA query_only = ON')
    const connection: SqlConnection = {
      kind: 'sqlite',
      async all(sql: string, params: unknown[] = []): Promise<Row[]> {
        try {
          return database.all(sql, params as never) as Row[]
        } catch (error) {
          throw asUserFacing(error, path)
        }
      },
    }
    const close = async () => {
      if (database.isOpen) database.close()
      await removeCopy()
    }
    try {
      return await SqlIndex.open(connection, path, close, lastWrittenAt)
    } catch (error) {
      await close()
      throw error
    }
  } catch (error) {
    await removeCopy()
    throw asUserFacing(error, path)
  }
}

async function copyPrivately(from: string, to: string): Promise<void> {
  await copyFile(from, to)
  // Patient data: readable by this user only, whatever the umask.
  const handle = await open(to, 'r+')
  try {
    await handle.chmod(0o600)
  } finally {
    await handle.close()
  }
}

async function checkSqliteHeader(path: string): Promise<void> {
  let head: Buffer
  try {
    const handle = await open(path, 'r')
    try {
      head = Buffer.alloc(SQLITE_HEADER.length)
      const {bytesRead} = await handle.read(head, 0, head.length, 0)
      head = head.subarray(0, bytesRead)
    } finally {
      await handle.close()
    }
  } catch (error) {
    throw new UserFacingError(`cannot read the index ${path}: ${(error as Error).message}`, 'Give the index of the stopped server with --index (IndexDirectory/index), or --ignore-index to recover without it.', 'usage', 'unreadable-index')
  }
  if (!head.equals(SQLITE_HEADER)) {
    throw new UserFacingError(`${path} is not an SQLite database`, 'Give the index of the stopped server with --index (IndexDirectory/index), or --ignore-index to recover without it.', 'bad-input', 'not-an-index')
  }
}

// SQLite's own errors (a damaged file) become a refusal naming the file, not a crash.
function asUserFacing(error: unknown, path: string): unknown {
  if (error instanceof UserFacingError || !(error instanceof Error) || error.name !== 'SQLite3Error') return error
  return new UserFacingError(`cannot read the index ${path}: ${error.message}`, 'The index is damaged; recover without it with --ignore-index (instances are then recognised file by file).', 'bad-input', 'unreadable-index')
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory()
  } catch {
    return false
  }
}
