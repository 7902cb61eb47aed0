#!/usr/bin/env node
// Signals are caught before anything else loads (loading oclif and the commands takes a few
// hundred milliseconds): a Ctrl-C or SIGTERM at any moment ends with exit code 130 and the
// command's own summary. Only these small modules are imported statically, so they are in place first.
import {installInterruptHandlers} from '../dist/cli/interrupt.js'
import {guardOutputs} from '../dist/cli/redact.js'
import {tuneV8ForCommandLine} from '../dist/cli/v8-flags.js'

// Before anything compiles what they concern (undici's parser, the commands' code): see v8-flags.ts.
tuneV8ForCommandLine()
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
