/**
 * orthanc-replicate as a library: the jobs the commands run, with typed options and results.
 * The results are the commands' --json output; nothing here prints or exits.
 *
 *   import {connect, syncServers} from 'orthanc-replicate'
 *   const source = connect('http://old:8042'), target = connect('http://new:8042')
 *   try { const summary = await syncServers({source, target}) } finally { await Promise.all([source.close(), target.close()]) }
 */

export {
  connect, type ConnectOptions, type JobCallbacks,
  exportArchive, type ExportArchiveOptions,
  importInputs, type ImportInputsOptions,
  syncServers, type SyncServersOptions,
  followServers, type FollowServersOptions,
  verifyArchive, verifyArchives, type VerifyArchiveOptions,
  diffServers, type DiffServersOptions,
} from './api.js'

export {OrthancClient, type Features, type StoredFileInfo} from './orthanc/client.js'
export type {HttpOptions} from './orthanc/http.js'
export {describeServer, type ServerReport} from './info.js'

export type {ExportSummary} from './export/export.js'
export {importOutcome, type ImportSummary} from './import/import.js'
export type {SyncSummary, SyncPlan} from './sync/sync.js'
export type {FollowEvent, FollowSummary} from './sync/follow.js'
export {serversDiffer, type DiffSummary, type SideDataDifference, type StudyDifference} from './sync/diff.js'
export {verifyOutcome, type StudyCheck, type VerifySummary} from './verify/verify.js'
export type {DeletionPass} from './sync/delete.js'
export type {NotCarried} from './sinks/orthanc-sink.js'
export type {RecoveryReport} from './recovery/recover.js'

export type {Endpoint, InstanceFilters, InstanceRecord, ResourceRecord, SideData} from './model.js'
export type {Problem, ProblemKind} from './problems.js'
export type {PlannedCounts, TransferStats} from './transfer/stats.js'
export type {FailureEvent, JobEvent, JobEventListener, PlanEvent, ProgressEvent, ProgressListener, RetryEvent} from './transfer/progress.js'

export {type ErrorCategory, UserFacingError} from './errors.js'
export {
  ChecksumMismatchError, InvalidServerUrlError, NotOrthancError, OrthancAuthError, OrthancConnectionError, OrthancError,
  OrthancHttpError, OrthancTimeoutError, OrthancTlsError, OrthancUnreachableError, UploadRejectedError,
} from './orthanc/errors.js'
