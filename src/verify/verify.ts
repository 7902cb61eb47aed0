import type {OrthancClient} from '../orthanc/client.js'
import {type ArchiveInput, type ArchiveReadReport, readArchives} from '../sources/archive-source.js'
import {isIntegrityProblem, type Problem} from '../problems.js'
import {forEachConcurrent} from '../util/concurrency.js'

export interface StudyCheck {
  studyId: string
  studyInstanceUid: string
  expected: number
  /** Instances of the study whose every byte matched the manifests. */
  valid: number
  /** With a target: instances of the study on it with the manifest's MD5. */
  onTarget?: number
}

export interface VerifySummary {
  /** All volumes present, every entry present, every tag manifest matched. */
  complete: boolean
  /** Every checksum matched. */
  valid: boolean
  volumes: {read: number; complete: number; incomplete: string[]; missing: Array<{group: string; volume: number; volumeCount: number}>}
  instances: number
  problems: Problem[]
  studies: StudyCheck[]
  target?: {server: string; confirmed: number; missing: string[]; different: string[]}
}

const LISTED = 1000

/**
 * Checks archives offline (completeness and validity, per study against the exported counts)
 * and, with a target, that every archived instance is on it with the same MD5: what the
 * receiving side runs before the source data may be deleted.
 */
export async function verifyArchives(inputs: ArchiveInput[], options: {target?: OrthancClient; concurrency: number; signal?: AbortSignal}): Promise<VerifySummary> {
  const problems: Problem[] = []
  const report: ArchiveReadReport = {bags: [], missingVolumes: []}
  const validByStudy = new Map<string, number>()
  const onTargetByStudy = new Map<string, number>()
  const target = options.target ? {server: options.target.display, confirmed: 0, missing: [] as string[], different: [] as string[]} : undefined
  let instances = 0
  const units = readArchives(inputs, {onSkip() {}, onProblem: (notice) => problems.push(notice)}, report)
  await forEachConcurrent(units, options.concurrency, async (unit) => {
    instances++
    const studyId = unit.record!.studyId
    validByStudy.set(studyId, (validByStudy.get(studyId) ?? 0) + 1)
    if (!options.target || !target) return
    const stored = await options.target.storedFileInfo(unit.instanceId, options.signal)
    if (!stored) {
      if (target.missing.length < LISTED) target.missing.push(unit.instanceId)
    } else if (stored.md5 !== unit.md5) {
      if (target.different.length < LISTED) target.different.push(unit.instanceId)
    } else {
      target.confirmed++
      onTargetByStudy.set(studyId, (onTargetByStudy.get(studyId) ?? 0) + 1)
    }
  })

  const expected = new Map<string, {studyInstanceUid: string; expected: number}>()
  for (const bag of report.bags) for (const [id, study] of Object.entries(bag.studies)) expected.set(id, {studyInstanceUid: study.studyInstanceUid, expected: study.expectedInstances})
  const studies = [...expected.entries()].map(([studyId, study]) => ({
    studyId, ...study, valid: validByStudy.get(studyId) ?? 0, ...(options.target ? {onTarget: onTargetByStudy.get(studyId) ?? 0} : {}),
  }))
  const incomplete = report.bags.filter((bag) => !bag.complete).map((bag) => bag.bag)
  return {
    complete: incomplete.length === 0 && report.missingVolumes.length === 0 && report.bags.length > 0 && studies.every((study) => study.valid >= study.expected),
    valid: !problems.some(isIntegrityProblem),
    volumes: {read: report.bags.length, complete: report.bags.length - incomplete.length, incomplete, missing: report.missingVolumes},
    instances,
    problems,
    studies,
    target,
  }
}
