import {createInterface} from 'node:readline/promises'

import {type Hook, toConfiguredId} from '@oclif/core'

import {ExitCode} from './exit-codes.js'

/** The longest word named back as a mistyped command; anything else typed is not repeated. */
const COMMAND_WORD = /^[a-z][a-z0-9-]{0,39}$/i
/** The flags that name servers, said in place of URLs given as arguments. */
const SERVER_FLAGS = ['source', 'target', 'server']
/** How long a terminal is asked whether the nearest command was meant. */
const ASK_MS = 10_000

/**
 * What a command line that names no command gets. oclif joins the words before the first flag
 * into a command ID, so `sync http://user:password@pacs:8042` (servers given as arguments, as to
 * Orthanc's Replicate.py) arrives here whole; oclif's own not-found plugin printed it back, with
 * its ':' turned to spaces and wrapped at the terminal's width, where no masking of the password
 * could find it. This hook names back only the first word, and only when it is a plain word: it
 * says what the command takes instead, or offers the nearest command (on a terminal, it asks).
 * Used as a plugin of another command line, it leaves the matter to that command line.
 */
const commandNotFound: Hook<'command_not_found'> = async function (options) {
  if (options.config.bin !== 'orthanc-replicate') return
  const [first = ''] = options.id.split(':')
  const commands = options.config.commandIDs.filter((id) => !options.config.findCommand(id)?.hidden)
  if (commands.includes(first)) {
    const serverFlags = Object.keys(options.config.findCommand(first)?.flags ?? {}).filter((name) => SERVER_FLAGS.includes(name)).map((name) => `--${name}`)
    const servers = serverFlags.length > 0 ? ` Servers are given with ${serverFlags.join(' and ')}.` : ''
    const message = `${first} takes no arguments here, only flags (what followed it is not repeated: it may hold a password).${servers}`
    const suggestion = `Run ${options.config.bin} ${first} --help.`
    // Under --json, the one JSON document on stdout that every other refusal gives.
    if (process.argv.includes('--json')) {
      process.stdout.write(`${JSON.stringify({error: {code: 'usage', message, suggestion, exitCode: ExitCode.usage}}, null, 2)}\n`)
      this.exit(ExitCode.usage)
    }

    this.error(`${message} ${suggestion}`, {exit: ExitCode.usage})
  }

  const named = COMMAND_WORD.test(first) ? first : 'That'
  this.warn(`${named} is not an ${options.config.bin} command.`)
  const nearest = COMMAND_WORD.test(first) ? closest(first, commands) : undefined
  if (nearest && process.stdin.isTTY === true && (await confirm(`Did you mean ${toConfiguredId(nearest, options.config)}? (Y/n) `))) {
    return this.config.runCommand(nearest, options.argv ?? [])
  }

  this.error(`Run ${options.config.bin} help for a list of available commands.`, {exit: 127})
}

export default commandNotFound

/** Yes unless the answer begins with n; no answer in ASK_MS is no. */
async function confirm(question: string): Promise<boolean> {
  const terminal = createInterface({input: process.stdin, output: process.stderr})
  try {
    const answer = await terminal.question(question, {signal: AbortSignal.timeout(ASK_MS)})
    return !/^\s*n/i.test(answer)
  } catch {
    return false
  } finally {
    terminal.close()
  }
}

/** The command nearest to `word` by edit distance. */
export function closest(word: string, commands: string[]): string | undefined {
  let best: {command: string; distance: number} | undefined
  for (const command of commands) {
    const distance = editDistance(word.toLowerCase(), command)
    if (!best || distance < best.distance) best = {command, distance}
  }

  return best?.command
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({length: b.length + 1}, (_, index) => index)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
    previous = current
  }

  return previous[b.length]!
}
