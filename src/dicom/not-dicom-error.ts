export type NotDicomReason =
  | 'no-dicm-magic'
  | 'truncated'
  | 'malformed'
  | 'missing-attribute'

// Raised for anything that cannot be read as a DICOM Part 10 instance, so callers
// can skip or report a bad file without confusing it with an I/O or network failure.
export class NotDicomError extends Error {
  readonly reason: NotDicomReason

  constructor(reason: NotDicomReason, detail: string) {
    super(`not a DICOM file (${reason}): ${detail}`)
    this.name = 'NotDicomError'
    this.reason = reason
  }
}
