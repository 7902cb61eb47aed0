
import {volumeName} from '../archive/format.js'
import type {SelectedStudy} from '../sources/orthanc-selection.js'
import {writeFileDurably} from '../util/json-file.js'
import type {ExportPlan} from './plan.js'

/**
 * The human-readable list of what is on the drive: patient, study and the volumes that hold
 * it. It names patients, so it exists only when asked for, and only beside the volumes.
 */
export class PatientIndex {
  private readonly studies = new Map<string, SelectedStudy['patient'] & {studyInstanceUid: string; instances: number}>()

  add(study: SelectedStudy): void {
    this.studies.set(study.studyId, {...study.patient, studyInstanceUid: study.studyInstanceUid, instances: study.instances.length})
  }

  async write(path: string, plan: ExportPlan, prefix: string): Promise<void> {
    const volumesOf = new Map<string, string[]>()
    for (const [index, volume] of plan.volumes.entries()) {
      for (const studyId of volume.studyIds) {
        const names = volumesOf.get(studyId) ?? []
        names.push(`${volumeName(prefix, index + 1, plan.volumes.length)}.tar`)
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
    // It names patients: readable by the user who exported, nobody else.
    await writeFileDurably(path, [header, ...rows].map((row) => row.map(csvField).join(',')).join('\r\n') + '\r\n')
  }
}

function csvField(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value
}
