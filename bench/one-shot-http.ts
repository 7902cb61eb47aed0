import {request} from 'node:http'

/**
 * One HTTP exchange on its own connection, as Orthanc's sample scripts do it: no agent, so no
 * pooling, and Connection: close, so neither side keeps the socket.
 */
export async function oneShot(url: string, method: 'GET' | 'POST', body?: Buffer): Promise<{status: number; body: Buffer}> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = {connection: 'close'}
    if (body) {
      headers['content-type'] = 'application/dicom'
      headers['content-length'] = body.length
    }

    const outgoing = request(url, {method, agent: false, headers}, (response) => {
      const chunks: Buffer[] = []
      response.on('data', (chunk: Buffer) => chunks.push(chunk))
      response.on('error', reject)
      response.on('end', () => resolve({status: response.statusCode ?? 0, body: Buffer.concat(chunks)}))
    })
    outgoing.on('error', reject)
    outgoing.end(body)
  })
}

/** POST /instances, checked: the baselines must store every file for their times to count. */
export async function uploadOnce(targetUrl: string, dicom: Buffer, what: string): Promise<void> {
  const answer = await oneShot(`${targetUrl}/instances`, 'POST', dicom)
  const status = answer.status === 200 ? (JSON.parse(answer.body.toString('utf8')) as {Status?: string}).Status : undefined
  if (status !== 'Success' && status !== 'AlreadyStored') throw new Error(`upload of ${what}: HTTP ${answer.status} ${answer.body.toString('utf8').slice(0, 200)}`)
}
