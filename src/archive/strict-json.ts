/**
 * A small, strict checker for the JSON files of an archive. Everything in an archive may have
 * been written by someone else, so every field is checked for its type and range before any
 * of it is used: a size that is a string, a content type below 1024, an ID that is a path, a
 * field nobody writes. Each violation is one sentence naming the field, in a bounded list.
 */

export type Check = (value: unknown, at: string, found: Violations) => void

/** Violations found in one file; only the first few are kept, the rest counted. */
export class Violations {
  readonly sentences: string[] = []
  count = 0

  constructor(private readonly limit = 20) {}

  add(at: string, problem: string): void {
    this.count++
    if (this.sentences.length < this.limit) this.sentences.push(`field ${at || '(the whole file)'} ${problem}`)
  }
}

function show(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  if (typeof value === 'object') return 'an object'
  if (typeof value === 'string') return `the string ${JSON.stringify(shortened(value))}`
  return `${typeof value} ${String(value)}`
}

/** At most 40 characters of an archive's text in a message: the rest is the archive's, not the message's. */
function shortened(value: string): string {
  return value.length > 40 ? `${value.slice(0, 40)}...` : value
}

/**
 * V8's parse errors quote the text around the fault ('Unexpected token 'x', "...text..." is not
 * valid JSON'), control characters and all: the quote is dropped, the position kept where given.
 */
function withoutQuotedText(message: string): string {
  // eslint-disable-next-line no-control-regex -- control characters are exactly what this removes
  return message.replace(/, ".*is not valid JSON$/s, ': not valid JSON').replace(/^Unexpected token '.*?'/s, 'Unexpected character').replace(/[\u0000-\u001f\u007f]/g, '?')
}

/** A key no field of the format has, as a message can show it: plain, or quoted with its control characters escaped. */
function shownKey(name: string): string {
  return /^[A-Za-z0-9_-]{1,40}$/.test(name) ? name : JSON.stringify(shortened(name))
}

/** A string, optionally matching a pattern (described in words for the message) and no longer than `maxLength`. */
/**
 * `controls`: the text is data carried as it is (a metadata value: a note's line breaks), never
 * printed, and may hold control characters.
 */
export function text(options: {pattern?: RegExp; what?: string; maxLength?: number; controls?: boolean} = {}): Check {
  const maxLength = options.maxLength ?? 4096
  return (value, at, found) => {
    if (typeof value !== 'string') return found.add(at, `is ${show(value)}, expected ${options.what ?? 'a string'}`)
    if (value.length > maxLength) return found.add(at, `is ${value.length} characters long, more than ${maxLength}`)
    // Control characters have no business in an archive's text, and could rewrite a terminal.
    // eslint-disable-next-line no-control-regex -- control characters are exactly what this refuses
    if (/[\u0000-\u001f\u007f]/.test(value) && !options.pattern && !options.controls) return found.add(at, 'holds control characters')
    if (options.pattern && !options.pattern.test(value)) found.add(at, `is ${show(value)}, expected ${options.what ?? `a string matching ${options.pattern}`}`)
  }
}

/** A whole number from `min` to `max`. */
export function integer(min: number, max: number): Check {
  return (value, at, found) => {
    if (typeof value !== 'number' || !Number.isSafeInteger(value)) return found.add(at, `is ${show(value)}, expected a whole number from ${min} to ${max}`)
    if (value < min || value > max) found.add(at, `is ${value}, expected a whole number from ${min} to ${max}`)
  }
}

export function exactly(expected: string | number | boolean): Check {
  return (value, at, found) => {
    if (value !== expected) found.add(at, `is ${show(value)}, expected ${JSON.stringify(expected)}`)
  }
}

export function list(item: Check, maxLength: number): Check {
  return (value, at, found) => {
    if (!Array.isArray(value)) return found.add(at, `is ${show(value)}, expected an array`)
    if (value.length > maxLength) return found.add(at, `has ${value.length} items, more than ${maxLength}`)
    for (const [index, element] of value.entries()) item(element, `${at}[${index}]`, found)
  }
}

/** An object used as a map: keys matching `key`, values passing `item`. */
export function record(key: Check, item: Check, maxKeys: number): Check {
  return (value, at, found) => {
    if (!isPlainObject(value)) return found.add(at, `is ${show(value)}, expected an object`)
    const keys = Object.keys(value)
    if (keys.length > maxKeys) return found.add(at, `has ${keys.length} keys, more than ${maxKeys}`)
    for (const name of keys) {
      const field = `${at}[${JSON.stringify(shortened(name))}]`
      key(name, `${field} (its key)`, found)
      item(value[name], field, found)
    }
  }
}

/** An object with exactly these fields; `optional` ones may be absent. Unknown fields are violations. */
export function object(fields: Record<string, Check>, optional: string[] = []): Check {
  return (value, at, found) => {
    if (!isPlainObject(value)) return found.add(at, `is ${show(value)}, expected an object`)
    for (const [name, check] of Object.entries(fields)) {
      const field = at ? `${at}.${name}` : name
      if (!(name in value)) {
        if (!optional.includes(name)) found.add(field, 'is missing')
        continue
      }
      check(value[name], field, found)
    }

    for (const name of Object.keys(value)) if (!(name in fields)) found.add(at ? `${at}.${shownKey(name)}` : shownKey(name), 'is not part of this format')
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/**
 * Parses JSON and checks it. Returns the value typed as T, or the violations as sentences (the
 * first of them, and how many more there were).
 */
/** What `check` finds wrong in a value already in memory: none when it would be read back as it is. */
export function violationsOf(value: unknown, check: Check): string[] {
  const found = new Violations()
  check(value, '', found)
  const more = found.count - found.sentences.length
  return more > 0 ? [...found.sentences, `and ${more} more`] : found.sentences
}

export function parseStrictJson<T>(bytes: Buffer, check: Check): {value: T} | {violations: string[]} {
  let value: unknown
  try {
    value = JSON.parse(bytes.toString('utf8'))
  } catch (error) {
    // A RangeError here is nesting deep enough to exhaust the stack: not JSON this format writes.
    return {violations: [`is not JSON: ${withoutQuotedText((error as Error).message)}`]}
  }

  const found = new Violations()
  check(value, '', found)
  if (found.count === 0) return {value: value as T}
  const more = found.count - found.sentences.length
  return {violations: more > 0 ? [...found.sentences, `and ${more} more`] : found.sentences}
}
