import {readdirSync} from 'node:fs'
import {join} from 'node:path'

import {describe, expect, it} from 'vitest'

import {redactSecrets} from '../../src/util/redact.js'

const commandsDir = join(import.meta.dirname, '../../commands')

/** Every piece of text a command's help prints: summary, description, examples, flag texts. */
async function usageTexts(file: string): Promise<string[]> {
  const {default: command} = await import(join(commandsDir, file))
  const texts: string[] = [command.summary ?? '', command.description ?? '', ...(command.examples ?? []).map(String)]
  for (const [name, flag] of Object.entries<{summary?: string; description?: string; helpValue?: string}>(command.flags ?? {})) {
    texts.push(`--${name}: ${flag.summary ?? ''} ${flag.description ?? ''} ${flag.helpValue ?? ''}`)
  }

  return texts
}

describe('usage text', () => {
  // Help passes through the redaction of secrets like every output; an example that looks like a
  // credential would reach the user cut ("credentials may be given as http://host:8042").
  it('no command help holds text that the redaction of secrets would alter', async () => {
    const files = readdirSync(commandsDir).filter((file) => file.endsWith('.ts'))
    expect(files.length).toBeGreaterThanOrEqual(6)
    for (const file of files) {
      for (const text of await usageTexts(file)) expect(redactSecrets(text), `${file}: ${text}`).toBe(text)
    }
  })
})
