/** The exit codes of every command; the README's table is written from this list. */
export const ExitCode = {
  ok: 0,
  internal: 1,
  usage: 2,
  invalidUrl: 3,
  unreachable: 4,
  authentication: 5,
  notOrthanc: 6,
  timeout: 7,
  tls: 8,
  serverError: 9,
  partialFailure: 10,
  badInput: 11,
  nothingMatched: 12,
  noSpace: 13,
  different: 14,
  outputClosed: 15,
  interrupted: 130,
} as const

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode]
