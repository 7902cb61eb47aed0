import {createWriteStream} from 'node:fs'
import {join} from 'node:path'
import {pipeline} from 'node:stream/promises'

import {mapConcurrent} from '../src/util/concurrency.js'
import {getJson, keptAlivePool} from './servers.js'

/**
 * The yardstick for export: every instance's file downloaded over `connections` kept-alive
 * connections and written to `dir`, with no checking, planning or archive format.
 */
export async function rawDownload(sourceUrl: string, dir: string, connections = 4): Promise<{count: number; bytes: number}> {
  const pool = keptAlivePool(sourceUrl, connections)
  let bytes = 0
  try {
    const ids = (await getJson(pool, '/instances')) as string[]
    await mapConcurrent(ids, connections, async (id) => {
      const response = await pool.request({path: `/instances/${id}/file`, method: 'GET'})
      if (response.statusCode !== 200) {
        await response.body.dump()
        throw new Error(`GET /instances/${id}/file: HTTP ${response.statusCode}`)
      }

      response.body.on('data', (chunk: Buffer) => {
        bytes += chunk.length
      })
      await pipeline(response.body, createWriteStream(join(dir, `${id}.dcm`)))
    })
    return {count: ids.length, bytes}
  } finally {
    await pool.close()
  }
}
