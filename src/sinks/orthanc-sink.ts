import type {InstanceRecord} from '../model.js'
import type {Features, OrthancClient} from '../orthanc/client.js'
import {OrthancError, OrthancHttpError} from '../orthanc/errors.js'
import type {Outcome} from '../transfer/engine.js'
import type {InstanceInTransit} from '../model.js'
import {Semaphore} from '../util/concurrency.js'
import {crashPoint} from '../util/crash-points.js'

/** What could not be carried over to the target, counted by kind; reported, not failures. */
export interface NotRestored {
  /** Orthanc's own metadata (ReceptionDate, RemoteAET...): REST cannot write them. */
  systemMetadata: number
  /** Labels, on targets older than Orthanc 1.12. */
  labels: number
  /** User metadata names the target does not declare in its UserMetadata. */
  userMetadata: Record<string, number>
}

const RECENT_STUDIES = 16

/** `instanceId`: the instance's ID on the target, as the target answered the upload when there was one. */
export type StoreOutcome = Outcome & {targetMd5: string; instanceId: string}

/** The target stored something else under this instance's ID. */
export class TargetMismatchError extends OrthancError {
  constructor(server: string, readonly instanceId: string, readonly expected: string, readonly actual: string) {
    super(`instance ${instanceId} on ${server} has MD5 ${actual}, expected ${expected}` +
      ' (the target keeps an older file under this ID: set OverwriteInstances, or delete it there first)', server)
  }
}

/**
 * Stores instances on an Orthanc target: skips those it already has with the same MD5,
 * uploads the others, writes back user metadata, attachments and labels (after the upload,
 * since OverwriteInstances drops them), then confirms the target's MD5.
 */
export class OrthancSink {
  readonly notRestored: NotRestored = {systemMetadata: 0, labels: 0, userMetadata: {}}
  private features?: Features
  private readonly recentStudies = new Map<string, Promise<Set<string>>>()

  private readonly uploadSlots: Semaphore

  /**
   * `uploads`: POSTs in flight at once. Callers keep more instances than that in flight, so
   * that the next upload is ready (downloaded, read, hashed) when one finishes, and the
   * confirmation of the last one does not hold an upload's place.
   */
  constructor(private readonly client: OrthancClient, private readonly options: {dryRun: boolean; uploads: number}) {
    this.uploadSlots = new Semaphore(options.uploads)
  }

  /** `knownAbsent`: the caller compared ID sets already and knows the target lacks it. */
  async store(unit: InstanceInTransit, signal?: AbortSignal, options: {knownAbsent?: boolean} = {}): Promise<StoreOutcome> {
    this.features ??= await this.client.features(signal)
    const absent = options.knownAbsent || (unit.studyId !== undefined && !(await this.studyHas(unit.studyId, unit.instanceId, signal)))
    const existing = absent ? undefined : await this.client.storedFileInfo(unit.instanceId, signal)
    if (existing && existing.md5 === unit.md5) {
      if (unit.record && !this.options.dryRun) await this.restoreMissingSideData(unit.instanceId, unit, signal)
      return {kind: 'skipped', targetMd5: existing.md5, instanceId: unit.instanceId}
    }

    if (this.options.dryRun) return {kind: 'transferred', bytes: unit.dicom.length, targetMd5: '', instanceId: unit.instanceId}
    const answer = await this.uploadSlots.run(() => this.client.uploadInstance(unit.dicom, signal))
    crashPoint('store:uploaded')
    // From here on the target's answer is the truth: the source only predicted the ID, and a file
    // the target already had under it (AlreadyStored: stored by another run, another route, or
    // under an ID the source mispredicted) was not transferred by this run.
    const alreadyStored = answer.Status === 'AlreadyStored'
    if (unit.record && alreadyStored) await this.restoreMissingSideData(answer.ID, unit, signal)
    else if (unit.record) await this.restoreSideData(answer.ID, unit, signal)
    crashPoint('store:side-data-restored')
    const stored = await this.client.storedFileInfo(answer.ID, signal)
    const targetMd5 = stored?.md5 ?? 'missing'
    if (targetMd5 !== unit.md5) throw new TargetMismatchError(this.client.display, answer.ID, unit.md5, targetMd5)
    return alreadyStored ? {kind: 'skipped', targetMd5, instanceId: answer.ID} : {kind: 'transferred', bytes: unit.dicom.length, targetMd5, instanceId: answer.ID}
  }

  /**
   * Whether the target has an instance, asked once per study rather than once per instance:
   * each question costs a turn at the target's database, which uploads are waiting for. Instances
   * of a study arrive together, so a few recent studies are enough to remember.
   */
  private studyHas(studyId: string, instanceId: string, signal?: AbortSignal): Promise<boolean> {
    let listing = this.recentStudies.get(studyId)
    if (!listing) {
      listing = this.client.studyInstanceIds(studyId, signal).then((ids) => new Set(ids))
      listing.catch(() => this.recentStudies.delete(studyId))
      this.recentStudies.set(studyId, listing)
      if (this.recentStudies.size > RECENT_STUDIES) this.recentStudies.delete(this.recentStudies.keys().next().value!)
    }

    return listing.then((ids) => ids.has(instanceId))
  }

  /** For an instance already there: write back only what is absent, so a second run sends nothing. */
  private async restoreMissingSideData(instanceId: string, unit: InstanceInTransit, signal?: AbortSignal): Promise<void> {
    const record = unit.record!
    const hasUserData = Object.keys(record.userMetadata).length > 0 || record.attachments.length > 0 || record.labels.length > 0
    if (!hasUserData) {
      this.countSystemMetadata(record)
      return
    }

    const [metadata, attachments, labels] = await Promise.all([
      this.client.instanceMetadata(instanceId, signal),
      this.client.listAttachments(instanceId, signal),
      this.client.instanceLabels(instanceId, signal),
    ])
    const present = new Set(attachments)
    await this.restoreSideData(instanceId, unit, signal, {
      metadata: (name, value) => metadata[name] === value,
      attachment: (name, contentType) => present.has(name) || present.has(String(contentType)),
      label: (label) => labels.includes(label),
    })
  }

  private async restoreSideData(
    instanceId: string, unit: InstanceInTransit, signal?: AbortSignal,
    already?: {metadata(name: string, value: string): boolean; attachment(name: string, contentType: number): boolean; label(label: string): boolean},
  ): Promise<void> {
    const record: InstanceRecord = unit.record!
    this.countSystemMetadata(record)
    for (const [name, value] of Object.entries(record.userMetadata)) {
      if (already?.metadata(name, value)) continue
      try {
        await this.client.setInstanceMetadata(instanceId, name, value, signal)
      } catch (error) {
        // An unnamed target metadata type makes Orthanc answer 400 or 404: the target does not declare this name.
        if (!(error instanceof OrthancHttpError && (error.status === 400 || error.status === 404))) throw error
        this.notRestored.userMetadata[name] = (this.notRestored.userMetadata[name] ?? 0) + 1
      }
    }

    for (const attachment of record.attachments) {
      const data = unit.attachments?.get(attachment.contentType)
      if (!data || already?.attachment(attachment.name, attachment.contentType)) continue
      // By number: it works on any target, which shows it under its own name if it declares that type.
      await this.client.putAttachment(instanceId, String(attachment.contentType), data, signal)
    }

    for (const label of record.labels) {
      if (!this.features?.labels) {
        this.notRestored.labels++
        continue
      }

      if (!already?.label(label)) await this.client.addInstanceLabel(instanceId, label, signal)
    }
  }

  private countSystemMetadata(record: InstanceRecord): void {
    this.notRestored.systemMetadata += Object.keys(record.systemMetadata).length
  }
}
