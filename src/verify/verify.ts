import {type Endpoint, hasEveryAttachment} from '../model.js'
import type {OrthancClient} from '../orthanc/client.js'
import {endpointOf} from '../orthanc/endpoint-of.js'
import {archiveTotals} from '../sources/archive-totals.js'
import type {JobEventListener, ProgressListener} from '../transfer/progress.js'
import {isCompletenessProblem, type Problem, ProblemList} from '../problems.js'
import {type ArchiveInput, type ArchiveReadReport, readArchives, type VolumeCounts} from '../sources/archive-source.js'
import {forEachConcurrent} from '../util/concurrency.js'
import {FilesKeptCheck} from '../sinks/files-kept.js'
import {TargetMismatchError} from '../sinks/target-mismatch.js'
import {type StudyCompleteness, studyCompleteness} from '../import/study-completeness.js'

export interface StudyCheck {
  studyId: string
  studyInstanceUid: string
  expected: number
  /** Instances of the study whose every byte matched the proven manifests. */
  valid: number
  /** With a target: instances of the study on it with the manifest's MD5. */
  onTarget?: number
}

export interface VerifySummary {
  /** Every volume present and proven, every entry present, every study whole. */
  complete: boolean
  /** Nothing damaged, altered, hostile, contradictory or unreadable: every problem found (if any) is something missing. */
  valid: boolean
  volumes: VolumeCounts
  /** Instances whose DICOM file and every user attachment matched: each copy, when several exports hold one. */
  instances: number
  /** Exports (volume groups) the proven volumes belong to. */
  exports: number
  problems: Problem[]
  problemCount: number
  studies: StudyCheck[]
  /** With a target: the server, and what it holds of the archive. */
  /** `missing` and `different` list the first instances (up to 1,000); the counts are every one. */
  /**
   * `studiesShort`: studies an export without filters left partly out (the far side has the rest)
   * of which the target holds fewer instances than the source had (see studyCompleteness).
   */
  target?: Endpoint & {confirmed: number; missingCount: number; differentCount: number; missing: string[]; different: string[]; studiesShort: StudyCompleteness['incomplete']}
}

export interface VerifyOptions {
  /** Also confirm that every archived instance is on this server, with the same MD5. */
  target?: OrthancClient
  /** Instances checked on the target at once. */
  concurrency: number
  /** Where an archive read from a stream waits, one volume at a time, until it is proven. */
  spoolDir?: string
  signal?: AbortSignal
  onProgress?: ProgressListener
  /** The plan (when volume files say what they hold), and each problem found. */
  onEvent?: JobEventListener
}

const LISTED = 1000

/** One study as one export holds it. */
const exportStudy = (group: string | undefined, studyId: string) => `${group ?? ''}\u0000${studyId}`

/**
 * Checks archives offline (completeness and validity, per study against the exported counts)
 * and, with a target, that every archived instance is on it with the same MD5: what the
 * receiving side runs before the source data may be deleted. It reads exactly as import does,
 * so what verify accepts is what import would store.
 */
export async function verifyArchives(inputs: ArchiveInput[], options: VerifyOptions): Promise<VerifySummary> {
  const problems = new ProblemList()
  const report: ArchiveReadReport = {bags: [], missingVolumes: []}
  const validByStudy = new Map<string, number>()
  const onTargetByStudy = new Map<string, number>()
  const target = options.target
    ? {...await endpointOf(options.target, options.signal), confirmed: 0, missingCount: 0, differentCount: 0, missing: [] as string[], different: [] as string[], studiesShort: [] as StudyCompleteness['incomplete']}
    : undefined
  let instances = 0
  let bytes = 0
  const paths = inputs.flatMap((input) => (input.path ? [input.path] : []))
  const totals = paths.length === inputs.length ? await archiveTotals(paths) : undefined
  if (totals) options.onEvent?.({type: 'plan', ...totals})
  // Offline, verifying is reading and hashing every entry; with a target, each instance is also looked up there.
  const phase = options.target ? 'verifying' : 'hashing'
  const onProblem = (problem: Problem) => {
    problems.add(problem)
    options.onEvent?.({type: 'failure', problem})
  }

  // The MD5 a target records is no proof that it keeps the file (StoreDicom false): once per
  // run one instance found there is read back; the verdict that it keeps none stops the check.
  const filesKept = options.target && new FilesKeptCheck(options.target)
  const handedBackAlike = async (instanceId: string, md5: string): Promise<boolean> => {
    try {
      await filesKept?.check(instanceId, md5, options.signal)
      return true
    } catch (error) {
      if (error instanceof TargetMismatchError) return false
      throw error
    }
  }

  const units = readArchives(inputs, {onSkip() {}, onProblem}, report, {spoolDir: options.spoolDir, signal: options.signal})
  let read = 0
  await forEachConcurrent(units, options.concurrency, async (unit) => {
    read++
    bytes += unit.dicom.length
    options.onProgress?.({phase, done: read, total: totals?.instances, bytes, totalBytes: totals?.bytes})
    const study = exportStudy(unit.group, unit.record!.studyId)
    // Valid: its DICOM file and every one of its attachments matched (a refused one is among the problems).
    if (hasEveryAttachment(unit)) {
      instances++
      validByStudy.set(study, (validByStudy.get(study) ?? 0) + 1)
    }
    if (!options.target || !target) return
    // A target that records no MD5 (StoreMD5ForAttachments off) is read back.
    const md5 = await options.target.fileMd5(unit.instanceId, options.signal)
    if (md5 === undefined) {
      target.missingCount++
      if (target.missing.length < LISTED) target.missing.push(unit.instanceId)
    } else if (md5 !== unit.md5 || !(await handedBackAlike(unit.instanceId, md5))) {
      target.differentCount++
      if (target.different.length < LISTED) target.different.push(unit.instanceId)
    } else {
      target.confirmed++
      onTargetByStudy.set(study, (onTargetByStudy.get(study) ?? 0) + 1)
    }
  })

  // Each export is held to what it planned of each study: two exports of the same study, each
  // short of the same instance, never add up to a whole one. Each study is shown as its least
  // complete export has it.
  const studiesById = new Map<string, StudyCheck>()
  for (const bag of report.bags) {
    for (const [studyId, planned] of Object.entries(bag.studies)) {
      const key = exportStudy(bag.group, studyId)
      const check: StudyCheck = {
        studyId, studyInstanceUid: planned.studyInstanceUid, expected: planned.expectedInstances, valid: validByStudy.get(key) ?? 0,
        ...(options.target ? {onTarget: onTargetByStudy.get(key) ?? 0} : {}),
      }
      const shown = studiesById.get(studyId)
      if (!shown || check.expected - check.valid > shown.expected - shown.valid) studiesById.set(studyId, check)
    }
  }
  const studies = [...studiesById.values()]
  // What the archive left out of a study as the far side's must be on the target too, as import
  // says; and every study it names as left out whole, not most of them: a retention rule that
  // deleted one there is no reason to fail an import, but it is one not to delete the source's.
  if (options.target && target) target.studiesShort = (await studyCompleteness(options.target, report.bags, new Map(), options.signal, {everyNamedStudy: true})).incomplete.filter((study) => study.leftOut)
  const unproven = report.bags.filter((bag) => !bag.proven)
  const incomplete = report.bags.filter((bag) => bag.proven && !bag.complete)
  return {
    complete: report.bags.length > 0 && unproven.length === 0 && incomplete.length === 0 && report.missingVolumes.length === 0
      && !problems.some(isCompletenessProblem) && studies.every((study) => study.valid >= study.expected),
    valid: !problems.some((problem) => !isCompletenessProblem(problem)),
    volumes: {
      read: report.bags.length,
      proven: report.bags.length - unproven.length,
      complete: report.bags.filter((bag) => bag.complete).length,
      unproven: unproven.map((bag) => ({volume: bag.bag, input: bag.input, instances: bag.instancesPlanned, fromStream: bag.fromStream})),
      incomplete: incomplete.map((bag) => bag.bag),
      missing: report.missingVolumes,
    },
    instances,
    exports: new Set(report.bags.filter((bag) => bag.proven).map((bag) => bag.group)).size,
    problems: problems.items,
    problemCount: problems.count,
    studies,
    target,
  }
}

/**
 * The one verdict on a verification, which both the printed conclusion and the exit code come
 * from, so that they cannot disagree.
 */
export function verifyOutcome(summary: VerifySummary): 'ok' | 'bad-input' | 'target-differs' {
  if (!summary.complete || !summary.valid || summary.problemCount > 0) return 'bad-input'
  if (summary.target && (summary.target.missingCount > 0 || summary.target.differentCount > 0 || (summary.target.studiesShort?.length ?? 0) > 0)) return 'target-differs'
  return 'ok'
}
