import {execFileSync} from 'node:child_process'
import {fileURLToPath} from 'node:url'

const repository = fileURLToPath(new URL('../..', import.meta.url))

/**
 * Tests run the commands in the repository folder unless told otherwise, so a command that
 * writes beside itself (a --follow state file once did) would leave patient data or state in a
 * checkout. The whole run fails if any file appeared or changed there that git does not ignore.
 */
export default function setup(): (() => void) | undefined {
  const before = status()
  if (before === undefined) return undefined
  return () => {
    const after = status()
    if (after === undefined) return
    const appeared = [...after].filter((line) => !before.has(line))
    if (appeared.length > 0) {
      throw new Error(`the test run left files in the repository (write them into a temporary folder instead):\n${appeared.join('\n')}`)
    }
  }
}

/** `git status` lines, or undefined outside a git checkout (a packed copy of the sources). */
function status(): Set<string> | undefined {
  try {
    const output = execFileSync('git', ['status', '--porcelain', '--untracked-files=all'], {cwd: repository, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore']})
    return new Set(output.split('\n').filter(Boolean))
  } catch {
    return undefined
  }
}
