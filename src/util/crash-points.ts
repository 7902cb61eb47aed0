/**
 * Named places where a test can make the process die as a power cut would (SIGKILL: no
 * cleanup, no flush), to prove that every state the disk can be left in is one the next run
 * resumes from. `ORTHANC_REPLICATE_CRASH_AT=export:volume-renamed` dies the first time that
 * point is reached; `...#3` the third time. Unset, each call costs one comparison.
 */
export const CRASH_POINTS = [
  // export
  'export:plan-saved',
  'export:entry-written',
  'export:volume-closed',
  'export:volume-synced',
  'export:volume-renamed',
  // storing an instance on a target (import, sync, --follow)
  'store:uploaded',
  'store:side-data-restored',
  // sync --checksum replacing an instance that differs: its copy deleted, the source's not stored yet
  'replace:deleted',
  // import
  'import:receipt-written',
  // --follow
  'follow:pass-done',
  'follow:state-saved',
  // files written durably (plan, state, receipts)
  'file:temporary-written',
  'file:renamed',
] as const

export type CrashPoint = (typeof CRASH_POINTS)[number]

const wanted = parse(process.env.ORTHANC_REPLICATE_CRASH_AT)
let reached = 0

function parse(value: string | undefined): {point: string; time: number} | undefined {
  if (!value) return undefined
  const [point, time] = value.split('#')
  return {point: point!, time: Number(time ?? 1)}
}

export function crashPoint(point: CrashPoint): void {
  if (wanted?.point !== point) return
  reached++
  if (reached === wanted.time) process.kill(process.pid, 'SIGKILL')
}
