import {readFile} from 'node:fs/promises'

import {describe, expect, it} from 'vitest'

import {ExitCode, EXIT_CODE_MEANINGS, exitCodeTable} from '../../src/cli/exit-codes.js'

describe('exit codes', () => {
  it('every code has a meaning, and the README\'s table is the one written from them', async () => {
    expect(Object.keys(EXIT_CODE_MEANINGS).map(Number).sort((a, b) => a - b)).toEqual(Object.values(ExitCode).sort((a, b) => a - b))
    const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8')
    const table = /<!-- exit-codes:begin -->\n([\s\S]*)\n<!-- exit-codes:end -->/.exec(readme)?.[1]
    expect(table, 'run: node --import tsx scripts/exit-code-table.ts').toBe(exitCodeTable())
  })
})
