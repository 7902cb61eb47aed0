import type {Pool} from 'undici'

/**
 * POST /instances on a kept-alive pool. Like the tool, sends again what Orthanc 1.10 failed to
 * store while creating a storage folder (HTTP 500, OrthancStatus 2001), so that the baselines
 * are not stopped by a server race the tool survives.
 */
export async function postInstances(pool: Pool, body: Buffer, contentType: string): Promise<{statusCode: number; text: string}> {
  for (let attempt = 1; ; attempt++) {
    const response = await pool.request({path: '/instances', method: 'POST', body, headers: {'content-type': contentType}})
    const text = await response.body.text()
    if (response.statusCode !== 500 || orthancStatusOf(text) !== 2001 || attempt >= 3) return {statusCode: response.statusCode, text}
  }
}

function orthancStatusOf(answer: string): number | undefined {
  try {
    return (JSON.parse(answer) as {OrthancStatus?: number}).OrthancStatus
  } catch {
    return undefined
  }
}
