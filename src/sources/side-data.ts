import type {AttachmentRecord, InstanceRecord} from '../model.js'
import {attachmentPayloadPath} from '../archive/format.js'
import type {OrthancClient} from '../orthanc/client.js'
import {FIRST_USER_CONTENT_TYPE} from '../orthanc/client.js'
import {splitMetadata} from '../orthanc/metadata.js'

export type SideData = Pick<InstanceRecord, 'userMetadata' | 'systemMetadata' | 'attachments' | 'labels'>

/** Attachments Orthanc manages itself; everything else on an instance belongs to users. */
const ORTHANC_ATTACHMENTS = new Set(['dicom', 'dicom-until-pixel-data', 'dicom-as-json'])

/** Instances whose metadata one bulk request reads: about 600 bytes of answer each. */
const SIDE_DATA_BATCH = 100

/**
 * Reads what Orthanc keeps beside an instance's file: metadata, user attachments, labels. The
 * metadata of a whole batch comes in one request when the producer announces the batch with
 * `prefetch` before handing its instances out: one request fewer per instance, on a source
 * that every instance already costs a download.
 */
export class SideDataReader {
  /** Metadata read ahead, by instance ID, until `read` takes it. Holds at most the batches not yet handed out. */
  private readonly prefetched = new Map<string, Promise<Record<string, string> | undefined>>()

  constructor(private readonly client: OrthancClient) {}

  /** Starts reading the metadata of these instances in one request; `read` picks each one up. */
  prefetch(instanceIds: string[], signal?: AbortSignal): void {
    if (instanceIds.length < 2) return
    const batch = this.client.instancesMetadata(instanceIds, signal)
    for (const id of instanceIds) {
      const one = batch.then((found) => found?.get(id))
      // A failed batch is not this reader's failure: each instance asks again on its own in `read`.
      one.catch(() => undefined)
      this.prefetched.set(id, one)
    }
  }

  async read(instanceId: string, signal?: AbortSignal): Promise<SideData> {
    const ahead = this.prefetched.get(instanceId)
    this.prefetched.delete(instanceId)
    const metadata = async () => (await ahead?.catch(() => undefined)) ?? this.client.instanceMetadata(instanceId, signal)
    const [all, attachments, labels] = await Promise.all([
      metadata(),
      this.userAttachments(instanceId, signal),
      this.client.instanceLabels(instanceId, signal),
    ])
    const {user, system} = splitMetadata(all)
    return {userMetadata: user, systemMetadata: system, attachments, labels}
  }

  /** Listed for every instance: a user attachment may be empty, so no size total can rule them out. */
  private async userAttachments(instanceId: string, signal?: AbortSignal): Promise<AttachmentRecord[]> {
    const attachments: AttachmentRecord[] = []
    for (const name of await this.client.listAttachments(instanceId, signal)) {
      if (ORTHANC_ATTACHMENTS.has(name)) continue
      const attachment = await this.describeAttachment(instanceId, name, signal)
      if (attachment && attachment.contentType >= FIRST_USER_CONTENT_TYPE) attachments.push(attachment)
    }

    return attachments
  }

  private async describeAttachment(instanceId: string, name: string, signal?: AbortSignal): Promise<AttachmentRecord | undefined> {
    const info = await this.client.attachmentInfo(instanceId, name, signal)
    if (info) {
      const contentType = info.ContentType ?? Number(name)
      return {name, contentType, size: info.UncompressedSize, md5: info.UncompressedMD5, path: attachmentPayloadPath(instanceId, contentType)}
    }

    // Before 1.10 there is no /info: numbered attachments carry their type in the name.
    if (!/^\d+$/.test(name)) return undefined
    const base = `/instances/${instanceId}/attachments/${name}`
    const [md5, size] = await Promise.all([this.client.http.text('GET', `${base}/md5`, {signal}), this.client.http.text('GET', `${base}/size`, {signal})])
    return {name, contentType: Number(name), size: Number(size), md5: md5.trim(), path: attachmentPayloadPath(instanceId, Number(name))}
  }
}

/**
 * Hands `items` on in order, first announcing each batch (one study, at most SIDE_DATA_BATCH
 * instances) to `reader`. Pulls one item past a batch before handing it on, to see where it ends.
 */
export async function* prefetchingSideData<Item extends {id: string; studyId?: string}>(
  items: AsyncIterable<Item>, reader: SideDataReader, signal?: AbortSignal,
): AsyncGenerator<Item> {
  let batch: Item[] = []
  const handOn = function* () {
    reader.prefetch(batch.map((item) => item.id), signal)
    yield* batch
    batch = []
  }

  for await (const item of items) {
    const full = batch.length >= SIDE_DATA_BATCH || (batch.length > 0 && batch[0]!.studyId !== item.studyId)
    if (full) yield* handOn()
    batch.push(item)
  }

  if (batch.length > 0) yield* handOn()
}
