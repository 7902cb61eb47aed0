import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {createFuzzWorld, type FuzzWorld, runVariant, type VariantResult, variantsOf} from '../fuzz/archive-fuzz.js'
import {VARIANT_CLASSES} from '../fuzz/archive-variants.js'

/**
 * The deterministic CI slice of the archive fuzz suite (`npm run fuzz -- --variants N` runs
 * more): every class of damage, each variant imported into a real Orthanc and verified.
 */
const PER_CLASS = Number(process.env.FUZZ_PER_CLASS ?? 25)

describe('archive fuzz (deterministic slice)', () => {
  let world: FuzzWorld
  let work: string
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'archive-fuzz-'))
    world = await createFuzzWorld(work)
  }, 120_000)
  afterAll(async () => {
    await world?.dispose()
    await rm(work, {recursive: true, force: true})
  })

  it('the unaltered export imports whole, from files and from a stream: exit 0', async () => {
    const files = await runVariant(world, {name: 'unaltered volumes', kind: 'flip', input: {files: world.baseline.volumes}})
    const stream = await runVariant(world, {name: 'unaltered stream', kind: 'flip', input: {stream: world.baseline.stream}})
    for (const result of [files, stream]) {
      expect(result.failures).toEqual([])
      expect(result).toMatchObject({importOutcome: 'ok', verifyOutcome: 'ok', transferred: world.original.size, problems: 0})
    }
    expect(world.baseline.volumes.length).toBeGreaterThanOrEqual(2)
  })

  it.each(VARIANT_CLASSES)('%s: no altered byte reaches the target, exit 0 only when exactly right, import and verify agree', async (kind) => {
    const results: VariantResult[] = []
    for await (const variant of variantsOf(world.baseline, PER_CLASS, 1, [kind])) results.push(await runVariant(world, variant))
    const broken = results.filter((result) => result.failures.length > 0).map((result) => `${result.variant.name}:\n    ${result.failures.join('\n    ')}`)
    expect(broken).toEqual([])
    // The variants really damage the archive: most of them must be refused.
    expect(results.filter((result) => result.importOutcome !== 'ok').length).toBeGreaterThan(PER_CLASS / 2)
    expect(Math.max(...results.map((result) => result.ms))).toBeLessThan(20_000)
  }, 300_000)
})
