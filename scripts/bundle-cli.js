// Bundles the command line after `tsc`: each command (dist/commands/*.js, which oclif loads) and
// the modules bin/run.js loads itself become a few files with the code they share in chunks
// (dist/chunks). Node then resolves and reads tens of files at start instead of hundreds (oclif
// alone is about 500), which was most of what a command cost before its first request: a sync
// that fails at once took 0.43 instead of 0.59 s of CPU on the machine measured. The library
// (dist/src) is not bundled.
import {readdir, rm} from 'node:fs/promises'
import {fileURLToPath, URL} from 'node:url'

import {build} from 'esbuild'

const root = new URL('..', import.meta.url)
const commands = (await readdir(new URL('commands/', root))).filter((file) => file.endsWith('.ts'))
await rm(new URL('dist/chunks/', root), {recursive: true, force: true})
const result = await build({
  absWorkingDir: fileURLToPath(root),
  entryPoints: [
    ...commands.map((file) => ({in: `commands/${file}`, out: `commands/${file.replace(/\.ts$/, '')}`})),
    // bin/run.js imports these: the same modules as the commands', not copies of them.
    {in: 'src/cli/interrupt.ts', out: 'cli/interrupt'},
    {in: 'src/util/redact.ts', out: 'cli/redact'},
    {in: 'src/cli/v8-flags.ts', out: 'cli/v8-flags'},
    {in: 'src/cli/oclif.ts', out: 'cli/oclif'},
    // Loaded by oclif from package.json's hooks.
    {in: 'src/cli/not-found.ts', out: 'cli/not-found'},
  ],
  outdir: 'dist',
  chunkNames: 'chunks/[name]-[hash]',
  // tsc wrote dist/commands/*.js first (with their type declarations); these replace them.
  allowOverwrite: true,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  // Kept as packages: age-encryption is loaded only when a command meets encryption, the
  // PostgreSQL and SQLite readers only for a recovery (node-sqlite3-wasm reads its .wasm file
  // beside its code), and oclif asks for typescript only in development.
  external: ['age-encryption', 'node-sqlite3-wasm', 'pg', 'typescript', 'undici'],
  // oclif and some of its dependencies are CommonJS and call require().
  banner: {js: "import {createRequire as __bundleRequire} from 'node:module'; const require = __bundleRequire(import.meta.url);"},
  logLevel: 'warning',
  metafile: true,
})
// tsc's source maps describe the files these replaced.
await Promise.all(commands.map((file) => rm(new URL(`dist/commands/${file.replace(/\.ts$/, '.js.map')}`, root), {force: true})))
const outputs = Object.keys(result.metafile.outputs)
console.log(`bundled the command line: ${outputs.length} files (${outputs.filter((file) => file.startsWith('dist/chunks/')).length} shared chunks)`)
