import {parseArgs} from 'node:util'

import {runChaos, type Scenario, SCENARIOS} from './chaos.js'

/**
 * `npm run chaos -- --kills N [--seed S] [--instances M] [--scenario export,import,sync,follow] [--zip-uploads]`:
 * the random kill loop (kill -9, SIGTERM, Ctrl-C) at length, against real Orthanc servers it starts itself. Prints every
 * kill and every scenario's outcome, and exits 1 if any scenario ended with content that is not
 * exact or a summary that is not true.
 */
const {values} = parseArgs({
  options: {
    kills: {type: 'string', default: '100'},
    seed: {type: 'string', default: String(Date.now() % 100_000)},
    instances: {type: 'string', default: '64'},
    scenario: {type: 'string'},
    'zip-uploads': {type: 'boolean', default: false},
  },
})

const scenarios = (values.scenario?.split(',') ?? SCENARIOS) as Scenario[]
for (const scenario of scenarios) if (!SCENARIOS.includes(scenario)) throw new Error(`unknown scenario ${scenario}; scenarios: ${SCENARIOS.join(', ')}`)
const started = Date.now()
console.log(`chaos: ${values.kills} kills, seed ${values.seed} (run again with --seed ${values.seed} to draw the same moments)`)
const report = await runChaos({kills: Number(values.kills), seed: Number(values.seed), instances: Number(values.instances), scenarios, zipUploads: values['zip-uploads'], log: (line) => console.log(line)})
for (const line of report.broken) console.log(`BROKEN ${line}`)
const counts = Object.entries(report.scenarios).map(([scenario, count]) => `${scenario} ${count}`).join(', ')
console.log(`${report.kills} kills landed over ${counts} in ${((Date.now() - started) / 1000).toFixed(0)} s; ${report.broken.length === 0 ? 'every run finished exact and truthful' : `${report.broken.length} broken`}`)
process.exitCode = report.broken.length > 0 ? 1 : 0
