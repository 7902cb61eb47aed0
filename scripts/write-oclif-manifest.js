// Writes oclif.manifest.json after a build. With it, oclif reads every command's flags and
// description from one file instead of importing all command modules at each start: start-up
// takes about half the time. The build writes it again every time, so it never goes stale.
import {rm, writeFile} from 'node:fs/promises'
import {fileURLToPath, URL} from 'node:url'

import {Config} from '@oclif/core'

const root = fileURLToPath(new URL('..', import.meta.url))
// oclif reads the previous build's manifest back even with ignoreManifest (checked with
// @oclif/core 4.9: a changed flag stayed out of the manifest, and out of --help), so it goes first.
await rm(new URL('../oclif.manifest.json', import.meta.url), {force: true})
const config = await Config.load({root, ignoreManifest: true})
const {manifest} = config.rootPlugin
await writeFile(new URL('../oclif.manifest.json', import.meta.url), `${JSON.stringify(manifest, null, 1)}\n`)
console.log(`oclif.manifest.json: ${Object.keys(manifest.commands).length} commands`)
