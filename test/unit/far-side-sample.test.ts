import {createHash} from 'node:crypto'

import {describe, expect, it} from 'vitest'

import {FAR_SIDE_SAMPLE} from '../../src/archive/format.js'
import {FarSideSample} from '../../src/export/plan.js'

const studyId = (index: number) => createHash('sha1').update(String(index)).digest('hex')

describe('the studies an export names as left out whole', () => {
  it('are the lowest study IDs, at most FAR_SIDE_SAMPLE of them, whatever the order they come in', () => {
    const sample = new FarSideSample()
    const ids = Array.from({length: 5000}, (_, index) => studyId(index))
    for (const [index, id] of ids.entries()) sample.add(id, {studyInstanceUid: `1.2.${index}`, instances: index + 1})
    const named = sample.studies()!
    expect(Object.keys(named)).toEqual([...ids].sort().slice(0, FAR_SIDE_SAMPLE))
    for (const [id, study] of Object.entries(named)) expect(study.instances).toBe(ids.indexOf(id) + 1)
  })

  it('are none when nothing was left out whole', () => {
    expect(new FarSideSample().studies()).toBeUndefined()
  })
})
