/**
 * Text that comes from outside (an archive's entry names, a server's error messages and name) as
 * it can be shown: cut to 300 characters, control characters written out (\x1b), so that none
 * can rewrite the terminal, clear it or forge a line of the tool's own.
 */
export function printable(text: string): string {
  return withoutControls(text.slice(0, 300))
}

/** The same, whole: for what this machine gave (a file's path), which may be long but must not rewrite the terminal either. */
export function withoutControls(text: string): string {
  // One replace, not a string built character by character: that would be a rope of a node per
  // character, some 2 KB per name, kept as long as the name is (a problem list holds many).
  // eslint-disable-next-line no-control-regex -- control characters are what it looks for
  return text.replace(/[\x00-\x1f\x7f-\x9f]/g, (char) => `\\x${char.charCodeAt(0).toString(16).padStart(2, '0')}`)
}
