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

/**
 * A byte count as a size a person would type, exactly: the largest unit it is a whole number
 * of (4227858432 is 4032MiB, 700000000 is 700MB), else bytes. parseSize reads it back.
 */
export function formatSize(bytes: number): string {
  for (const unit of ['TiB', 'TB', 'GiB', 'GB', 'MiB', 'MB', 'KiB', 'kB']) {
    const size = UNITS[unit.toLowerCase()]!
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`
  }

  return String(bytes)
}

const DURATION_UNITS: Record<string, number> = {'': 1000, ms: 1, s: 1000, sec: 1000, m: 60_000, min: 60_000, h: 3_600_000}

/** "30s", "5m", "1h", "250ms", "90" (seconds) as milliseconds; undefined if it is none of those. */
export function parseDuration(text: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text)
  const unit = match ? DURATION_UNITS[match[2]!.toLowerCase()] : undefined
  if (!match || unit === undefined) return undefined
  return Math.round(Number(match[1]) * unit)
}
