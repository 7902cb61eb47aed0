/** The exit codes of every command; the README's table is written from this list (scripts/exit-code-table.ts). */
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
  localFiles: 16,
  interrupted: 130,
} as const

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode]

/** What each exit code means, for people: the README's table. */
export const EXIT_CODE_MEANINGS: Record<ExitCodeValue, string> = {
  0: 'success: everything the command was asked to do holds',
  1: 'unexpected error (a bug: please report it, with `DEBUG=1` output)',
  2: 'bad usage: unknown flag, bad value, unreadable credentials or key file, unusable output or receipt path, folder holding another export, or an export folder, mirror state file or receipt another run is using, or a replacement journal that cannot be written or read, or a target that keeps no DICOM files (StoreDicom false), or an encrypted export resumed with other keys',
  3: 'the server URL is not a usable http(s) URL',
  4: 'the server (or the PostgreSQL database being recovered) cannot be reached (refused connection, unknown host), or went away and stayed away',
  5: 'the server (or the PostgreSQL database) refused the credentials (401, or 403 before anything was accepted)',
  6: 'something answers at the URL, but it is not Orthanc',
  7: 'the server did not answer in time (`--timeout`)',
  8: 'TLS handshake failed (unknown CA, wrong host name, client certificate refused)',
  9: 'the server answered with an error that retries did not clear',
  10: 'partial failure: some instances failed (they are listed; for instance a recovered server\'s stored file is missing or damaged); the others were transferred. Also `diff` and `sync --checksum` when instances on both servers could not be compared (a server records no MD5s: StoreMD5ForAttachments off)',
  11: 'bad input: corrupt, truncated, hostile, unproven or missing archive entries or volumes (listed); an encrypted volume no key given opens; an index of a schema this tool does not know; the state of an export found damaged',
  12: 'the filters matched no instance (`export`; `sync` and `diff` also print their summary)',
  13: 'not enough disk space (checked before starting, or the disk filled up; also a spool for an archive read from a pipe), or a file larger than its filesystem takes (FAT32: 4 GiB) or `ulimit -f` allows',
  14: 'the servers differ (`diff`), or the archive is whole but the target does not hold all of it (`verify --target`), or `sync --delete` refused to delete (`--max-delete-fraction`, an empty source): the target keeps what the source no longer has',
  15: 'the output was closed by its reader (`export -o - | head`): what was written there is incomplete',
  16: 'this machine\'s files failed the run: a drive removed or failing (EIO, a folder gone), a file or folder that is not what it was, too many open files; the message names the file',
  130: 'interrupted (SIGINT/SIGTERM, `--follow` included); run the same command again to resume',
}

/** The README's exit-code table, as Markdown. */
export function exitCodeTable(): string {
  const rows = Object.entries(EXIT_CODE_MEANINGS).map(([code, meaning]) => `| ${code} | ${meaning} |`)
  return ['| code | meaning |', '|---|---|', ...rows].join('\n')
}
