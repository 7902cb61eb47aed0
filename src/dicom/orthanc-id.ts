import {createHash} from 'node:crypto'

import {byteStringValue, decodeOrthancText, type OrthancCharset} from './charset.js'

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

/** Text VRs: DCMTK hands their values to Orthanc as strings. */
const STRING_VRS = new Set(['AE', 'AS', 'CS', 'DA', 'DS', 'DT', 'IS', 'LO', 'LT', 'PN', 'SH', 'ST', 'TM', 'UC', 'UR', 'UT'])

/**
 * The value of an identifier (PatientID, or a Study/Series/SOP Instance UID) as Orthanc reads it,
 * hence as it goes into Orthanc's IDs. `vr` is the file's (undefined in implicit VR, where the
 * dictionary's applies: `dictionaryVr`). Each rule was checked against Orthanc 1.10.1 on awkward
 * files (test/integration/recovery-ids.test.ts):
 * - UI: every white-space character removed, wherever it is (DCMTK corrects badly padded UIDs),
 *   then read up to the first NUL;
 * - other text VRs: trailing spaces removed, then read up to the first NUL; leading spaces, tabs
 *   and backslashes (several values) are kept;
 * - UN (a relay that forgot the VR): the bytes as they are, minus one trailing NUL when the length
 *   is even (Orthanc's FromDcmtkBridge::ConvertLeafElement, CP 246); spaces are kept;
 * - then decoded with the data set's character set (see charset.ts).
 */
export function orthancIdentifierValue(raw: Buffer, vr: string | undefined, dictionaryVr: 'LO' | 'UI', charset: OrthancCharset): string {
  const effectiveVr = vr ?? dictionaryVr
  let bytes: Buffer
  if (effectiveVr === 'UI') bytes = byteStringValue(withoutWhiteSpace(cutAtNul(raw)))
  else if (effectiveVr === 'UN') bytes = raw.length > 0 && raw.length % 2 === 0 && raw[raw.length - 1] === 0 ? raw.subarray(0, -1) : raw
  else if (STRING_VRS.has(effectiveVr)) bytes = byteStringValue(raw)
  // A binary VR: Orthanc hashes the bytes themselves, which only a Latin-1 reading keeps one to one.
  else return raw.toString('latin1')
  return decodeOrthancText(bytes, charset)
}

function cutAtNul(bytes: Buffer): Buffer {
  const nul = bytes.indexOf(0)
  return nul >= 0 ? bytes.subarray(0, nul) : bytes
}

// isspace() in the C locale: space, tab, line feed, vertical tab, form feed, carriage return.
function withoutWhiteSpace(bytes: Buffer): Buffer {
  return Buffer.from(bytes.filter((byte) => byte !== 0x20 && (byte < 0x09 || byte > 0x0d)))
}
