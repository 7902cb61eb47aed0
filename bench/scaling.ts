import {orthancPostgresConfig, startPostgres} from '../test/helpers/postgres.js'
import type {Cleanup} from './cleanup.js'
import type {PreparedCorpus} from './corpus-runs.js'
import {table} from './markdown.js'
import {type MethodContext, toolSync} from './methods.js'
import type {BenchConfig} from './options.js'
import {log, quiet} from './progress.js'
import {Samples} from './samples.js'
import {seconds} from './stats.js'
import {cpu, maxBackground, runsList, throughput} from './tables.js'

interface Backend {
  name: string
  /** The target's extra configuration for one run; each run gets its own database. */
  prepare?: () => Promise<Record<string, unknown>>
}

/** sync at each --concurrency into fresh SQLite targets, and fresh PostgreSQL ones unless skipped. */
export async function scaling(cleanup: Cleanup, prepared: PreparedCorpus, config: BenchConfig): Promise<string> {
  const backends: Backend[] = [{name: 'SQLite (built-in)'}]
  if (!config.skipPostgres) {
    log('starting PostgreSQL for the scaling runs')
    const pg = await startPostgres()
    cleanup.defer(`postgres ${pg.dir}`, () => pg.dispose())
    let databases = 0
    backends.push({
      name: 'PostgreSQL (index + storage)',
      async prepare() {
        const name = `bench_target_${++databases}`
        await pg.createDatabase(name)
        return orthancPostgresConfig(pg, name)
      },
    })
  }

  const samples = new Samples()
  const context: MethodContext = {cleanup, ...prepared}
  for (let run = 1; run <= config.runs; run++) {
    for (const {name, prepare} of backends) {
      for (const concurrency of [...config.concurrencies, undefined]) {
        const method = toolSync(concurrency, prepare && (async () => ({extra: await prepare()})))
        await quiet()
        const sample = await method.run(context)
        samples.add(`${name} ${concurrency ?? 'auto'}`, sample)
        log(`scaling, run ${run}/${config.runs}: sync --concurrency ${concurrency ?? 'auto'} into ${name}: ${seconds(sample.ms)} s${sample.concurrency === undefined ? '' : ` (settled on ${sample.concurrency})`}`)
      }
    }
  }

  await cleanup.sweep()

  const rows = backends.flatMap(({name}) => [...config.concurrencies, 'auto'].map((concurrency) => {
    const key = `${name} ${concurrency}`
    const ms = samples.median(key)
    const settled = concurrency === 'auto' ? ` (settled on ${samples.get(key).map((sample) => sample.concurrency).join(', ')})` : ''
    return [name, `${concurrency}${settled}`, seconds(ms), runsList(samples, key), ...throughput(prepared.corpus, ms),
      cpu(samples, key, 'clientCpuMs'), cpu(samples, key, 'orthancCpuMs'), maxBackground(samples, key)]
  }))
  return table(['target', '--concurrency', 'median s', 'runs (s)', 'instances/s', 'MB/s', 'tool CPU s', 'Orthanc CPU s', 'other CPU s (max)'], rows)
}
