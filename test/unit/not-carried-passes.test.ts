import {describe, expect, it} from 'vitest'

import {NotCarriedTally, REPLACEMENT_LOST} from '../../src/sinks/orthanc-sink.js'
import {NotCarriedAcrossPasses} from '../../src/sync/follow.js'

const pass = (...entries: Array<[level: 'series' | 'study', id: string, name: string, reason: string]>) => {
  const tally = new NotCarriedTally()
  for (const [level, id, name, reason] of entries) tally.add(level, 'user-metadata', reason, id, name)
  return {notCarried: tally.list(), interrupted: false}
}

describe('what a mirror could not carry, over its passes', () => {
  it('a full pass replaces what the passes before it found, but never what a replacement lost', () => {
    const across = new NotCarriedAcrossPasses()
    across.add(pass(['series', 's1', 'Old', 'the target does not declare this name in its UserMetadata']), true)
    across.add(pass(['series', 's2', '2002', REPLACEMENT_LOST], ['series', 's2', '2002', 'the target does not declare this name in its UserMetadata']), false)
    const after = across.add(pass(), true)
    expect(after).toEqual([expect.objectContaining({level: 'series', name: '2002', count: 1, reason: REPLACEMENT_LOST})])
  })

  it('a full pass stopped part-way adds to the tally: it never met the resources it did not reach', () => {
    const across = new NotCarriedAcrossPasses()
    across.add(pass(['series', 's1', 'Old', 'refused']), true)
    const after = across.add({...pass(['study', 'a', 'Note', 'refused']), interrupted: true}, true)
    expect(after.map((entry) => [entry.level, entry.name])).toEqual([['series', 'Old'], ['study', 'Note']])
  })

  it('a full pass held back before copying (a source that looks wrong) leaves the tally as it was', () => {
    const across = new NotCarriedAcrossPasses()
    across.add(pass(['series', 's1', 'Old', 'refused']), true)
    expect(across.add({...pass(), heldBack: 'the source would delete most of the mirror'}, true).map((entry) => entry.name)).toEqual(['Old'])
  })

  it('an instance that fails the same way at every poll counts once, however many polls met it', () => {
    const across = new NotCarriedAcrossPasses()
    const poll = () => {
      const tally = new NotCarriedTally()
      tally.add('instance', 'system-metadata', 'refused', 'i1')
      return {notCarried: tally.list(), interrupted: false}
    }
    for (let index = 0; index < 6; index++) across.add(poll(), false)
    expect(across.add(poll(), false)).toEqual([expect.objectContaining({level: 'instance', count: 1})])
  })

  it('past the IDs kept for one entry, resources are still counted', () => {
    const tally = new NotCarriedTally()
    for (let index = 0; index < 100_005; index++) tally.add('instance', 'system-metadata', 'never carried', `i${index}`)
    tally.add('instance', 'system-metadata', 'never carried', 'i0')
    expect(tally.list()).toEqual([expect.objectContaining({count: 100_005})])
    expect(JSON.parse(JSON.stringify(tally.list()))).toEqual([{level: 'instance', kind: 'system-metadata', count: 100_005, reason: 'never carried'}])
  })

  it('losses of one name for two causes stay two entries, each with its own reason', () => {
    const lost = pass(['series', 's1', 'Note', REPLACEMENT_LOST], ['series', 's2', 'Note', 'the target\'s own, deleted with the copy it replaced and not written back: the target refuses it (HTTP 403)'])
    expect(lost.notCarried.map((entry) => entry.reason)).toEqual([REPLACEMENT_LOST, expect.stringMatching(/refuses it \(HTTP 403\)$/)])
  })

  it('passes that met the same resource count it once', () => {
    const across = new NotCarriedAcrossPasses()
    across.add(pass(['study', 'a', 'Note', 'refused']), false)
    expect(across.add(pass(['study', 'a', 'Note', 'refused'], ['study', 'b', 'Note', 'refused']), false)).toEqual([expect.objectContaining({count: 2})])
  })
})
