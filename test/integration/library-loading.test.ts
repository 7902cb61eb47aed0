import {execFileSync} from 'node:child_process'
import {fileURLToPath} from 'node:url'

import {describe, expect, it} from 'vitest'

describe('the library API', () => {
  it('loads none of the command line: no oclif, no flag parsing', () => {
    // In a fresh process, as a program that imports the package would: which files did it load?
    const built = fileURLToPath(new URL('../../dist/src/index.js', import.meta.url))
    const loaded = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e',
      `import(${JSON.stringify(built)}).then(async () => { const {createRequire} = await import('node:module'); console.log(JSON.stringify(Object.keys(createRequire(${JSON.stringify(built)}).cache))) })`,
    ], {encoding: 'utf8'})) as string[]
    expect(loaded.length).toBeGreaterThan(0)
    expect(loaded.filter((file) => file.includes('/node_modules/@oclif/'))).toEqual([])
  })
})
