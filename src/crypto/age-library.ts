/**
 * age-encryption and the @noble libraries under it, loaded when a job first meets encryption
 * (keys given, an encrypted volume found). Loading them took about 145 ms of CPU (Node 20, 3
 * runs), which every import, export and verify paid at start-up, encrypted or not.
 */
type AgeLibrary = typeof import('age-encryption')

let library: Promise<AgeLibrary> | undefined

export function loadAgeLibrary(): Promise<AgeLibrary> {
  library ??= import('age-encryption')
  return library
}
