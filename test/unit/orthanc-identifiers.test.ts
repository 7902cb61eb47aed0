import {describe, expect, it} from 'vitest'

import {orthancCharset} from '../../src/dicom/charset.js'
import {orthancIdentifierValue} from '../../src/dicom/orthanc-id.js'

// Each expectation is what Orthanc 1.10.1 stored and hashed for such a value (its /patients and
// /studies answers); test/integration/recovery-ids.test.ts checks them against the server itself.
const value = (bytes: string | number[], vr: string | undefined, dictionaryVr: 'LO' | 'UI' = 'LO', characterSet?: string) =>
  orthancIdentifierValue(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : Buffer.from(bytes), vr, dictionaryVr, orthancCharset(characterSet === undefined ? undefined : Buffer.from(characterSet, 'latin1')))

describe('identifier values as Orthanc reads them', () => {
  it('text: trailing spaces go, then the value ends at its first NUL', () => {
    expect(value('ABC   ', 'LO')).toBe('ABC')
    expect(value('ABC\0\0\0', 'LO')).toBe('ABC')
    expect(value('ABC\0 ', 'LO')).toBe('ABC')
    expect(value('ABC \0', 'LO')).toBe('ABC ')
    expect(value('A\0BC ', 'LO')).toBe('A')
    expect(value('    ', 'LO')).toBe('')
  })

  it('text: leading spaces, tabs and the backslash between values stay', () => {
    expect(value('  ABC ', 'LO')).toBe('  ABC')
    expect(value('\tABC\t ', 'LO')).toBe('\tABC\t')
    expect(value(' A \\ B ', 'LO')).toBe(' A \\ B')
    expect(value('  ABC   ', undefined)).toBe('  ABC')
  })

  it('UI: every white-space character goes, wherever it is', () => {
    expect(value(' 1.2 .3\t ', 'UI', 'UI')).toBe('1.2.3')
    expect(value('1.2.3\0\0\0', 'UI', 'UI')).toBe('1.2.3')
    expect(value('1.2\0.3', 'UI', 'UI')).toBe('1.2')
    expect(value(' 1.2.3', undefined, 'UI')).toBe('1.2.3')
    expect(value(' 1.2.3 ', 'LO', 'UI')).toBe(' 1.2.3')
  })

  it('UN: bytes as they are, but for one trailing NUL', () => {
    expect(value('ABC ', 'UN')).toBe('ABC ')
    expect(value('ABC\0', 'UN')).toBe('ABC')
    expect(value('AB\0\0', 'UN')).toBe('AB\0')
    expect(value('  ABC ', 'UN')).toBe('  ABC ')
    expect(value(' 1.2.3 ', 'UN', 'UI')).toBe(' 1.2.3 ')
  })

  it('character sets: Latin-1 by default, the first value decides, unknown ones keep ASCII only', () => {
    expect(value('Gómez', 'LO')).toBe('Gómez')
    expect(value(Buffer.from('Gómez', 'utf8').toJSON().data, 'LO')).toBe('GÃ³mez')
    expect(value(Buffer.from('Gómez', 'utf8').toJSON().data, 'LO', 'LO', 'ISO_IR 192')).toBe('Gómez')
    expect(value([0x41, 0xff, 0x42, 0x43], 'LO', 'LO', 'ISO_IR 192')).toBe('ABC')
    expect(value([0xbf, 0xd5, 0xe2, 0xe0], 'LO', 'LO', 'ISO 2022 IR 144')).toBe('Петр')
    expect(value([0xd4, 0xcf, 0xc0, 0xde], 'LO', 'LO', 'ISO_IR 13')).toBe('ﾔﾏﾀﾞ')
    expect(value('A\\B~', 'LO', 'LO', 'ISO_IR 13')).toBe('A¥B‾')
    expect(value([0xd6, 0xd0, 0xce, 0xc4], 'LO', 'LO', 'GB18030')).toBe('中文')
    expect(value('Gómez', 'LO', 'LO', 'iso_ir 100')).toBe('Gómez')
    expect(value('Gómez', 'LO', 'LO', '\\ISO_IR 100')).toBe('Gómez')
    expect(value('\tAóB', 'LO', 'LO', 'ISO_IR 999')).toBe('AB')
    expect(value('Gómez', 'LO', 'LO', 'ISO_IR 6')).toBe('Gmez')
    // 1.10.1 does not forgive this spelling yet (1.12.1 does).
    expect(value('Gómez', 'LO', 'LO', 'ISO_IR_100')).toBe('Gmez')
    expect(value('Gómez ', 'UN', 'LO', 'ISO_IR 100')).toBe('Gómez ')
  })
})
