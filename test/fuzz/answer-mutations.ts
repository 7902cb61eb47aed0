/**
 * Answers a broken or hostile server might give: one place in a real Orthanc answer changed to a
 * value of another kind, or taken away. Deterministic: the same answer and choice give the same
 * change. (Plausible lies, such as another MD5 or one study fewer, are not the point here: those
 * are caught by checksums, or cannot be told from the truth by any client.)
 */
type Path = Array<string | number>

/** Every place in a JSON value, the whole of it first. */
function placesOf(value: unknown, path: Path = [], found: Path[] = []): Path[] {
  found.push(path)
  if (Array.isArray(value)) value.forEach((entry, index) => placesOf(entry, [...path, index], found))
  else if (typeof value === 'object' && value !== null) for (const [key, entry] of Object.entries(value)) placesOf(entry, [...path, key], found)
  return found
}

/** Values of another kind than `original`, and a path where an ID was (it is put into request paths). */
function othersThan(original: unknown): unknown[] {
  const kinds: unknown[] = [null, 7, -1, 2.5, true, '', '../../tools/reset', [], {}, [null], {x: 1}]
  const kindOf = (value: unknown) => (value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value)
  return kinds.filter((value) => kindOf(value) !== kindOf(original) || (typeof original === 'string' && value === '../../tools/reset'))
}

export interface AnswerMutation {
  /** Where and what, for messages ("Changes.0.ID -> null"), once an answer has been changed. */
  what?: string
  readonly change: (answer: unknown) => unknown
}

/**
 * The `choice`-th change of an answer: a place in it, then a value of another kind for it, or
 * none (a key taken away). Every answer of the route gets the same change.
 */
export function answerMutation(choice: number): AnswerMutation {
  const mutation: AnswerMutation = {
    change(answer) {
      const places = placesOf(answer)
      const path = places[choice % places.length]!
      // A key taken away; an entry of a list taken away would be a plausible lie (one study fewer).
      const removable = path.length > 0 && typeof path.at(-1) === 'string'
      const options: unknown[] = [...othersThan(valueAt(answer, path)), ...(removable ? [REMOVED] : [])]
      const replacement = options[Math.floor(choice / places.length) % options.length]
      mutation.what ??= `${path.length === 0 ? '(whole answer)' : path.join('.')} -> ${replacement === REMOVED ? 'removed' : JSON.stringify(replacement)}`
      return replaced(answer, path, replacement)
    },
  }
  return mutation
}

const REMOVED = Symbol('removed')

function valueAt(value: unknown, path: Path): unknown {
  let current = value
  for (const key of path) current = (current as Record<string | number, unknown> | undefined)?.[key]
  return current
}

function replaced(answer: unknown, path: Path, replacement: unknown): unknown {
  if (path.length === 0) return replacement
  const copy = structuredClone(answer)
  const parent = valueAt(copy, path.slice(0, -1)) as object
  const key = path.at(-1)!
  if (replacement === REMOVED) delete (parent as Record<string | number, unknown>)[key]
  else (parent as Record<string | number, unknown>)[key] = replacement
  return copy
}

/** A deterministic choice from a seed and an index (FNV-1a over both). */
export function choiceOf(seed: string, index: number): number {
  let hash = 0x811c9dc5
  for (const char of `${seed}:${index}`) hash = Math.imul(hash ^ char.charCodeAt(0), 0x01000193) >>> 0
  return hash
}
