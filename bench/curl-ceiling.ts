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
  /** Files sent a second time after Orthanc's storage-folder race (HTTP 500). */
  resent: number
}

function quoted(value: string): string {
  return `"${value.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`
}

/**
 * What Orthanc can ingest from a client that costs next to nothing: `streams` curl processes,
 * each sending its share of the files back to back over one kept-alive connection. Every
 * answer must be 200, except the HTTP 500 Orthanc 1.10 gives now and then when two uploads
 * create the same storage folder at once (see src/orthanc/http.ts): any client has to send
 * those files again, so the ceiling does too, on the clock, and counts them.
 */
export async function curlIngest(files: string[], targetUrl: string, scratch: string, streams = 4): Promise<CeilingRun> {
  const started = performance.now()
  const first = await curlPass(files, targetUrl, scratch, streams, 'first')
  let cpuMs = first.cpuMs
  let failed = first.failed
  let resent = 0
  for (let pass = 1; failed.length > 0 && pass <= 3; pass++) {
    resent += failed.length
    const again = await curlPass(failed, targetUrl, scratch, 1, `again-${pass}`)
    cpuMs = cpuMs === undefined || again.cpuMs === undefined ? undefined : cpuMs + again.cpuMs
    failed = again.failed
  }

  if (failed.length > 0) throw new Error(`curl upload of ${failed[0]} answered HTTP 500 four times`)
  return {wallMs: performance.now() - started, cpuMs, connections: first.connections, resent}
}

async function curlPass(files: string[], targetUrl: string, scratch: string, streams: number, name: string): Promise<{cpuMs?: number; connections: number; failed: string[]}> {
  const shares: string[][] = []
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
    const path = join(scratch, `curl-${name}-${stream}.conf`)
    await writeFile(path, `silent\nshow-error\n${blocks.join('\nnext\n')}\n`)
    shares.push(share)
    configs.push(path)
  }

  const runs = await Promise.all(configs.map((config) => measureProcess('curl', ['-K', config])))
  const failed: string[] = []
  let connections = 0
  for (const [index, run] of runs.entries()) {
    if (run.code !== 0) throw new Error(`curl exited with code ${run.code}: ${run.stderr.trim()}`)
    const share = shares[index]!
    const lines = run.stdout.trim().split('\n')
    if (lines.length !== share.length) throw new Error(`curl reported ${lines.length} answers for ${share.length} files`)
    for (const [line, file] of lines.map((text, at) => [text, share[at]!] as const)) {
      const [status, connects] = line.split(' ')
      if (status === '500') failed.push(file)
      else if (status !== '200') throw new Error(`curl upload of ${file} answered HTTP ${status}`)
      connections += Number(connects)
    }
  }

  const cpu = runs.map((run) => run.cpuMs)
  return {cpuMs: cpu.every((value) => value !== undefined) ? cpu.reduce((sum, value) => sum + value!, 0) : undefined, connections, failed}
}
