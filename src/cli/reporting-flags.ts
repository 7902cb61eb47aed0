import {Flags} from '@oclif/core'

import {durationFlag} from './flag-types.js'

/**
 * How a long command talks while it runs, on stderr and in a log file; the result itself goes to
 * stdout whatever these say. Shared by export, import, sync, verify and diff.
 */
export const reportingFlags = {
  progress: Flags.boolean({
    description: 'show progress on stderr: phase, counts, bytes, rate and ETA (default: on when stderr is a terminal, off with --json)',
    allowNo: true,
    helpGroup: 'OUTPUT',
  }),
  stats: durationFlag({
    description: 'print a one-line status on stderr every INTERVAL (30s, 5m): plain text, or JSON lines with --json; for cron and systemd',
    helpValue: 'INTERVAL',
    min: 1000,
    helpGroup: 'OUTPUT',
  }),
  quiet: Flags.boolean({char: 'q', description: 'nothing on stderr but warnings and errors: no progress, plan or hints (the result still goes to stdout)', exclusive: ['verbose'], helpGroup: 'OUTPUT'}),
  verbose: Flags.boolean({char: 'v', description: 'also print each failure and each retry on stderr as it happens', helpGroup: 'OUTPUT'}),
  'log-file': Flags.string({
    description: 'append JSON lines of what happens (start, plan, each failure and retry, end) to FILE, created private (0600); never a password or patient data',
    helpValue: 'FILE',
    helpGroup: 'OUTPUT',
  }),
}

export interface ReportingFlagValues {
  progress?: boolean
  stats?: number
  quiet?: boolean
  verbose?: boolean
  'log-file'?: string
}
