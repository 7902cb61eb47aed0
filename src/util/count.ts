/**
 * Whether a value a server answered is a count (of bytes, instances, changes): a whole number, 0
 * or more. Anything else (a string, a negative, NaN, a number past 2^53) is taken as unknown.
 */
export function isCount(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0
}
