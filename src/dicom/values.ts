// DICOM pads values to an even length: UIDs with a NUL, text with a space.
// Some writers also leave several of either, so strip them all.
export function trimDicomPadding(value: string): string {
  return value.replace(/[\0 ]+$/, '')
}
