import {readFile} from 'node:fs/promises'
import {setTimeout as sleep} from 'node:timers/promises'

import {isJobFatal} from '../transfer/engine.js'
import {OrthancAuthError} from '../orthanc/errors.js'
import {crashPoint} from '../util/crash-points.js'
import {writeJsonAtomically} from '../util/json-file.js'
import {type DeletionPass, deleteExtras} from './delete.js'
import type {Endpoint} from '../model.js'
import {mergeNotCarried, type NotCarried} from '../sinks/orthanc-sink.js'
import type {JobEventListener} from '../transfer/progress.js'
import {emptyStats, recordFailure, type TransferStats} from '../transfer/stats.js'
import {type SyncOptions, type SyncSummary, syncServers} from './sync.js'

/** Deletions at once when the concurrency is adaptive (deletions are few, and do not adapt). */
export const DELETIONS_AT_ONCE = 4

export interface FollowOptions extends Omit<SyncOptions, 'dryRun' | 'onlyInstances' | 'onEvent'> {
  /** Where the change cursor is kept between runs. */
  stateFile: string
  intervalMs: number
  /** A full ID-set comparison at least this often (it also catches what /changes never shows). */
  fullEveryMs: number
  deleteExtras: boolean
  maxDeleteFraction: number
  /** Told after every pass, and about every outage survived. */
  onEvent?: (event: FollowEvent) => void
  /** Told of each pass's plan, and of each failure and retry, as they happen. */
  onPassEvent?: JobEventListener
}

export type FollowEvent =
  | {type: 'pass'; full: boolean; cursor: number; summary: SyncSummary; deletion?: DeletionPass}
  | {type: 'outage'; message: string}

export interface FollowState {
  version: 1
  source: string
  target: string
  /** The source's change sequence number up to which everything is on the target. */
  cursor: number
  lastFullPass: string | null
}

/** The counts of every pass added up; `interrupted` is how --follow always stops (Ctrl-C, SIGTERM), with the cursor saved. */
export interface FollowSummary extends TransferStats {
  /** A mirror always changes the target: the same field as in every transfer summary. */
  dryRun: false
  source: Endpoint
  target: Endpoint
  passes: number
  fullPasses: number
  deleted: number
  outages: number
  cursor: number
  /** Side data that could not be carried to the target, over all passes, by level, kind and name. */
  notCarried: NotCarried[]
}

/**
 * Continuous mirroring: follows the source's /changes from a saved cursor and copies new
 * instances as they arrive, polling every `intervalMs`. A lost or stale cursor (the source was
 * replaced, the state file deleted) falls back to a full comparison; so does the periodic full
 * pass. Outages of either server are waited out. Returns when `signal` aborts, with the cursor
 * saved: at worst the last pass is done again next time, which is harmless.
 */
export async function followSource(options: FollowOptions): Promise<FollowSummary> {
  const started = Date.now()
  const summary: FollowSummary = {
    ...emptyStats(), dryRun: false, source: {url: options.source.display}, target: {url: options.target.display},
    passes: 0, fullPasses: 0, deleted: 0, outages: 0, cursor: 0, notCarried: [],
  }
  let state = await loadState(options.stateFile, options.source.display, options.target.display)
  while (!options.signal?.aborted) {
    try {
      const last = await options.source.lastChange(options.signal)
      const stale = !state || state.cursor > last
      const due = !state?.lastFullPass || Date.now() - Date.parse(state.lastFullPass) >= options.fullEveryMs
      if (stale || due) {
        const pass = await syncServers({...options, onEvent: options.onPassEvent, dryRun: false})
        const deletion = options.deleteExtras
          ? await deleteExtras(options.source, options.target, {maxFraction: options.maxDeleteFraction, dryRun: false, concurrency: options.concurrency ?? DELETIONS_AT_ONCE, signal: options.signal})
          : undefined
        state = {version: 1, source: options.source.display, target: options.target.display, cursor: last, lastFullPass: new Date().toISOString()}
        record(summary, pass, true, deletion)
        options.onEvent?.({type: 'pass', full: true, cursor: last, summary: pass, deletion})
      } else {
        const cursor = await followChanges(options, state!, summary)
        state = {...state!, cursor}
      }

      summary.cursor = state.cursor
      crashPoint('follow:pass-done')
      await writeJsonAtomically(options.stateFile, state)
      crashPoint('follow:state-saved')
    } catch (error) {
      if (options.signal?.aborted) break
      if (error instanceof OrthancAuthError || !isJobFatal(error)) throw error
      summary.outages++
      options.onEvent?.({type: 'outage', message: (error as Error).message})
    }

    await sleep(options.intervalMs, undefined, {signal: options.signal}).catch(() => {})
  }

  summary.interrupted = options.signal?.aborted === true
  summary.durationMs = Date.now() - started
  return summary
}

/** Copies the instances that /changes reports after the cursor; returns the new cursor. */
async function followChanges(options: FollowOptions, state: FollowState, summary: FollowSummary): Promise<number> {
  const newInstances = new Set<string>()
  const changes = options.source.changesSince(state.cursor, options.signal)
  let next = await changes.next()
  while (!next.done) {
    if (next.value.ChangeType === 'NewInstance') newInstances.add(next.value.ID)
    next = await changes.next()
  }

  const cursor = next.value
  if (newInstances.size > 0) {
    // The new instances, through the same filters as a full pass: a filtered mirror never receives what they leave out.
    const pass = await syncServers({...options, onEvent: options.onPassEvent, onlyInstances: [...newInstances], dryRun: false})
    record(summary, pass, false)
    options.onEvent?.({type: 'pass', full: false, cursor, summary: pass})
    // Keep the cursor where it was: the next poll tries the failed instances again.
    if (pass.failed > 0) return state.cursor
  } else {
    summary.passes++
  }

  return cursor
}

function record(summary: FollowSummary, pass: SyncSummary, full: boolean, deletion?: DeletionPass): void {
  summary.passes++
  if (full) summary.fullPasses++
  // The servers as they last answered (a restart may bring another version).
  summary.source = pass.source
  summary.target = pass.target
  summary.transferred += pass.transferred
  summary.bytes += pass.bytes
  summary.skipped += pass.skipped
  summary.retries += pass.retries
  summary.failed += pass.failed - pass.failures.length
  for (const failure of pass.failures) recordFailure(summary, failure)
  summary.deleted += deletion?.deleted ?? 0
  summary.notCarried = mergeNotCarried(summary.notCarried, pass.notCarried)
}

async function loadState(path: string, source: string, target: string): Promise<FollowState | undefined> {
  try {
    const state = JSON.parse(await readFile(path, 'utf8')) as FollowState
    // A state file of another pair of servers is no cursor for this one.
    return state.version === 1 && state.source === source && state.target === target ? state : undefined
  } catch {
    return undefined
  }
}
