/**
 * oclif's report of a bad flag or argument as one line, with its reason. oclif writes them over
 * several lines: "Parsing --shard \n\t<reason>\nSee more help with --help", or "The following
 * error occurred:\n  <reason>\n  <reason>...". The boilerplate goes; the reasons stay, joined.
 */
export function usageMessage(message: string): string {
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
