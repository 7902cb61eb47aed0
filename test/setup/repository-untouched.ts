import {execFileSync} from 'node:child_process'
import {fileURLToPath} from 'node:url'

const repository = fileURLToPath(new URL('../..', import.meta.url))

/**
 * Tests run the commands in the repository folder unless told otherwise, so a command that
 * writes beside itself (a --follow state file once did) would leave patient data or state in a
 * checkout. The whole run fails if any file appeared or changed there, ignored ones included
 * (.gitignore names the kinds of file such a slip leaves, which is how the last one hid).
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

/**
 * `git status` lines, ignored files included (an ignored folder such as dist/ is one line, so
 * the build's output does not count), or undefined outside a git checkout.
 */
function status(): Set<string> | undefined {
  try {
    const output = execFileSync('git', ['status', '--porcelain', '--untracked-files=normal', '--ignored=traditional'], {cwd: repository, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore']})
    return new Set(output.split('\n').filter(Boolean))
  } catch {
    return undefined
  }
}
