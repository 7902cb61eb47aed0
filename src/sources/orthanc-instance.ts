import {createHash} from 'node:crypto'

import {dicomPayloadPath} from '../archive/format.js'
import type {AttachmentRecord, InstanceRecord} from '../model.js'
import type {OrthancClient} from '../orthanc/client.js'
import {ChecksumMismatchError, OrthancHttpError} from '../orthanc/errors.js'
import type {InstanceInTransit} from '../model.js'
import type {SelectedInstance} from './orthanc-selection.js'
import type {SideDataReader} from './side-data.js'

/**
 * Everything about an instance except its bytes: stored size and MD5 (no download), user
 * and system metadata, user attachments, labels (`sideData` reads those of `client`).
 */
export async function describeInstance(client: OrthancClient, instance: SelectedInstance, sideData: SideDataReader, signal?: AbortSignal): Promise<InstanceRecord> {
  const [file, side] = await Promise.all([client.storedFileInfo(instance.id, signal), sideData.read(instance.id, signal)])
  if (!file) throw new InstanceVanishedError(instance.id)
  return {...instance, size: file.size, md5: file.md5, path: dicomPayloadPath(instance), ...side}
}

/**
 * Downloads an instance's DICOM file and checks it against the MD5 the server recorded when
 * it stored the file, before anyone writes it anywhere.
 */
export async function fetchVerifiedInstance(client: OrthancClient, id: string, expectedMd5: string, signal?: AbortSignal, expectedBytes?: number): Promise<Buffer> {
  return (await fetchInstance(client, id, expectedMd5, signal, expectedBytes)).bytes
}

/**
 * Downloads an instance and checks it against `expectedMd5`, or, when that is not known yet,
 * against the MD5 the server announces with the bytes (ETag, Orthanc 1.9.3+): one request
 * fewer per instance than asking for it first.
 */
async function fetchInstance(client: OrthancClient, id: string, expectedMd5: string | undefined, signal?: AbortSignal, expectedBytes?: number): Promise<{bytes: Buffer; md5: string}> {
  let download
  try {
    download = await client.downloadInstance(id, signal, expectedBytes)
  } catch (error) {
    if (error instanceof OrthancHttpError && error.status === 404) throw new InstanceVanishedError(id)
    throw error
  }

  const {bytes} = download
  const expected = expectedMd5 ?? download.announcedMd5 ?? (await client.storedFileInfo(id, signal))?.md5
  if (expected === undefined) throw new InstanceVanishedError(id)
  if (expected === '') throw new NoRecordedMd5Error(client.display, id)
  const actual = createHash('md5').update(bytes).digest('hex')
  if (actual !== expected || (download.announcedMd5 && download.announcedMd5 !== expected)) {
    throw new ChecksumMismatchError(client.display, id, expected, actual)
  }

  return {bytes, md5: expected}
}

export async function fetchVerifiedAttachment(client: OrthancClient, instanceId: string, attachment: AttachmentRecord, signal?: AbortSignal): Promise<Buffer> {
  const bytes = await client.attachmentData(instanceId, attachment.name, signal, attachment.size)
  const actual = createHash('md5').update(bytes).digest('hex')
  if (actual !== attachment.md5) throw new ChecksumMismatchError(client.display, `${instanceId} attachment ${attachment.name}`, attachment.md5, actual)
  return bytes
}

/** The source keeps no MD5 of the instance: nothing could prove that a copy of it is whole. */
export class NoRecordedMd5Error extends Error {
  readonly problemKind = 'failed' as const

  constructor(server: string, readonly instanceId: string) {
    super(`instance ${instanceId}: ${server} records no MD5 for it (it runs with StoreMD5ForAttachments off), so no copy of it can be checked; recover it from the server's storage folder instead (import --storage-folder), which checks each file's size`)
    this.name = 'NoRecordedMd5Error'
  }
}

/** The instance was deleted on the source between planning and download. */
export class InstanceVanishedError extends Error {
  constructor(readonly instanceId: string) {
    super(`instance ${instanceId} is no longer on the source`)
    this.name = 'InstanceVanishedError'
  }
}

/**
 * An instance read from a source server, ready for a sink: its record (metadata, attachments,
 * labels) and its bytes, all checked against the source's MD5s.
 */
export async function readInstanceUnit(client: OrthancClient, instance: SelectedInstance, sideData: SideDataReader, signal?: AbortSignal): Promise<InstanceInTransit> {
  // The side data of its patient, study and series is restored after the upload, so the upload
  // does not wait for it: the first instances of a job would otherwise wait for a chain of reads
  // (the studies' metadata, then their patients') longer than their own download.
  const resources = sideData.resourcesInTransit(instance, signal)
  // A failure is seen where the sink awaits it, or not at all when the instance fails first.
  resources.catch(() => {})
  const [{bytes: dicom, md5}, side] = await Promise.all([
    fetchInstance(client, instance.id, undefined, signal, instance.size),
    sideData.read(instance.id, signal),
  ])
  const record: InstanceRecord = {...instance, size: dicom.length, md5, path: dicomPayloadPath(instance), ...side}
  const attachments = new Map<number, Buffer>()
  for (const attachment of record.attachments) attachments.set(attachment.contentType, await fetchVerifiedAttachment(client, record.id, attachment, signal))
  return {label: record.id, instanceId: record.id, studyId: record.studyId, dicom, md5: record.md5, record, attachments, resources}
}
