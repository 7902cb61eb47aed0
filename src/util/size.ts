const UNITS: Record<string, number> = {
  '': 1, b: 1,
  k: 1000, kb: 1000, kib: 1024,
  m: 1000 ** 2, mb: 1000 ** 2, mib: 1024 ** 2,
  g: 1000 ** 3, gb: 1000 ** 3, gib: 1024 ** 3,
  t: 1000 ** 4, tb: 1000 ** 4, tib: 1024 ** 4,
}

/** "4GiB", "700M", "1.5 GB", "65536" as a number of bytes; undefined if it is none of those. */
export function parseSize(text: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text)
  if (!match) return undefined
  const unit = UNITS[match[2]!.toLowerCase()]
  if (unit === undefined) return undefined
  return Math.floor(Number(match[1]) * unit)
}
