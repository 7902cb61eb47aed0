import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {parseArgs} from 'node:util'

import {generateStudySet} from '../../fixtures/generate.js'
import {startOrthanc, uploadFiles} from '../helpers/orthanc.js'
import {answerFuzz} from './answer-fuzz.js'

/**
 * `npm run fuzz:answers -- --per-route N [--seed S] [--command sync,export,import,replace,diff,verify]`: broken and hostile server answers at
 * length (see answer-fuzz.ts), against real Orthanc servers it starts itself. Prints each change
 * that broke the promise and a count per outcome, and exits 1 if any did.
 */
const {values} = parseArgs({options: {
  'per-route': {type: 'string', default: '12'}, seed: {type: 'string', default: 'answers'}, command: {type: 'string', default: 'sync,export,import'}, verbose: {type: 'boolean', default: false},
}})
// A name the fuzz does not know would run as a sync, and a run meant for another command would pass unseen.
const COMMANDS = ['sync', 'export', 'import', 'replace', 'diff', 'verify'] as const
const commands = values.command.split(',')
const unknown = commands.filter((command) => !(COMMANDS as readonly string[]).includes(command))
if (unknown.length > 0) {
  console.error(`--command ${unknown.join(',')}: the answer fuzz runs ${COMMANDS.join(', ')} (replace: sync --checksum over other bytes)`)
  process.exit(2)
}

const work = await mkdtemp(join(tmpdir(), 'answer-fuzz-run-'))
const [source, target] = await Promise.all([startOrthanc({name: 'answers-source'}), startOrthanc({name: 'answers-target'})])
const started = Date.now()
const tally = new Map<string, number>()
let broken = 0
try {
  const records = await generateStudySet(join(work, 'fixtures'), {patients: 2, studiesPerPatient: 1, seriesPerStudy: 1, instancesPerSeries: 2, pixelBytes: 2000, seed: 'answer-fuzz'})
  await uploadFiles(source, records.map((record) => record.path))
  for (const command of commands as Array<(typeof COMMANDS)[number]>) {
    await answerFuzz({
      command, work, source, target, perRoute: Number(values['per-route']), seed: values.seed,
      onCase(found) {
        const key = `${found.command}: exit ${found.code}`
        tally.set(key, (tally.get(key) ?? 0) + 1)
        if (found.problem) broken++
        if (found.problem || values.verbose) console.log(`${found.problem ? 'BROKEN' : 'ok    '} ${found.command} ${found.side} ${found.route}: ${found.what}${found.problem ? `\n  ${found.problem}` : ''}`)
      },
    })
  }
} finally {
  await Promise.all([source.dispose(), target.dispose()])
  await rm(work, {recursive: true, force: true})
}

for (const [key, count] of [...tally].sort()) console.log(`${String(count).padStart(6)}  ${key}`)
console.log(`${[...tally.values()].reduce((a, b) => a + b, 0)} changed answers in ${((Date.now() - started) / 1000).toFixed(0)} s, ${broken} broke the promise`)
process.exitCode = broken > 0 ? 1 : 0
