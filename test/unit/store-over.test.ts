import {describe, expect, it} from 'vitest'

import type {OrthancClient} from '../../src/orthanc/client.js'
import type {OrthancSink, StoreOutcome} from '../../src/sinks/orthanc-sink.js'
import {InstanceReplacer} from '../../src/sync/replace.js'

/**
 * An import stores over another file under an instance's ID through the replacer, one copy after
 * the other (several exports, oldest first). The replacer keeps an unfinished replacement by the
 * instance's ID: a newer copy that came after one whose write-back failed was answered with the
 * older copy's outcome, never uploaded, and counted as transferred (exit 0).
 */
describe('storing over another file, copy after copy', () => {
  it('a newer copy after an older one whose write-back failed is stored itself, and what was kept is written back after it', async () => {
    let restores = 0
    const sink = {
      async restoreOwn() {
        restores++
        if (restores === 1) throw new Error('connection reset while writing metadata back')
        return {missing: [], refused: 0}
      },
      notCarried: {add() {}},
    } as unknown as OrthancSink
    const replacer = new InstanceReplacer({} as OrthancClient, sink)
    // The target's own side data of the instance, as read before any copy went.
    Object.assign(replacer, {keptBeside: async () => [{level: 'instance', id: 'X', data: {userMetadata: {Mine: '1'}, systemMetadata: {}, attachments: [], labels: []}, bytes: new Map(), endReservation() {}}]})
    const stored: string[] = []
    const store = (md5: string) => async (): Promise<StoreOutcome> => {
      stored.push(md5)
      return {kind: 'transferred', bytes: 1, targetMd5: md5, instanceId: 'X'}
    }
    await expect(replacer.storeOver('X', 'older', store('older'))).rejects.toThrow(/connection reset/)
    const newer = await replacer.storeOver('X', 'newer', store('newer'))
    expect(newer.targetMd5).toBe('newer')
    expect(stored).toEqual(['older', 'newer'])
    expect(restores).toBe(2)
    await replacer.finish()
  })
})
