/**
 * Metadata names Orthanc keeps for itself (ResourceType/MetadataType in Orthanc's sources,
 * up to 1.12). They cannot be written through REST, so an archive records them apart from user
 * metadata, which a target can take back.
 */
const SYSTEM_METADATA = new Set([
  'IndexInSeries', 'ReceptionDate', 'RemoteAET', 'ModifiedFrom', 'AnonymizedFrom', 'LastUpdate',
  'Origin', 'TransferSyntax', 'SopClassUid', 'RemoteIP', 'CalledAET', 'HttpUsername',
  'PixelDataOffset', 'MainDicomTagsSignature', 'PixelDataVR', 'MainDicomSequences',
  'ExpectedNumberOfInstances', 'Instance_IndexInSeries',
])

/** Metadata with a number below this are Orthanc's own even when unnamed. */
const FIRST_USER_METADATA = 1024

export function isUserMetadata(name: string): boolean {
  if (/^\d+$/.test(name)) return Number(name) >= FIRST_USER_METADATA
  return !SYSTEM_METADATA.has(name)
}

export function splitMetadata(all: Record<string, string>): {user: Record<string, string>; system: Record<string, string>} {
  const user: Record<string, string> = {}
  const system: Record<string, string> = {}
  for (const [name, value] of Object.entries(all)) (isUserMetadata(name) ? user : system)[name] = value
  return {user, system}
}

/**
 * The user metadata names a server declares (its UserMetadata configuration), when it says:
 * Orthanc 1.12 lists them in /system, by name and by number; older versions do not (undefined).
 */
export function declaredUserMetadata(system: {UserMetadata?: Record<string, number>}): string[] | undefined {
  if (!system.UserMetadata) return undefined
  return Object.keys(system.UserMetadata).filter((name) => !/^\d+$/.test(name)).sort()
}

/**
 * The number a user metadata name stands for on a server: a number is its own, a name the one
 * the server declares for it (Orthanc 1.12 lists them in /system); undefined when unknown.
 */
export function metadataNumber(name: string, declared: Record<string, number> | undefined): number | undefined {
  return /^\d+$/.test(name) ? Number(name) : declared?.[name]
}
