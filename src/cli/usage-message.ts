/**
 * oclif's report of a bad flag or argument as one line, with its reason. oclif writes them over
 * several lines: "Parsing --shard \n\t<reason>\nSee more help with --help", or "The following
 * error occurred:\n  <reason>\n  <reason>...". The boilerplate goes; the reasons stay, joined.
 */
export function usageMessage(message: string, unknownFlags?: unknown): string {
  // "Nonexistent flag: --passphrase=hunter2": oclif lists the words as given, values and all.
  if (Array.isArray(unknownFlags) && unknownFlags.length > 0) return `Nonexistent flag${unknownFlags.length === 1 ? '' : 's'}: ${unknownFlags.map((word) => flagName(String(word))).join(', ')}`
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
