import {createHash} from 'node:crypto'
import {checkSafeToSend} from '../dicom/safe-to-send.js'
import {readDicomIdentifiers} from '../dicom/parse.js'
import {type AttachmentBytes, hasUserSideData, type InstanceInTransit, type InstanceRecord, type ResourceInTransit, type ResourceLevel, resourceKey, type ResourceRecord, type SideData} from '../model.js'
import type {Features, OrthancClient} from '../orthanc/client.js'
import {OrthancError, OrthancHttpError} from '../orthanc/errors.js'
import {metadataNumber} from '../orthanc/metadata.js'
import {sourceResource} from '../sources/side-data.js'
import type {Outcome} from '../transfer/engine.js'
import {crashPoint} from '../util/crash-points.js'
import {UploadBatcher, type ZipUploads} from './upload-batcher.js'
import {FilesKeptCheck} from './files-kept.js'
import {TargetMismatchError} from './target-mismatch.js'

export {TargetMismatchError} from './target-mismatch.js'

/** One kind of side data that could not be carried to the target, at one level, counted. */
export interface NotCarried {
  level: ResourceLevel
  kind: 'labels' | 'user-metadata' | 'system-metadata' | 'attachments' | 'protection'
  /** The metadata or attachment name, when the reason is about one name. */
  name?: string
  /** Resources it concerns. */
  count: number
  reason: string
}

/**
 * The resources an entry counts, kept beside it and out of its JSON (not enumerable): two tallies
 * that met the same resource (two passes of a mirror, the same instance failing at every poll)
 * count it once. Up to IDS_KEPT IDs per entry (about 8 MB); past them, resources are only counted
 * (`BEYOND`), so that an entry every instance of a huge job meets (Orthanc's system metadata is
 * never carried) stays bounded. Past them, a resource met again is counted again: the count
 * may then say more than happened, never less.
 */
const RESOURCES = Symbol('resources')
const BEYOND = Symbol('beyond')
const IDS_KEPT = 100_000
type Tallied = NotCarried & {[RESOURCES]?: Set<string>; [BEYOND]?: number}

function tallied(entry: NotCarried, resources: Set<string>, beyond: number): Tallied {
  const result: Tallied = {...entry, count: resources.size + beyond}
  Object.defineProperty(result, RESOURCES, {value: resources, enumerable: false})
  Object.defineProperty(result, BEYOND, {value: beyond, enumerable: false})
  return result
}

/** Adds `ids` to `resources` (each once, up to IDS_KEPT); returns how many went beyond. */
function gather(resources: Set<string>, ids: Iterable<string>): number {
  let beyond = 0
  for (const id of ids) {
    if (resources.has(id)) continue
    if (resources.size < IDS_KEPT) resources.add(id)
    else beyond++
  }

  return beyond
}

/** How every reason for what a replacement lost (see sync/replace.ts) begins. */
const LOST = 'the target\'s own, deleted with the copy it replaced and not written back'

/** Why what a replacement lost is listed as not carried, when the replacement failed. */
export const REPLACEMENT_LOST = `${LOST}: the replacement failed`

/** The same, when it waits on this machine for the next run to write it back (see sync/replacement-journal.ts). */
export const replacementKept = (journal: string, earlier: boolean) => earlier
  ? `${LOST}: a replacement by an earlier run, killed before it wrote it back; kept in ${journal}, a sync into this target that stores the instance again writes it back (or remove its entry there to let it go)`
  : `${LOST}: the replacement failed; kept in ${journal}, the next sync into this target writes it back`

/** The same, when the target refused to take it back. */
const refusedBack = (why: string) => `${LOST}: ${why}`

/** Whether an entry is the target's own, lost by a replacement, rather than something not carried over. */
export function isLost(entry: Pick<NotCarried, 'reason'>): boolean {
  return entry.reason.startsWith(LOST)
}

/** What a job stopped by an error could not carry, as it carries it (see sync.ts). */
export function notCarriedBy(error: unknown): NotCarried[] {
  return (error as {notCarried?: NotCarried[]} | undefined)?.notCarried ?? []
}

/** Of that, what its replacements lost. */
export function lostBy(error: unknown): NotCarried[] {
  return notCarriedBy(error).filter(isLost)
}

// What a replacement lost is kept apart from what the target refused under the same name, and by
// why it was lost (the replacement failed, or the target refused to take it back).
const keyOf = (entry: Pick<NotCarried, 'level' | 'kind' | 'name' | 'reason'>) => `${entry.level}\u0000${entry.kind}\u0000${entry.name ?? ''}\u0000${isLost(entry) ? entry.reason : ''}`

/**
 * What could not be carried, by level, kind and name (and lost apart), counted by resource: every
 * summary prints it. Each resource is counted once by its ID (see RESOURCES), as several instances
 * (and several passes of a mirror) meet the same patient, study, series or instance.
 */
export class NotCarriedTally {
  private readonly entries = new Map<string, {entry: NotCarried; resources: Set<string>; beyond: number}>()

  /** `resource`: the resource's ID, so that meeting it again (another instance of its study) does not count it twice. */
  add(level: ResourceLevel, kind: NotCarried['kind'], reason: string, resource: string, name?: string): void {
    const entry: NotCarried = {level, kind, ...(name === undefined ? {} : {name}), count: 0, reason}
    const known = this.entries.get(keyOf(entry)) ?? {entry, resources: new Set<string>(), beyond: 0}
    known.beyond += gather(known.resources, [resource])
    this.entries.set(keyOf(entry), known)
  }

  list(): NotCarried[] {
    return [...this.entries.values()].map(({entry, resources, beyond}) => tallied(entry, resources, beyond))
  }
}

/** Two tallies as one: the resources of the same level, kind and name counted once (summed, past the IDs kept, and for entries that do not say which). */
export function mergeNotCarried(a: NotCarried[], b: NotCarried[]): NotCarried[] {
  const merged = new Map<string, Tallied>()
  for (const entry of [...a, ...b] as Tallied[]) {
    const seen = merged.get(keyOf(entry))
    const resources = new Set(seen?.[RESOURCES] ?? [])
    const known = entry[RESOURCES]
    const beyond = (seen?.[BEYOND] ?? 0) + (known ? (entry[BEYOND] ?? 0) + gather(resources, known) : entry.count)
    merged.set(keyOf(entry), tallied(seen ?? entry, resources, beyond))
  }

  return [...merged.values()]
}

const RECENT_STUDIES = 16

/** `instanceId`: the instance's ID on the target, as the target answered the upload when there was one. */
export type StoreOutcome = Outcome & {targetMd5: string; instanceId: string}

/** Stores an instance over another file the target holds under its ID (`store`), keeping what the target holds of its own. */
export type StoreOver = (instanceId: string, copy: string, store: () => Promise<StoreOutcome>, signal?: AbortSignal) => Promise<StoreOutcome>

/**
 * The target stored what was sent under another ID than the source gives the instance: the bytes
 * that came were another instance's (a proxy or cache before the source that mixed answers up).
 * This instance did not arrive; nothing of its side data is written to the other one.
 */
export class IdentityMismatchError extends OrthancError {
  override get problemKind() {
    return 'mismatch' as const
  }

  constructor(server: string, readonly instanceId: string, readonly storedAs: string) {
    super(`instance ${instanceId}: ${server} stored the bytes that came for it as instance ${storedAs}, so they are another instance's; it was not copied`, server)
  }
}

/** The target's answer to an upload names another instance than the file's, whose stored file is another: an answer about another upload. */
export class MisansweredUploadError extends OrthancError {
  override get problemKind() {
    return 'mismatch' as const
  }

  constructor(server: string, readonly instanceId: string, readonly answeredAs: string) {
    super(`instance ${instanceId}: ${server} answered its upload with instance ${answeredAs}, whose file is not the one sent (answers mixed up on the way, by a proxy or plugin before the target); nothing was written onto ${answeredAs}`, server)
  }
}

/**
 * An instance is on the target, but a user attachment its record lists could not be restored
 * beside it: the source could not deliver the bytes (a damaged or missing stored file, an archive
 * entry refused). The instance is failed, not transferred nor skipped, with the reason; the next
 * run tries it again.
 */
export class AttachmentsNotRestoredError extends Error {
  readonly problemKind = 'missing' as const

  constructor(readonly instanceId: string, missing: Array<{contentType: number; reason: string}>) {
    super(`instance ${instanceId} is on the target without ${missing.map((entry) => `user attachment ${entry.contentType} (${entry.reason})`).join(', ')}`)
  }
}

/** What a target already holds beside one resource, to write only what is missing or different. */
/** An uploaded instance's parents on the target, as the upload answered them. */
interface TargetParents {
  patient?: string
  study?: string
  series?: string
}

interface TargetSideData {
  metadata: Record<string, string>
  /** MD5 of each user attachment, by content type number. */
  attachments: Map<number, string>
  labels: Set<string>
  /** A patient's protection from recycling, when the source's is to be carried. */
  protected?: boolean
}

/**
 * Stores instances on an Orthanc target: skips those it already has with the same MD5,
 * uploads the others, writes back user metadata, attachments and labels of the instance and of
 * its patient, study and series (after the upload, since OverwriteInstances drops them), then
 * confirms the target's MD5. For instances already there, side data is compared and what is
 * missing or different is written: nothing is assumed.
 */
export class OrthancSink {
  readonly notCarried = new NotCarriedTally()
  private features?: Features
  private readonly recentStudies = new Map<string, Promise<Set<string>>>()
  /**
   * What the source's record first written on each target resource (`level@id`) held, to tell
   * a second one merged into it: digests of its values, not the values (up to 1 MiB each), so
   * that a run's memory grows by a few dozen bytes per resource with side data.
   */
  private readonly firstWritten = new Map<string, FirstWritten>()
  /** Instances being stored, by ID: a second copy waits for the first. */
  private readonly storing = new Map<string, Promise<StoreOutcome>>()
  private readonly filesKept: FilesKeptCheck
  /** What stores over another file the target holds under the instance's ID (see storeOverWith). */
  private storeOver?: StoreOver
  /** The read-backs of found instances, one after the other (see checkFound). */
  private foundChecks: Promise<void> = Promise.resolve()
  /** Resources whose side data this run has written (or is writing): once each. */
  private readonly resourcesDone = new Map<string, Promise<void>>()
  private readonly uploader: UploadBatcher

  /**
   * `uploads`: POSTs in flight at once. Callers keep more instances than that in flight, so
   * that the next upload is ready (downloaded, read, hashed) when one finishes, and the
   * confirmation of the last one does not hold an upload's place. `zip`: small instances that
   * wait for an upload go together in one ZIP (see UploadBatcher).
   */
  constructor(private readonly client: OrthancClient, private readonly options: {dryRun: boolean; uploads: number; zip?: boolean}) {
    this.uploader = new UploadBatcher(client, options.uploads, options.zip ?? false)
    this.filesKept = new FilesKeptCheck(client)
  }

  /** Adaptive concurrency: a new number of uploads at once, effective as they finish. */
  setUploads(uploads: number): void {
    this.uploader.setSlots(uploads)
  }

  /** Uploads that carried several instances in one ZIP. */
  get zipped(): ZipUploads {
    return this.uploader.zipped
  }

  /**
   * `knownAbsent`: the caller compared ID sets already and knows the target lacks it. Two copies
   * of one instance in one job (a folder given twice, two exports) are stored one after the other:
   * at once, both would find the target without it, and the last upload would decide.
   * `wouldHold`, in a dry run: the MD5 of the copy an earlier copy of the instance in the job
   * would have left on the target, which this one is met against as the run would meet it.
   */
  async store(unit: InstanceInTransit, signal?: AbortSignal, options: {knownAbsent?: boolean; wouldHold?: string} = {}): Promise<StoreOutcome> {
    const earlier = this.storing.get(unit.instanceId)
    const stored = (async () => {
      await earlier?.catch(() => {})
      return this.storeAlone(unit, signal, earlier ? {wouldHold: options.wouldHold} : options)
    })()
    this.storing.set(unit.instanceId, stored)
    try {
      return await stored
    } finally {
      if (this.storing.get(unit.instanceId) === stored) this.storing.delete(unit.instanceId)
    }
  }

  private async storeAlone(unit: InstanceInTransit, signal: AbortSignal | undefined, options: {knownAbsent?: boolean; wouldHold?: string}): Promise<StoreOutcome> {
    this.features ??= await this.client.features(signal)
    if (this.options.dryRun && options.wouldHold !== undefined) return this.wouldStoreOver(unit, options.wouldHold, signal)
    const absent = options.knownAbsent || (unit.studyId !== undefined && !(await this.studyHas(unit.studyId, unit.instanceId, signal)))
    const existing = absent ? undefined : await this.client.storedFileInfo(unit.instanceId, signal)
    if (existing && existing.md5 === unit.md5) {
      if (!this.options.dryRun) await this.reconcile({instanceId: unit.instanceId, sideData: unit.record, attachments: unit.attachments, resources: unit.resources, missingAttachments: unit.missingAttachments}, signal)
      await this.checkFilesKept(unit.instanceId, existing.md5, signal)
      return {kind: 'skipped', targetMd5: existing.md5, instanceId: unit.instanceId}
    }

    if (existing && existing.md5 !== '' && this.options.dryRun) return this.wouldStoreOver(unit, existing.md5, signal)

    // Another file under this ID: a target with OverwriteInstances replaces it, and with it what
    // it kept beside the instance and the parents it leaves empty. (A target that records no MD5
    // says nothing of its file here: read back after the upload, as ever.)
    if (existing && existing.md5 !== '' && this.storeOver && !this.options.dryRun) {
      const storeOver = this.storeOver
      checkSafeToSend(unit.dicom)
      return storeOver(unit.instanceId, unit.md5, () => this.storeAlone(unit, signal, {knownAbsent: true}), signal)
    }

    // Whatever route the bytes came by, nothing that could harm the server is sent (Orthanc
    // 1.10.1 crashes on sequences nested a few thousand deep): refused here as hostile.
    checkSafeToSend(unit.dicom)
    if (this.options.dryRun) return {kind: 'transferred', bytes: unit.dicom.length, targetMd5: '', instanceId: unit.instanceId}
    const answer = await this.uploader.upload(unit.dicom, signal, unit.instanceId)
    crashPoint('store:uploaded')
    // From here on the target's answer is the truth: the source only predicted the ID, and a file
    // the target already had under it (AlreadyStored: stored by another run, another route, or
    // under an ID the source mispredicted) was not transferred by this run.
    // A unit with its source's record carries that server's own ID, which the target, reading the
    // same bytes, gives too, unless it decodes the patient ID otherwise (another DefaultEncoding,
    // no Specific Character Set): then the bytes still hold the record's UIDs. Bytes of another
    // instance do not: checked before any side data is written onto what was stored.
    if (unit.record && answer.ID !== unit.instanceId && !holdsInstance(unit.dicom, unit.record)) throw new IdentityMismatchError(this.client.display, unit.instanceId, answer.ID)
    const alreadyStored = answer.Status === 'AlreadyStored'
    // A listing read before this upload does not show it: a second copy of the instance met later
    // in this job (a folder given twice) would be sent again, and counted transferred twice by a
    // target that overwrites.
    if (unit.studyId !== undefined) void this.recentStudies.get(unit.studyId)?.then((ids) => ids.add(answer.ID), () => {})
    // The file under the answered ID is this unit's before anything that comes with it is written
    // there: an answer about another file (mixed up on the way) must not get this one's side data.
    // A target that records no MD5 (StoreMD5ForAttachments off) is read back.
    const targetMd5 = await this.client.fileMd5(answer.ID, signal) ?? 'missing'
    if (targetMd5 !== unit.md5) {
      // Another ID than the one expected, holding other bytes: an answer about another upload,
      // unless the target names this very instance otherwise (it decodes the patient ID in its own
      // way) and changed or kept another file of it: its SOP Instance UID tells.
      if (answer.ID !== unit.instanceId && targetMd5 !== 'missing' && !(await this.sameSopInstance(answer.ID, unit, signal))) throw new MisansweredUploadError(this.client.display, unit.instanceId, answer.ID)
      throw new TargetMismatchError(this.client.display, answer.ID, unit.md5, targetMd5, targetMd5 === 'missing' ? 'gone-after' : alreadyStored ? 'kept-older' : 'changed-on-arrival')
    }
    let missing: number[] = []
    const parents = {patient: answer.ParentPatient, study: answer.ParentStudy, series: answer.ParentSeries}
    if (alreadyStored) missing = await this.reconcile({instanceId: answer.ID, sideData: unit.record, attachments: unit.attachments, resources: unit.resources}, signal, parents, {throwIfIncomplete: false})
    else {
      if (unit.record) missing = await this.writeSideData('instance', answer.ID, unit.record, unit.attachments, undefined, signal)
      await this.writeResources(unit, signal, parents)
    }
    crashPoint('store:side-data-restored')
    if (missing.length > 0) throw notRestored(answer.ID, missing, unit.missingAttachments)
    await this.checkFilesKept(answer.ID, targetMd5, signal)
    return alreadyStored ? {kind: 'skipped', targetMd5, instanceId: answer.ID} : {kind: 'transferred', bytes: unit.dicom.length, targetMd5, instanceId: answer.ID}
  }

  /**
   * A dry run's answer for a copy sent over another file under its ID (`held`: the target's, or
   * the one an earlier copy in the job would have left): what the run would answer, as far as
   * the target's settings tell without writing.
   */
  private async wouldStoreOver(unit: InstanceInTransit, held: string, signal?: AbortSignal): Promise<StoreOutcome> {
    if (held === unit.md5) return {kind: 'skipped', targetMd5: held, instanceId: unit.instanceId}
    checkSafeToSend(unit.dicom)
    // Without OverwriteInstances the target keeps the file it holds, and the run fails this copy so.
    const overwrites = (await this.client.system(signal)).OverwriteInstances
    if (overwrites !== true) {
      const error = new TargetMismatchError(this.client.display, unit.instanceId, unit.md5, held, 'kept-older')
      // Before 1.12 a target does not say: Orthanc's default is taken, so that no failure goes unforetold.
      if (overwrites === undefined) error.message += '; this target does not say whether it overwrites (Orthanc before 1.12): its default, keeping the older file, is assumed'
      throw error
    }
    return {kind: 'transferred', bytes: unit.dicom.length, targetMd5: '', instanceId: unit.instanceId}
  }

  /** Whether the target's instance `id` is the unit's (the same SOP Instance UID); unknown (no record, no answer) counts as not. */
  private async sameSopInstance(id: string, unit: InstanceInTransit, signal?: AbortSignal): Promise<boolean> {
    const sopInstanceUid = unit.record?.sopInstanceUid
    if (!sopInstanceUid) return false
    const answered = await this.client.resource('instance', id, signal).catch(() => undefined)
    return answered?.MainDicomTags?.SOPInstanceUID === sopInstanceUid
  }

  /**
   * For an instance already on the target with the right bytes: its side data and its
   * resources' are compared with the target's, and only what is missing or different is written.
   */
  async reconcile(
    unit: {instanceId: string; sideData?: SideData; attachments?: AttachmentBytes; resources?: InstanceInTransit['resources']; missingAttachments?: Map<number, string>},
    signal?: AbortSignal, parents: TargetParents = {}, options: {throwIfIncomplete?: boolean} = {},
  ): Promise<number[]> {
    this.features ??= await this.client.features(signal)
    const {sideData} = unit
    let missing: number[] = []
    if (sideData) {
      this.countSystemMetadata('instance', unit.instanceId, sideData)
      if (hasUserSideData(sideData)) missing = await this.writeSideData('instance', unit.instanceId, sideData, unit.attachments, await this.readTarget('instance', unit.instanceId, sideData, signal), signal)
    }

    await this.writeResources(unit, signal, parents)
    if (missing.length > 0 && options.throwIfIncomplete !== false) throw notRestored(unit.instanceId, missing, unit.missingAttachments)
    return missing
  }

  /**
   * Writes back what a target held of its own on a resource that a replacement deleted with the
   * instance it replaced (see sync/replace.ts): only where nothing stands now, so what the
   * source's copy brought wins, as in any sync. Returns the attachments it had no bytes for, and
   * how many entries the target refused to take back: those are listed as lost.
   */
  async restoreOwn(level: ResourceLevel, id: string, kept: SideData, bytes: Map<number, Buffer>, signal?: AbortSignal): Promise<{missing: number[]; refused: number}> {
    const now = await this.readTarget(level, id, kept, signal)
    const absent: SideData = {
      userMetadata: Object.fromEntries(Object.entries(kept.userMetadata).filter(([name]) => !(name in now.metadata))),
      systemMetadata: {},
      attachments: kept.attachments.filter((attachment) => !now.attachments.has(attachment.contentType)),
      labels: kept.labels.filter((label) => !now.labels.has(label)),
      ...(kept.protected && !now.protected ? {protected: true as const} : {}),
    }
    let refused = 0
    const missing = await this.writeSideData(level, id, absent, bytes, now, signal, (kind, reason, name) => {
      refused++
      this.notCarried.add(level, kind, refusedBack(reason), id, name)
    })
    return {missing, refused}
  }

  /**
   * For an instance the comparison found on the target (nothing stored): the read-back of the
   * run, if none is made yet, against the MD5 the target records. A sync with nothing to store
   * proves the target keeps files as one that stores does.
   */
  async checkFound(instanceId: string, signal?: AbortSignal): Promise<void> {
    if (this.options.dryRun || !this.filesKept.wanted) return
    // One at a time: the instances found at once would each ask for an MD5 that the first one's
    // read-back makes needless.
    const mine = this.foundChecks.then(async () => {
      if (!this.filesKept.wanted) return
      const info = await this.client.storedFileInfo(instanceId, signal)
      // A target that records no MD5s (StoreMD5ForAttachments off) gives none to hold the file to
      // (''): whether it hands the file back is still asked.
      if (info) await this.filesKept.check(instanceId, info.md5, signal)
    })
    this.foundChecks = mine.catch(() => {})
    await mine
  }

  /**
   * How to store over another file the target holds under an instance's ID: through a replacer
   * that keeps the target's own side data and writes it back (see InstanceReplacer.storeOver).
   */
  storeOverWith(storeOver: StoreOver): void {
    this.storeOver = storeOver
  }

  /** Once per run, the target hands back a file it holds (see FilesKeptCheck). */
  private async checkFilesKept(instanceId: string, md5: string, signal?: AbortSignal): Promise<void> {
    if (!this.options.dryRun) await this.filesKept.check(instanceId, md5, signal)
  }

  /**
   * The side data of the instance's patient, study and series: once per resource and run. Where
   * the upload answered, its parents on the target are the ones written: the target may give them
   * other IDs than the source (it reads the patient's identifiers otherwise: another
   * DefaultEncoding, a character set only it forgives).
   */
  private async writeResources(unit: {resources?: InstanceInTransit['resources']}, signal?: AbortSignal, parents: TargetParents = {}): Promise<void> {
    for (const resource of (await unit.resources) ?? []) {
      const key = resourceKey(resource.record)
      let done = this.resourcesDone.get(key)
      if (!done) {
        done = (async () => {
          const {level, id} = sourceResource(resource.record)
          const targetId = parents[level as keyof TargetParents] ?? await id(this.client, signal)
          // A patient reached through two of its studies is one patient: written once. Two of the
          // source's patients the target reads as one are merged, each conflict named.
          const targetKey = `${level}@${targetId}`
          const other = this.resourcesDone.get(targetKey)
          if (other) {
            const first = this.firstWritten.get(targetKey)
            if (!first || first.key === key) return other
            await other.catch(() => {})
            return this.mergeInto(level, targetId, first, resource, signal)
          }
          this.firstWritten.set(targetKey, firstWritten(key, resource.record))
          const writing = (async () => {
            const existing = await this.readTarget(level, targetId, resource.record, signal)
            await this.writeSideData(level, targetId, resource.record, resource.attachments, existing, signal)
          })()
          writing.catch(() => this.resourcesDone.delete(targetKey))
          this.resourcesDone.set(targetKey, writing)
          return writing
        })()
        // A failure is this instance's; the next instance of the resource tries again.
        done.catch(() => this.resourcesDone.delete(key))
        this.resourcesDone.set(key, done)
      }

      await done
    }
  }

  /**
   * A second resource of the source that the target holds as one with a first (two patients whose
   * identifiers it reads alike): what the first did not bring is written; where the two disagree
   * (a metadata value, an attachment), the first's stays and the other's is named as not carried.
   */
  private async mergeInto(level: ResourceLevel, targetId: string, first: FirstWritten, second: ResourceInTransit, signal?: AbortSignal): Promise<void> {
    const reason = `two of the source's ${level === 'series' ? 'series' : `${level === 'study' ? 'studie' : level}s`} are one on the target (it reads their identifiers otherwise: another DefaultEncoding, a character set only it forgives); the first one's is kept`
    const {record} = second
    const merged: SideData = {
      ...record,
      userMetadata: Object.fromEntries(Object.entries(record.userMetadata).filter(([name, value]) => {
        const firstValue = first.userMetadata.get(name)
        const clash = firstValue !== undefined && firstValue !== valueDigest(value)
        if (clash) this.notCarried.add(level, 'user-metadata', reason, targetId, name)
        return !clash
      })),
      attachments: record.attachments.filter((attachment) => {
        const firstMd5 = first.attachments.get(attachment.contentType)
        const clash = firstMd5 !== undefined && firstMd5 !== attachment.md5
        if (clash) this.notCarried.add(level, 'attachments', reason, targetId, attachment.name)
        return !clash
      }),
      systemMetadata: {},
    }
    await this.writeSideData(level, targetId, merged, second.attachments, await this.readTarget(level, targetId, merged, signal), signal)
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

  /** What the target holds of the kinds the source has for this resource (only those are asked for). */
  private async readTarget(level: ResourceLevel, id: string, wanted: SideData, signal?: AbortSignal): Promise<TargetSideData> {
    const [metadata, attachments, labels, isProtected] = await Promise.all([
      Object.keys(wanted.userMetadata).length > 0 ? this.client.resourceMetadata(level, id, signal) : {},
      wanted.attachments.length > 0 ? this.targetAttachments(level, id, signal) : new Map<number, string>(),
      wanted.labels.length > 0 ? this.client.resourceLabels(level, id, signal) : [],
      wanted.protected === true && level === 'patient' && this.client.patientProtected(id, signal),
    ])
    return {metadata, attachments, labels: new Set(labels), protected: isProtected}
  }

  private async targetAttachments(level: ResourceLevel, id: string, signal?: AbortSignal): Promise<Map<number, string>> {
    const found = new Map<number, string>()
    for (const name of await this.client.resourceAttachments(level, id, signal)) {
      const info = await this.client.resourceAttachmentInfo(level, id, name, signal)
      if (info?.ContentType !== undefined) found.set(info.ContentType, info.UncompressedMD5)
    }

    return found
  }

  /**
   * Writes one resource's side data, skipping what `existing` shows is there already. Returns the
   * content types of the user attachments it listed but had no bytes for, and that the target
   * does not already hold.
   */
  private async writeSideData(
    level: ResourceLevel, id: string, data: SideData, bytes: AttachmentBytes | undefined, existing: TargetSideData | undefined, signal?: AbortSignal,
    notCarried: (kind: NotCarried['kind'], reason: string, name?: string) => void = (kind, reason, name) => this.notCarried.add(level, kind, reason, id, name),
  ): Promise<number[]> {
    const missing: number[] = []
    if (existing === undefined) this.countSystemMetadata(level, id, data)
    // Compared by the number each name stands for on the target where it says (1.12): two of the
    // source's names can stand for one number there (the target declares a name for a number the
    // source uses unnamed). Written both, one value would replace the other, and every run would
    // swap them: the named one is written, the other is not carried. Names first, numbers after.
    const declared = (await this.client.system(signal)).UserMetadata
    const onTarget = new Map<number, string>()
    for (const [name, value] of Object.entries(existing?.metadata ?? {})) {
      const number = metadataNumber(name, declared)
      if (number !== undefined) onTarget.set(number, value)
    }

    const filledBy = new Map<number, string>()
    const byNameFirst = Object.entries(data.userMetadata).sort(([a], [b]) => Number(/^\d+$/.test(a)) - Number(/^\d+$/.test(b)))
    for (const [name, value] of byNameFirst) {
      const number = declared ? metadataNumber(name, declared) : undefined
      const other = number === undefined ? undefined : filledBy.get(number)
      if (other !== undefined) {
        notCarried('user-metadata', `the target keeps it in one place with ${other} (metadata ${number}): ${other} is written`, name)
        continue
      }

      if (number !== undefined) filledBy.set(number, name)
      if (number === undefined ? existing?.metadata[name] === value : onTarget.get(number) === value) continue
      try {
        await this.client.setResourceMetadata(level, id, name, value, signal)
      } catch (error) {
        // 404: a name the target does not declare; 400/403: a number or name the target keeps for itself.
        if (!(error instanceof OrthancHttpError && [400, 403, 404].includes(error.status))) throw error
        notCarried('user-metadata', error.status === 404 ? 'the target does not declare this name in its UserMetadata' : `the target refuses it (HTTP ${error.status})`, name)
      }
    }

    for (const attachment of data.attachments) {
      if (existing?.attachments.get(attachment.contentType) === attachment.md5) continue
      const content = typeof bytes === 'function' ? await bytes(attachment.contentType) : bytes?.get(attachment.contentType)
      // No bytes: the archive's copy was refused, the stored file is damaged (reported there).
      if (!content) {
        missing.push(attachment.contentType)
        continue
      }
      try {
        // By number: it works on any target, which shows it under its own name if it declares that type.
        await this.client.putResourceAttachment(level, id, String(attachment.contentType), content, signal)
      } catch (error) {
        if (!(error instanceof OrthancHttpError && [400, 403, 404].includes(error.status))) throw error
        notCarried('attachments', `the target refuses content type ${attachment.contentType} (HTTP ${error.status})`, attachment.name)
      }
    }

    // Counted by resource, however many labels it has: the tally says how many resources lost them.
    if (data.labels.length > 0 && !this.features?.labels) notCarried('labels', 'the target is older than Orthanc 1.12 and has no labels')
    else for (const label of data.labels) if (!existing?.labels.has(label)) await this.client.addResourceLabel(level, id, label, signal)

    // Protection only ever added: a patient the target protects of its own stays protected.
    if (data.protected && level === 'patient' && !existing?.protected) {
      try {
        await this.client.protectPatient(id, signal)
      } catch (error) {
        if (!(error instanceof OrthancHttpError && [400, 403, 404].includes(error.status))) throw error
        notCarried('protection', `the target refuses to protect the patient from recycling (HTTP ${error.status})`)
      }
    }

    return missing
  }

  private countSystemMetadata(level: ResourceLevel, id: string, data: SideData): void {
    const names = Object.keys(data.systemMetadata)
    if (names.length > 0) this.notCarried.add(level, 'system-metadata', `Orthanc keeps it for itself and no REST call writes it (${names.sort().join(', ')})`, id)
  }
}

function notRestored(instanceId: string, missing: number[], reasons?: Map<number, string>): AttachmentsNotRestoredError {
  return new AttachmentsNotRestoredError(instanceId, missing.map((contentType) => ({contentType, reason: reasons?.get(contentType) ?? 'its bytes could not be had from the source'})))
}

/** Whether DICOM bytes carry the UIDs of this record; bytes this reader cannot read are given the benefit of the doubt, as the target read them. */
function holdsInstance(dicom: Buffer, record: InstanceRecord): boolean {
  let read
  try {
    read = readDicomIdentifiers(dicom)
  } catch {
    return true
  }
  return read.sopInstanceUid === record.sopInstanceUid && read.seriesInstanceUid === record.seriesInstanceUid && read.studyInstanceUid === record.studyInstanceUid
}

/** The first source record written on a target resource, as mergeInto compares a second with it. */
interface FirstWritten {
  key: string
  userMetadata: Map<string, string>
  attachments: Map<number, string>
}

function firstWritten(key: string, record: ResourceRecord): FirstWritten {
  return {
    key,
    userMetadata: new Map(Object.entries(record.userMetadata).map(([name, value]) => [name, valueDigest(value)])),
    attachments: new Map(record.attachments.map((attachment) => [attachment.contentType, attachment.md5])),
  }
}

function valueDigest(value: string): string {
  return createHash('sha256').update(value).digest('base64')
}
