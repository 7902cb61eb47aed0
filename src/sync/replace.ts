import {hasUserSideData, type ResourceLevel, type SideData} from '../model.js'
import type {OrthancClient} from '../orthanc/client.js'
import {OrthancHttpError, OrthancTlsError, OrthancUnreachableError} from '../orthanc/errors.js'
import {AttachmentsNotRestoredError, type OrthancSink, REPLACEMENT_LOST, type StoreOutcome} from '../sinks/orthanc-sink.js'
import {SideDataReader} from '../sources/side-data.js'

/**
 * What a deletion took with it, from the nearest parent Orthanc says still stands (none: it took
 * them all, or it is not known): the instance, and each parent below that one. Only those get
 * their side data back: a parent that stayed keeps what it has, including what a user removed
 * from it meanwhile.
 */
function wentWith(remaining: ResourceLevel | undefined): Set<ResourceLevel> {
  const below: ResourceLevel[] = ['instance', 'series', 'study', 'patient']
  return new Set(remaining === undefined ? below : below.slice(0, below.indexOf(remaining)))
}

/** How long the write-back of unfinished replacements may take once the job is over. */
const FINISH_MS = 15_000

/** Reads of parents kept for the instances that follow: a few series' worth. */
const REMEMBERED_READS = 64

/** A parent's read holding more attachment bytes than this is read again by each instance instead of kept. */
const REMEMBERED_BYTES_EACH = 256 * 1024

/**
 * Attachment bytes held at most for replacements begun and not ended (see InstanceReplacer):
 * past it, no other replacement begins in this run.
 */
const HELD_BYTES = 64 * 1024 * 1024

/**
 * Whether a deletion that failed certainly did not happen: the request never reached the server,
 * or it answered with a refusal (a 4xx other than 404 and 408; a gateway's 5xx may come after
 * the server did it).
 */
function certainlyNotDeleted(error: unknown): boolean {
  if (error instanceof OrthancUnreachableError || error instanceof OrthancTlsError) return true
  return error instanceof OrthancHttpError && error.status >= 400 && error.status < 500 && error.status !== 404 && error.status !== 408
}

/** A replacement not begun, so that the bytes held for unfinished ones stay bounded. */
export class ReplacementDeferredError extends Error {
  constructor(instanceId: string, heldBytes: number) {
    super(`instance ${instanceId} differs on the target and was not replaced in this run: ${(heldBytes / 1024 / 1024).toFixed(1)} MiB of the target's own attachments are held for replacements not finished yet; run again to replace it`)
    this.name = 'ReplacementDeferredError'
  }
}

/** What the target keeps of its own beside one resource, with its attachments' bytes. */
interface KeptSideData {
  level: ResourceLevel
  id: string
  data: SideData
  bytes: Map<number, Buffer>
}

function byteCount(kept: Array<KeptSideData | undefined>): number {
  let total = 0
  for (const resource of kept) for (const bytes of resource?.bytes.values() ?? []) total += bytes.length
  return total
}

/**
 * Replaces an instance that differs on the target. Without OverwriteInstances Orthanc keeps the
 * copy it has, so the target's copy is deleted first; Orthanc then deletes with it its series,
 * study and patient when it was their last instance, and with each what the target kept beside
 * it (metadata, attachments, labels the source may not have). Before the deletion, the target's
 * own side data of the instance and of its parents is read (bytes and all); once the source's
 * copy is stored, the instance and each parent the deletion took (Orthanc's answer names the
 * nearest one that stayed) get back what is not there any more.
 *
 * What was read is held until the instance is stored, across the engine's attempts: an attempt
 * that fails after the deletion leaves the next one nothing to read on the target. It is held in
 * memory only: a run killed between the deletion and the write-back loses it (a window of a few
 * requests, named in the README); a store that fails for good leaves it listed as not carried (`finish`).
 * A deletion that certainly did not happen lets it go at once (the next attempt reads again);
 * and once `heldLimit` bytes are held for replacements not ended, no other one begins: it fails,
 * with the target's copy untouched, for the next run.
 */
export class InstanceReplacer {
  /** Replacements begun and not ended, by instance ID: what was kept, and how far each went. */
  private readonly pending = new Map<string, {kept: KeptSideData[]; attempted: boolean; went?: Set<ResourceLevel>; stored?: StoreOutcome}>()
  /** Parents' side data (and which parents a series has) read lately: the instances of a series are replaced together. */
  private readonly recent = new Map<string, Promise<unknown>>()
  private readonly targetSideData: SideDataReader
  /** Attachment bytes in `pending`. */
  private held = 0

  constructor(private readonly target: OrthancClient, private readonly sink: OrthancSink, private readonly heldLimit = HELD_BYTES) {
    this.targetSideData = new SideDataReader(target)
  }

  /** Attachment bytes of the target's own held for replacements not ended. */
  get heldBytes(): number {
    return this.held
  }

  /**
   * Each step is done once across the engine's attempts: an attempt that failed after the
   * deletion stores without deleting again, and one that failed after the store (while writing
   * back) only writes back: deleting the copy it had just stored would take the parents, and what
   * the store wrote on them, with it again.
   */
  async replace(instanceId: string, store: () => Promise<StoreOutcome>, signal?: AbortSignal): Promise<StoreOutcome> {
    let replacement = this.pending.get(instanceId)
    if (!replacement) {
      const kept = await this.keptBeside(instanceId, signal)
      const bytes = byteCount(kept)
      // One alone always begins, however large: otherwise it could never be replaced.
      if (this.held > 0 && this.held + bytes > this.heldLimit) throw new ReplacementDeferredError(instanceId, this.held)
      replacement = {kept, attempted: false}
      this.hold(instanceId, replacement)
    }

    if (!replacement.went) {
      // From here on the copy may be gone, answered or not (see finish).
      const sentBefore = replacement.attempted
      replacement.attempted = true
      try {
        replacement.went = wentWith(await this.target.deleteInstance(instanceId, signal))
      } catch (error) {
        // Deleted by an earlier attempt whose answer was lost, or by someone else: what went with it is not known.
        if (error instanceof OrthancHttpError && error.status === 404) replacement.went = wentWith(undefined)
        else {
          // Nothing went: nothing to hold (an earlier deletion whose answer was lost may have happened, though).
          if (!sentBefore && certainlyNotDeleted(error)) this.release(instanceId)
          throw error
        }
      }
    }

    replacement.stored ??= await store()
    const missing: number[] = []
    for (const {level, id, data, bytes} of replacement.kept.filter((kept) => replacement.went!.has(kept.level))) {
      // The store answers the instance's ID; its parents' IDs are hashes of the same UIDs, so the same again.
      missing.push(...await this.sink.restoreOwn(level, level === 'instance' ? replacement.stored.instanceId : id, data, bytes, signal))
    }

    this.release(instanceId)
    if (missing.length > 0) throw new AttachmentsNotRestoredError(instanceId, missing.map((contentType) => ({contentType, reason: 'the target\'s own copy could not be read before it was replaced'})))
    return replacement.stored
  }

  /**
   * Once the job is over: replacements that did not end (their last attempt failed, the job
   * stopped). One that sent no deletion lost nothing. Otherwise, of what its deletion took (all of
   * it when no answer said), whatever stands on the target again gets back what it lacks; what
   * has nothing to hold it now is listed as not carried.
   */
  async finish(): Promise<void> {
    // A deletion sent may have happened even when no answer came: what went with it is then not known.
    const unfinished = [...this.pending.values()].filter((replacement) => replacement.attempted)
    this.pending.clear()
    this.held = 0
    // The job may have stopped because the target went away: this must not wait out its retries.
    const signal = AbortSignal.timeout(FINISH_MS)
    const gone = unfinished.flatMap((replacement) => replacement.kept.filter((kept) => (replacement.went ?? wentWith(undefined)).has(kept.level)))
    for (const {level, id, data, bytes} of gone) {
      if (await this.sink.restoreOwn(level, id, data, bytes, signal).then(() => true, () => false)) continue
      for (const name of Object.keys(data.userMetadata)) this.sink.notCarried.add(level, 'user-metadata', REPLACEMENT_LOST, id, name)
      for (const attachment of data.attachments) this.sink.notCarried.add(level, 'attachments', REPLACEMENT_LOST, id, attachment.name)
      if (data.labels.length > 0) this.sink.notCarried.add(level, 'labels', REPLACEMENT_LOST, id)
    }
  }

  /**
   * The instance's own side data on the target, and that of its series, study and patient: any of
   * them may go with it, alone or with the other instances of its series being replaced at the
   * same time (so counting what a parent holds now would not say). A parent is read while the
   * instance, still in it, keeps it there; the instances of one series share that read.
   */
  private async keptBeside(instanceId: string, signal?: AbortSignal): Promise<KeptSideData[]> {
    const instance = await this.target.resource('instance', instanceId, signal)
    if (!instance?.ParentSeries) return []
    const parents = await this.remembered(`parents@${instance.ParentSeries}`, () => this.parentsOf(instance.ParentSeries!, signal))
    const kept = await Promise.all([
      this.ownSideData('instance', instanceId, signal),
      ...parents.map(({level, id}) => this.remembered(`${level}@${id}`, () => this.ownSideData(level, id, signal), (resource) => byteCount([resource]) <= REMEMBERED_BYTES_EACH)),
    ])
    return kept.filter((resource): resource is KeptSideData => resource !== undefined)
  }

  private async parentsOf(seriesId: string, signal?: AbortSignal): Promise<Array<{level: ResourceLevel; id: string}>> {
    const series = await this.target.resource('series', seriesId, signal)
    const study = series?.ParentStudy === undefined ? undefined : await this.target.resource('study', series.ParentStudy, signal)
    return [
      {level: 'series' as const, id: seriesId},
      ...(study ? [{level: 'study' as const, id: study.ID}] : []),
      ...(study?.ParentPatient ? [{level: 'patient' as const, id: study.ParentPatient}] : []),
    ]
  }

  /** What the target keeps beside one resource, bytes and all; undefined when it keeps nothing. */
  private async ownSideData(level: ResourceLevel, id: string, signal?: AbortSignal): Promise<KeptSideData | undefined> {
    const data = await this.targetSideData.sideDataOf(level, id, signal)
    if (!hasUserSideData(data)) return undefined
    const bytes = new Map<number, Buffer>()
    for (const attachment of data.attachments) bytes.set(attachment.contentType, await this.targetSideData.checkedAttachment(level, id, attachment, signal))
    return {level, id, data, bytes}
  }

  private hold(instanceId: string, replacement: {kept: KeptSideData[]; attempted: boolean}): void {
    this.pending.set(instanceId, replacement)
    this.held += byteCount(replacement.kept)
  }

  private release(instanceId: string): void {
    const replacement = this.pending.get(instanceId)
    if (!replacement) return
    this.pending.delete(instanceId)
    this.held -= byteCount(replacement.kept)
  }

  /** Read once for the instances replaced together (when `keep` says it is small enough); a failed read is asked again. */
  private remembered<T>(key: string, read: () => Promise<T>, keep: (found: T) => boolean = () => true): Promise<T> {
    let found = this.recent.get(key) as Promise<T> | undefined
    if (!found) {
      found = read()
      const forget = () => {
        if (this.recent.get(key) === found) this.recent.delete(key)
      }
      found.then((value) => keep(value) || forget(), forget)
      this.recent.set(key, found)
      if (this.recent.size > REMEMBERED_READS) this.recent.delete(this.recent.keys().next().value!)
    }

    return found
  }
}
