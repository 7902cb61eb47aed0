import {describe, expect, it} from 'vitest'

import {parseStrictJson} from '../../src/archive/strict-json.js'

const anything = () => {}

describe('an archive file that is not JSON', () => {
  it('is said without quoting its text: no control character, no patient\'s name reaches a message', () => {
    const result = parseStrictJson(Buffer.from('{"note": \u001b[2J DOE^JOHN}'), anything)
    expect(result).toEqual({violations: ['is not JSON: Unexpected character: not valid JSON']})
  })

  it('keeps the position where the parser gives one', () => {
    expect(parseStrictJson(Buffer.from('{"a":1'), anything)).toEqual({violations: ['is not JSON: Expected \',\' or \'}\' after property value in JSON at position 6']})
  })
})
