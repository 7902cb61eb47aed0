import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

/**
 * The commands keep a journal of replacements in the user's state folder ($XDG_STATE_HOME): for
 * the whole run it is a temporary folder, so that no test writes into the home of whoever runs
 * the suite. Set before the workers start, which inherit it, as the commands they start do.
 */
export default function setup(): () => void {
  const stateHome = mkdtempSync(join(tmpdir(), 'orthanc-replicate-state-home-'))
  process.env.XDG_STATE_HOME = stateHome
  return () => rmSync(stateHome, {recursive: true, force: true})
}
