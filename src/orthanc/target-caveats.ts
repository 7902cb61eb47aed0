import type {OrthancSystem} from './types.js'

/**
 * What a target's own configuration will do to what it is sent, as Orthanc 1.12's /system tells
 * it (older servers say nothing): said before the job, since each instance it affects fails with
 * a reason that alone would not point at the configuration.
 */
export function targetCaveats(system: OrthancSystem): string[] {
  const caveats: string[] = []
  const limits = [
    system.MaximumPatientCount ? `MaximumPatientCount ${system.MaximumPatientCount}` : undefined,
    system.MaximumStorageSize ? `MaximumStorageSize ${system.MaximumStorageSize} MB` : undefined,
  ].filter((limit) => limit !== undefined)
  if (limits.length > 0) {
    caveats.push(system.MaximumStorageMode === 'Reject'
      ? `the target refuses what passes its limits (${limits.join(', ')}): instances it has no room for fail as refused`
      : `the target recycles (${limits.join(', ')}): to make room it deletes its oldest patients not protected, which may be ones this run stores; those fail as gone after they were stored`)
  }
  if (system.IngestTranscoding) {
    caveats.push(`the target transcodes what it stores (IngestTranscoding ${system.IngestTranscoding}): its copies of instances in other transfer syntaxes are not the source's bytes, and fail as changed-by-target`)
  }
  return caveats
}
