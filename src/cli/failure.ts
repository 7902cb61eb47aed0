import {CredentialFileError} from '../orthanc/endpoint.js'
import {
  ChecksumMismatchError,
  InvalidServerUrlError,
  NotOrthancError,
  OrthancAuthError,
  OrthancConnectionError,
  OrthancHttpError,
  OrthancTimeoutError,
  OrthancTlsError,
  OrthancUnreachableError,
} from '../orthanc/errors.js'
import {ExitCode, type ExitCodeValue} from './exit-codes.js'
import {type ErrorCategory, UserFacingError} from '../errors.js'
import {UnknownOrthancIdError} from '../sources/orthanc-selection.js'

const EXIT_CODE_OF_CATEGORY: Record<ErrorCategory, ExitCodeValue> = {
  'usage': ExitCode.usage,
  'bad-input': ExitCode.badInput,
  'nothing-matched': ExitCode.nothingMatched,
  'no-space': ExitCode.noSpace,
  'partial-failure': ExitCode.partialFailure,
  'output-closed': ExitCode.outputClosed,
  'unreachable': ExitCode.unreachable,
  'authentication': ExitCode.authentication,
}

export interface Failure {
  /** One line: what went wrong, naming the server, file or instance. */
  message: string
  /** One line: what to do about it. */
  suggestion: string
  exitCode: ExitCodeValue
  /** A stable machine-readable name, for --json output. */
  code: string
}

/**
 * The one place where errors become what the user reads. Anything not recognised here is a
 * bug in this tool: it gets exit code 1 and a request to report it, still without a stack
 * trace unless DEBUG is set.
 */
export function describeFailure(error: unknown): Failure {
  if (error instanceof UserFacingError) return {message: error.message, suggestion: error.suggestion, exitCode: EXIT_CODE_OF_CATEGORY[error.category], code: error.code}
  if (error instanceof InvalidServerUrlError) {
    return {message: `${error.message} (${error.input})`, suggestion: error.suggestion ?? 'Give the server as http://host:port or https://host:port, for example http://localhost:8042.', exitCode: ExitCode.invalidUrl, code: 'invalid-url'}
  }

  if (error instanceof OrthancUnreachableError) {
    const suggestion = error.code === 'ECONNREFUSED'
      ? 'Check that Orthanc is running and that the host and port (HttpPort) in the URL are right.'
      : 'Check the host name in the URL and that this machine can reach it.'
    return {message: error.message, suggestion, exitCode: ExitCode.unreachable, code: 'unreachable'}
  }

  if (error instanceof OrthancAuthError) {
    return {
      message: `${error.server} refused the credentials (HTTP ${error.status})`,
      suggestion: 'Give a user from the server\'s RegisteredUsers: in the URL (http://user:password@host:8042), with --password-file, or with the ORTHANC_USERNAME and ORTHANC_PASSWORD environment variables.',
      exitCode: ExitCode.authentication,
      code: 'authentication',
    }
  }

  if (error instanceof NotOrthancError) {
    return {message: error.message, suggestion: 'Point the URL at Orthanc\'s REST API (the address that answers /system), including any reverse-proxy prefix.', exitCode: ExitCode.notOrthanc, code: 'not-orthanc'}
  }

  if (error instanceof OrthancTimeoutError) {
    return {message: error.message, suggestion: 'The server is overloaded or unreachable through a firewall; retry later, or raise --timeout.', exitCode: ExitCode.timeout, code: 'timeout'}
  }

  if (error instanceof OrthancTlsError) {
    return {message: error.message, suggestion: 'Give the server\'s certificate authority with --ca-file, and a client certificate with --client-cert and --client-key if the server asks for one.', exitCode: ExitCode.tls, code: 'tls'}
  }

  if (error instanceof OrthancConnectionError) {
    return {message: error.message, suggestion: 'The server went away during the transfer; run the same command again to finish the job.', exitCode: ExitCode.unreachable, code: 'connection-lost'}
  }

  if (error instanceof OrthancHttpError) {
    return {message: error.message, suggestion: error.status >= 500 ? 'The server failed; see its log, then run the same command again.' : 'Check the request against the server\'s configuration and version.', exitCode: ExitCode.serverError, code: 'http-error'}
  }

  if (error instanceof ChecksumMismatchError) {
    return {message: error.message, suggestion: 'The copy was damaged in transit or on the server; run the command again, and check the server\'s storage if it persists.', exitCode: ExitCode.partialFailure, code: 'checksum-mismatch'}
  }

  if (error instanceof CredentialFileError) {
    if (error.problem) return {message: error.message, suggestion: 'Give the file the server\'s TLS set-up expects, in PEM form.', exitCode: ExitCode.usage, code: 'unusable-file'}
    return {message: error.message, suggestion: 'Check the path and that this user may read the file.', exitCode: ExitCode.usage, code: 'unreadable-file'}
  }

  if (error instanceof UnknownOrthancIdError) {
    return {message: error.message, suggestion: 'Check the ID against the server (Orthanc IDs look like 8-8-8-8-8 hex digits).', exitCode: ExitCode.nothingMatched, code: 'unknown-orthanc-id'}
  }

  const code = (error as NodeJS.ErrnoException | undefined)?.code
  // A relative path, or a receipt's default place, needs the current folder: removed since the shell entered it.
  if ((error as NodeJS.ErrnoException | undefined)?.syscall === 'uv_cwd') {
    return {message: 'the current folder no longer exists (removed or unmounted since this shell entered it)', suggestion: 'cd to a folder that exists, then run the same command again.', exitCode: ExitCode.usage, code: 'no-current-folder'}
  }

  if (NOT_WRITABLE.has(code ?? '')) {
    const path = (error as NodeJS.ErrnoException).path ?? 'a file'
    const why = code === 'EROFS' ? 'the filesystem is read-only' : 'this user may not write there'
    return {message: `cannot write ${path}: ${why}`, suggestion: 'Choose a folder this user can write (output, receipt, state file), then run the same command again.', exitCode: ExitCode.usage, code: 'not-writable'}
  }

  if (code === 'ENOSPC' || code === 'EDQUOT') {
    const path = (error as NodeJS.ErrnoException).path
    return {
      message: `no space left on device${code === 'EDQUOT' ? ' (this user\'s disk quota)' : ''}${path ? ` writing ${path}` : ''}: ${(error as Error).message}`,
      suggestion: 'Free space on the disk that filled (the output\'s, or that of the state folder, receipt, spool or log given), or choose a folder on another one, then run the same command again: it resumes.',
      exitCode: ExitCode.noSpace,
      code: 'no-space',
    }
  }

  if (code === 'EFBIG') {
    const path = (error as NodeJS.ErrnoException).path
    return {
      message: `cannot write ${path ?? 'the file being written'}: it would be larger than its filesystem or this user's file size limit allows (${(error as Error).message})`,
      suggestion: 'FAT32, the usual USB drive, takes files under 4 GiB: keep --max-volume-size at its default, which fits, or lower it; or raise `ulimit -f`. Then run the same command again: it resumes.',
      exitCode: ExitCode.noSpace,
      code: 'file-too-large',
    }
  }

  if (isFileSystemError(error)) return localFileFailure(error)

  if ((error as Error | undefined)?.name === 'AbortError') {
    return {message: 'interrupted', suggestion: 'Run the same command again to resume.', exitCode: ExitCode.interrupted, code: 'interrupted'}
  }

  return {
    message: `unexpected error: ${(error as Error | undefined)?.message ?? String(error)}`,
    suggestion: 'This is a bug in orthanc-replicate; run again with DEBUG=orthanc-replicate for details and report it.',
    exitCode: ExitCode.internal,
    code: 'internal',
  }
}

const NOT_WRITABLE = new Set(['EROFS', 'EACCES', 'EPERM'])

/** Codes only files give: a write on an open file says no path. (A socket's ECONNRESET has a syscall too, and no path.) */
const FILE_ONLY_CODES = new Set(['EIO', 'EFBIG', 'ENOSPC', 'EDQUOT', 'EMFILE', 'ENFILE', 'EROFS', 'ENXIO', 'ENODEV', 'ESTALE', 'EBADF', 'EISDIR', 'ENOTDIR', 'ENAMETOOLONG', 'ELOOP', 'EXDEV', 'ENOTEMPTY', 'EBUSY', 'ETXTBSY'])

/** An error of this machine's files (Node's system errors): it names a path, or has a code only files give. */
function isFileSystemError(error: unknown): error is NodeJS.ErrnoException {
  const {code, syscall, path} = (error ?? {}) as NodeJS.ErrnoException
  return typeof code === 'string' && /^E[A-Z0-9]+$/.test(code) && typeof syscall === 'string' && (typeof path === 'string' || FILE_ONLY_CODES.has(code))
}

/**
 * Any other failure of this machine's files: a USB drive pulled out or failing (EIO, the folder
 * gone), a path that is not what it was, too many open files. Not a bug of this tool, and never
 * said as one: the file, what failed and the way out.
 */
function localFileFailure(error: NodeJS.ErrnoException): Failure {
  const what = `${error.syscall}${error.path ? ` ${error.path}` : ''}`
  const tooMany = error.code === 'EMFILE' || error.code === 'ENFILE'
  const suggestion = tooMany
    ? 'Raise the open-file limit (`ulimit -n`, or LimitNOFILE= for a service), or lower --concurrency, then run the same command again: it resumes.'
    : 'Check the drive or folder (still mounted, not failing, not changed by another program meanwhile), then run the same command again: it resumes.'
  return {message: `cannot ${what}: ${error.message}`, suggestion, exitCode: ExitCode.localFiles, code: 'local-files'}
}
