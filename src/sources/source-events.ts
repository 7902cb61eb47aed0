import type {Problem} from '../problems.js'

/**
 * How a source tells its job what it passed over and what it found wrong, as it reads. Neither
 * stops the reading: a skip is counted (a file that is not an instance), a problem fails the run
 * (a corrupt entry, a file that cannot be read).
 */
export interface SourceEvents {
  onSkip(notice: Problem): void
  onProblem(problem: Problem): void
  /**
   * An instance the source knows should be there but cannot deliver (its file missing or damaged,
   * as the index of a stopped server tells): a failed instance, like one the target refused, not
   * bad input. Sources report it this way when they know of the instance at all.
   */
  onFailed?(problem: Problem): void
}

/** Reports a failed instance, as a problem to a listener that does not tell them apart. */
export function reportFailure(events: SourceEvents, problem: Problem): void {
  if (events.onFailed) events.onFailed(problem)
  else events.onProblem(problem)
}
