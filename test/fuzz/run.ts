import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {parseArgs} from 'node:util'

import {createFuzzWorld, runVariant, variantsOf} from './archive-fuzz.js'
import {type VariantClass, VARIANT_CLASSES} from './archive-variants.js'

/**
 * `npm run fuzz -- --variants N [--seed S] [--class flip,cut,...]`: the archive fuzz suite at
 * length, against real Orthanc servers it starts itself. Prints each variant that breaks the
 * invariant, a count per class and outcome, and exits 1 if any broke it.
 */
const {values} = parseArgs({
  options: {
    variants: {type: 'string', default: '400'},
    seed: {type: 'string', default: '1000'},
    class: {type: 'string'},
    verbose: {type: 'boolean', default: false},
  },
})

const classes = (values.class?.split(',') ?? VARIANT_CLASSES) as VariantClass[]
for (const kind of classes) if (!VARIANT_CLASSES.includes(kind)) throw new Error(`unknown class ${kind}; classes: ${VARIANT_CLASSES.join(', ')}`)
const perClass = Math.max(1, Math.ceil(Number(values.variants) / classes.length))
const work = await mkdtemp(join(tmpdir(), 'archive-fuzz-run-'))
const world = await createFuzzWorld(work)
const tally = new Map<string, number>()
let broken = 0
let slowest = 0
const started = Date.now()
try {
  for await (const variant of variantsOf(world.baseline, perClass, Number(values.seed), classes)) {
    const result = await runVariant(world, variant)
    slowest = Math.max(slowest, result.ms)
    const key = `${variant.kind} -> import ${result.importOutcome}, verify ${result.verifyOutcome}`
    tally.set(key, (tally.get(key) ?? 0) + 1)
    if (values.verbose) console.log(`${result.failures.length > 0 ? 'BROKEN' : 'ok    '} ${result.ms} ms  ${variant.name}`)
    if (result.failures.length > 0) {
      broken++
      console.log(`BROKEN ${variant.name}\n  ${result.failures.join('\n  ')}`)
    }
  }
} finally {
  await world.dispose()
  await rm(work, {recursive: true, force: true})
}

for (const [key, count] of [...tally].sort()) console.log(`${String(count).padStart(6)}  ${key}`)
console.log(`${perClass * classes.length} variants in ${((Date.now() - started) / 1000).toFixed(0)} s (slowest ${slowest} ms), ${broken} broke the invariant`)
process.exitCode = broken > 0 ? 1 : 0
