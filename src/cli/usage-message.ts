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
  return lines.join('; ')
}
