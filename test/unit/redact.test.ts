import {describe, expect, it} from 'vitest'

import {redactSecrets} from '../../src/util/redact.js'

describe('credentials in text', () => {
  it('masks user:password@ with or without a scheme, and keeps a URL that names a user alone', () => {
    expect(redactSecrets('http://alice:s3cret@pacs:8042/x')).toBe('http://pacs:8042/x')
    expect(redactSecrets('see alice:s3cret@pacs:8042')).toBe('see pacs:8042')
    // A user with no password is no secret: the database a recovery read stays named as it was given.
    expect(redactSecrets('"source": "postgresql://recovery_reader@127.0.0.1:5432/dead_db"')).toBe('"source": "postgresql://recovery_reader@127.0.0.1:5432/dead_db"')
  })
})
