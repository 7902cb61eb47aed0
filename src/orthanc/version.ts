/**
 * Orthanc versions as comparable numbers. Development builds report "mainline", which is
 * newer than any release.
 */
export function parseOrthancVersion(version: string): [number, number, number] {
  if (version === 'mainline') return [Number.MAX_SAFE_INTEGER, 0, 0]
  const [major = 0, minor = 0, patch = 0] = version.split('.').map((part) => Number.parseInt(part, 10) || 0)
  return [major, minor, patch]
}

export function versionAtLeast(version: string, minimum: string): boolean {
  const have = parseOrthancVersion(version)
  const need = parseOrthancVersion(minimum)
  for (let index = 0; index < 3; index++) {
    if (have[index]! !== need[index]!) return have[index]! > need[index]!
  }

  return true
}
