import {readFile} from 'node:fs/promises'

import {uploadOnce} from './one-shot-http.js'

/** The baseline for import, as Orthanc's ImportDicomFiles.py uploads: one file per request, one at a time, a new connection each. */
export async function uploadSequentially(files: string[], targetUrl: string): Promise<number> {
  for (const file of files) await uploadOnce(targetUrl, await readFile(file), file)
  return files.length
}
