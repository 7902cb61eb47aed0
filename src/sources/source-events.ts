import type {Problem} from '../problems.js'

/**
 * How a source tells its job what it passed over and what it found wrong, as it reads. Neither
 * stops the reading: a skip is counted (a file that is not an instance), a problem fails the run
 * (a corrupt entry, a file that cannot be read).
 */
export interface SourceEvents {
  onSkip(notice: Problem): void
  onProblem(problem: Problem): void
}
