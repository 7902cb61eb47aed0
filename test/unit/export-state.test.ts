import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {loadPlan, planVolumePath, readPlannedVolume} from '../../src/export/plan.js'

/** An export's state lives on its drive beside the volumes: damaged there, it is said so, never as a bug. */
describe('an export\'s state damaged on its drive', () => {
  let work: string
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'export-state-'))
  })
  afterAll(async () => {
    await rm(work, {recursive: true, force: true})
  })

  it.each([['bytes that are not JSON', '{"version": 1, "gro\u0000'], ['JSON that is no plan', '[1, 2, 3]']])('a plan holding %s: damaged-state, naming the file', async (_what, text) => {
    const state = await mkdtemp(join(work, 'plan-'))
    await writeFile(join(state, 'plan.json'), text)
    await expect(loadPlan(state)).rejects.toMatchObject({code: 'damaged-state', category: 'bad-input', message: expect.stringContaining(join(state, 'plan.json'))})
  })

  it('a volume\'s list with a line that is not JSON: damaged-state, naming the file', async () => {
    const state = await mkdtemp(join(work, 'list-'))
    await writeFile(planVolumePath(state, 1), '{"record": {}}\n{"rec\n')
    const reading = (async () => {
      for await (const _entry of readPlannedVolume(state, 1)) { /* read to the end */ }
    })()
    await expect(reading).rejects.toMatchObject({code: 'damaged-state', message: expect.stringContaining(planVolumePath(state, 1))})
  })
})
