import {statfsSync} from 'node:fs'
import {tmpdir} from 'node:os'

import {orthancBinary} from '../test/helpers/orthanc.js'
import {orthancPostgresPlugins, postgresBinDir} from '../test/helpers/postgres.js'
import {CURL_HINT, hasCurl} from './curl-ceiling.js'
import type {BenchConfig} from './options.js'
import {hasGnuTime} from './processes.js'

/** Stops before anything starts when a required program is missing, saying how to get it. */
export function preflight(config: BenchConfig): void {
  orthancBinary()
  if (!hasCurl()) throw new Error(CURL_HINT)
  if (!hasGnuTime()) console.error('GNU time (/usr/bin/time, Debian package "time") is missing: peak RSS and CPU are read by polling /proc instead.')
  checkFreeSpace(config)
  if (!config.skipPostgres) {
    try {
      postgresBinDir()
      orthancPostgresPlugins()
    } catch (error) {
      throw new Error(`${(error as Error).message}\nOr run the bench with --skip-postgres.`)
    }
  }
}

/**
 * The bench keeps every run's folders (targets, exports, downloads) until its section ends, since
 * deleting them between runs slows the next run down (see Cleanup.retire). The largest section is
 * the scaled one: six rows write a copy of its corpus in each run.
 */
function checkFreeSpace(config: BenchConfig): void {
  const scaledBytes = config.instances * config.rssScale * config.size + config.large * config.largeBytes
  const copies = 6 * config.runs + 4
  const needed = scaledBytes * copies * 1.1
  const dir = tmpdir()
  const stats = statfsSync(dir)
  const available = stats.bavail * stats.bsize
  if (available < needed) {
    const gb = (bytes: number) => `${(bytes / 1e9).toFixed(1)} GB`
    throw new Error(`the bench needs about ${gb(needed)} free in ${dir} (${copies} copies of the ${config.rssScale}x corpus), and ${gb(available)} is free.\n` +
      'Free some space, point TMPDIR at a larger disk, or lower --runs or --instances.')
  }
}
