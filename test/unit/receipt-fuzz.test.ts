import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {RECEIPT_FORMAT, readReceipt, ReceiptWriter} from '../../src/import/receipt.js'
import {answerMutation, choiceOf} from '../fuzz/answer-mutations.js'

const ID = /^[0-9a-f]{8}(?:-[0-9a-f]{8}){4}$/
const MD5 = /^[0-9a-f]{32}$/
const VARIANTS = 400

/** One damaged or hostile form of a receipt's text: a line's JSON changed in one place, or its bytes cut, flipped or doubled. */
function variantOf(text: string, choice: number): string {
  const lines = text.split('\n').filter((line) => line.length > 0)
  const at = choice % lines.length
  const kind = Math.floor(choice / lines.length) % 5
  if (kind === 0) lines[at] = JSON.stringify(answerMutation(choice >>> 4).change(JSON.parse(lines[at]!)))
  if (kind === 1) lines[at] = lines[at]!.slice(0, (choice >>> 8) % Math.max(1, lines[at]!.length))
  if (kind === 2) {
    const bytes = Buffer.from(lines[at]!)
    bytes[(choice >>> 8) % bytes.length]! ^= 1 << ((choice >>> 4) % 8)
    lines[at] = bytes.toString('latin1')
  }

  if (kind === 3) lines.splice(at, 0, lines[(choice >>> 8) % lines.length]!)
  if (kind === 4) lines.splice(at, 1)
  return `${lines.join('\n')}\n`
}

/** A receipt comes back across the gap: whatever was done to it, it is read whole and well formed, or refused by name. */
describe('damaged and hostile receipts, at random (seeded)', () => {
  let work: string
  let written: string
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'receipt-fuzz-'))
    const path = join(work, 'written.jsonl')
    const group = '00000000-0000-4000-8000-000000000001'
    const receipt = await ReceiptWriter.create(path, {format: RECEIPT_FORMAT, version: 1, target: {server: 'http://127.0.0.1:1', name: 't', version: '1.10.1'}, createdAt: new Date(0).toISOString()})
    receipt.addGroup(group, [{group, source: {server: 'http://127.0.0.1:1', name: 's', version: '1.10.1', databaseBackend: 'SQLite', storageBackend: 'Filesystem'}, exportedAt: new Date(0).toISOString()}])
    for (let index = 0; index < 4; index++) {
      const id = `0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c${String(index).padStart(2, '0')}`
      await receipt.write(index === 3 ? {id, status: 'failed', md5: '', reason: 'refused'} : {id, status: index === 2 ? 'skipped' : 'transferred', md5: '0123456789abcdef0123456789abcd'.concat(String(index).padStart(2, '0'))})
    }

    await receipt.close()
    written = await readFile(path, 'utf8')
  })
  afterAll(async () => {
    await rm(work, {recursive: true, force: true})
  })

  it(`${VARIANTS} variants: each read is well formed or refused naming the file, never another kind of error`, async () => {
    const path = join(work, 'variant.jsonl')
    const outcomes = {read: 0, refused: 0}
    const broken: string[] = []
    for (let index = 0; index < VARIANTS; index++) {
      const text = variantOf(written, choiceOf('receipts', index))
      await writeFile(path, text)
      try {
        const {header, arrived} = await readReceipt(path)
        outcomes.read++
        const wrong = [...arrived].filter(([id, md5]) => !ID.test(id) || !MD5.test(md5))
        const hopsWrong = !Array.isArray(header.hops ?? []) || (header.hops ?? []).some((hop) => typeof hop?.group !== 'string' || typeof hop.source?.server !== 'string')
        if (wrong.length > 0 || hopsWrong || typeof header.target?.server !== 'string') broken.push(`variant ${index} read with a wrong shape: ${JSON.stringify(text).slice(0, 300)}`)
      } catch (error) {
        outcomes.refused++
        const message = (error as Error).message
        if ((error as Error).name !== 'Error' || !message.startsWith(path)) broken.push(`variant ${index}: ${(error as Error).name}: ${message.slice(0, 300)}`)
      }
    }

    expect(broken).toEqual([])
    // The variants reached both ways out.
    expect(outcomes.read).toBeGreaterThan(VARIANTS / 10)
    expect(outcomes.refused).toBeGreaterThan(VARIANTS / 4)
  })
})
