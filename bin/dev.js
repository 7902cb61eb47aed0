#!/usr/bin/env -S node --disable-warning=ExperimentalWarning
// Runs the CLI straight from the TypeScript sources (commands/, src/), without a build. oclif
// registers tsx for ES modules itself; the CommonJS hook lets it resolve commands/*.ts by path.
import {register} from 'tsx/cjs/api'
import {execute} from '@oclif/core'

register()
await execute({development: true, dir: import.meta.url})
