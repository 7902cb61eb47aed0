import {spawnSync} from 'node:child_process'
import {writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {measureProcess} from './processes.js'

export const CURL_HINT = 'The ingest ceiling is measured with curl, which is missing: install it (Debian/Ubuntu: `apt-get install -y curl`).'

export function hasCurl(): boolean {
  return spawnSync('curl', ['--version'], {stdio: 'ignore'}).status === 0
}

export interface CeilingRun {
  wallMs: number
  cpuMs?: number
  /** TCP connections curl opened in all: one per stream when keep-alive works. */
  connections: number
}

function quoted(value: string): string {
  return `"${value.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`
}

/**
 * What Orthanc can ingest from a client that costs next to nothing: `streams` curl processes,
 * each sending its share of the files back to back over one kept-alive connection. Every
 * answer must be 200.
 */
export async function curlIngest(files: string[], targetUrl: string, scratch: string, streams = 4): Promise<CeilingRun> {
  const configs: string[] = []
  for (let stream = 0; stream < streams; stream++) {
    const share = files.filter((_, index) => index % streams === stream)
    if (share.length === 0) continue
    // A config file rather than arguments: thousands of files would overflow a command line.
    const blocks = share.map((file) => [
      `url = ${quoted(`${targetUrl}/instances`)}`,
      `data-binary = ${quoted(`@${file}`)}`,
      'header = "Content-Type: application/dicom"',
      // curl asks for 100-continue before bodies over 1 MB and waits a second for it: a cost no real client pays.
      'header = "Expect:"',
      'output = "/dev/null"',
      'write-out = "%{http_code} %{num_connects}\\n"',
    ].join('\n'))
    const path = join(scratch, `curl-${stream}.conf`)
    await writeFile(path, `silent\nshow-error\n${blocks.join('\nnext\n')}\n`)
    configs.push(path)
  }

  const started = performance.now()
  const runs = await Promise.all(configs.map((config) => measureProcess('curl', ['-K', config])))
  const wallMs = performance.now() - started
  let answers = 0
  let connections = 0
  for (const run of runs) {
    if (run.code !== 0) throw new Error(`curl exited with code ${run.code}: ${run.stderr.trim()}`)
    for (const line of run.stdout.trim().split('\n')) {
      const [status, connects] = line.split(' ')
      if (status !== '200') throw new Error(`curl upload answered HTTP ${status}`)
      answers++
      connections += Number(connects)
    }
  }

  if (answers !== files.length) throw new Error(`curl reported ${answers} answers for ${files.length} files`)
  const cpu = runs.map((run) => run.cpuMs)
  return {wallMs, cpuMs: cpu.every((value) => value !== undefined) ? cpu.reduce((sum, value) => sum + value!, 0) : undefined, connections}
}
