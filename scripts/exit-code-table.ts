// Writes the README's exit-code table from src/cli/exit-codes.ts, between its markers.
import {readFile, writeFile} from 'node:fs/promises'

import {exitCodeTable} from '../src/cli/exit-codes.js'

const readme = new URL('../README.md', import.meta.url)
const text = await readFile(readme, 'utf8')
const updated = text.replace(/<!-- exit-codes:begin -->[\s\S]*<!-- exit-codes:end -->/, `<!-- exit-codes:begin -->\n${exitCodeTable()}\n<!-- exit-codes:end -->`)
await writeFile(readme, updated)
console.log(updated === text ? 'README.md: the exit-code table was up to date' : 'README.md: exit-code table written')
