import {hasUserSideData, type ResourceLevel} from '../model.js'
import type {OrthancClient} from '../orthanc/client.js'
import {OrthancHttpError} from '../orthanc/errors.js'
import {AttachmentsNotRestoredError, type OrthancSink, REPLACEMENT_LOST, replacementKept, type StoreOutcome} from '../sinks/orthanc-sink.js'
import {SideDataReader} from '../sources/side-data.js'
import {TargetMismatchError} from '../sinks/target-mismatch.js'
import {crashPoint} from '../util/crash-points.js'
import {type KeptResource, type LeftReplacement, ReplacementJournal} from './replacement-journal.js'

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
 * Attachment bytes held at most for replacements begun and not ended, and being read for them
 * (see InstanceReplacer): past it, no other replacement begins in this run.
 */
const HELD_BYTES = 64 * 1024 * 1024

const mebibytes = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`

/** A replacement not begun, so that the bytes held for unfinished ones stay bounded. */
export class ReplacementDeferredError extends Error {
  constructor(instanceId: string, needed: number, held: number) {
    super(`instance ${instanceId} differs on the target and was not replaced in this run: keeping the target's own attachments beside it (${mebibytes(needed)}) would add to the ${mebibytes(held)} held for replacements not finished yet; run again to replace it`)
    this.name = 'ReplacementDeferredError'
  }
}

/** The source's copy is on the target, but the target refused to take back some of its own that went with the old one. */
export class OwnDataRefusedError extends Error {
  readonly problemKind = 'rejected' as const

  constructor(instanceId: string, refused: number) {
    super(`instance ${instanceId} was replaced, but the target refused to take back ${refused} of its own entries deleted with its old copy (listed under Not carried)`)
    this.name = 'OwnDataRefusedError'
  }
}

/** What the target keeps of its own beside one resource, with its attachments' bytes. */
interface KeptSideData extends KeptResource {
  /** Ends the reservation its bytes were read under, once a replacement holds them (see HeldBytes); idempotent. */
  endReservation: () => void
}

function byteCount(kept: KeptSideData | undefined): number {
  let total = 0
  for (const bytes of kept?.bytes.values() ?? []) total += bytes.length
  return total
}

/**
 * The target's own bytes that replacements hold or are reading, each resource's counted once
 * however many replacements share it (the instances of a series share their parents' read).
 */
class HeldBytes {
  private readonly holders = new Map<KeptSideData, number>()
  private held = 0
  private reading = 0

  constructor(private readonly limit: number) {}

  get bytes(): number {
    return this.held + this.reading
  }

  /** Before reading `size` bytes for a replacement: refused when others are held or read and it would pass the limit (one alone always goes). */
  reserve(instanceId: string, size: number): () => void {
    // A replacement that reads no bytes adds nothing: it always goes.
    if (size > 0 && this.bytes > 0 && this.bytes + size > this.limit) throw new ReplacementDeferredError(instanceId, size, this.bytes)
    this.reading += size
    let done = false
    return () => {
      if (!done) this.reading -= size
      done = true
    }
  }

  hold(kept: KeptSideData[]): void {
    for (const resource of kept) {
      const holders = this.holders.get(resource) ?? 0
      if (holders === 0) this.held += byteCount(resource)
      this.holders.set(resource, holders + 1)
    }
  }

  release(kept: KeptSideData[]): void {
    for (const resource of kept) {
      const holders = this.holders.get(resource) ?? 0
      if (holders > 1) this.holders.set(resource, holders - 1)
      else if (holders === 1) {
        this.holders.delete(resource)
        this.held -= byteCount(resource)
      }
    }
  }

  clear(): void {
    this.holders.clear()
    this.held = 0
  }
}

/**
 * Replaces an instance that differs on the target. Without OverwriteInstances Orthanc keeps the
 * copy it has, so the target's copy is deleted first; Orthanc then deletes with it its series,
 * study and patient when it was their last instance, and with each what the target kept beside
 * it (metadata, attachments, labels the source may not have). Before the deletion, the target's
 * own side data of the instance and of its parents is read (bytes and all); once the source's
 * copy is stored, the instance and each parent the deletion took (Orthanc's answer names the
 * nearest one that stayed) get back what is not there any more. What the target refuses to take
 * back is listed as lost, and the instance failed.
 *
 * What was read is held until the instance is stored, across the engine's attempts: an attempt
 * that fails after the deletion leaves the next one nothing to read on the target. With a journal
 * it is also on the disk from before the deletion until the write-back, so that a run killed in
 * between leaves it to the next run into the target (`takeOver`, written back in `finish`); a
 * store that fails for good leaves it listed as not carried, and kept there for the next run.
 * A deletion that failed is followed by a look at the target: an instance still there went
 * nowhere, and what was kept for it is let go (the next attempt reads again); one gone went,
 * answered or not (the client may have sent it more than once), and is stored. Once `heldLimit`
 * bytes are held or being read for replacements not ended, no other one begins: it fails, with
 * the target's copy untouched, for the next run.
 */
export class InstanceReplacer {
  /** Replacements begun and not ended, by instance ID: what was kept, and how far each went. */
  private readonly pending = new Map<string, {kept: KeptSideData[]; attempted: boolean; went?: Set<ResourceLevel>; stored?: StoreOutcome; journaled?: string; copy?: string}>()
  /** Parents' side data (and which parents a series has) read lately: the instances of a series are replaced together. */
  private readonly recent = new Map<string, Promise<unknown>>()
  private readonly targetSideData: SideDataReader
  private readonly held: HeldBytes
  private readonly journal: ReplacementJournal | undefined
  /** Replacements earlier runs were killed in, taken over to be written back in `finish`. */
  private left: LeftReplacement[] = []
  /** Of those, how many `finish` wrote back whole. */
  leftoversWrittenBack = 0

  constructor(private readonly target: OrthancClient, private readonly sink: OrthancSink, options: {heldLimit?: number; journal?: ReplacementJournal} = {}) {
    this.targetSideData = new SideDataReader(target)
    this.held = new HeldBytes(options.heldLimit ?? HELD_BYTES)
    this.journal = options.journal
  }

  /** Takes over what runs killed mid-replacement left in the journal: written back in `finish`, once this run has stored what it sends. */
  async takeOverLeftovers(): Promise<void> {
    this.left = (await this.journal?.takeOver()) ?? []
  }

  /** Attachment bytes of the target's own held or being read for replacements not ended. */
  get heldBytes(): number {
    return this.held.bytes
  }

  /**
   * Each step is done once across the engine's attempts: an attempt that failed after the
   * deletion stores without deleting again, and one that failed after the store (while writing
   * back) only writes back: deleting the copy it had just stored would take the parents, and what
   * the store wrote on them, with it again.
   */
  async replace(instanceId: string, store: () => Promise<StoreOutcome>, signal?: AbortSignal): Promise<StoreOutcome> {
    return this.replaceWith(instanceId, store, signal, {deleteFirst: true})
  }

  /**
   * For a store that may itself replace the target's copy (an import into a target with
   * OverwriteInstances: Orthanc deletes the instance it had, and the parents it leaves empty, with
   * what the target kept beside them): the target's own side data is kept as for a replacement,
   * and written back wherever the store left nothing. A target that keeps its copy (the store
   * fails as `kept-older`) lost nothing.
   */
  async storeOver(instanceId: string, copy: string, store: () => Promise<StoreOutcome>, signal?: AbortSignal): Promise<StoreOutcome> {
    return this.replaceWith(instanceId, store, signal, {deleteFirst: false, copy})
  }

  private async replaceWith(instanceId: string, store: () => Promise<StoreOutcome>, signal: AbortSignal | undefined, options: {deleteFirst: boolean; copy?: string}): Promise<StoreOutcome> {
    let replacement = this.pending.get(instanceId)
    if (replacement && replacement.copy !== options.copy) {
      // Another copy of the instance (a newer export's) after one whose replacement did not end
      // (its write-back failed): stored in its turn, never answered with the other's outcome.
      // What was kept, read before either went, is still the target's own, written back after it.
      replacement.copy = options.copy
      replacement.stored = undefined
      if (!options.deleteFirst) replacement.went = undefined
    }
    if (!replacement) {
      replacement = {kept: await this.keptBeside(instanceId, signal), attempted: false, copy: options.copy}
      this.pending.set(instanceId, replacement)
      // Held before the reservations end: the bytes are counted all along.
      this.held.hold(replacement.kept)
      for (const resource of replacement.kept) resource.endReservation()
      // On the disk before anything goes: a run killed from here on leaves it to the next one.
      if (replacement.kept.length > 0 && this.journal) {
        try {
          replacement.journaled = await this.journal.record(instanceId, replacement.kept)
        } catch (error) {
          await this.release(instanceId)
          throw error
        }
      }
    }

    if (!options.deleteFirst && !replacement.went) {
      // Whatever the store overwrites goes with it: which parents, no answer says.
      replacement.attempted = true
      try {
        replacement.stored ??= await store()
      } catch (error) {
        // The target kept its own copy: nothing went.
        if (error instanceof TargetMismatchError && error.why === 'kept-older') await this.release(instanceId)
        throw error
      }
      replacement.went = wentWith(undefined)
    }

    if (!replacement.went) {
      // From here on the copy may be gone, answered or not (see finish).
      replacement.attempted = true
      let answered: Set<ResourceLevel> | undefined
      try {
        answered = wentWith(await this.target.deleteInstance(instanceId, signal))
      } catch (error) {
        // Deleted by an earlier attempt whose answer was lost, or by someone else: what went with it is not known.
        if (error instanceof OrthancHttpError && error.status === 404) replacement.went = wentWith(undefined)
        else {
          const stillThere = await this.target.resource('instance', instanceId, signal).then((found) => found !== undefined, () => undefined)
          if (stillThere === true) await this.release(instanceId)
          if (stillThere !== false) throw error
          replacement.went = wentWith(undefined)
        }
      }
      if (answered) {
        replacement.went = answered
        // Whoever writes it back (this run, or the next if this one dies) writes back only what went.
        // Outside the deletion's own handling: a journal that fails here must not be taken for a
        // deletion that did. A full disk does not stop the replacement here (see noteWent).
        if (replacement.journaled) await this.journal?.noteWent(replacement.journaled, instanceId, replacement.kept, answered)
        crashPoint('replace:deleted')
      }
    }

    replacement.stored ??= await store()
    const missing: number[] = []
    let refused = 0
    for (const {level, id, data, bytes} of replacement.kept.filter((kept) => replacement.went!.has(kept.level))) {
      // The store answers the instance's ID; its parents' IDs are hashes of the same UIDs, so the same again.
      const restored = await this.sink.restoreOwn(level, level === 'instance' ? replacement.stored.instanceId : id, data, bytes, signal)
      missing.push(...restored.missing)
      refused += restored.refused
    }

    await this.release(instanceId)
    if (missing.length > 0) throw new AttachmentsNotRestoredError(instanceId, missing.map((contentType) => ({contentType, reason: 'the target\'s own copy could not be read before it was replaced'})))
    if (refused > 0) throw new OwnDataRefusedError(instanceId, refused)
    return replacement.stored
  }

  /**
   * Once the job is over: replacements that did not end (their last attempt failed, the job
   * stopped), and those earlier runs were killed in. One that sent no deletion lost nothing.
   * Otherwise, of what its deletion took (all of it when no answer said), whatever stands on the
   * target again gets back what it lacks; what has nothing to hold it now is listed as not
   * carried, and stays in the journal for the next run.
   */
  async finish(): Promise<void> {
    const unfinished = [...this.pending.values()]
    this.pending.clear()
    this.held.clear()
    for (const replacement of unfinished) if (!replacement.attempted && replacement.journaled) await this.journal?.remove(replacement.journaled)
    // A deletion sent may have happened even when no answer came: what went with it is then not known.
    const toWriteBack = [
      ...unfinished.filter((replacement) => replacement.attempted).map((replacement) => ({
        entry: replacement.journaled, earlier: false, kept: replacement.kept.filter((kept) => (replacement.went ?? wentWith(undefined)).has(kept.level)),
      })),
      ...this.left.map((left) => ({entry: left.entry, earlier: true, kept: left.kept.filter((kept) => (left.went ? new Set(left.went) : wentWith(undefined)).has(kept.level))})),
    ]
    this.left = []
    // The job may have stopped because the target went away: this must not wait out its retries.
    const signal = AbortSignal.timeout(FINISH_MS)
    for (const {entry, earlier, kept} of toWriteBack) {
      let written = true
      let wroteAll = kept.length > 0
      const reason = !this.journal || entry === undefined ? REPLACEMENT_LOST : replacementKept(this.journal.folder, earlier)
      for (const {level, id, data, bytes} of kept) {
        // What the target refuses is listed as lost by restoreOwn, and never goes in; what had no bytes waits for them.
        const restored = await this.sink.restoreOwn(level, id, data, bytes, signal).catch(() => undefined)
        if (restored?.refused) wroteAll = false
        if (restored !== undefined && restored.missing.length === 0) continue
        written = false
        for (const name of Object.keys(data.userMetadata)) this.sink.notCarried.add(level, 'user-metadata', reason, id, name)
        for (const attachment of data.attachments) this.sink.notCarried.add(level, 'attachments', reason, id, attachment.name)
        if (data.labels.length > 0) this.sink.notCarried.add(level, 'labels', reason, id)
      }
      if (written && entry !== undefined) await this.journal?.remove(entry)
      // Said only where all of it went in: the target refusing some is listed as lost instead.
      if (written && wroteAll && earlier) this.leftoversWrittenBack++
    }
    await this.journal?.close()
  }

  private async release(instanceId: string): Promise<void> {
    const replacement = this.pending.get(instanceId)
    if (!replacement) return
    this.pending.delete(instanceId)
    this.held.release(replacement.kept)
    if (replacement.journaled) await this.journal?.remove(replacement.journaled)
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
    const reads = await Promise.allSettled([
      this.ownSideData(instanceId, 'instance', instanceId, signal),
      ...parents.map(({level, id}) => this.remembered(`${level}@${id}`, () => this.ownSideData(instanceId, level, id, signal), (resource) => byteCount(resource) <= REMEMBERED_BYTES_EACH)),
    ])
    const kept = reads.flatMap((read) => (read.status === 'fulfilled' && read.value ? [read.value] : []))
    const failed = reads.find((read): read is PromiseRejectedResult => read.status === 'rejected')
    if (!failed) return kept
    // Not begun: what was read is not held, and its reservation ends.
    for (const resource of kept) resource.endReservation()
    throw failed.reason
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

  /**
   * What the target keeps beside one resource, bytes and all; undefined when it keeps nothing.
   * Its attachments' sizes are reserved before their bytes are read (see HeldBytes), until a
   * replacement holds them.
   */
  private async ownSideData(instanceId: string, level: ResourceLevel, id: string, signal?: AbortSignal): Promise<KeptSideData | undefined> {
    const data = await this.targetSideData.sideDataOf(level, id, signal)
    if (!hasUserSideData(data)) return undefined
    const endReservation = this.held.reserve(instanceId, data.attachments.reduce((sum, attachment) => sum + attachment.size, 0))
    try {
      const bytes = new Map<number, Buffer>()
      for (const attachment of data.attachments) bytes.set(attachment.contentType, await this.targetSideData.checkedAttachment(level, id, attachment, signal))
      return {level, id, data, bytes, endReservation}
    } catch (error) {
      endReservation()
      throw error
    }
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
