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
  if (!config.skipPostgres) {
    try {
      postgresBinDir()
      orthancPostgresPlugins()
    } catch (error) {
      throw new Error(`${(error as Error).message}\nOr run the bench with --skip-postgres.`)
    }
  }
}
