#!/usr/bin/env node
// Signals are caught before anything else loads (loading oclif and the commands takes a few
// hundred milliseconds): a Ctrl-C or SIGTERM at any moment ends with exit code 130 and the
// command's own summary. Only these small modules are imported statically, so they are in place first.
import {setFlagsFromString} from 'node:v8'

import {installInterruptHandlers} from '../dist/cli/interrupt.js'
import {guardOutputs} from '../dist/cli/redact.js'

// undici parses HTTP with llhttp compiled to WebAssembly. After 10 to 50 requests V8 compiles its
// parser again with TurboFan, on a background thread: 230-300 ms of CPU, and a command that ends
// sooner waits for it before it can exit (an empty sync: 0.76 s instead of 0.56). The baseline
// (Liftoff) code parses headers fast enough: no difference in CPU measured over 8,000 downloads of
// 130 kB (and SQLite's WebAssembly, for a recovery, took less CPU without it). Set before undici
// compiles the parser, at the first connection.
setFlagsFromString('--no-wasm-dynamic-tiering')
setFlagsFromString('--no-wasm-tier-up')
// The same holds for JavaScript, in part: V8 spent CPU compiling with TurboFan functions that stay
// warm only for a command of seconds. Sync of 400 instances at 10 ms round trip: 1.74 CPU-s, 1.48
// with 8 times the interrupt budget, 1.45 with no TurboFan at all. A larger budget rather than none:
// over an export of 15,000 instances (9 s of CPU) no TurboFan cost 52 % more CPU, the larger budget
// nothing beyond noise. What stays hot is still optimized, a little later.
setFlagsFromString(`--interrupt-budget=${8 * 66 * 1024}`)

installInterruptHandlers()
// Passwords given in URLs are hidden from the command line others can read (ps) and from every
// text this process writes, before anything else can print.
guardOutputs()

// If the event loop runs dry while the command still waits for something (a promise nothing will
// ever settle: a bug), Node exits with code 13, silently, and 13 is this tool's "disk full". Say
// what happened instead, as the bug it is.
let finished = false
process.on('exit', (code) => {
  // 13 without the command having finished is Node's own exit code for a top-level await left pending.
  if (finished || code !== 13) return
  process.stderr.write('Error: orthanc-replicate stopped waiting for an operation that never ended (a bug in orthanc-replicate).\n  Run again with DEBUG=1 and report it.\n')
  process.exitCode = 1
})

const {execute, settings} = await import('../dist/cli/oclif.js')
// The built CLI runs what `npm run build` compiled, whatever NODE_ENV says; bin/dev.js runs the sources.
settings.enableAutoTranspile = false
try {
  await execute({dir: import.meta.url})
} finally {
  finished = true
}
