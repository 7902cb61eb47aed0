/**
 * What kind of trouble a UserFacingError is, in the library's words. The CLI alone turns a
 * category into an exit code (src/cli/failure.ts): library modules know nothing of exit codes.
 */
export type ErrorCategory =
  /** A flag, argument or output path that cannot be used as given. */
  | 'usage'
  /** The input (archive, receipt, earlier export) is damaged, empty or not what it should be. */
  | 'bad-input'
  /** The filters selected nothing. */
  | 'nothing-matched'
  /** The disk is full, or would be. */
  | 'no-space'
  /** Some instances failed, the others were moved. */
  | 'partial-failure'
  /** Where the output went is gone: the reader of a pipe closed it. */
  | 'output-closed'
  /** A database or service the job reads cannot be reached. */
  | 'unreachable'
  /** A database or service the job reads refused the credentials. */
  | 'authentication'

/**
 * An error the library raises with its explanation already written: a bad archive entry, a
 * filter that matched nothing, a partial failure. It names the file, entry or instance.
 */
export class UserFacingError extends Error {
  constructor(
    message: string,
    readonly suggestion: string,
    readonly category: ErrorCategory,
    readonly code: string,
    /** Whether it stops the whole job (a bad output folder) rather than failing one item. */
    readonly fatal = true,
  ) {
    super(message)
    this.name = 'UserFacingError'
  }
}

/** The way out when filters select nothing (export fails with it; sync and diff warn with it). */
export const FILTERS_MATCHED_NOTHING_HINT = 'Check the filter values (IDs, dates as YYYYMMDD, modality codes) against `info` and the server.'
