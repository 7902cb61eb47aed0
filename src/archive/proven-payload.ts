import {createHash} from 'node:crypto'

import {type InstanceInTransit, type InstanceRecord, type ResourceInTransit, resourceKey, type ResourceRecord} from '../model.js'
import type {ProblemKind} from '../problems.js'
import type {ExpectedPayload, ProvenBag} from './trust-chain.js'

export type PayloadVerdict = {accepted: ExpectedPayload} | {refused: ProblemKind; reason: string}

/**
 * Checks the payload files of a proven bag as they arrive: each must be one the manifests list,
 * arrive once, and have the size and SHA-256 they give. Remembers what arrived, so that
 * what never did can be named. Memory: one entry per listed file, bounded by the manifests.
 */
export class ProvenPayload {
  private readonly arrived = new Set<string>()
  /** DICOM files refused: their attachments are not used either, without a second word. */
  readonly refusedInstances = new Set<string>()
  accepted = 0

  constructor(readonly proven: ProvenBag) {}

  check(path: string, data: Buffer): PayloadVerdict {
    const expected = this.proven.payload.get(path)
    if (!expected) return {refused: 'unlisted', reason: 'not in the volume\'s manifests'}
    const verdict = this.verdict(path, expected, data)
    if ('refused' in verdict && expected.record && !expected.attachment && verdict.refused !== 'duplicate') this.refusedInstances.add(expected.record.id)
    return verdict
  }

  private verdict(path: string, expected: ExpectedPayload, data: Buffer): PayloadVerdict {
    if (this.arrived.has(path)) return {refused: 'duplicate', reason: 'a second entry with the same name'}
    this.arrived.add(path)
    if (data.length !== expected.size) return {refused: 'checksum', reason: `is ${data.length} bytes long, the manifests say ${expected.size}`}
    // One hash, not two: bytes with the proven SHA-256 are the bytes the export wrote, whose MD5
    // (Orthanc's own, checked at export) the manifests give; the target's MD5 is compared with it.
    const sha256 = createHash('sha256').update(data).digest('hex')
    if (sha256 !== expected.sha256) return {refused: 'checksum', reason: `checksum mismatch: SHA-256 ${sha256}, the manifests say ${expected.sha256}`}
    this.accepted++
    return {accepted: expected}
  }

  /** A file refused before the bag was proven (a stream): it came, so it is not missing. */
  noteRefused(path: string): void {
    this.arrived.add(path)
  }

  /** Payload paths the manifests list that never arrived. */
  missing(): string[] {
    return [...this.proven.payload.keys()].filter((path) => !this.arrived.has(path))
  }
}

/**
 * Puts each instance back together from its accepted payload files: the DICOM file comes
 * first, then its user attachments (the order export writes them in). An instance is handed on
 * once every attachment it lists has come by (accepted or not), or when the next one starts; a
 * refused attachment is reported where it was refused, and the instance goes on without it.
 */
export class InstanceAssembler {
  private pending?: {unit: InstanceInTransit; awaited: Set<string>}
  /** The volume's patients, studies and series with side data, their attachments gathered as they come. */
  private readonly resources = new Map<string, ResourceInTransit & {handedOut: boolean; attachments: Map<number, Buffer>}>()

  /** `group`: the export the volume belongs to, named on each instance. */
  constructor(resources: ResourceRecord[] = [], private readonly group?: string) {
    for (const record of resources) this.resources.set(resourceKey(record), {record, attachments: new Map(), handedOut: false})
  }

  /**
   * Takes an accepted payload file; returns the instances now complete, and, for an attachment
   * out of the order export writes (an instance's after its DICOM file, a resource's before the
   * first instance of it), why it cannot be used.
   */
  add(label: string, expected: ExpectedPayload, data: Buffer): {units: InstanceInTransit[]; unusable?: string} {
    if (expected.resource) {
      const resource = this.resources.get(resourceKey(expected.resource))!
      if (resource.handedOut) return {units: [], unusable: `an attachment of the ${expected.resource.level} of study ${expected.resource.study} that comes after instances of it: not used`}
      resource.attachments.set(expected.attachment.contentType, data)
      return {units: []}
    }

    const done: InstanceInTransit[] = []
    const {record} = expected
    if (!expected.attachment) {
      if (this.pending) done.push(this.pending.unit)
      this.pending = {
        unit: {label, instanceId: record.id, studyId: record.studyId, group: this.group, dicom: data, md5: record.md5, record, attachments: new Map(), resources: this.resourcesOf(record)},
        awaited: new Set(record.attachments.map((attachment) => attachment.path)),
      }
    } else if (this.pending?.unit.instanceId === record.id) {
      this.pending.unit.attachments!.set(expected.attachment.contentType, data)
      this.pending.awaited.delete(expected.attachment.path)
    } else {
      // Its DICOM file was refused (reported already), or comes later: export never writes that order.
      return {units: done, unusable: `an attachment of instance ${record.id} that does not follow its DICOM file: not used`}
    }

    return {units: [...done, ...this.takeIfComplete()]}
  }

  /** The instance's patient, study and series, those with side data; from now on their attachments are complete. */
  private resourcesOf(record: InstanceRecord): ResourceInTransit[] {
    const keys = [resourceKey({level: 'patient', study: record.studyId}), resourceKey({level: 'study', study: record.studyId}), resourceKey({level: 'series', study: record.studyId, series: record.seriesId})]
    const found: ResourceInTransit[] = []
    for (const key of keys) {
      const resource = this.resources.get(key)
      if (!resource) continue
      resource.handedOut = true
      found.push(resource)
    }

    return found
  }

  /** A payload file of the pending instance came by but was refused: stop waiting for it. */
  passed(path: string): InstanceInTransit[] {
    this.pending?.awaited.delete(path)
    return this.takeIfComplete()
  }

  /** The end of a bag: whatever is pending goes on as it is. */
  flush(): InstanceInTransit[] {
    const last = this.pending?.unit
    this.pending = undefined
    return last ? [last] : []
  }

  private takeIfComplete(): InstanceInTransit[] {
    if (!this.pending || this.pending.awaited.size > 0) return []
    const {unit} = this.pending
    this.pending = undefined
    return [unit]
  }
}
