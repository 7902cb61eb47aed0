import {inspect} from 'node:util'

import {registerSecret} from './redact.js'

/**
 * A credential that cannot leak by accident: printing, logging, JSON.stringify and
 * util.inspect all show a placeholder. Only `reveal()` gives the value, at the one place
 * that builds the Authorization header.
 */
export class Secret {
  readonly #value: string

  constructor(value: string) {
    this.#value = value
    // Known to the output guard from now on: no message can print it, even by accident.
    registerSecret(value)
  }

  reveal(): string {
    return this.#value
  }

  toString(): string {
    return '[redacted]'
  }

  toJSON(): string {
    return '[redacted]'
  }

  [inspect.custom](): string {
    return '[redacted]'
  }
}
