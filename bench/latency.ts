import type {Cleanup} from './cleanup.js'
import {measure, type PreparedCorpus, prepareCorpus} from './corpus-runs.js'
import type {CorpusSpec} from './corpus.js'
import {startDelayProxy} from './delay-proxy.js'
import {table} from './markdown.js'
import {batchedLosslessCopyFloor, curlCeiling, losslessCopyLatencyFloor, type Method, type MethodContext, naiveCopier, toolImportArchive, toolSync, toolSyncDryRun, volumesOf, zipBatches} from './methods.js'
import type {BenchConfig} from './options.js'
import {log} from './progress.js'
import {Samples} from './samples.js'
import type {BenchServer} from './servers.js'
import {ratio, seconds} from './stats.js'
import {cpu, maxBackground, runsList, throughput} from './tables.js'

/**
 * The servers as users reach them: across a network. A delay proxy in front of each server
 * delays every chunk by half the round-trip time in each direction (and a new connection by a
 * whole one), so every request, connection and upload pays the round trip as it would on a
 * campus or wide-area link. The proxies run in their own processes; their CPU has a column.
 */
export async function network(cleanup: Cleanup, rttMs: number, source: BenchServer): Promise<{source: BenchServer; link: NonNullable<MethodContext['link']>}> {
  const proxied = async (server: BenchServer): Promise<BenchServer & {stop(): Promise<void>}> => {
    const proxy = await startDelayProxy(server.server.port, rttMs / 2)
    const name = `delay proxy ${proxy.port}`
    cleanup.defer(name, () => proxy.stop())
    return {...server, url: `http://127.0.0.1:${proxy.port}`, proxyPid: proxy.pid, stop: () => cleanup.release(name)}
  }

  return {
    source: await proxied(source),
    link: {
      reach: (target) => proxied(target),
      release: (reached) => (reached as BenchServer & {stop(): Promise<void>}).stop(),
    },
  }
}

interface Target {
  /** What is compared, as `numerator / denominator` of median times. */
  name: string
  numerator: string
  denominator: string
  /** The issue's target by round-trip time; absent where it sets none. */
  goal: Partial<Record<number, number>>
}

const TARGETS: Target[] = [
  {name: 'sync vs naive copier', numerator: 'naive', denominator: 'sync', goal: {10: 6, 40: 15}},
  {name: 'sync vs 4-stream curl ceiling', numerator: 'ceiling', denominator: 'sync', goal: {10: 1, 40: 1}},
  {name: 'sync vs 16-stream curl ceiling', numerator: 'ceiling-16', denominator: 'sync', goal: {10: 0.6}},
  {name: 'sync (default) vs best fixed --concurrency', numerator: 'best-fixed', denominator: 'sync', goal: {0: 0.9, 10: 0.9, 40: 0.9}},
  {name: 'archive import vs 16-stream curl ceiling', numerator: 'ceiling-16', denominator: 'import-archive', goal: {10: 0.7}},
  {name: 'archive import vs 4-stream curl ceiling', numerator: 'ceiling', denominator: 'import-archive', goal: {}},
  // The bound on the 4-stream row: below 1.0, a copy that makes only sync's per-instance requests, and nothing else, is slower than 4 curl streams here.
  {name: 'lossless checked-copy floor vs 4-stream curl ceiling', numerator: 'ceiling', denominator: losslessCopyLatencyFloor.key, goal: {}},
  {name: 'sync vs lossless checked-copy floor', numerator: losslessCopyLatencyFloor.key, denominator: 'sync', goal: {}},
]

function latencyTable(prepared: PreparedCorpus, samples: Samples, methods: Method[]): string {
  const rows = methods.map((method) => {
    const ms = samples.median(method.key)
    const settled = samples.get(method.key).map((sample) => sample.concurrency).filter((value) => value !== undefined)
    return [method.label, seconds(ms), runsList(samples, method.key), ...(method.movesNothing ? ['—', '—'] : throughput(prepared.corpus, ms)), cpu(samples, method.key, 'clientCpuMs'),
      cpu(samples, method.key, 'orthancCpuMs'), seconds(samples.median(method.key, 'proxyCpuMs')), maxBackground(samples, method.key),
      coresBusy(samples, method.key), settled.length > 0 ? settled.join(', ') : '—']
  })
  return table(['measurement', 'median s', 'runs (s)', 'instances/s', 'MB/s', 'client CPU s', 'Orthanc CPU s', 'proxy CPU s', 'other CPU s (max)', 'cores busy', 'concurrency reported'], rows)
}

/**
 * The cores the whole machine kept busy during a row's runs (median): all the CPU that the client,
 * the servers, the proxies and anything else spent, over the wall time. Near the machine's core
 * count, the row is bound by CPU, and a link with room to spare cannot make it faster.
 */
export function coresBusy(samples: Samples, key: string): string {
  const values = samples.get(key).map((sample) => ((sample.clientCpuMs ?? 0) + (sample.orthancCpuMs ?? 0) + (sample.proxyCpuMs ?? 0) + (sample.backgroundCpuMs ?? 0)) / sample.ms)
  if (values.length === 0) return '—'
  return values.sort((a, b) => a - b)[Math.floor(values.length / 2)]!.toFixed(2)
}

/** The fastest fixed --concurrency of this round-trip time, by median. */
function bestFixed(samples: Samples, concurrencies: number[]): {concurrency: number; ms: number} {
  return concurrencies.map((concurrency) => ({concurrency, ms: samples.median(`sync-c${concurrency}`)})).reduce((best, next) => (next.ms < best.ms ? next : best))
}

function targetTable(samples: Samples, rttMs: number, best: {concurrency: number; ms: number}): string {
  const time = (key: string) => (key === 'best-fixed' ? best.ms : samples.median(key))
  const rows = TARGETS.map((target) => {
    const value = time(target.numerator) / time(target.denominator)
    const goal = target.goal[rttMs]
    const definition = `${target.numerator === 'best-fixed' ? `sync --concurrency ${best.concurrency}` : target.numerator} / ${target.denominator}`
    return [target.name, definition, ratio(value), goal === undefined ? '—' : `≥ ${goal}`, goal === undefined ? '—' : value >= goal ? 'yes' : '**no**']
  })
  // What the 4-stream target weighs with few instances: a sync's fixed part (its dry run, on the same link and with the
  // same plan) beside the rate of the rest. Subtracting it overstates the fixed part a little: in a sync that copies, the
  // comparison overlaps the first transfers.
  const fixedMs = samples.median(toolSyncDryRun.key)
  const syncMs = samples.median('sync')
  if (Number.isFinite(fixedMs) && fixedMs < syncMs) {
    rows.push(
      ['sync --dry-run / sync', `${toolSyncDryRun.key} / sync`, ratio(fixedMs / syncMs), '—', '—'],
      ['sync past its fixed part vs 4-stream curl ceiling', `ceiling / (sync − ${toolSyncDryRun.key})`, ratio(time('ceiling') / (syncMs - fixedMs)), '—', '—'],
    )
  }

  return table(['ratio', 'definition (median times)', 'value', 'target', 'met'], rows.filter((row) => row[2] !== 'n/a'))
}

/**
 * The latency section: the same corpus reached across 0, 10 and 40 ms of round trip, with the
 * naive copier, 4 and 16 curl upload streams, sync and archive import at their defaults and sync
 * at fixed concurrencies; and small instances at 10 ms.
 */
export async function latencySection(cleanup: Cleanup, config: BenchConfig): Promise<Array<{title: string; body: string[]}>> {
  const spec: CorpusSpec = {name: 'latency', instances: config.latencyInstances, fileBytes: config.size, large: 0, largeBytes: 0}
  const smallSpec: CorpusSpec = {name: 'latency-small', instances: config.latencySmallInstances, fileBytes: config.smallSize, large: 0, largeBytes: 0}
  const prepared = await prepareCorpus(cleanup, spec)
  // The archive import's volumes come from one export, untimed and straight from the source.
  log('exporting the latency corpus once for the archive import rows')
  await volumesOf({cleanup, ...prepared})

  const fixed = config.latencyConcurrencies.map((concurrency) => toolSync(concurrency))
  const methods: Method[] = [naiveCopier, curlCeiling(4), curlCeiling(16), losslessCopyLatencyFloor, toolSync(), toolSyncDryRun, ...fixed, toolImportArchive]
  const sections: Array<{title: string; body: string[]}> = []
  for (const rttMs of config.latencies) {
    const samples = new Samples()
    const {source, link} = await network(cleanup, rttMs, prepared.source)
    await measure(cleanup, {corpus: prepared.corpus, source}, methods, config.runs, samples, {name: `${rttMs} ms RTT`, link})
    await (source as BenchServer & {stop(): Promise<void>}).stop()
    const best = bestFixed(samples, config.latencyConcurrencies)
    sections.push({
      title: `Across a network: ${rttMs} ms round trip (${prepared.corpus.description})`,
      body: [latencyTable(prepared, samples, methods), targetTable(samples, rttMs, best)],
    })
  }

  if (config.latencies.includes(10)) {
    // ZIP batches: the corpus uploaded in stored ZIPs, nothing downloaded and nothing checked: what batching alone does for this
    // target. The batched lossless copy adds what sync cannot skip: each instance's download, attachment list and MD5 read-back.
    // Sync's defaults send a job of many small instances in ZIPs; --no-zip-uploads sends one instance per request.
    const smallMethods: Method[] = [curlCeiling(16), zipBatches, batchedLosslessCopyFloor, toolSync(), toolSync(undefined, undefined, ['--no-zip-uploads'])]
    sections.push(await atTenMs(cleanup, config, smallSpec, smallMethods, 'Small instances', (samples) => {
      const value = (key: string) => samples.median('ceiling-16') / samples.median(key)
      const zipped = samples.median('sync-no-zip-uploads') / samples.median('sync')
      return [
        ['sync (defaults: ZIPs) vs 16-stream curl ceiling', 'ceiling-16 / sync', ratio(value('sync')), '> 1.0', value('sync') > 1 ? 'yes' : '**no**'],
        ['sync --no-zip-uploads vs 16-stream curl ceiling', 'ceiling-16 / sync-no-zip-uploads', ratio(value('sync-no-zip-uploads')), '—', '—'],
        ['ZIP batches vs one upload per file (sync)', 'sync-no-zip-uploads / sync', ratio(zipped), '—', '—'],
        // Above 1.0, batching by itself beats 16 streams here; below it, no copier that batches uploads can beat them on this machine.
        ['ZIP batches alone (upload only) vs 16-stream curl ceiling', 'ceiling-16 / zip-batches', ratio(value('zip-batches')), '—', '—'],
        // The same for a copy that makes every request sync must make: the bound on this row's target for any lossless, checked copier here.
        ['batched lossless-copy floor vs 16-stream curl ceiling', 'ceiling-16 / batched-lossless-copy', ratio(value('batched-lossless-copy')), '—', '—'],
        ['sync vs batched lossless-copy floor', 'batched-lossless-copy / sync', ratio(samples.median('batched-lossless-copy') / samples.median('sync')), '—', '—'],
      ]
    }))

    // Studies of one instance (CR, DX): what sync asks per study (its listing on both sides, the
    // patient's, study's and series' side data) is paid per instance. The floor asks none of it.
    const perStudyMethods: Method[] = [curlCeiling(16), losslessCopyLatencyFloor, toolSync()]
    sections.push(await atTenMs(cleanup, config, {...spec, name: 'latency-studies', singleInstanceStudies: true}, perStudyMethods, 'One instance per study', (samples) => {
      const value = (numerator: string, denominator: string) => samples.median(numerator) / samples.median(denominator)
      return [
        ['sync vs 16-stream curl ceiling', 'ceiling-16 / sync', ratio(value('ceiling-16', 'sync')), '— (≥ 0.6 with studies of 50)', '—'],
        ['sync vs lossless checked-copy floor', `${losslessCopyLatencyFloor.key} / sync`, ratio(value(losslessCopyLatencyFloor.key, 'sync')), '—', '—'],
      ]
    }))
  }

  await cleanup.release(`orthanc ${prepared.source.server.dir}`)
  await cleanup.sweep()
  return sections
}

/** One corpus across 10 ms of round trip, with its own methods and ratio rows. */
async function atTenMs(
  cleanup: Cleanup, config: BenchConfig, spec: CorpusSpec, methods: Method[], what: string, ratios: (samples: Samples) => string[][],
): Promise<{title: string; body: string[]}> {
  const prepared = await prepareCorpus(cleanup, spec)
  const samples = new Samples()
  const {source, link} = await network(cleanup, 10, prepared.source)
  await measure(cleanup, {corpus: prepared.corpus, source}, methods, config.runs, samples, {name: '10 ms RTT', link})
  await (source as BenchServer & {stop(): Promise<void>}).stop()
  await cleanup.release(`orthanc ${prepared.source.server.dir}`)
  return {
    title: `${what} across a network: 10 ms round trip (${prepared.corpus.description})`,
    body: [latencyTable(prepared, samples, methods), table(['ratio', 'definition (median times)', 'value', 'target', 'met'], ratios(samples))],
  }
}
