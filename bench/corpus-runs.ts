import type {Cleanup} from './cleanup.js'
import {type Corpus, type CorpusSpec, generateCorpus} from './corpus.js'
import type {Method, MethodContext} from './methods.js'
import {log, quiet} from './progress.js'
import {rawDownload} from './raw-download.js'
import type {Samples} from './samples.js'
import {type BenchServer, startSource} from './servers.js'
import {seconds} from './stats.js'

export interface PreparedCorpus {
  corpus: Corpus
  source: BenchServer
}

/** Generates a corpus and a source server holding it, then reads it all once so every timed run finds the same warm caches. */
export async function prepareCorpus(cleanup: Cleanup, spec: CorpusSpec): Promise<PreparedCorpus> {
  const dir = await cleanup.tempDir(`corpus-${spec.name}`)
  log(`generating the ${spec.name} corpus`)
  const corpus = await generateCorpus(dir, spec)
  log(`${spec.name} corpus: ${corpus.description}; loading it into a source server`)
  const source = await startSource(cleanup, corpus)
  const warm = await cleanup.tempDir('warm-up')
  await rawDownload(source.url, warm)
  cleanup.retire(warm)
  return {corpus, source}
}

/**
 * Runs each method `runs` times, round-robin (run 1 of all, then run 2 of all), so drift spreads
 * over every method alike; the runs' folders are deleted after the last one.
 */
export async function measure(
  cleanup: Cleanup, prepared: PreparedCorpus, methods: Method[], runs: number, samples: Samples, network?: {name: string; link: MethodContext['link']},
): Promise<void> {
  const context: MethodContext = {cleanup, ...prepared, link: network?.link}
  const where = network ? `${prepared.corpus.name} at ${network.name}` : prepared.corpus.name
  for (let run = 1; run <= runs; run++) {
    for (const method of methods) {
      await quiet()
      const sample = await method.run(context)
      samples.add(method.key, sample)
      log(`${where}, run ${run}/${runs}: ${method.label}: ${seconds(sample.ms)} s${sample.concurrency === undefined ? '' : ` (concurrency ${sample.concurrency})`}`)
    }
  }

  await cleanup.sweep()
}
