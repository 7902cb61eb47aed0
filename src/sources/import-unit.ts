import type {InstanceRecord} from '../archive/format.js'

/**
 * One instance ready to be stored on a target, whatever it came from: an archive entry, a
 * file of a DICOM folder, a file of an Orthanc storage folder. Its bytes are already read and
 * checked against what the source promised.
 */
export interface ImportUnit {
  /** Names the instance in reports: an archive entry, a file path. */
  label: string
  /** The Orthanc ID the target will give it (deterministic from the DICOM identifiers). */
  instanceId: string
  /** The Orthanc ID of its study, so a target can be asked about a whole study at once. */
  studyId?: string
  dicom: Buffer
  /** MD5 of `dicom`: the manifest's for archives (already checked), computed for folders. */
  md5: string
  /** From an archive: the Orthanc-side data (user metadata, attachments, labels) to restore. */
  record?: InstanceRecord
  /** From an archive: user attachment bytes by content type, checked against the record. */
  attachments?: Map<number, Buffer>
}

/** A source's note that it passed over something, and why; counted and reported, never fatal. */
export interface SkipNotice {
  label: string
  reason: string
}

/** A source's note that something it read is bad (corrupt, truncated, refused): reported, and the run fails. */
export interface ProblemNotice {
  label: string
  reason: string
}

export interface ImportSourceEvents {
  onSkip(notice: SkipNotice): void
  onProblem(notice: ProblemNotice): void
}
