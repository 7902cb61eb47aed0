import type {FoundSideData, OrthancClient} from '../orthanc/client.js'

/** Studies whose side data is kept for batches still to come: the instances of a study arrive together. */
const RECENT_STUDIES = 2

/**
 * Side data asked for a whole study at once (Orthanc 1.12.5+, see OrthancClient.studySideData),
 * once per study however many batches of it are announced. Undefined where the server cannot
 * answer that way, or the request failed: the instances are then read one by one.
 */
export class StudySideData {
  private readonly studies = new Map<string, Promise<Map<string, FoundSideData> | undefined>>()

  constructor(private readonly client: OrthancClient) {}

  of(studyId: string, studyInstanceUid: string, signal?: AbortSignal): Promise<Map<string, FoundSideData> | undefined> {
    let study = this.studies.get(studyId)
    if (!study) {
      // A failure is not this reader's: each instance asks again on its own.
      study = this.client.studySideData(studyId, studyInstanceUid, signal).catch(() => undefined)
      this.studies.set(studyId, study)
      if (this.studies.size > RECENT_STUDIES) this.studies.delete(this.studies.keys().next().value!)
    }

    return study
  }
}
