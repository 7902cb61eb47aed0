import {LIST_FILE_BYTES, readSmallFile} from '../util/small-file.js'

import {Flags, type Interfaces} from '@oclif/core'

import type {InstanceFilters} from '../model.js'
import {UserFacingError} from '../errors.js'
import {dicomDateFlag, shardFlag} from './flag-types.js'

const listHelp = 'several: repeat the flag, separate with commas, or give @FILE with one per line'

/** The instance filters shared by export and sync. */
export const filterFlags = {
  'patient-id': Flags.string({description: `only these PatientIDs (${listHelp})`, multiple: true, multipleNonGreedy: true, helpGroup: 'FILTER'}),
  'study-uid': Flags.string({description: `only these StudyInstanceUIDs (${listHelp})`, multiple: true, multipleNonGreedy: true, helpGroup: 'FILTER'}),
  'orthanc-id': Flags.string({description: `only these Orthanc IDs of patients, studies, series or instances (${listHelp})`, multiple: true, multipleNonGreedy: true, helpGroup: 'FILTER'}),
  'study-date-from': dicomDateFlag({description: 'only studies on or after this date (YYYYMMDD)', helpGroup: 'FILTER'}),
  'study-date-to': dicomDateFlag({description: 'only studies on or before this date (YYYYMMDD)', helpGroup: 'FILTER'}),
  modality: Flags.string({description: `only series of these modalities, e.g. CT,MR (${listHelp})`, multiple: true, multipleNonGreedy: true, helpGroup: 'FILTER'}),
  shard: shardFlag({description: 'only part K of N of the studies (K/N, e.g. 2/8): N machines with K=1..N together cover everything exactly once', helpGroup: 'FILTER'}),
  label: Flags.string({description: `only studies with one of these labels (Orthanc 1.12+; ${listHelp})`, multiple: true, multipleNonGreedy: true, helpGroup: 'FILTER'}),
}

/** Parsed values of the filter flags. */
export type FilterFlagValues = {
  [K in keyof typeof filterFlags]?: (typeof filterFlags)[K] extends Interfaces.OptionFlag<infer T> ? T : never
}

export function filtersFromFlags(flags: FilterFlagValues): InstanceFilters {
  const [from, to] = [flags['study-date-from'], flags['study-date-to']]
  // YYYYMMDD compares as text: a range that ends before it starts selects nothing, and says only that.
  if (from !== undefined && to !== undefined && from > to) throw new UserFacingError(`--study-date-from ${from} is after --study-date-to ${to}`, 'Give the earlier date to --study-date-from.', 'usage', 'reversed-dates')
  const filters: InstanceFilters = {
    patientIds: expandList(flags['patient-id'], 'patient-id'),
    studyInstanceUids: expandList(flags['study-uid'], 'study-uid'),
    orthancIds: expandList(flags['orthanc-id'], 'orthanc-id'),
    studyDateFrom: flags['study-date-from'],
    studyDateTo: flags['study-date-to'],
    modalities: expandList(flags.modality, 'modality')?.map((modality) => modality.toUpperCase()),
    labels: expandList(flags.label, 'label'),
    shard: flags.shard,
  }
  return Object.fromEntries(Object.entries(filters).filter(([, value]) => value !== undefined)) as InstanceFilters
}

function expandList(values: string[] | undefined, flag: string): string[] | undefined {
  if (!values?.length) return undefined
  const result: string[] = []
  for (const value of values) {
    if (value.startsWith('@')) {
      let text: string
      try {
        text = readSmallFile(value.slice(1), LIST_FILE_BYTES).toString('utf8')
      } catch (error) {
        throw new UserFacingError(`cannot read ${value.slice(1)} given to --${flag}: ${(error as NodeJS.ErrnoException).code}`, 'Check the path after the @.', 'usage', 'unreadable-file')
      }

      result.push(...text.split(/\r?\n/).map((line) => line.trim()).filter((line) => line && !line.startsWith('#')))
    } else {
      result.push(...value.split(',').map((part) => part.trim()).filter(Boolean))
    }
  }

  // Given, yet naming nothing (an empty file, ""): taken as no filter, it would select the whole server.
  if (result.length === 0) throw new UserFacingError(`--${flag} was given but names no value`, `Give at least one value, or leave --${flag} out to select every instance.`, 'usage', 'empty-filter')
  return result
}
