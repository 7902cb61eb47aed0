import {setTimeout as sleep} from 'node:timers/promises'

import {describe, expect, it} from 'vitest'

import {Semaphore} from '../src/util/concurrency.js'
import {inFlightFor} from '../src/transfer/engine.js'

describe('Semaphore', () => {
  it('never runs more than its limit at once, and runs every task in arrival order', async () => {
    const slots = new Semaphore(3)
    let running = 0
    let most = 0
    const started: number[] = []
    await Promise.all(Array.from({length: 20}, (_, index) => slots.run(async () => {
      started.push(index)
      running++
      most = Math.max(most, running)
      await sleep(index % 4)
      running--
    })))
    expect(most).toBe(3)
    expect(started).toEqual(Array.from({length: 20}, (_, index) => index))
  })

  it('frees the place of a task that failed', async () => {
    const slots = new Semaphore(1)
    await expect(slots.run(async () => {
      throw new Error('upload refused')
    })).rejects.toThrow('upload refused')
    expect(await slots.run(async () => 'next')).toBe('next')
  })
})

describe('inFlightFor', () => {
  it('keeps twice as many instances in flight as uploads, so the next one is ready', () => {
    expect(inFlightFor(4)).toBe(8)
    expect(inFlightFor(0)).toBe(2)
  })
})
