import type {ExitCodeValue} from './cli/exit-codes.js'

/**
 * An error the library raises with its explanation already written: a bad archive entry, a
 * filter that matched nothing, a partial failure. It names the file, entry or instance.
 */
export class UserFacingError extends Error {
  constructor(
    message: string,
    readonly suggestion: string,
    readonly exitCode: ExitCodeValue,
    readonly code: string,
    /** Whether it stops the whole job (a bad output folder) rather than failing one item. */
    readonly fatal = true,
  ) {
    super(message)
    this.name = 'UserFacingError'
  }
}
