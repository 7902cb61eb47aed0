/**
 * What bin/run.js takes from oclif, as an entry of the bundled command line (scripts/bundle-cli.js):
 * the commands share this one copy of oclif with it.
 */
export {execute, settings} from '@oclif/core'
