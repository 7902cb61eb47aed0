/**
 * oclif's report of a bad flag or argument as one line, with its reason. oclif writes them over
 * several lines: "Parsing --shard \n\t<reason>\nSee more help with --help", or "The following
 * error occurred:\n  <reason>\n  <reason>...". The boilerplate goes; the reasons stay, joined.
 */
export function usageMessage(message: string, unknownFlags?: unknown, unexpected?: {args: unknown; argv: string[]}): string {
  // "Nonexistent flag: --passphrase=hunter2": oclif lists the words as given, values and all.
  if (Array.isArray(unknownFlags) && unknownFlags.length > 0) return `Nonexistent flag${unknownFlags.length === 1 ? '' : 's'}: ${unknownFlags.map((word) => flagName(String(word))).join(', ')}`
  // "Unexpected argument: hunter2": a secret given after a flag that takes none (`--json hunter2`),
  // or one that does not exist. Said by where it stands, never by what it is.
  if (unexpected && Array.isArray(unexpected.args) && unexpected.args.length > 0) return unexpectedArguments(unexpected.args.map(String), unexpected.argv)
  if (/^Nonexistent flags?: /.test(message)) return message.replace(/\n[\s\S]*$/, '').replace(/(--[^=\s,]+|-[^-=\s,])[^,]*/g, '$1')
  const lines = message.split('\n').map((line) => line.trim().replace(/^Error:\s*/, '')).filter(Boolean)
    .filter((line) => !/^See more help with --help$/.test(line) && !/^The following errors? occurred:?$/.test(line))
  const parsing = /^Parsing (--\S+)$/.exec(lines[0] ?? '')
  if (parsing && lines.length > 1) return `${parsing[1]}: ${lines.slice(1).join('; ')}`
  // "Missing 1 required arg:\npath  its description\nNote: ...": the argument after its colon, then the notes as sentences.
  if (/^Missing \d+ required args?:$/.test(lines[0] ?? '') && lines.length > 1) {
    const missing = lines.slice(1).filter((line) => !/^(Note:|Alternatively,)/.test(line)).map((line) => line.replace(/^(\S+)\s{2,}(.+)$/, '$1 ($2)'))
    const notes = lines.slice(1).filter((line) => /^(Note:|Alternatively,)/.test(line))
    return [`${lines[0]} ${missing.join(', ')}.`, ...notes].join(' ')
  }

  return lines.join('; ')
}

/** A flag as given, without its value: a long flag's after '=', a short flag's after its letter (`-phunter2`). */
function flagName(word: string): string {
  if (word.startsWith('--')) return word.split('=')[0]!
  if (/^-[^-]/.test(word)) return word.slice(0, 2)
  return word
}

/**
 * Where each unexpected word stands on the command line: after the flag or word before it, by
 * name (a flag's) or by place (an argument's), as "after --json" or "the 3rd word".
 */
function unexpectedArguments(args: string[], argv: string[]): string {
  const used = new Set<number>()
  const places = args.map((arg) => {
    const index = argv.findIndex((word, at) => word === arg && !used.has(at))
    if (index < 0) return 'one word'
    used.add(index)
    const before = argv[index - 1]
    return before !== undefined && /^--?[a-z]/i.test(before) ? `the word after ${flagName(before)}` : `the ${ordinal(index + 1)} word after the command's name`
  })
  return `Unexpected argument${args.length === 1 ? '' : 's'} (not shown: it may be a secret): ${places.join(', ')}. A flag that takes no value, or that does not exist, was given one; or there is an argument too many`
}

function ordinal(n: number): string {
  const tens = n % 100
  const suffix = tens >= 11 && tens <= 13 ? 'th' : ({1: 'st', 2: 'nd', 3: 'rd'} as Record<number, string>)[n % 10] ?? 'th'
  return `${n}${suffix}`
}
