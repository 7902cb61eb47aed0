import {stat} from 'node:fs/promises'
import {join} from 'node:path'

import type {InstanceInTransit} from '../model.js'
import {reportFailure, type SourceEvents} from '../sources/source-events.js'
import type {FirstCopies} from '../sources/first-copies.js'
import {readStorageFolder} from '../sources/storage-folder.js'
import {FolderStore} from './attachment-store.js'
import type {OrthancIndex} from './index-model.js'
import {openPostgresRecovery, type PostgresSource} from './postgres-index.js'
import {emptyRecoveryReport, recoverFromIndex, type RecoveryReport, type RecoveryStore} from './recover.js'
import {openSqliteIndex} from './sqlite-index.js'

/** A stopped Orthanc to recover: its storage folder (with or without its SQLite index), or its PostgreSQL database. */
export type RecoveryInput =
  | {kind: 'storage-folder'; path: string; index?: string; ignoreIndex?: boolean}
  /** `path` names the database as it may be shown (no password), like the path of the other inputs. */
  | {kind: 'postgres'; path: string; source: PostgresSource; storageFolder?: string}

export interface RecoveryOptions {
  includeUnindexed: boolean
  signal?: AbortSignal
  /** The copies met so far by the other inputs of one import (see FirstCopies). */
  copies?: FirstCopies
}

/**
 * Recovers the instances of a stopped server, by the best route its remains allow: from its index
 * when there is one (the SQLite `index` in the storage folder, one given with --index, or the
 * PostgreSQL database), else file by file. The report fills in as the units are read.
 *
 * `close` is for when the job is over, not when the last unit is read: units read attachments of
 * their patient, study and series when the target needs them (PostgreSQL large objects, through
 * the index's connection), and the uploads of the last units are still under way then.
 */
export function recoverStoppedServer(input: RecoveryInput, events: SourceEvents, options: RecoveryOptions): {report: RecoveryReport; units: AsyncGenerator<InstanceInTransit>; close(): Promise<void>} {
  const report = input.kind === 'postgres'
    ? emptyRecoveryReport('postgresql', input.source.display)
    : emptyRecoveryReport('storage-folder-without-index', input.path)
  const held: {index?: OrthancIndex} = {}
  return {
    report,
    units: recoverInto(input, report, events, options, held),
    async close() {
      const {index} = held
      held.index = undefined
      await index?.close()
    },
  }
}

async function* recoverInto(input: RecoveryInput, report: RecoveryReport, events: SourceEvents, options: RecoveryOptions, held: {index?: OrthancIndex}): AsyncGenerator<InstanceInTransit> {
  let opened: {index: OrthancIndex; store: RecoveryStore} | undefined
  if (input.kind === 'postgres') opened = await openPostgresRecovery(input.source, {storageFolder: input.storageFolder})
  else {
    const index = input.ignoreIndex ? undefined : input.index ?? (await indexBeside(input.path))
    if (index !== undefined) {
      report.route = 'sqlite-index'
      opened = {index: await openSqliteIndex(index), store: new FolderStore(input.path)}
    }
  }

  if (opened === undefined) {
    yield* guessFromStorageFolder(input.kind === 'storage-folder' ? input.path : '', report, events, options)
    return
  }
  held.index = opened.index
  yield* recoverFromIndex(opened.index, opened.store, events, report, options)
}

// Without an index every file is read to see what it is: candidates are the instances found.
async function* guessFromStorageFolder(path: string, report: RecoveryReport, events: SourceEvents, options: RecoveryOptions): AsyncGenerator<InstanceInTransit> {
  const counting: SourceEvents = {
    onSkip: (notice) => events.onSkip(notice),
    onProblem: (problem) => events.onProblem(problem),
    onFailed: (problem) => {
      // A second copy of an instance already counted is no other instance.
      if (problem.kind === 'contradiction') report.contradictions++
      else {
        report.candidates++
        report.failed++
      }
      reportFailure(events, problem)
    },
  }
  for await (const unit of readStorageFolder(path, counting, {signal: options.signal, copies: options.copies})) {
    report.candidates++
    yield unit
  }
}

/** Debian's configuration keeps the index in the storage folder (IndexDirectory = StorageDirectory). */
async function indexBeside(storageFolder: string): Promise<string | undefined> {
  const path = join(storageFolder, 'index')
  try {
    return (await stat(path)).isFile() ? path : undefined
  } catch {
    return undefined
  }
}
