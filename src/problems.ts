/**
 * What went wrong, or what was passed over, in one shape for every command: an instance that
 * failed, an archive entry refused, a file skipped. Decisions (exit codes, "valid", "complete")
 * read the kind, never the wording of the reason.
 */
export interface Problem {
  /** What it is about: an instance ID, an archive entry, a file. */
  id: string
  /** Where it was found, when that is not the id itself: the volume file or folder. */
  path?: string
  kind: ProblemKind
  /** One sentence for a person. */
  reason: string
}

/** The input is damaged or hostile: it says something untrue, or could harm the reader. */
export const INTEGRITY_KINDS = ['checksum', 'damaged', 'hostile', 'unlisted', 'duplicate', 'contradiction'] as const
/** Part of the input is not there. */
export const COMPLETENESS_KINDS = ['missing', 'truncated'] as const
/**
 * The input cannot be read at all, or not by this version, or not with the keys given
 * ('wrong-key': an encrypted volume that no identity or passphrase given opens; its content
 * is unknown, so it is neither valid nor invalid).
 */
export const READABILITY_KINDS = ['not-archive', 'unsupported', 'unreadable', 'wrong-key'] as const
/**
 * One instance could not be moved; the others were. 'changed-by-target': the target changed the
 * file as it stored it (IngestTranscoding, a Lua script, a plugin): running again changes nothing.
 */
export const TRANSFER_KINDS = ['vanished', 'rejected', 'mismatch', 'changed-by-target', 'server-error', 'too-large', 'failed'] as const
/** Passed over on purpose, and counted: not a failure. */
export const SKIP_KINDS = ['not-dicom', 'header-only', 'copy', 'link', 'special-file', 'index-file', 'foreign-file', 'not-in-index'] as const

export type ProblemKind =
  | (typeof INTEGRITY_KINDS)[number]
  | (typeof COMPLETENESS_KINDS)[number]
  | (typeof READABILITY_KINDS)[number]
  | (typeof TRANSFER_KINDS)[number]
  | (typeof SKIP_KINDS)[number]

const integrity = new Set<ProblemKind>(INTEGRITY_KINDS)
const completeness = new Set<ProblemKind>(COMPLETENESS_KINDS)
const readability = new Set<ProblemKind>(READABILITY_KINDS)

/** Whether a problem means the input is not what it claims to be. */
export function isIntegrityProblem(problem: Pick<Problem, 'kind'>): boolean {
  return integrity.has(problem.kind)
}

/** Whether a problem means part of the input is missing. */
export function isCompletenessProblem(problem: Pick<Problem, 'kind'>): boolean {
  return completeness.has(problem.kind)
}

/** Whether a problem is about the input (bad input) rather than about moving one instance. */
export function isInputProblem(problem: Pick<Problem, 'kind'>): boolean {
  return integrity.has(problem.kind) || completeness.has(problem.kind) || readability.has(problem.kind)
}

/** An error that knows which kind of problem it is. */
export interface KindedError {
  problemKind: ProblemKind
}

export function problemKindOf(error: unknown): ProblemKind {
  const kind = (error as Partial<KindedError> | undefined)?.problemKind
  return kind ?? 'failed'
}

/** Lists kept in full in a summary; beyond this only the count grows, so a bad day cannot fill memory. */
export const MAX_LISTED_PROBLEMS = 1000

/**
 * Problems as a run collects them: the first MAX_LISTED_PROBLEMS in full, every one counted,
 * and every kind remembered, so that verdicts hold however many there were.
 */
export class ProblemList {
  readonly items: Problem[] = []
  count = 0
  readonly kinds = new Set<ProblemKind>()

  add(problem: Problem): void {
    this.count++
    this.kinds.add(problem.kind)
    if (this.items.length < MAX_LISTED_PROBLEMS) this.items.push(problem)
  }

  some(test: (problem: Pick<Problem, 'kind'>) => boolean): boolean {
    return [...this.kinds].some((kind) => test({kind}))
  }
}
