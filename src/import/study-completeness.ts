import type {BagReport} from '../sources/archive-source.js'
import type {OrthancClient} from '../orthanc/client.js'

export interface StudyCompleteness {
  /** Studies whose expected instances (from the archive's manifest) are all on the target. */
  complete: number
  incomplete: Array<{studyId: string; studyInstanceUid: string; expected: number; present: number}>
}

/**
 * Per-study completeness against the counts the export recorded: a study is complete when
 * the target holds at least as many instances of it as the export selected.
 */
export async function studyCompleteness(client: OrthancClient, bags: BagReport[], notYetStored: Map<string, number>, signal?: AbortSignal): Promise<StudyCompleteness> {
  const expected = new Map<string, {studyInstanceUid: string; expected: number}>()
  for (const bag of bags) {
    for (const [studyId, study] of Object.entries(bag.studies)) expected.set(studyId, {studyInstanceUid: study.studyInstanceUid, expected: study.expectedInstances})
  }

  const result: StudyCompleteness = {complete: 0, incomplete: []}
  for (const [studyId, study] of expected) {
    const present = (await client.studyInstanceCount(studyId, signal)) + (notYetStored.get(studyId) ?? 0)
    if (present >= study.expected) result.complete++
    else result.incomplete.push({studyId, ...study, present})
  }

  return result
}
