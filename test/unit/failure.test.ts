import {constants} from 'node:os'

import {describe, expect, it} from 'vitest'

import {ExitCode} from '../../src/cli/exit-codes.js'
import {describeFailure} from '../../src/cli/failure.js'

/** A system error as Node makes them (fs.open, write...), with or without a path. */
function systemError(code: string, syscall: string, path?: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: failed, ${syscall}${path ? ` '${path}'` : ''}`), {code, syscall, errno: -1, ...(path ? {path} : {})})
}

describe('failures of this machine\'s files', () => {
  it('no error code of the system, on any file operation, is said as a bug: each names the file and the way out', () => {
    for (const code of Object.keys(constants.errno)) {
      for (const syscall of ['open', 'write', 'rename', 'mkdir', 'scandir']) {
        const failure = describeFailure(systemError(code, syscall, '/media/usb/export/volume-001.tar'))
        expect(failure.exitCode, `${code} on ${syscall}`).not.toBe(ExitCode.internal)
        expect(failure.message, `${code} on ${syscall}`).toContain('/media/usb/export/volume-001.tar')
        expect(failure.suggestion).not.toMatch(/bug/)
      }
    }
  })

  it('a write on an open file names no path: codes only files give are still the files\' failure', () => {
    expect(describeFailure(systemError('EIO', 'write'))).toMatchObject({exitCode: ExitCode.localFiles, code: 'local-files', message: 'cannot write: EIO: failed, write'})
    expect(describeFailure(systemError('EFBIG', 'write'))).toMatchObject({exitCode: ExitCode.noSpace, code: 'file-too-large'})
    expect(describeFailure(systemError('EMFILE', 'open'))).toMatchObject({exitCode: ExitCode.localFiles, suggestion: expect.stringMatching(/ulimit -n/)})
  })

  it('a network error that reached this far without a server to name stays what it is: not taken for a file\'s', () => {
    expect(describeFailure(systemError('ECONNRESET', 'read')).exitCode).not.toBe(ExitCode.localFiles)
  })
})
