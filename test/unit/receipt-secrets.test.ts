import {mkdtemp, readFile, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {describe, expect, it} from 'vitest'

import {RECEIPT_FORMAT, ReceiptWriter} from '../../src/import/receipt.js'
import {Secret} from '../../src/util/secret.js'
import {registerBasicCredentials} from '../../src/util/redact.js'

describe('a receipt names no password', () => {
  it('a failure\'s reason that quotes the password (a server echoing the request) is masked as on the terminal', async () => {
    const work = await mkdtemp(join(tmpdir(), 'receipt-secrets-'))
    try {
      // As the command line learns them: the password (a Secret), and the header made of it.
      new Secret('pa"ss\\word-42')
      registerBasicCredentials('alice', 'pa"ss\\word-42')
      const path = join(work, 'receipt.jsonl')
      const receipt = await ReceiptWriter.create(path, {format: RECEIPT_FORMAT, version: 1, target: {server: 'http://127.0.0.1:1', name: 't', version: '1.10.1'}, createdAt: new Date(0).toISOString()})
      const basic = Buffer.from('alice:pa"ss\\word-42').toString('base64')
      await receipt.write({id: 'i1', status: 'failed', md5: '', reason: `HTTP 400 (echo: pa"ss\\word-42, Authorization: Basic ${basic})`})
      await receipt.close()
      const text = await readFile(path, 'utf8')
      expect(text).toContain('[redacted]')
      expect(text).not.toContain('word-42')
      expect(text).not.toContain(basic)
    } finally {
      await rm(work, {recursive: true, force: true})
    }
  })
})
