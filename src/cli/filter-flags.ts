import {readFileSync} from 'node:fs'

import {Flags} from '@oclif/core'

import type {InstanceFilters} from '../model.js'
import {UserFacingError} from '../errors.js'

const listHelp = 'several: repeat the flag, separate with commas, or give @FILE with one per line'

/** The instance filters shared by export and sync. */
export const filterFlags = {
  'patient-id': Flags.string({description: `only these PatientIDs (${listHelp})`, multiple: true, multipleNonGreedy: true, helpGroup: 'FILTER'}),
  'study-uid': Flags.string({description: `only these StudyInstanceUIDs (${listHelp})`, multiple: true, multipleNonGreedy: true, helpGroup: 'FILTER'}),
  'orthanc-id': Flags.string({description: `only these Orthanc IDs of patients, studies, series or instances (${listHelp})`, multiple: true, multipleNonGreedy: true, helpGroup: 'FILTER'}),
  'study-date-from': Flags.string({description: 'only studies on or after this date (YYYYMMDD)', helpGroup: 'FILTER'}),
  'study-date-to': Flags.string({description: 'only studies on or before this date (YYYYMMDD)', helpGroup: 'FILTER'}),
  modality: Flags.string({description: `only series of these modalities, e.g. CT,MR (${listHelp})`, multiple: true, multipleNonGreedy: true, helpGroup: 'FILTER'}),
  shard: Flags.string({description: 'only part K of N of the studies (K/N, e.g. 2/8): N machines with K=1..N together cover everything exactly once', helpGroup: 'FILTER'}),
  label: Flags.string({description: `only studies with one of these labels (Orthanc 1.12+; ${listHelp})`, multiple: true, multipleNonGreedy: true, helpGroup: 'FILTER'}),
}

export function filtersFromFlags(flags: Record<string, unknown>): InstanceFilters {
  const list = (name: string) => expandList(flags[name] as string[] | undefined, name)
  const date = (name: string) => {
    const value = flags[name] as string | undefined
    if (value !== undefined && !/^\d{8}$/.test(value)) {
      throw new UserFacingError(`--${name} "${value}" is not a date`, 'Write dates as DICOM does: YYYYMMDD, e.g. 20240131.', 'usage', 'bad-date')
    }

    return value
  }

  const filters: InstanceFilters = {
    patientIds: list('patient-id'),
    studyInstanceUids: list('study-uid'),
    orthancIds: list('orthanc-id'),
    studyDateFrom: date('study-date-from'),
    studyDateTo: date('study-date-to'),
    modalities: list('modality')?.map((modality) => modality.toUpperCase()),
    labels: list('label'),
    shard: parseShard(flags.shard as string | undefined),
  }
  return Object.fromEntries(Object.entries(filters).filter(([, value]) => value !== undefined)) as InstanceFilters
}

function parseShard(value: string | undefined): InstanceFilters['shard'] {
  if (value === undefined) return undefined
  const match = /^(\d+)\/(\d+)$/.exec(value)
  const index = Number(match?.[1])
  const count = Number(match?.[2])
  if (!match || count < 1 || index < 1 || index > count) {
    throw new UserFacingError(`--shard "${value}" is not K/N with 1 <= K <= N`, 'For example --shard 3/8 is the third of eight parts.', 'usage', 'bad-shard')
  }

  return {index, count}
}

function expandList(values: string[] | undefined, flag: string): string[] | undefined {
  if (!values?.length) return undefined
  const result: string[] = []
  for (const value of values) {
    if (value.startsWith('@')) {
      let text: string
      try {
        text = readFileSync(value.slice(1), 'utf8')
      } catch (error) {
        throw new UserFacingError(`cannot read ${value.slice(1)} given to --${flag}: ${(error as NodeJS.ErrnoException).code}`, 'Check the path after the @.', 'usage', 'unreadable-file')
      }

      result.push(...text.split(/\r?\n/).map((line) => line.trim()).filter((line) => line && !line.startsWith('#')))
    } else {
      result.push(...value.split(',').map((part) => part.trim()).filter(Boolean))
    }
  }

  return result
}
