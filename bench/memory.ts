import type {Cleanup} from './cleanup.js'
import {measure, type PreparedCorpus, prepareCorpus} from './corpus-runs.js'
import type {CorpusSpec} from './corpus.js'
import {table} from './markdown.js'
import {toolExport, toolImport} from './methods.js'
import {Samples} from './samples.js'
import {ratio, seconds} from './stats.js'

// Memory targets: under 200 MB, and "flat": `scale` times the instances may cost at most a quarter more.
const RSS_LIMIT_KB = 200 * 1024
const FLAT_GROWTH = 1.25

/**
 * Peak RSS of export and import at 1× (from the default corpus's runs) and at `scale` times as
 * many ordinary instances (the same large ones): memory should not follow the instance count.
 */
export async function memorySection(cleanup: Cleanup, base: PreparedCorpus, baseSamples: Samples, spec: CorpusSpec, scale: number, runs: number): Promise<{title: string; body: string[]}> {
  const scaled = await prepareCorpus(cleanup, {...spec, name: `${scale}x`, instances: spec.instances * scale})
  const samples = new Samples()
  const methods = [toolExport, toolImport]
  await measure(cleanup, scaled, methods, runs, samples)
  const rows = methods.map((method) => {
    const one = baseSamples.median(method.key, 'rssKb')
    const many = samples.median(method.key, 'rssKb')
    const met = Math.max(one, many) < RSS_LIMIT_KB && many / one <= FLAT_GROWTH
    return [method.label, (one / 1024).toFixed(0), (many / 1024).toFixed(0), ratio(many / one),
      seconds(baseSamples.median(method.key)), seconds(samples.median(method.key)), met ? 'yes' : '**no**']
  })
  return {
    title: `Peak RSS of the tool process: 1× (${base.corpus.count} instances) and ${scale}× (${scaled.corpus.count} instances)`,
    body: [
      `${scale}× corpus: ${scaled.corpus.description}. Peak RSS is the kernel's maximum resident set size of the \`node bin/run.js\` process, median of the runs.`,
      table(['command', '1× MB', `${scale}× MB`, `${scale}× / 1×`, '1× time s', `${scale}× time s`, `met (< 200 MB, growth ≤ ${FLAT_GROWTH}×)`], rows),
    ],
  }
}
