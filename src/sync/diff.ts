import type {InstanceFilters} from '../model.js'
import type {OrthancClient} from '../orthanc/client.js'
import {compareServers, type InstanceState} from './compare.js'

export interface StudyDifference {
  studyId: string
  studyInstanceUid: string
  onlySource: number
  different: number
  identical: number
}

export interface DiffSummary {
  source: string
  target: string
  onlySource: number
  onlyTarget: number
  different: number
  identical: number
  /** Instance IDs per category, the first LISTED of each. */
  instances: {onlySource: string[]; onlyTarget: string[]; different: string[]}
  /** Per study on the source, when asked for. */
  studies?: StudyDifference[]
}

const LISTED = 1000

/**
 * Compares two servers the way `rclone check` compares two remotes: by instance ID, then by the
 * MD5 each server recorded for instances on both sides. Nothing is downloaded.
 */
export async function diffServers(source: OrthancClient, target: OrthancClient, options: {filters: InstanceFilters; perStudy: boolean; signal?: AbortSignal}): Promise<DiffSummary> {
  const summary: DiffSummary = {
    source: source.display, target: target.display, onlySource: 0, onlyTarget: 0, different: 0, identical: 0,
    instances: {onlySource: [], onlyTarget: [], different: []},
  }
  const studies = new Map<string, StudyDifference>()
  const list = (state: InstanceState, id: string) => {
    const key = state === 'only-source' ? 'onlySource' : state === 'only-target' ? 'onlyTarget' : 'different'
    if (summary.instances[key].length < LISTED) summary.instances[key].push(id)
  }

  for await (const item of compareServers(source, target, {filters: options.filters, checksum: true, signal: options.signal})) {
    if (item.state === 'only-target') {
      summary.onlyTarget++
      list(item.state, item.id)
      continue
    }

    const study = studies.get(item.studyId!) ?? {studyId: item.studyId!, studyInstanceUid: item.studyInstanceUid!, onlySource: 0, different: 0, identical: 0}
    if (item.state === 'only-source') {
      summary.onlySource++
      study.onlySource++
      list(item.state, item.id)
    } else if (item.state === 'different') {
      summary.different++
      study.different++
      list(item.state, item.id)
    } else {
      summary.identical++
      study.identical++
    }

    if (options.perStudy) studies.set(study.studyId, study)
  }

  if (options.perStudy) summary.studies = [...studies.values()]
  return summary
}

export function serversDiffer(summary: DiffSummary): boolean {
  return summary.onlySource + summary.onlyTarget + summary.different > 0
}
