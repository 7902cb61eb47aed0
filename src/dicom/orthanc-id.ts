import {createHash} from 'node:crypto'

// Orthanc names every resource after the SHA-1 of its identifying DICOM values joined
// with "|", written as five dash-separated groups of eight hex digits. The same
// instance therefore has the same ID on every Orthanc server.
function orthancHash(...values: string[]): string {
  const hex = createHash('sha1').update(values.join('|'), 'utf8').digest('hex')
  return [0, 8, 16, 24, 32].map((start) => hex.slice(start, start + 8)).join('-')
}

export function orthancPatientId(patientId: string): string {
  return orthancHash(patientId)
}

export function orthancStudyId(patientId: string, studyInstanceUid: string): string {
  return orthancHash(patientId, studyInstanceUid)
}

export function orthancSeriesId(patientId: string, studyInstanceUid: string, seriesInstanceUid: string): string {
  return orthancHash(patientId, studyInstanceUid, seriesInstanceUid)
}

export function orthancInstanceId(
  patientId: string,
  studyInstanceUid: string,
  seriesInstanceUid: string,
  sopInstanceUid: string,
): string {
  return orthancHash(patientId, studyInstanceUid, seriesInstanceUid, sopInstanceUid)
}
