import {hasUserSideData, type ResourceLevel, type SideData} from '../model.js'
import type {OrthancClient} from '../orthanc/client.js'
import {OrthancHttpError} from '../orthanc/errors.js'
import {AttachmentsNotRestoredError, type OrthancSink, type StoreOutcome} from '../sinks/orthanc-sink.js'
import {SideDataReader} from '../sources/side-data.js'

/** What the target keeps of its own beside one resource, with its attachments' bytes. */
interface KeptSideData {
  level: ResourceLevel
  id: string
  data: SideData
  bytes: Map<number, Buffer>
}

/**
 * Replaces an instance that differs on the target. Without OverwriteInstances Orthanc keeps the
 * copy it has, so the target's copy is deleted first; Orthanc then deletes with it its series,
 * study and patient when it was their last instance, and with each what the target kept beside
 * it (metadata, attachments, labels the source may not have). Before the deletion, the target's
 * own side data of the instance and of each parent that goes with it is read (bytes and all);
 * once the source's copy is stored, what it did not bring back is written again.
 *
 * What was read is held until the instance is stored, across the engine's attempts: an attempt
 * that fails after the deletion leaves the next one nothing to read on the target. It is held in
 * memory only: a run killed between the deletion and the write-back loses it (a window of a few
 * requests, named in the README); a store that fails for good leaves it listed as not carried (`finish`).
 */
export class InstanceReplacer {
  private readonly kept = new Map<string, KeptSideData[]>()
  private readonly targetSideData: SideDataReader

  constructor(private readonly target: OrthancClient, private readonly sink: OrthancSink) {
    this.targetSideData = new SideDataReader(target)
  }

  async replace(instanceId: string, store: () => Promise<StoreOutcome>, signal?: AbortSignal): Promise<StoreOutcome> {
    if (!this.kept.has(instanceId)) this.kept.set(instanceId, await this.keptBeside(instanceId, signal))
    try {
      await this.target.deleteInstance(instanceId, signal)
    } catch (error) {
      // Deleted by an earlier attempt whose answer was lost, or by someone else: gone either way.
      if (!(error instanceof OrthancHttpError && error.status === 404)) throw error
    }

    const outcome = await store()
    const missing: number[] = []
    for (const {level, id, data, bytes} of this.kept.get(instanceId)!) {
      // The store answers the instance's ID; its parents' IDs are hashes of the same UIDs, so the same again.
      missing.push(...await this.sink.restoreOwn(level, level === 'instance' ? outcome.instanceId : id, data, bytes, signal))
    }

    this.kept.delete(instanceId)
    if (missing.length > 0) throw new AttachmentsNotRestoredError(instanceId, missing.map((contentType) => ({contentType, reason: 'the target\'s own copy could not be read before it was replaced'})))
    return outcome
  }

  /**
   * Once the job is over: what is still held was deleted with a copy whose replacement did not
   * end (its last attempt failed, the job stopped), so nothing holds it now. The summary lists it.
   */
  finish(): void {
    const reason = 'the target\'s own, deleted with the copy it replaced and not written back: the replacement failed'
    for (const kept of this.kept.values()) {
      for (const {level, id, data} of kept) {
        for (const name of Object.keys(data.userMetadata)) this.sink.notCarried.add(level, 'user-metadata', reason, id, name)
        for (const attachment of data.attachments) this.sink.notCarried.add(level, 'attachments', reason, id, attachment.name)
        if (data.labels.length > 0) this.sink.notCarried.add(level, 'labels', reason, id)
      }
    }

    this.kept.clear()
  }

  /** The instance's own side data on the target, and that of each parent that goes when the instance does. */
  private async keptBeside(instanceId: string, signal?: AbortSignal): Promise<KeptSideData[]> {
    const going: Array<{level: ResourceLevel; id: string}> = [{level: 'instance', id: instanceId}]
    const instance = await this.target.resource('instance', instanceId, signal)
    const series = instance?.ParentSeries === undefined ? undefined : await this.target.resource('series', instance.ParentSeries, signal)
    if (series && series.Instances?.length === 1) {
      going.push({level: 'series', id: series.ID})
      const study = await this.target.resource('study', series.ParentStudy!, signal)
      if (study && study.Series?.length === 1) {
        going.push({level: 'study', id: study.ID})
        const patient = await this.target.resource('patient', study.ParentPatient!, signal)
        if (patient && patient.Studies?.length === 1) going.push({level: 'patient', id: patient.ID})
      }
    }

    const kept: KeptSideData[] = []
    for (const {level, id} of instance ? going : []) {
      const data = await this.targetSideData.sideDataOf(level, id, signal)
      if (!hasUserSideData(data)) continue
      const bytes = new Map<number, Buffer>()
      for (const attachment of data.attachments) bytes.set(attachment.contentType, await this.targetSideData.checkedAttachment(level, id, attachment, signal))
      kept.push({level, id, data, bytes})
    }

    return kept
  }
}
