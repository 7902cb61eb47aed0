import {parseArgs} from 'node:util'

export interface BenchConfig {
  /** Ordinary instances of the default corpus, and their approximate file size. */
  instances: number
  size: number
  /** Large multi-frame instances added to the default corpus. */
  large: number
  largeBytes: number
  smallInstances: number
  smallSize: number
  runs: number
  /** Instances of the corpus whose peak RSS is compared with the default one's. */
  rssScale: number
  concurrencies: number[]
  skipPostgres: boolean
  quick: boolean
  out?: string
  /** Round-trip times of the latency section, in ms (a delay proxy in front of every server). */
  latencies: number[]
  /** Instances of each latency corpus: ordinary ones (of `size`), and small ones (of `smallSize`). */
  latencyInstances: number
  latencySmallInstances: number
  /** Fixed --concurrency values sync is run with at each round-trip time, to find the best one. */
  latencyConcurrencies: number[]
  /** Round-trip times at which small instances are sent with and without ZIP uploads, in ms. */
  zipDistances: number[]
  /** Sections to run (all when undefined): default, small, requests, scaling, scale, latency, zip-distance. */
  only?: Set<string>
  /** Seconds each run waits at most for the machine to go idle first (0: no waiting). */
  quietWaitS: number
}

export const SECTIONS = ['default', 'small', 'requests', 'scaling', 'scale', 'latency', 'zip-distance'] as const

const USAGE = `usage: npm run bench -- [--instances N] [--size BYTES] [--large N] [--small-instances N] [--small-size BYTES]
                       [--runs N] [--skip-postgres] [--quick] [--out FILE]
                       [--latencies MS,MS,...] [--latency-instances N] [--latency-small-instances N]
                       [--zip-distances MS,MS,...] [--only SECTION,...] [--quiet-wait SECONDS]
sections: default, small, requests, scaling, scale, latency, zip-distance`

const LARGE_BYTES = 8 * 1024 * 1024
const RSS_SCALE = 5

/** The command line, with the defaults the published figures use; --quick is a smoke-test configuration. */
export function parseBenchArgs(argv: string[]): BenchConfig {
  const {values} = parseArgs({
    args: argv,
    options: {
      instances: {type: 'string'},
      size: {type: 'string'},
      large: {type: 'string'},
      'small-instances': {type: 'string'},
      'small-size': {type: 'string'},
      runs: {type: 'string'},
      'skip-postgres': {type: 'boolean', default: false},
      quick: {type: 'boolean', default: false},
      out: {type: 'string'},
      latencies: {type: 'string'},
      'latency-instances': {type: 'string'},
      'latency-small-instances': {type: 'string'},
      'zip-distances': {type: 'string'},
      only: {type: 'string'},
      'quiet-wait': {type: 'string'},
      help: {type: 'boolean', default: false},
    },
  })
  if (values.help) {
    console.log(USAGE)
    process.exit(0)
  }

  const quick = values.quick
  // Explicit flags still win over --quick, so a quick run can be widened one knob at a time.
  return {
    instances: count(values.instances, quick ? 200 : 1000, '--instances'),
    size: count(values.size, 130_000, '--size'),
    large: count(values.large, quick ? 1 : 3, '--large', 0),
    largeBytes: LARGE_BYTES,
    smallInstances: count(values['small-instances'], quick ? 400 : 2000, '--small-instances'),
    smallSize: count(values['small-size'], 4000, '--small-size'),
    runs: count(values.runs, quick ? 1 : 3, '--runs'),
    rssScale: RSS_SCALE,
    concurrencies: [1, 2, 4, 8],
    skipPostgres: values['skip-postgres'],
    quick,
    out: values.out,
    latencies: milliseconds(values.latencies, [0, 10, 40], '--latencies'),
    latencyInstances: count(values['latency-instances'], quick ? 100 : 400, '--latency-instances'),
    latencySmallInstances: count(values['latency-small-instances'], quick ? 100 : 2000, '--latency-small-instances'),
    latencyConcurrencies: [4, 8, 16, 32],
    zipDistances: milliseconds(values['zip-distances'], quick ? [0, 10] : [0, 2, 5, 10], '--zip-distances'),
    only: values.only === undefined ? undefined : sections(values.only),
    quietWaitS: count(values['quiet-wait'], 120, '--quiet-wait', 0),
  }
}

function milliseconds(text: string | undefined, fallback: number[], flag: string): number[] {
  return text === undefined ? fallback : text.split(',').map((part) => count(part, 0, flag, 0))
}

function sections(text: string): Set<string> {
  const names = text.split(',').map((name) => name.trim()).filter(Boolean)
  const unknown = names.filter((name) => !(SECTIONS as readonly string[]).includes(name))
  if (unknown.length > 0 || names.length === 0) throw new Error(`--only takes sections among ${SECTIONS.join(', ')}; got "${text}"\n${USAGE}`)
  return new Set(names)
}

function count(text: string | undefined, fallback: number, flag: string, min = 1): number {
  if (text === undefined) return fallback
  const value = Number(text)
  if (!Number.isInteger(value) || value < min) throw new Error(`${flag} expects an integer of at least ${min}, got "${text}"\n${USAGE}`)
  return value
}
