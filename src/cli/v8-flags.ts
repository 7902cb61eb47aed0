import {setFlagsFromString} from 'node:v8'

/**
 * V8 settings for a command that runs for seconds or minutes in a new process, set by bin/run.js
 * before oclif and the commands load (only its two small guard modules come first). The bench runs its new-process floors with the same settings, so
 * that the tool and a minimal copier are compared on the same Node.
 *
 * - No WebAssembly tier-up. undici parses HTTP with llhttp compiled to WebAssembly; after 10 to
 *   50 requests V8 compiled its parser again with TurboFan, on a background thread: 230-300 ms of
 *   CPU, and a command that ended sooner waited for it before it could exit (an empty sync: 0.76 s
 *   instead of 0.56). The baseline (Liftoff) code parses fast enough: no difference in CPU over
 *   8,000 downloads of 130 kB (and SQLite's WebAssembly, for a recovery, took less CPU without it).
 *   Set before undici compiles the parser, at the first connection.
 * - Eight times V8's interrupt budget (66 KiB of bytecode by default), so that JavaScript warm
 *   for only a few seconds is not compiled by TurboFan: those compiles cost more CPU than they
 *   saved. A sync of 400 instances across 10 ms of round trip took 1.74 CPU-s, 1.46 with this
 *   budget and 1.45 with no TurboFan at all (4 alternating runs each); over an export of 15,000
 *   instances (9 CPU-s) no TurboFan cost 52 % more CPU, this budget nothing beyond noise. What
 *   stays hot is still optimized, a little later.
 */
export const COMMAND_LINE_V8_FLAGS = ['--no-wasm-dynamic-tiering', '--no-wasm-tier-up', `--interrupt-budget=${8 * 66 * 1024}`]

/** Applies COMMAND_LINE_V8_FLAGS to this process: first thing, before the code they concern loads. */
export function tuneV8ForCommandLine(): void {
  for (const flag of COMMAND_LINE_V8_FLAGS) setFlagsFromString(flag)
}
