import {createReadStream} from 'node:fs'
import {stat} from 'node:fs/promises'

/**
 * The lines of a regular file, each at most `maxLineBytes`: a file the user names may be a FIFO
 * (which would block before any signal can stop it), a device (/dev/zero has no line end, and
 * a line reader would fill the memory) or a wrong file with one endless line. The error's `code`
 * says which (ENOTFILE, ELINETOOLONG), as a system error's would. Empty lines are passed over.
 */
export async function* boundedLines(path: string, maxLineBytes: number): AsyncGenerator<{line: string; number: number}> {
  if (!(await stat(path)).isFile()) throw Object.assign(new Error(`${path} is not a regular file`), {code: 'ENOTFILE: not a regular file'})
  let pending: Buffer[] = []
  let pendingBytes = 0
  let number = 0
  for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) {
    let start = 0
    for (let end = chunk.indexOf(0x0a); end !== -1; end = chunk.indexOf(0x0a, start)) {
      number++
      const line = Buffer.concat([...pending, chunk.subarray(start, end)]).toString('utf8').replace(/\r$/, '')
      pending = []
      pendingBytes = 0
      start = end + 1
      if (line.length > maxLineBytes) throw tooLong(path, number, maxLineBytes)
      if (line.trim()) yield {line, number}
    }

    pendingBytes += chunk.length - start
    if (pendingBytes > maxLineBytes) throw tooLong(path, number + 1, maxLineBytes)
    if (start < chunk.length) pending.push(chunk.subarray(start))
  }

  const last = Buffer.concat(pending).toString('utf8')
  if (last.trim()) yield {line: last, number: number + 1}
}

function tooLong(path: string, number: number, maxLineBytes: number): Error {
  return Object.assign(new Error(`${path}: line ${number} is longer than ${maxLineBytes} bytes`), {code: `ELINETOOLONG: line ${number} longer than ${maxLineBytes} bytes`})
}
