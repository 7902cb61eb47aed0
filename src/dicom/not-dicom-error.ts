import type {ProblemKind} from '../problems.js'

export type NotDicomReason =
  | 'no-dicm-magic'
  | 'truncated'
  | 'malformed'
  | 'missing-attribute'
  // Input built to harm a reader or a server: sequences nested beyond any real file, more
  // elements than any real file, a deflated data set that inflates beyond its bounds.
  | 'hostile'

// Raised for anything that cannot be read as a DICOM Part 10 instance, so callers
// can skip or report a bad file without confusing it with an I/O or network failure.
export class NotDicomError extends Error {
  readonly reason: NotDicomReason
  /** What was found, without the reason in front. */
  readonly detail: string

  constructor(reason: NotDicomReason, detail: string) {
    super(reason === 'hostile' ? `refused as hostile: ${detail}` : `not a DICOM file (${reason}): ${detail}`)
    this.name = 'NotDicomError'
    this.reason = reason
    this.detail = detail
  }

  /** How an instance refused for it is listed. */
  get problemKind(): ProblemKind {
    return this.reason === 'hostile' ? 'hostile' : this.reason === 'truncated' ? 'truncated' : this.reason === 'malformed' ? 'damaged' : 'not-dicom'
  }
}
