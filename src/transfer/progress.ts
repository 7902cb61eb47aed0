import type {Problem} from '../problems.js'

/**
 * Progress as events: the library emits them, a command decides whether and how to show them.
 * `done` and `total` count `unit`s (instances unless said otherwise). `bytes` are the bytes moved
 * or read so far; a phase that moves none (planning, comparing) leaves them out, so that no rate
 * is shown for it.
 */
export interface ProgressEvent {
  /** What the job is doing: planning, comparing, export, import, sync, hashing, verifying... */
  phase: string
  unit?: string
  done: number
  total?: number
  bytes?: number
  totalBytes?: number
}

export type ProgressListener = (event: ProgressEvent) => void

/** What a job set out to do, known before it moves anything: shown first, and all a dry run does. */
export interface PlanEvent {
  type: 'plan'
  /** Instances to move, and their bytes. */
  instances: number
  bytes: number
  /** Instances already where they should be: nothing to move. */
  present?: number
  /** An export's volumes (and how many of them an earlier run finished). */
  volumes?: number
  volumesDone?: number
  /** A sync's studies by their state on the target. */
  studies?: {complete: number; partial: number; missing: number}
  /** A sync's instances only on the target. */
  onlyOnTarget?: number
  /** User metadata names the source declares and the target does not: not carried. */
  undeclaredUserMetadata?: string[]
}

/** Something that did not go through, as it happens (the summary lists the first ones too). */
export interface FailureEvent {
  type: 'failure'
  problem: Problem
}

/** A request or an item sent again after a failure that may pass. */
export interface RetryEvent {
  type: 'retry'
  /** The instance, or the request (method and path), tried again. */
  id: string
  attempt: number
  reason: string
}

/** Everything a job tells while it runs, besides its progress: for logs and for people. */
export type JobEvent = PlanEvent | FailureEvent | RetryEvent

export type JobEventListener = (event: JobEvent) => void
