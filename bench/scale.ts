import type {Cleanup} from './cleanup.js'
import {measure, type PreparedCorpus, prepareCorpus} from './corpus-runs.js'
import type {CorpusSpec} from './corpus.js'
import {table} from './markdown.js'
import {ingestCeiling, naiveCopier, rawDownloadMethod, toolExport, toolImport, toolSync, uncheckedCopyFloor} from './methods.js'
import {Samples} from './samples.js'
import {perSecond, ratio, seconds} from './stats.js'
import {ratioTable} from './tables.js'

// Memory targets: under 200 MB, and "flat": `scale` times the instances may cost at most a quarter more.
const RSS_LIMIT_KB = 200 * 1024
const FLAT_GROWTH = 1.25

/**
 * What the scaled corpus is measured with: the tool's three transfers, the baselines of the
 * ratios with targets, and the unchecked-copy floor, which says whether sync's target is within
 * reach at this size of a copier that checks nothing.
 */
const SCALE_METHODS = [naiveCopier, ingestCeiling, rawDownloadMethod, uncheckedCopyFloor, toolSync(), toolImport, toolExport]

/**
 * The default corpus again at `scale` times as many ordinary instances (the same large ones):
 * peak RSS of the tool, which should not follow the instance count, and the same side-by-side
 * ratios, where a run's fixed costs (start-up, a fresh server, the first requests) weigh less.
 */
export async function scaleSection(cleanup: Cleanup, base: PreparedCorpus, baseSamples: Samples, spec: CorpusSpec, scale: number, runs: number): Promise<{title: string; body: string[]}> {
  const scaled = await prepareCorpus(cleanup, {...spec, name: `${scale}x`, instances: spec.instances * scale})
  const samples = new Samples()
  await measure(cleanup, scaled, SCALE_METHODS, runs, samples)
  const tools = SCALE_METHODS.filter((method) => method.key === 'sync' || method.key === 'import' || method.key === 'export')
  const memoryRows = tools.map((method) => {
    const one = baseSamples.median(method.key, 'rssKb')
    const many = samples.median(method.key, 'rssKb')
    const met = Math.max(one, many) < RSS_LIMIT_KB && many / one <= FLAT_GROWTH
    return [method.label, (one / 1024).toFixed(0), (many / 1024).toFixed(0), ratio(many / one), met ? 'yes' : '**no**']
  })
  // Instances per second between the two sizes: what each extra instance costs, fixed costs left out.
  const extra = scaled.corpus.count - base.corpus.count
  const rateRows = SCALE_METHODS.map((method) => {
    const [one, many] = [baseSamples.median(method.key), samples.median(method.key)]
    return [method.label, seconds(one), seconds(many), perSecond(extra, many - one)]
  })
  return {
    title: `At ${scale}× the default corpus (${scaled.corpus.count} instances): memory and ratios at scale`,
    body: [
      `${scale}× corpus: ${scaled.corpus.description}. Peak RSS is the kernel's maximum resident set size of the \`node bin/run.js\` process, median of the runs.`,
      table(['command', '1× peak RSS MB', `${scale}× peak RSS MB`, `${scale}× / 1×`, `met (< 200 MB, growth ≤ ${FLAT_GROWTH}×)`], memoryRows),
      ratioTable(samples),
      `Marginal rate: the ${extra} instances the ${scale}× corpus adds, divided by the time they add (${scale}× median minus 1× median).`,
      table(['measurement', '1× median s', `${scale}× median s`, 'marginal instances/s'], rateRows),
    ],
  }
}
