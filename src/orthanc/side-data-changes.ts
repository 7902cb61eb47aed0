import type {OrthancChange} from './types.js'

/**
 * The changes Orthanc logs when user metadata or an attachment of a resource is set or removed,
 * at any level, naming that resource (checked on 1.10.1 and 1.12.7). Labels and patient
 * protection log no change: only a full comparison sees those.
 */
const SIDE_DATA_CHANGES = new Set(['UpdatedMetadata', 'UpdatedAttachment'])

export function isSideDataChange(change: Pick<OrthancChange, 'ChangeType'>): boolean {
  return SIDE_DATA_CHANGES.has(change.ChangeType)
}
