// Loaded with `node --import` by tests that ask which modules a command loads: every module
// that goes through the ESM loader (ES modules, and CommonJS packages imported from them) is
// appended, as a URL, to the file named by RECORD_MODULES_TO.
import {register} from 'node:module'

register('./module-recorder-hooks.mjs', import.meta.url)
