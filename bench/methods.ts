import {mkdir, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {batchedLosslessCopy, checkedCopy, checkedUpload, losslessCheckedCopy, uncheckedCopy} from './floors.js'
import {FRESH_FLOOR_SCRIPT, type FreshFloorResult} from './fresh-process-floor.js'
import type {Cleanup} from './cleanup.js'
import type {Corpus} from './corpus.js'
import {curlIngest} from './curl-ceiling.js'
import {naiveCopy} from './naive-copier.js'
import {cpuOf, machineBusyMs, measureProcess} from './processes.js'
import {log, quiet} from './progress.js'
import {rawDownload} from './raw-download.js'
import type {Sample} from './samples.js'
import {uploadSequentially} from './sequential-uploader.js'
import {uploadZipBatches} from './zip-batches.js'
import {type BenchServer, expectInstances, startServer} from './servers.js'
import {repoRoot, runPipe, runTool, type ToolRun} from './tool.js'
import type {OrthancOptions} from '../test/helpers/orthanc.js'

export interface MethodContext {
  cleanup: Cleanup
  corpus: Corpus
  source: BenchServer
  /**
   * How a run reaches a new target: across a simulated network (a delay proxy in front of it),
   * or directly when absent. `release` stops what `reach` started.
   */
  link?: {reach(target: BenchServer): Promise<BenchServer>; release(reached: BenchServer): Promise<void>}
}

export interface Method {
  key: string
  label: string
  /** Set on a run that moves no instance: it has no throughput to show. */
  movesNothing?: true
  run(context: MethodContext): Promise<Sample>
}

interface Timing {
  ms: number
  /** CPU of this process (the in-process baselines run here). */
  benchCpuMs: number
  orthancCpuMs: number
  /** CPU of the delay proxies in front of the servers, when there are. */
  proxyCpuMs?: number
  /** CPU the whole machine spent, all processes. */
  busyMs: number
}

/** Times `body`, and counts the CPU the servers, their proxies, this process and the whole machine spent meanwhile. */
async function timed(servers: BenchServer[], body: () => Promise<void>): Promise<Timing> {
  const pids = servers.map((server) => server.pid)
  const proxies = servers.map((server) => server.proxyPid).filter((pid) => pid !== undefined)
  const orthancBefore = await cpuOf(pids)
  const proxyBefore = await cpuOf(proxies)
  const busyBefore = await machineBusyMs()
  const cpuBefore = process.cpuUsage()
  const started = performance.now()
  await body()
  const ms = performance.now() - started
  const cpu = process.cpuUsage(cpuBefore)
  const busyMs = (await machineBusyMs()) - busyBefore
  return {
    ms, benchCpuMs: (cpu.user + cpu.system) / 1000, orthancCpuMs: (await cpuOf(pids)) - orthancBefore, busyMs,
    proxyCpuMs: proxies.length > 0 ? (await cpuOf(proxies)) - proxyBefore : undefined,
  }
}

/**
 * A sample from a timing. Whatever CPU the machine spent beyond the client, the servers, their
 * proxies and this process is background: other programs (or PostgreSQL) competing for the cores.
 */
function sampleOf(timing: Timing, client?: {cpuMs?: number; ms?: number}): Sample {
  const clientCpuMs = client ? client.cpuMs : timing.benchCpuMs
  const accounted = timing.benchCpuMs + timing.orthancCpuMs + (timing.proxyCpuMs ?? 0) + (client ? client.cpuMs ?? 0 : 0)
  return {
    ms: client?.ms ?? timing.ms, clientCpuMs, orthancCpuMs: timing.orthancCpuMs, proxyCpuMs: timing.proxyCpuMs,
    backgroundCpuMs: Math.max(0, timing.busyMs - accounted),
  }
}

/** A run into a new, empty target: started before the clock, checked to hold the corpus after it, then stopped (its folder retired). */
export async function intoFreshTarget(
  context: MethodContext, what: string, body: (target: BenchServer) => Promise<Sample>, prepareTarget?: () => Promise<OrthancOptions>,
  expectedAfter = context.corpus.count,
): Promise<Sample> {
  const target = await startServer(context.cleanup, 'bench-target', (await prepareTarget?.()) ?? {})
  const reached = context.link ? await context.link.reach(target) : target
  try {
    const sample = await body(reached)
    await expectInstances(target, expectedAfter, `${what} into ${target.url}`)
    return sample
  } finally {
    if (reached !== target) await context.link!.release(reached)
    await context.cleanup.release(target.name)
    context.cleanup.retire(target.server.dir)
  }
}

/** A scratch folder for one run, retired when the run is over. */
async function inScratch<T>(context: MethodContext, prefix: string, body: (dir: string) => Promise<T>): Promise<T> {
  const dir = await context.cleanup.tempDir(prefix)
  try {
    return await body(dir)
  } finally {
    context.cleanup.retire(dir)
  }
}

/** A tool process: its own CPU and peak RSS come from the process accounting, not from this process. */
async function toolSample(servers: BenchServer[], run: () => Promise<ToolRun>): Promise<Sample> {
  let result: ToolRun | undefined
  const timing = await timed(servers, async () => {
    result = await run()
  })
  return {
    ...sampleOf(timing, {cpuMs: result!.cpuMs, ms: result!.wallMs}),
    rssKb: result!.maxRssKb, reportedMs: result!.summary.durationMs, concurrency: result!.summary.concurrency,
    zipRequests: result!.summary.zipUploads?.requests,
  }
}

/**
 * A baseline that runs in this process and writes into a new, empty target. Its CPU is this
 * process's; the Orthanc CPU counted is the target's, and the source's when it reads from it.
 */
function inProcessIntoTarget(key: string, label: string, what: string, readsSource: boolean, body: (context: MethodContext, target: BenchServer) => Promise<unknown>): Method {
  return {
    key,
    label,
    run: (context) => intoFreshTarget(context, what, async (target) => sampleOf(await timed(readsSource ? [context.source, target] : [target], async () => {
      await body(context, target)
    }))),
  }
}

export const naiveCopier = inProcessIntoTarget('naive', 'naive copier (Replicate.py way: GET file, POST, new connection each, one at a time)', 'naive copier', true,
  (context, target) => naiveCopy(context.source.url, target.url))

export const uncheckedCopyFloor = inProcessIntoTarget('unchecked-copy', 'unchecked-copy floor (GET file, POST, nothing checked; 4 kept-alive connections each side, in-process)', 'unchecked copy', true,
  (context, target) => uncheckedCopy(context.source.url, target.url))

export const checkedCopyFloor = inProcessIntoTarget('checked-copy', 'checked-copy floor (GET with ETag, MD5, POST, MD5 read back; 4 kept-alive connections each side, in-process)', 'checked copy', true,
  (context, target) => checkedCopy(context.source.url, target.url))

export const batchedLosslessCopyFloor = inProcessIntoTarget('batched-lossless-copy', 'batched lossless-copy floor (GET with ETag and the attachment list, MD5, 64 per stored ZIP POST, each MD5 read back; 16 kept-alive connections each side, in-process)', 'batched lossless copy', true,
  (context, target) => batchedLosslessCopy(context.source.url, target.url))

/** Instances copied at once (and connections each side) in the latency floor: more than 16, so that 40 ms of round trip does not bound it. */
const LATENCY_FLOOR_CONNECTIONS = 32

/**
 * The lossless checked copy with enough instances in flight for a link with latency: the least
 * that sync's own requests (download with ETag, attachment list, upload, MD5 read-back) cost
 * across it, with nothing else (no comparison, side data, start-up). Where it is slower than
 * curl's upload streams, no copier that checks and loses nothing can beat them there.
 */
export const losslessCopyLatencyFloor = inProcessIntoTarget(`lossless-copy-${LATENCY_FLOOR_CONNECTIONS}`,
  `lossless checked-copy floor (GET with ETag and the attachment list, MD5, POST, MD5 read back; ${LATENCY_FLOOR_CONNECTIONS} at once over kept-alive connections each side, in-process)`,
  'lossless checked copy', true, (context, target) => losslessCheckedCopy(context.source.url, target.url, LATENCY_FLOOR_CONNECTIONS))

export const checkedUploadFloor = inProcessIntoTarget('checked-upload', 'checked-upload floor (read file, MD5, POST, MD5 read back; 4 kept-alive connections, in-process)', 'checked upload', false,
  (context, target) => checkedUpload(context.corpus.files, target.url))

/**
 * A checked floor run as a new process's only job (fresh-process-floor.ts): what it costs a
 * process that starts cold, as every tool run does. Its client CPU is what the process itself
 * counted from its first request to its last.
 */
function freshProcessFloor(key: string, label: string, what: string, readsSource: boolean, argsOf: (context: MethodContext, target: BenchServer, scratch: string) => Promise<string[]>): Method {
  return {
    key,
    label,
    run: (context) => inScratch(context, key, (scratch) => intoFreshTarget(context, what, async (target) => {
      let result: FreshFloorResult | undefined
      const timing = await timed(readsSource ? [context.source, target] : [target], async () => {
        const run = await measureProcess(process.execPath, ['--import', 'tsx', FRESH_FLOOR_SCRIPT, ...(await argsOf(context, target, scratch))], {cwd: repoRoot})
        if (run.code !== 0) throw new Error(`${what} exited with code ${run.code}: ${run.stderr.trim().slice(0, 500)}`)
        result = JSON.parse(run.stdout.trim().split('\n').at(-1) ?? '') as FreshFloorResult
        if (result.count !== context.corpus.count) throw new Error(`${what} copied ${result.count} instances, not ${context.corpus.count}`)
      })
      return sampleOf(timing, {cpuMs: result!.cpuMs, ms: result!.ms})
    })),
  }
}

export const checkedCopyFreshFloor = freshProcessFloor('checked-copy-fresh', 'checked-copy floor, as a new process\'s first job (CPU and time from its first request to its last; its start-up counts as other CPU)', 'checked copy (new process)', true,
  async (context, target) => ['copy', context.source.url, target.url])

export const losslessCopyFreshFloor = freshProcessFloor('lossless-copy-fresh', 'lossless checked-copy floor (the checked copy plus each instance\'s attachment list, which 1.10.1 gives no other way), as a new process\'s first job', 'lossless checked copy (new process)', true,
  async (context, target) => ['lossless-copy', context.source.url, target.url])

export const checkedUploadFreshFloor = freshProcessFloor('checked-upload-fresh', 'checked-upload floor, as a new process\'s first job (CPU and time from its first request to its last; its start-up counts as other CPU)', 'checked upload (new process)', false,
  async (context, target, scratch) => {
    const list = join(scratch, 'files.json')
    await writeFile(list, JSON.stringify(context.corpus.files))
    return ['upload', target.url, list]
  })

export const sequentialUploader = inProcessIntoTarget('sequential', 'sequential uploader (ImportDicomFiles.py way: one file per request, new connection each)', 'sequential uploader', false,
  (context, target) => uploadSequentially(context.corpus.files, target.url))

/** The ingest ceiling with `streams` parallel curl uploads; the rows with targets use 4 (and 16 across a network). */
export function curlCeiling(streams: number, key = streams === 4 ? 'ceiling' : `ceiling-${streams}`): Method {
  return {
    key,
    label: `ingest ceiling (${streams} curl streams, kept-alive connections)`,
    run: (context) => inScratch(context, 'curl', (scratch) => intoFreshTarget(context, 'curl ingest', async (target) => {
      let cpuMs: number | undefined
      const timing = await timed([target], async () => {
        const run = await curlIngest(context.corpus.files, target.url, scratch, streams)
        if (run.connections > streams) throw new Error(`curl opened ${run.connections} connections: keep-alive did not hold`)
        if (run.resent > 0) log(`ingest ceiling: Orthanc answered HTTP 500 to ${run.resent} upload(s) (storage-folder race); curl sent them again`)
        cpuMs = run.cpuMs
      })
      return sampleOf(timing, {cpuMs})
    })),
  }
}

export const ingestCeiling = curlCeiling(4)

export const zipBatches = inProcessIntoTarget('zip-batches', 'ZIP batches (64 files per stored ZIP, 4 kept-alive connections, in-process)', 'ZIP batches', false,
  (context, target) => uploadZipBatches(context.corpus.files, target.url))

export const rawDownloadMethod: Method = {
  key: 'raw-download',
  label: 'raw parallel download (4 kept-alive connections, files to disk)',
  run: (context) => inScratch(context, 'download', async (dir) => sampleOf(await timed([context.source], async () => {
    const {count, bytes} = await rawDownload(context.source.url, dir)
    if (count !== context.corpus.count || bytes !== context.corpus.bytes) {
      throw new Error(`raw download got ${count} files, ${bytes} bytes; expected ${context.corpus.count}, ${context.corpus.bytes}`)
    }
  }))),
}

/**
 * `prepareTarget` gives each run's target its configuration: a new PostgreSQL database per run.
 * `extra`: more flags, which name the row too.
 */
export function toolSync(concurrency?: number, prepareTarget?: () => Promise<OrthancOptions>, extra: string[] = []): Method {
  const flags = [...(concurrency === undefined ? [] : ['--concurrency', String(concurrency)]), ...extra]
  return {
    key: ['sync', ...(concurrency === undefined ? [] : [`c${concurrency}`]), ...extra.map((flag) => flag.replace(/^--/, ''))].join('-'),
    label: `tool: sync${flags.length > 0 ? ` ${flags.join(' ')}` : ''}`,
    run: (context) => intoFreshTarget(context, 'sync', (target) => toolSample([context.source, target], () =>
      runTool(['sync', '--source', context.source.url, '--target', target.url, ...flags], context.corpus.count, 'sync')), prepareTarget),
  }
}

/**
 * `sync --dry-run` into a new, empty target: the part of a sync that does not depend on what it
 * copies (the command line's start, both servers' GET /system, the comparison of both sides, the
 * end), on the same link and with the same plan as the sync row. It moves nothing.
 */
export const toolSyncDryRun: Method = {
  key: 'sync-dry-run',
  label: 'tool: sync --dry-run (into an empty target: start, comparison and end, nothing moved)',
  movesNothing: true,
  run: (context) => intoFreshTarget(context, 'sync --dry-run', (target) => toolSample([context.source, target], () =>
    runTool(['sync', '--source', context.source.url, '--target', target.url, '--dry-run'], context.corpus.count, 'sync --dry-run')), undefined, 0),
}

/** `extra`: more flags, which name the row too. */
export function toolImportFolder(extra: string[] = []): Method {
  return {
    key: ['import', ...extra.map((flag) => flag.replace(/^--/, ''))].join('-'),
    label: `tool: import of the corpus folder${extra.length > 0 ? ` ${extra.join(' ')}` : ''}`,
    run: (context) => intoFreshTarget(context, 'import', (target) => toolSample([target], () =>
      runTool(['import', '--target', target.url, '--no-receipt', ...extra, context.corpus.dir], context.corpus.count, 'import'))),
  }
}

export const toolImport = toolImportFolder()

/** The tool's export of the whole corpus into `dir`/volumes. */
async function exportCorpus(context: MethodContext, dir: string, what: string): Promise<{output: string; run: () => Promise<ToolRun>}> {
  const output = join(dir, 'volumes')
  await mkdir(output)
  return {output, run: () => runTool(['export', '--source', context.source.url, '--output', output], context.corpus.count, what)}
}

/** Each corpus exported once, untimed, for the archive import row. */
const exportedVolumes = new WeakMap<Corpus, Promise<string>>()

export function volumesOf(context: MethodContext): Promise<string> {
  let volumes = exportedVolumes.get(context.corpus)
  if (!volumes) {
    volumes = (async () => {
      const {output, run} = await exportCorpus(context, await context.cleanup.tempDir('volumes'), 'export for the archive import')
      await run()
      await quiet()
      return output
    })()
    exportedVolumes.set(context.corpus, volumes)
  }

  return volumes
}

/** The air-gapped side's job: the volumes an export wrote, read back and uploaded. */
export const toolImportArchive: Method = {
  key: 'import-archive',
  label: 'tool: import of the exported volumes',
  run: async (context) => {
    const volumes = await volumesOf(context)
    return intoFreshTarget(context, 'archive import', (target) => toolSample([target], () =>
      runTool(['import', '--target', target.url, '--no-receipt', volumes], context.corpus.count, 'archive import')))
  },
}

export const toolExport: Method = {
  key: 'export',
  label: 'tool: export to a folder',
  run: (context) => inScratch(context, 'export', async (dir) => toolSample([context.source], (await exportCorpus(context, dir, 'export')).run)),
}

export const toolPipe: Method = {
  key: 'pipe',
  label: 'tool: export --output - | import -',
  run: (context) => inScratch(context, 'pipe', (scratch) => intoFreshTarget(context, 'export | import', (target) =>
    toolSample([context.source, target], () => runPipe(context.source.url, target.url, scratch, context.corpus.count)))),
}

export const CORPUS_METHODS: Method[] = [naiveCopier, sequentialUploader, ingestCeiling, zipBatches, rawDownloadMethod, uncheckedCopyFloor, checkedCopyFloor, checkedCopyFreshFloor, losslessCopyFreshFloor, checkedUploadFloor, checkedUploadFreshFloor, toolSync(), toolImport, toolImportArchive, toolExport, toolPipe]
