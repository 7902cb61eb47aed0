import {spawn} from 'node:child_process'

import {repoRoot} from './cli.js'

export interface TerminalRun {
  code: number
  /** Everything the terminal showed (stdout and stderr together, as a person sees them), colours removed. */
  screen: string
}

/** Removes colours and cursor movements: what remains is the text a terminal showed. */
export function plainText(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\u001B\[[0-9;?]*[A-Za-z]/g, '')
}

const quote = (word: string) => `'${word.replace(/'/g, `'\\''`)}'`

/**
 * Runs the built CLI in a real pseudo-terminal (util-linux script(1)), as a person at a
 * terminal would: stdout and stderr are the terminal, so progress is drawn. `input` is typed.
 */
export function runInTerminal(args: string[], options: {input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string} = {}): Promise<TerminalRun> {
  const command = [process.execPath, `${repoRoot}/bin/run.js`, ...args].map(quote).join(' ')
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qfec', command, '/dev/null'], {env: {...process.env, ...options.env}, cwd: options.cwd ?? repoRoot, stdio: ['pipe', 'pipe', 'pipe']})
    const output: Buffer[] = []
    child.stdout.on('data', (chunk: Buffer) => output.push(chunk))
    child.stderr.on('data', (chunk: Buffer) => output.push(chunk))
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({code: code ?? 1, screen: plainText(Buffer.concat(output).toString('utf8'))})
    })
    child.stdin.on('error', () => {})
    if (options.input !== undefined) child.stdin.write(options.input)
  })
}
