import {describe, expect, it} from 'vitest'

import {renderProblem, renderTransferSummary} from '../../src/cli/summary.js'
import {type ImportSummary, importOutcome} from '../../src/import/import.js'
import {emptyStats, recordFailure} from '../../src/transfer/stats.js'

describe('renderTransferSummary: ZIP uploads', () => {
  const stats = {...emptyStats(), transferred: 300}
  const report = (refusedAsTooLarge: number) => ({concurrency: 8, concurrencyAdaptive: false, unit: 'uploads', zipUploads: {requests: 10, instances: 280, refusedAsTooLarge}})

  it('says when ZIPs were refused as too large, what refused them and the way out', () => {
    const text = renderTransferSummary(stats, 'Imported', report(2))
    expect(text).toContain('ZIP uploads: 280 small instances went in 10 requests')
    expect(text).toContain('ZIP uploads: 2 refused as too large (HTTP 413, a limit on request bodies, usually a proxy\'s before the target, such as nginx\'s client_max_body_size); their instances went one by one, and later ZIPs were kept under half that size, or none made once they could not hold 16 KiB or two instances (raise the limit, or --no-zip-uploads).')
  })

  it('says nothing of refusals when there were none', () => {
    expect(renderTransferSummary(stats, 'Imported', report(0))).not.toContain('refused')
  })
})

describe('what an import amounts to', () => {
  const summaryWith = (failures: number, refusedAsHostile: number) => {
    const stats = emptyStats()
    // The list keeps the first 1,000: here none of them hostile.
    for (let index = 0; index < failures; index++) recordFailure(stats, {id: `instance-${index}`, kind: 'server-error', reason: 'HTTP 500'})
    return {...stats, problemCount: 0, refusedAsHostile, studies: {complete: 0, incomplete: []}} as unknown as ImportSummary
  }

  it('is bad input when an instance was refused as hostile, even past the failures listed', () => {
    expect(importOutcome(summaryWith(1200, 1))).toBe('bad-input')
    expect(importOutcome(summaryWith(1200, 0))).toBe('partial-failure')
  })
})

// A file's name is the user's data: a line break and an escape sequence in it must not forge a line of the tool's own.
describe('renderProblem', () => {
  it('writes control characters out, in the path, the ID and the reason', () => {
    const line = renderProblem({id: '/data/x\n\u001b[31mAll good: 0 failed\u001b[0m\r.dcm', path: '/data\tvol', kind: 'damaged', reason: 'bad\u0007'})
    expect(line).toBe('/data\\x09vol: /data/x\\x0a\\x1b[31mAll good: 0 failed\\x1b[0m\\x0d.dcm: bad\\x07')
    expect([...line].filter((char) => char.charCodeAt(0) < 0x20)).toEqual([])
  })
})

describe('renderTransferSummary: contradictions', () => {
  it('does not tell to run again what running again cannot change', () => {
    const stats = emptyStats()
    recordFailure(stats, {id: 'a', path: '/b.dcm', kind: 'contradiction', reason: 'another copy'})
    const text = renderTransferSummary(stats, 'Imported', undefined)
    expect(text).not.toContain('Run the same command again')
    expect(text).toContain('1 of them is a copy of an instance already taken, with other bytes (contradiction): running again changes nothing until the wrong file is removed.')
    recordFailure(stats, {id: 'c', kind: 'server-error', reason: 'HTTP 500'})
    expect(renderTransferSummary(stats, 'Imported', undefined)).toContain('Run the same command again to retry what failed')
  })
})
