/**
 * Errors the Orthanc client throws. Each carries what happened, never a credential: the
 * server is named by its redacted origin. The CLI maps them to a message, a suggestion and an
 * exit code in one place (src/cli/failure.ts).
 */

import {UserFacingError} from '../errors.js'
import type {ProblemKind} from '../problems.js'

export class OrthancError extends Error {
  /** Stops the whole job: no other instance will escape it either. */
  get fatal(): boolean {
    return false
  }

  /** The same request may well succeed if sent again. */
  get transient(): boolean {
    return false
  }

  /** How a failed instance is listed. */
  get problemKind(): ProblemKind {
    return 'server-error'
  }

  constructor(message: string, readonly server: string, options?: {cause?: unknown}) {
    super(message, options)
    this.name = new.target.name
  }
}

/** The URL given for a server cannot be used (bad syntax, unsupported scheme). */
export class InvalidServerUrlError extends OrthancError {
  override get fatal(): boolean {
    return true
  }

  /** What to do about it, where the usual advice (give http://host:port) is not what helps. */
  constructor(readonly input: string, readonly reason: string, readonly suggestion?: string) {
    super(`invalid server URL: ${reason}`, input)
  }
}

/** No TCP connection could be made: refused, host unknown, network unreachable. */
export class OrthancUnreachableError extends OrthancError {
  override get fatal(): boolean {
    return true
  }

  constructor(server: string, readonly code: string, options?: {cause?: unknown}) {
    super(`cannot connect to ${server} (${code})`, server, options)
  }
}

/** The server did not answer (connect, headers or body) within the allowed time. */
export class OrthancTimeoutError extends OrthancError {
  override get fatal(): boolean {
    return true
  }

  override get transient(): boolean {
    return true
  }

  constructor(server: string, readonly method: string, readonly path: string, readonly phase: string, options?: {cause?: unknown}) {
    super(`${shownRequest(method, path)} on ${server}: no answer (${phase} timeout)`, server, options)
  }
}

/** The TLS handshake failed: unknown CA, wrong host name, rejected client certificate. */
export class OrthancTlsError extends OrthancError {
  override get fatal(): boolean {
    return true
  }

  constructor(server: string, readonly code: string, options?: {cause?: unknown}) {
    super(`TLS handshake with ${server} failed (${code})`, server, options)
  }
}

/**
 * A request as messages, logs, receipts and manifests show it. A patient's Orthanc ID is a hash of
 * the PatientID alone, which can be guessed back (see model.ts), so it is written nowhere: a path
 * that holds one shows `…` in its place. Every error that names a request, and every retry
 * reported, goes through here.
 */
export function shownRequest(method: string, path: string): string {
  return `${method} ${path.replace(/\/patients\/[^/?#]+/g, '/patients/…')}`
}

/** The server answered with an HTTP status that is not a success. */
export class OrthancHttpError extends OrthancError {
  /** `orthancStatus`: the OrthancStatus of Orthanc's JSON error answer, when it sent one. */
  constructor(server: string, readonly method: string, readonly path: string, readonly status: number, readonly detail: string, readonly orthancStatus?: number) {
    super(`${shownRequest(method, path)} on ${server}: HTTP ${status}${detail ? ` (${detail})` : ''}`, server)
  }

  /**
   * 403 once the server has let us in: it refuses this one write (a system metadata or attachment
   * type), not us. 413: this one request's body is larger than the server, or a proxy before it, takes.
   */
  override get problemKind(): ProblemKind {
    if (this.status === 403) return 'rejected'
    return this.status === 413 ? 'too-large' : 'server-error'
  }
}

/** 401, or 403 before the server ever answered: the credentials were missing or refused. */
export class OrthancAuthError extends OrthancHttpError {
  override get fatal(): boolean {
    return true
  }

}

/** Something answers HTTP at that address, but it is not Orthanc's REST API. */
export class NotOrthancError extends OrthancError {
  override get fatal(): boolean {
    return true
  }

  constructor(server: string, readonly reason: string) {
    super(`${server} does not look like an Orthanc server: ${reason}`, server)
  }
}

/** The connection broke while a body was being transferred. */
export class OrthancConnectionError extends OrthancError {
  override get fatal(): boolean {
    return true
  }

  override get transient(): boolean {
    return true
  }

  constructor(server: string, readonly method: string, readonly path: string, readonly code: string, options?: {cause?: unknown}) {
    super(`${shownRequest(method, path)} on ${server}: connection lost (${code})`, server, options)
  }
}

/** Bytes received do not match the checksum the server announced for them. */
export class ChecksumMismatchError extends OrthancError {
  override get problemKind(): ProblemKind {
    return 'checksum'
  }

  constructor(server: string, readonly instanceId: string, readonly expected: string, readonly actual: string) {
    super(`instance ${instanceId} from ${server}: MD5 ${actual} does not match the server's ${expected}`, server)
  }
}

/** The server accepted the request but refused to store the instance (Status: Failure / FilteredOut). */
export class UploadRejectedError extends OrthancError {
  override get problemKind(): ProblemKind {
    return 'rejected'
  }

  constructor(server: string, readonly status: string) {
    super(`${server} did not store the instance (Status: ${status})`, server)
  }
}

/** A target that lists an instance and does not hand its file back (thrown as the verdict on the whole target). */
export function filesNotKept(server: string, instanceId: string): UserFacingError {
  return new UserFacingError(
    `${server} lists instance ${instanceId} but does not hand its file back (HTTP 404): it keeps no DICOM files ("StoreDicom": false in its configuration), or its storage lost them. Nothing stored there could be read back`,
    'Set "StoreDicom": true in the target\'s configuration (or mend its storage), restart it, then run the same command again.',
    'usage', 'target-keeps-no-files',
  )
}
