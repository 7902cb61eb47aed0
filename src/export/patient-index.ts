import {Readable} from 'node:stream'
import {rm} from 'node:fs/promises'
import {join} from 'node:path'
import {buffer} from 'node:stream/consumers'

import {volumeName} from '../archive/format.js'
import {AGE_FILE_SUFFIX, type AgeEncryptionKeys, createAgeEncryptor} from '../crypto/age.js'
import type {OrthancClient} from '../orthanc/client.js'
import {patientFieldsOf, type SelectedStudy} from '../sources/orthanc-selection.js'
import {writeFileDurably} from '../util/json-file.js'
import type {ExportPlan} from './plan.js'

/**
 * The human-readable list of what is on the drive: patient, study and the volumes that hold
 * it. It names patients, so it exists only when asked for, and only beside the volumes; beside
 * encrypted volumes it is encrypted to the same keys (index.csv.age), or a lost drive would
 * name every patient its volumes hide.
 */
export class PatientIndex {
  private readonly studies = new Map<string, SelectedStudy['patient'] & {studyInstanceUid: string; instances: number}>()

  add(study: SelectedStudy): void {
    this.studies.set(study.studyId, {...study.patient, studyInstanceUid: study.studyInstanceUid, instances: study.instances.length})
  }

  /**
   * For a resumed export whose index was never written (the run that planned it stopped first):
   * each planned study's patient fields asked of the source again, its instances from the plan.
   */
  async addPlanned(plan: ExportPlan, client: OrthancClient, signal?: AbortSignal): Promise<void> {
    for (const [studyId, expectation] of Object.entries(plan.studies)) {
      const study = await client.study(studyId, signal)
      const patient = study ? patientFieldsOf(study) : {patientId: '', patientName: '', patientBirthDate: '', accessionNumber: '', studyDate: '', studyDescription: ''}
      this.studies.set(studyId, {...patient, studyInstanceUid: expectation.studyInstanceUid, instances: expectation.expectedInstances})
    }
  }

  /** The index file an export writes in `folder`. */
  static pathIn(folder: string, encryption?: AgeEncryptionKeys): string {
    return join(folder, encryption ? `index.csv${AGE_FILE_SUFFIX}` : 'index.csv')
  }

  /** Removes what a run killed while it wrote the index left: its temporary copies, plain or encrypted. */
  static async removeLeftovers(folder: string): Promise<void> {
    await Promise.all(['index.csv', `index.csv${AGE_FILE_SUFFIX}`].map((name) => rm(join(folder, `${name}.tmp`), {force: true})))
  }

  /** Writes `index.csv` in `folder` (`index.csv.age` when encrypted); returns its path. */
  async write(folder: string, plan: ExportPlan, prefix: string, encryption?: AgeEncryptionKeys): Promise<string> {
    const suffix = encryption ? `.tar${AGE_FILE_SUFFIX}` : '.tar'
    const volumesOf = new Map<string, string[]>()
    for (const [index, volume] of plan.volumes.entries()) {
      for (const studyId of volume.studyIds) {
        const names = volumesOf.get(studyId) ?? []
        names.push(`${volumeName(prefix, index + 1, plan.volumes.length)}${suffix}`)
        volumesOf.set(studyId, names)
      }
    }

    const header = ['PatientID', 'PatientName', 'PatientBirthDate', 'AccessionNumber', 'StudyDate', 'StudyDescription', 'StudyInstanceUID', 'Instances', 'Volumes']
    const rows = [...this.studies.entries()]
      .filter(([studyId]) => plan.studies[studyId])
      .map(([studyId, study]) => [
        study.patientId, study.patientName, study.patientBirthDate, study.accessionNumber, study.studyDate,
        study.studyDescription, study.studyInstanceUid, String(study.instances), (volumesOf.get(studyId) ?? []).join(' '),
      ])
    const csv = [header, ...rows].map((row) => row.map(csvField).join(',')).join('\r\n') + '\r\n'
    // It names patients: readable by the user who exported, nobody else.
    const path = PatientIndex.pathIn(folder, encryption)
    await writeFileDurably(path, encryption ? await buffer(Readable.from([Buffer.from(csv)]).pipe(createAgeEncryptor(encryption))) : csv)
    return path
  }
}

function csvField(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value
}
