import {OrthancError} from '../orthanc/errors.js'

/**
 * The target holds something else under this instance's ID than what was sent, and why, as far
 * as its answers tell: an older file it kept (the upload answered AlreadyStored), the file changed
 * as it was stored (answered Success), the instance gone again, or other bytes handed back than
 * the MD5 it recorded.
 */
export class TargetMismatchError extends OrthancError {
  override get problemKind() {
    return this.why === 'changed-on-arrival' ? 'changed-by-target' as const : 'mismatch' as const
  }

  constructor(server: string, readonly instanceId: string, readonly expected: string, readonly actual: string, readonly why: 'kept-older' | 'changed-on-arrival' | 'gone-after' | 'handed-back' = 'kept-older') {
    super(`instance ${instanceId} on ${server} ${MISMATCH_REASONS[why](actual, expected)}`, server)
  }
}

const MISMATCH_REASONS = {
  'kept-older': (actual: string, expected: string) => `has MD5 ${actual}, expected ${expected}: the target keeps another file under this ID, an older one (set OverwriteInstances, or delete it there first), or one it changed as it stored it (IngestTranscoding, a Lua script, a plugin: then running again changes nothing)`,
  'changed-on-arrival': (actual: string, expected: string) => `has MD5 ${actual}, expected ${expected}: the target changed the file as it stored it (IngestTranscoding, a Lua script or a plugin), so its copy is not the source's bytes. Running again changes nothing; a plain sync then counts it as there (diff and sync --checksum show it)`,
  'gone-after': (_actual: string, expected: string) => `is no longer listed there after it was stored (expected MD5 ${expected}): deleted meanwhile, or recycled by the target (MaximumPatientCount, MaximumStorageSize)`,
  'handed-back': (_actual: string, expected: string) => `is handed back with other bytes than the MD5 it recorded (${expected}): the target's storage is damaged`,
}
