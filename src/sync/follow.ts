import {setTimeout as sleep} from 'node:timers/promises'

import {isJobFatal} from '../transfer/engine.js'
import {OrthancAuthError} from '../orthanc/errors.js'
import {UserFacingError} from '../errors.js'
import {crashPoint} from '../util/crash-points.js'
import {writeJsonAtomically} from '../util/json-file.js'
import {isFileSystemError} from '../sources/dicom-folder.js'
import {isSideDataChange} from '../orthanc/side-data-changes.js'
import {RunLock} from '../util/run-lock.js'
import {LIST_FILE_BYTES, readSmallFile} from '../util/small-file.js'
import {type DeletionPass, deleteExtras, refusedBeforeCopying} from './delete.js'
import type {Endpoint} from '../model.js'
import {isLost, mergeNotCarried, type NotCarried, notCarriedBy} from '../sinks/orthanc-sink.js'
import {heldByTarget} from './plan.js'
import type {JobEventListener} from '../transfer/progress.js'
import {emptyStats, recordFailure, type TransferStats} from '../transfer/stats.js'
import {type SyncOptions, type SyncSummary, syncServers} from './sync.js'

/** How long a whole pass waits for the mark of its cursor (see FollowState.at) before saving without it. */
const MARK_TIMEOUT_MS = 10_000

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
  /** Arrivals a pass holds by ID at most (default MAX_ARRIVALS_PER_PASS; lower in tests). */
  maxArrivalsPerPass?: number
}

/**
 * A pass holds the IDs of the instances the source logged as new since the cursor (some 100 bytes
 * each): after a long downtime, as many as arrived. Bounded: a changes pass takes this many and
 * saves the cursor at the change of the last one it took, and the next poll goes on from there;
 * a full pass with more compares every instance on both sides by MD5 instead.
 */
export const MAX_ARRIVALS_PER_PASS = 100_000

export type FollowEvent =
  | {type: 'pass'; full: boolean; cursor: number; summary: SyncSummary; deletion?: DeletionPass}
  | {type: 'outage'; message: string}
  /** The source's change log is not the one the cursor was saved in: a full pass by MD5 follows. */
  | {type: 'other-history'; message: string}

export interface FollowState {
  version: 1
  source: string
  target: string
  /** The source's change sequence number up to which everything is on the target, but the instances in `retry`. */
  cursor: number
  lastFullPass: string | null
  /** Instances a pass failed to copy: every poll tries them again, until they are copied or leave the source. */
  retry?: string[]
  /**
   * The change the source logged at the cursor: a server of another history at the same URL
   * (replaced, restored from a backup) logs another one there, or none, and its changes after
   * the cursor are not what the mirror lacks.
   */
  at?: ChangeMark
}

export interface ChangeMark {
  id: string
  type: string
  date: string
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
  /**
   * Why the mirror stopped without being asked: a full pass whose deletion would be refused (see
   * refusedBeforeCopying) copies nothing, saves nothing, and ends the mirror, exit 14.
   */
  stoppedBecause?: string
}

/**
 * Continuous mirroring: follows the source's /changes from a saved cursor and copies new
 * instances as they arrive, polling every `intervalMs`. A lost or stale cursor (the source was
 * replaced, the state file deleted) falls back to a full comparison; so does the periodic full
 * pass. Outages of either server are waited out. Returns when `signal` aborts. Only a whole pass
 * saves the state: a pass stopped part-way leaves it as the last whole pass saved it, so at worst
 * that pass is done again next time, which is harmless, and no cursor ever passes over an instance
 * that is not on the target, or named to be tried again.
 */
export async function followSource(options: FollowOptions): Promise<FollowSummary> {
  // Two mirrors on one state file would each save their own cursor over the other's.
  const lock = await RunLock.acquire(`${options.stateFile}.lock`, `The mirror's state file ${options.stateFile}`)
  try {
    return await follow(options)
  } finally {
    await lock.release()
  }
}

async function follow(options: FollowOptions): Promise<FollowSummary> {
  const started = Date.now()
  const summary: FollowSummary = {
    ...emptyStats(), dryRun: false, source: {url: options.source.display}, target: {url: options.target.display},
    passes: 0, fullPasses: 0, deleted: 0, outages: 0, cursor: 0, notCarried: [],
  }
  let state = await loadState(options.stateFile, options.source.display, options.target.display)
  // The cursor on the disk: what a summary may say is saved.
  summary.cursor = state?.cursor ?? 0
  const notCarried = new NotCarriedAcrossPasses()
  const tally = (pass: SyncSummary, full: boolean) => {
    summary.notCarried = notCarried.add(pass, full)
  }
  while (!options.signal?.aborted) {
    try {
      const last = await options.source.logHead(state?.cursor ?? 0, options.signal)
      const otherHistory = state !== undefined && (state.cursor > last || !(await sameHistory(options.source, state, options.signal)))
      if (otherHistory) options.onEvent?.({type: 'other-history', message: `the source's change log is not the one the cursor ${state!.cursor} was saved in (another server at this URL, or one restored from a backup): a full pass compares every instance on both sides by MD5`})
      const stale = !state || otherHistory
      if (stale || fullPassDue(state!, options.fullEveryMs)) {
        // What arrived since the cursor is compared by MD5 where the target holds its ID, as a
        // changes pass compares it: an instance stored again with other bytes keeps its ID, and the
        // saved cursor passes its change. Of another history nothing is known: all of it is, and
        // so it is when more arrived than a pass holds by ID.
        const arrivals = stale ? undefined : await arrivalsUpTo(options.source, state!.cursor, last, maxArrivals(options), options.signal)
        const pass = await syncServers({
          ...options, checksum: options.checksum || otherHistory || (!stale && arrivals === undefined), checksumOf: arrivals, onEvent: options.onPassEvent, dryRun: false,
          holdBack: options.deleteExtras ? (plan) => refusedBeforeCopying(plan, options.maxDeleteFraction) : undefined,
        })
        record(summary, pass, true)
        tally(pass, true)
        if (pass.interrupted) break
        if (pass.heldBack) {
          // A source this different from the mirror may be the wrong one: following it would copy
          // its instances change by change, and a later full pass would find the mirror's own few.
          summary.stoppedBecause = pass.heldBack
          options.onEvent?.({type: 'pass', full: true, cursor: state?.cursor ?? 0, summary: pass, deletion: {candidates: pass.plan.onlyOnTarget, deleted: 0, refused: pass.heldBack}})
          break
        }
        const deletion = options.deleteExtras
          ? await deleteExtras(options.source, options.target, {maxFraction: options.maxDeleteFraction, targetHeldBefore: heldByTarget(pass.plan), dryRun: false, concurrency: options.concurrency ?? DELETIONS_AT_ONCE, signal: options.signal})
          : undefined
        summary.deleted += deletion?.deleted ?? 0
        state = stateAfter(pass, {version: 1, source: options.source.display, target: options.target.display, cursor: last, lastFullPass: new Date().toISOString()})
        options.onEvent?.({type: 'pass', full: true, cursor: last, summary: pass, deletion})
      } else {
        const next = await followChanges(options, state!, summary, tally)
        if (!next) break
        state = next
      }

      if (!state.at || state.cursor !== summary.cursor) {
        // The mark of the old cursor goes first: kept beside the new one, it would be another
        // history at the next poll. Asked even after Ctrl-C (the pass is whole, its state is
        // saved), but not for long; without it the state is saved all the same, and the next
        // pass marks it.
        const {at: _, ...rest} = state
        state = rest
        const at = await changeAt(options.source, state.cursor, AbortSignal.timeout(MARK_TIMEOUT_MS)).catch(() => undefined)
        if (at) state = {...state, at}
      }
      crashPoint('follow:pass-done')
      await saveState(options.stateFile, state, summary.cursor)
      summary.cursor = state.cursor
      crashPoint('follow:state-saved')
    } catch (error) {
      if (options.signal?.aborted) break
      if (error instanceof OrthancAuthError || !isJobFatal(error)) throw error
      // What a pass could not carry before the outage stopped it (its replacements' losses among it) stays in the summary.
      const carried = notCarriedBy(error)
      if (carried.length > 0) summary.notCarried = notCarried.add({notCarried: carried, interrupted: true}, false)
      summary.outages++
      options.onEvent?.({type: 'outage', message: (error as Error).message})
    }

    await sleep(options.intervalMs, undefined, {signal: options.signal}).catch(() => {})
  }

  summary.interrupted = options.signal?.aborted === true
  summary.durationMs = Date.now() - started
  return summary
}

/**
 * Whether a full pass is due: never made, or longer ago than `fullEveryMs`. A time that does not
 * read as one, or that lies ahead (a clock set wrong when it was saved), makes it due: otherwise
 * no full pass would come, or none until then.
 */
function fullPassDue(state: FollowState, fullEveryMs: number): boolean {
  const last = state.lastFullPass ? Date.parse(state.lastFullPass) : Number.NaN
  const now = Date.now()
  return !Number.isFinite(last) || last > now || now - last >= fullEveryMs
}

/** The change the source logged at `seq`, if it has one. */
async function changeAt(source: FollowOptions['source'], seq: number, signal?: AbortSignal): Promise<ChangeMark | undefined> {
  if (seq <= 0) return undefined
  const [change] = (await source.changes(seq - 1, 1, signal)).Changes
  return change?.Seq === seq ? {id: change.ID, type: change.ChangeType, date: change.Date} : undefined
}

/**
 * Whether the source logs at the cursor the change the state saw there. Orthanc removes from its
 * log the changes of a resource it deletes (an instance stored over, a study deleted): a change
 * gone from there says nothing, and neither does a state without one. Another change there is
 * another history.
 */
async function sameHistory(source: FollowOptions['source'], state: FollowState, signal?: AbortSignal): Promise<boolean> {
  if (!state.at) return true
  const now = await changeAt(source, state.cursor, signal)
  return now === undefined || (now.id === state.at.id && now.type === state.at.type && now.date === state.at.date)
}

/** The instances the source logged as new after `cursor`, up to `last`; undefined when there are more than `max`. */
async function arrivalsUpTo(source: FollowOptions['source'], cursor: number, last: number, max: number, signal?: AbortSignal): Promise<Set<string> | undefined> {
  const arrivals = new Set<string>()
  for await (const change of source.changesSince(cursor, signal)) {
    if (change.Seq > last) break
    if (change.ChangeType !== 'NewInstance') continue
    arrivals.add(change.ID)
    if (arrivals.size > max) return undefined
  }
  return arrivals
}

const maxArrivals = (options: FollowOptions) => Math.max(1, options.maxArrivalsPerPass ?? MAX_ARRIVALS_PER_PASS)

/**
 * A state file the disk will not take (full, failing) is waited out like an outage, named for
 * what it is: the mirror goes on from the cursor it holds, and saves it after its next pass.
 */
async function saveState(file: string, state: FollowState, savedCursor: number): Promise<void> {
  try {
    await writeJsonAtomically(file, state)
  } catch (error) {
    if (!isFileSystemError(error)) throw error
    throw Object.assign(new Error(`the mirror's state file ${file} cannot be written (${error.message}): the cursor saved there stays at ${savedCursor}, and the mirror saves it again after its next pass`), {code: error.code})
  }
}

/**
 * Copies the instances that /changes reports after the cursor, and tries again those the last
 * pass failed; returns the state to save, or undefined when the pass was stopped part-way.
 * Resources whose user metadata or attachments were set since are compared too, so that such a
 * change reaches the mirror at the next poll rather than at the next full pass.
 */
async function followChanges(options: FollowOptions, state: FollowState, summary: FollowSummary, tally: (pass: SyncSummary, full: boolean) => void): Promise<FollowState | undefined> {
  // Instances, and resources of any level whose side data changed: the pass compares every
  // instance of those (what the target holds of them has its side data compared and completed).
  const instances = new Set<string>(state.retry)
  const changes = options.source.changesSince(state.cursor, options.signal)
  // Up to the change of the last arrival taken, when there are more than a pass holds.
  // Counted apart from the instances to try again, so that every pass moves the cursor on.
  let taken = state.cursor
  let arrivals = 0
  let next = await changes.next()
  while (!next.done) {
    const change = next.value
    if ((change.ChangeType === 'NewInstance' || isSideDataChange(change)) && !instances.has(change.ID)) {
      if (arrivals >= maxArrivals(options)) break
      arrivals++
      instances.add(change.ID)
    }
    taken = change.Seq
    next = await changes.next()
  }

  if (!next.done) await changes.return(taken)
  const cursor = next.done ? next.value : taken
  if (instances.size === 0) {
    summary.passes++
    return {...state, cursor}
  }

  // The new instances, through the same filters as a full pass: a filtered mirror never receives
  // what they leave out. Their MD5s are compared where the target has them already: an instance
  // stored again on the source with other bytes (OverwriteInstances) keeps its ID, and only its
  // MD5 says that the target's copy is an old one. Two small reads each, for those alone.
  const pass = await syncServers({...options, checksum: true, onEvent: options.onPassEvent, onlyInstances: [...instances], dryRun: false})
  record(summary, pass, false)
  tally(pass, false)
  if (pass.interrupted) return undefined
  options.onEvent?.({type: 'pass', full: false, cursor, summary: pass})
  return stateAfter(pass, {...state, cursor})
}

/**
 * The state a whole pass leaves: its cursor, and what it failed to copy, to be tried again at
 * every poll. When it failed more instances than its summary lists, the next poll makes a full
 * pass instead, which finds them all.
 */
function stateAfter(pass: SyncSummary, next: FollowState): FollowState {
  const {retry: _, ...rest} = next
  if (pass.failed > pass.failures.length) return {...rest, lastFullPass: null}
  const retry = [...new Set(pass.failures.map((failure) => failure.id))]
  return retry.length > 0 ? {...rest, retry} : rest
}

/**
 * Adds a pass to the mirror's summary. Its failures replace the earlier ones: every pass tries
 * again what the last one failed, so what the latest whole pass failed is what is still failing;
 * a pass stopped part-way adds its own to those, as it may not have come to them. An instance
 * that failed at every poll is one failure, not one per poll.
 */
function record(summary: FollowSummary, pass: SyncSummary, full: boolean): void {
  summary.passes++
  if (full) summary.fullPasses++
  // The servers as they last answered (a restart may bring another version).
  summary.source = pass.source
  summary.target = pass.target
  summary.transferred += pass.transferred
  summary.bytes += pass.bytes
  summary.skipped += pass.skipped
  summary.retries += pass.retries
  const failures = new Map((pass.interrupted ? summary.failures : []).map((failure) => [failure.id, failure]))
  for (const failure of pass.failures) failures.set(failure.id, failure)
  const unlisted = pass.failed - pass.failures.length + (pass.interrupted ? summary.failed - summary.failures.length : 0)
  summary.failures = []
  summary.failed = unlisted
  for (const failure of failures.values()) recordFailure(summary, failure)
}

/**
 * The mirror's state, when the file holds one of this pair of servers. The file is written over
 * at every pass: one that exists and is not a mirror's state (a wrong --state) is refused, never
 * taken as no state and replaced.
 */
/**
 * What could not be carried, by resource, over a mirror's passes: a full pass meets every resource
 * again, so its tally replaces the earlier ones, and the passes after it add only what they
 * brought. A full pass stopped part-way, or held back, met only some or none: it adds to the
 * tally, as a partial pass does. What a replacement lost (see replace.ts) is no resource's state that a later pass meets
 * again: it is kept whatever comes after.
 */
export class NotCarriedAcrossPasses {
  private lastFull: NotCarried[] = []
  private since: NotCarried[] = []
  private lost: NotCarried[] = []

  /** Adds one pass's tally; returns the whole. */
  add(pass: Pick<SyncSummary, 'notCarried' | 'interrupted' | 'heldBack'>, full: boolean): NotCarried[] {
    const lostNow = pass.notCarried.filter(isLost)
    const rest = pass.notCarried.filter((entry) => !isLost(entry))
    this.lost = mergeNotCarried(this.lost, lostNow)
    // A pass held back before copying (see refusedBeforeCopying) met nothing.
    if (full && !pass.interrupted && !pass.heldBack) [this.lastFull, this.since] = [rest, []]
    else this.since = mergeNotCarried(this.since, rest)
    return mergeNotCarried(mergeNotCarried(this.lastFull, this.since), this.lost)
  }
}

async function loadState(path: string, source: string, target: string): Promise<FollowState | undefined> {
  let text: string
  try {
    text = readSmallFile(path, LIST_FILE_BYTES).toString('utf8')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? ''
    if (code === 'ENOENT') return undefined
    // A FIFO, a device, a file of gigabytes: no state file; anything else is this machine's to say.
    if (!/^(ENOTFILE|ETOOBIG)/.test(code)) throw error
    text = ''
  }

  let state: Partial<FollowState> | undefined
  try {
    state = JSON.parse(text) as Partial<FollowState>
  } catch {
    state = undefined
  }

  const isState = typeof state === 'object' && state !== null && state.version === 1 && typeof state.source === 'string' && typeof state.target === 'string'
    && typeof state.cursor === 'number' && (state.retry === undefined || (Array.isArray(state.retry) && state.retry.every((id) => typeof id === 'string')))
    && (state.at === undefined || (typeof state.at === 'object' && state.at !== null && ['id', 'type', 'date'].every((key) => typeof (state.at as unknown as Record<string, unknown>)[key] === 'string')))
  if (!isState) throw new UserFacingError(`${path} is not a mirror's state file, and --follow writes over its state file`, 'Give --state a new file (or the one an earlier sync --follow of these servers wrote).', 'usage', 'not-a-state-file')
  // Another mirror's state: written over, that mirror would lose its cursor (and begin again with a full pass).
  if (state!.source !== source || state!.target !== target) {
    throw new UserFacingError(
      `${path} is the state of a mirror of ${state!.source} into ${state!.target}, and --follow writes over its state file`,
      'Give this mirror its own --state file (or leave --state out: the default is one per pair of servers); if the servers are the same ones given another way, remove the file or use the same URLs as before.',
      'usage', 'other-mirrors-state',
    )
  }
  return state as FollowState
}
