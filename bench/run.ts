import {writeFile} from 'node:fs/promises'
import {loadavg} from 'node:os'
import {join} from 'node:path'

import {InterruptedError, withCleanup} from './cleanup.js'
import {measure, type PreparedCorpus, prepareCorpus} from './corpus-runs.js'
import type {CorpusSpec} from './corpus.js'
import {buildTool, describeMachine} from './machine.js'
import {Report, table} from './markdown.js'
import {scaleSection} from './scale.js'
import {CORPUS_METHODS} from './methods.js'
import {parseBenchArgs} from './options.js'
import {preflight} from './preflight.js'
import {measureProcess} from './processes.js'
import {profileRequests} from './profile.js'
import {latencySection} from './latency.js'
import {zipDistanceSection} from './zip-distance.js'
import {benchStarted, log, setQuietWait} from './progress.js'
import {Samples} from './samples.js'
import {scaling} from './scaling.js'
import {orthancVersion} from './servers.js'
import {median, seconds} from './stats.js'
import {measurementTable, ratioTable} from './tables.js'
import {repoRoot} from './tool.js'

/** What every tool run pays before its first request: Node and oclif starting, measured with --version. */
async function startup(runs: number): Promise<{ms: number; cpuMs: number; rssKb: number}> {
  const results = []
  for (let run = 0; run < Math.max(3, runs); run++) {
    const result = await measureProcess(process.execPath, [join(repoRoot, 'bin', 'run.js'), '--version'], {cwd: repoRoot})
    if (result.code !== 0) throw new Error(`bin/run.js --version exited with ${result.code}: ${result.stderr}`)
    results.push(result)
  }

  return {
    ms: median(results.map((result) => result.wallMs)),
    cpuMs: median(results.map((result) => result.cpuMs ?? Number.NaN)),
    rssKb: median(results.map((result) => result.maxRssKb ?? Number.NaN)),
  }
}

function capitalized(text: string): string {
  return `${text.slice(0, 1).toUpperCase()}${text.slice(1)}`
}

async function main(): Promise<void> {
  const config = parseBenchArgs(process.argv.slice(2))
  setQuietWait(config.quietWaitS * 1000)
  const runs = (section: string) => config.only === undefined || config.only.has(section)
  await withCleanup(async (cleanup) => {
    preflight(config)
    log('building the tool (npm run build)')
    buildTool()
    const machine = describeMachine()
    const report = new Report()

    const defaultSpec: CorpusSpec = {name: 'default', instances: config.instances, fileBytes: config.size, large: config.large, largeBytes: config.largeBytes}
    const smallSpec: CorpusSpec = {name: 'small-instance', instances: config.smallInstances, fileBytes: config.smallSize, large: 0, largeBytes: 0}
    const needsDefault = ['default', 'requests', 'scaling', 'scale'].some(runs)
    const defaultCorpus = needsDefault ? await prepareCorpus(cleanup, defaultSpec) : undefined
    const smallCorpus = runs('small') ? await prepareCorpus(cleanup, smallSpec) : undefined
    const prepared = [defaultCorpus, smallCorpus].filter((corpus): corpus is PreparedCorpus => corpus !== undefined)
    const start = await startup(config.runs)
    const orthanc = await orthancVersion()

    const flags = process.argv.slice(2).join(' ')
    report.section('Setup', table(['', ''], [
      ['command', `\`npm run bench${flags ? ` -- ${flags}` : ''}\``],
      ['machine', `${machine.cpus} CPUs (${machine.cpuModel}), ${machine.memory} RAM; load average at the start ${machine.load}`],
      ['software', `Node ${machine.node}, Orthanc ${orthanc} (SQLite index, filesystem storage unless said), ${machine.curl.split(' ').slice(0, 2).join(' ')}`],
      ['tool', `commit ${machine.commit}, built with \`npm run build\`, run as \`node bin/run.js ... --json\` (default: adaptive concurrency)`],
      ['runs', `each figure is the median of ${config.runs} run(s); every run that writes to Orthanc gets a new, empty target server`],
      ...prepared.map(({corpus}): [string, string] => [`${corpus.name} corpus`, corpus.description]),
      ['CLI start-up', `\`node bin/run.js --version\`: ${seconds(start.ms)} s wall, ${seconds(start.cpuMs)} s CPU, ${(start.rssKb / 1024).toFixed(0)} MB peak RSS (medians); every tool time below includes it`],
      ['columns', 'tool-reported s: the durationMs of the tool\'s JSON summary (no start-up); client CPU: the tool, curl, or the bench process for the in-process baselines; Orthanc CPU: the Orthanc servers the run used; other CPU: everything else the machine ran meanwhile (PostgreSQL included), the worst run'],
    ]))

    const results = new Map<string, Samples>()
    for (const {corpus, source} of prepared) {
      const samples = new Samples()
      results.set(corpus.name, samples)
      await measure(cleanup, {corpus, source}, CORPUS_METHODS, config.runs, samples)
      report.section(`${capitalized(corpus.name)} corpus: ${corpus.description}`, measurementTable(corpus, samples, CORPUS_METHODS), ratioTable(samples))
    }

    if (smallCorpus) await cleanup.release(`orthanc ${smallCorpus.source.server.dir}`)
    if (defaultCorpus) {
      if (runs('requests')) {
        log('counting requests per instance through proxies')
        report.section(`Requests per instance (default corpus, ${defaultCorpus.corpus.count} instances, one untimed run each)`,
          await profileRequests({cleanup, ...defaultCorpus}))
      }

      if (runs('scaling')) report.section('Scaling: sync --concurrency into fresh targets (default corpus)', await scaling(cleanup, defaultCorpus, config))
      // The scale section loads a larger corpus of its own.
      if (runs('scale') && results.has('default')) {
        const scaled = await scaleSection(cleanup, defaultCorpus, results.get('default')!, defaultSpec, config.rssScale, config.runs)
        report.section(scaled.title, ...scaled.body)
      }

      await cleanup.release(`orthanc ${defaultCorpus.source.server.dir}`)
    }

    if (runs('latency')) for (const section of await latencySection(cleanup, config)) report.section(section.title, ...section.body)
    if (runs('zip-distance')) {
      const section = await zipDistanceSection(cleanup, config)
      report.section(section.title, ...section.body)
    }

    const minutes = (performance.now() - benchStarted) / 60_000
    log(`done in ${minutes.toFixed(1)} min`)
    report.add(`Bench duration: ${minutes.toFixed(1)} min; load average at the end ${loadavg().map((value) => value.toFixed(2)).join(' / ')}.`)
    if (config.out) await writeFile(config.out, report.toString())
  })
}

main().catch((error: unknown) => {
  if (error instanceof InterruptedError) return
  // The message says what failed and what to do; the stack only with DEBUG set.
  console.error(`bench failed: ${process.env.DEBUG ? (error as Error).stack : (error as Error).message ?? String(error)}`)
  process.exitCode = 1
})
