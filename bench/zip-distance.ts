import {ZIP_BY_DEFAULT_MIN_INSTANCES} from '../src/sinks/upload-batcher.js'
import type {Cleanup} from './cleanup.js'
import {measure, prepareCorpus} from './corpus-runs.js'
import type {CorpusSpec} from './corpus.js'
import {coresBusy, network} from './latency.js'
import {table} from './markdown.js'
import {type Method, toolImportFolder, toolSync} from './methods.js'
import type {BenchConfig} from './options.js'
import {Samples} from './samples.js'
import type {BenchServer} from './servers.js'
import {ratio, seconds} from './stats.js'
import {cpu, runsList} from './tables.js'

interface Job {
  name: string
  defaults: Method
  zips: Method
  single: Method
}

const JOBS: Job[] = [
  {name: 'sync', defaults: toolSync(), zips: toolSync(undefined, undefined, ['--zip-uploads']), single: toolSync(undefined, undefined, ['--no-zip-uploads'])},
  {name: 'import of a folder', defaults: toolImportFolder(), zips: toolImportFolder(['--zip-uploads']), single: toolImportFolder(['--no-zip-uploads'])},
]

/**
 * Where ZIP uploads pay: many small instances, synced and imported from a folder across 0, 2, 5
 * and 10 ms of round trip (by default), each job at its defaults, with `--zip-uploads` and with
 * `--no-zip-uploads`: what each choice costs in time and CPU at each distance, what the defaults
 * chose (they choose by the target's distance, see zipUploadsFor) and how they fared against the
 * faster of the two.
 */
export async function zipDistanceSection(cleanup: Cleanup, config: BenchConfig): Promise<{title: string; body: string[]}> {
  // Fewer instances than this and the defaults never use ZIPs: a --quick run still shows their choice.
  const instances = Math.max(config.latencySmallInstances, ZIP_BY_DEFAULT_MIN_INSTANCES)
  const spec: CorpusSpec = {name: 'zip-distance', instances, fileBytes: config.smallSize, large: 0, largeBytes: 0}
  const prepared = await prepareCorpus(cleanup, spec)
  const methods = JOBS.flatMap((job) => [job.defaults, job.zips, job.single])
  const measured: Array<{rttMs: number; samples: Samples}> = []
  for (const rttMs of config.zipDistances) {
    const samples = new Samples()
    const {source, link} = await network(cleanup, rttMs, prepared.source)
    await measure(cleanup, {corpus: prepared.corpus, source}, methods, config.runs, samples, {name: `${rttMs} ms RTT`, link})
    await (source as BenchServer & {stop(): Promise<void>}).stop()
    measured.push({rttMs, samples})
  }

  await cleanup.release(`orthanc ${prepared.source.server.dir}`)
  const rows = measured.flatMap(({rttMs, samples}) => methods.map((method) => [
    `${rttMs} ms`, method.label, seconds(samples.median(method.key)), runsList(samples, method.key), cpu(samples, method.key, 'clientCpuMs'),
    cpu(samples, method.key, 'orthancCpuMs'), seconds(samples.median(method.key, 'proxyCpuMs')), coresBusy(samples, method.key), zipRequests(samples, method.key),
  ]))
  const ratios = measured.flatMap(({rttMs, samples}) => JOBS.map((job) => {
    const time = (method: Method) => samples.median(method.key)
    const faster = Math.min(time(job.zips), time(job.single))
    const chose = samples.get(job.defaults.key).every((sample) => (sample.zipRequests ?? 0) > 0) ? 'ZIPs'
      : samples.get(job.defaults.key).every((sample) => (sample.zipRequests ?? 0) === 0) ? 'one per request' : 'mixed'
    return [`${rttMs} ms`, job.name, chose, ratio(time(job.single) / time(job.zips)),
      ratio(samples.median(job.zips.key, 'clientCpuMs') / samples.median(job.single.key, 'clientCpuMs')),
      ratio(samples.median(job.zips.key, 'orthancCpuMs') / samples.median(job.single.key, 'orthancCpuMs')), ratio(faster / time(job.defaults))]
  }))
  return {
    title: `ZIP uploads by distance: small instances synced and imported from a folder (${prepared.corpus.description})`,
    body: [
      table(['round trip', 'measurement', 'median s', 'runs (s)', 'client CPU s', 'Orthanc CPU s', 'proxy CPU s', 'cores busy', 'ZIP requests (runs)'], rows),
      // No target: the defaults and the row they chose do the same work, so their difference is this machine's noise.
      table(['round trip', 'job', 'defaults chose', 'ZIPs: times as fast as one per request', 'ZIPs: client CPU / one per request', 'ZIPs: Orthanc CPU / one per request', 'defaults vs the faster of the two'], ratios),
    ],
  }
}

function zipRequests(samples: Samples, key: string): string {
  const values = samples.get(key).map((sample) => sample.zipRequests)
  return values.every((value) => value === undefined) ? '—' : values.map((value) => String(value ?? 0)).join(', ')
}
