import type {BagReport} from '../sources/archive-source.js'
import type {OrthancClient} from '../orthanc/client.js'

export interface StudyCompleteness {
  /** Studies whose expected instances (from the archive's manifest) are all on the target. */
  complete: number
  /**
   * `leftOut`: instances of the study the export left out as the far side's already (an export
   * --since another, or --exclude-receipt), which the target must hold too.
   */
  incomplete: Array<{studyId: string; studyInstanceUid: string; expected: number; present: number; leftOut?: number}>
}

/**
 * Per-study completeness against the counts the export recorded: a study is complete when the
 * target holds at least as many instances of it as the export selected. An export without
 * filters selects whole studies, so what it left out of one (an incremental export, a receipt
 * carried back) is on the far side already, or should be: there the target must hold all the
 * instances the study had on the source. Imported without the export it adds to, such a study is
 * incomplete, not passed over. So are the studies it left out whole, of which it names a sample
 * (farSideStudies), when the target lacks most of them: without them, an archive holding only new
 * studies would import cleanly over a gap.
 */
export async function studyCompleteness(
  client: OrthancClient, bags: BagReport[], notYetStored: Map<string, number>, signal?: AbortSignal, options: {everyNamedStudy?: boolean} = {},
): Promise<StudyCompleteness> {
  const expected = new Map<string, {studyInstanceUid: string; expected: number; leftOut: number}>()
  // Studies some volume holds instances of: only those count as complete (the others are not the archive's).
  const held = new Set<string>()
  for (const bag of bags) {
    const wholeStudies = bag.manifest !== undefined && Object.keys(bag.manifest.filters ?? {}).length === 0
    for (const [studyId, study] of Object.entries(bag.studies)) {
      held.add(studyId)
      // With filters, instancesOnSource counts what they left out too: the far side's are recorded apart (format 5).
      const leftOut = wholeStudies ? Math.max(0, study.instancesOnSource - study.expectedInstances) : study.farSideInstances ?? 0
      const known = expected.get(studyId)
      if (!known || known.expected < study.expectedInstances + leftOut) expected.set(studyId, {studyInstanceUid: study.studyInstanceUid, expected: study.expectedInstances + leftOut, leftOut})
    }

    // Studies the export left out whole: all of them the far side's, so the target's.
    for (const [studyId, study] of Object.entries(bag.manifest?.farSideStudies ?? {})) {
      const known = expected.get(studyId)
      if (!known || known.expected < study.instances) expected.set(studyId, {studyInstanceUid: study.studyInstanceUid, expected: study.instances, leftOut: study.instances})
    }
  }

  const result: StudyCompleteness = {complete: 0, incomplete: []}
  // Studies only named as left out whole, which the target lacks, wholly or in part.
  const namedOnly: StudyCompleteness['incomplete'] = []
  let namedOnlyCount = 0
  for (const [studyId, {leftOut, ...study}] of expected) {
    const present = (await client.studyInstanceCount(studyId, signal)) + (notYetStored.get(studyId) ?? 0)
    if (!held.has(studyId)) namedOnlyCount++
    if (present >= study.expected) result.complete += held.has(studyId) ? 1 : 0
    else if (!held.has(studyId)) namedOnly.push({studyId, ...study, present, leftOut})
    else result.incomplete.push({studyId, ...study, present, ...(leftOut > 0 ? {leftOut} : {})})
  }

  // Most of them short: what the archive adds to never arrived. A few: deleted on the far side
  // since, whole or in part (a retention rule, an image removed), which is no reason to fail every
  // later import. `everyNamedStudy` (verify, run before the source's copy may be deleted) names
  // each one short.
  if (options.everyNamedStudy || namedOnly.length * 2 > namedOnlyCount) result.incomplete.push(...namedOnly)

  return result
}
