import {oneShot, uploadOnce} from './one-shot-http.js'

/**
 * The baseline for sync, as Orthanc's Replicate.py copies: list the source's instances, then
 * for each one download its file and upload it, one request at a time, a new connection each.
 */
export async function naiveCopy(sourceUrl: string, targetUrl: string): Promise<number> {
  const listing = await oneShot(`${sourceUrl}/instances`, 'GET')
  if (listing.status !== 200) throw new Error(`GET /instances on the source: HTTP ${listing.status}`)
  const ids = JSON.parse(listing.body.toString('utf8')) as string[]
  for (const id of ids) {
    const file = await oneShot(`${sourceUrl}/instances/${id}/file`, 'GET')
    if (file.status !== 200) throw new Error(`GET /instances/${id}/file: HTTP ${file.status}`)
    await uploadOnce(targetUrl, file.body, `instance ${id}`)
  }

  return ids.length
}
