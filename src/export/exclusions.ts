import {UserFacingError} from '../errors.js'
import {readReceipt} from '../import/receipt.js'
import {isFileSystemError} from '../sources/dicom-folder.js'
import type {OrthancClient} from '../orthanc/client.js'
import type {SelectedInstance} from '../sources/orthanc-selection.js'
import type {ExcludeInstance} from './plan.js'
import {type ChangedSinceBase, changedSinceBase, readExportBase} from './since.js'

/** An import receipt carried back: the server it says holds its instances, and how many. */
export interface ReceiptInUse {
  path: string
  target: {server: string; name: string; version: string}
  importedAt: string
  /** Instances it shows as arrived (not failed). */
  arrived: number
}

export interface Exclusions {
  exclude?: ExcludeInstance
  /** A stable description, part of the export's fingerprint. */
  description: string
  incrementalBase?: {group: string; changeCursor: number}
  /** With --since: the change the source's log was read up to, which the export takes as its cursor. */
  changeCursor?: number
  /** Every instance the chain of exports before this one holds (for the chain list this export leaves). */
  chainBase: string[]
  receipts: ReceiptInUse[]
}

/**
 * What the far side already has: an earlier export (--since) and import receipts carried back
 * (--exclude-receipt). Both leave instances out of the plan.
 */
export async function buildExclusions(client: OrthancClient, since: string | undefined, receipts: string[], signal?: AbortSignal): Promise<Exclusions> {
  const predicates: Array<(instance: SelectedInstance) => boolean | Promise<boolean>> = []
  const description: string[] = []
  let incrementalBase: Exclusions['incrementalBase']
  let chainBase: string[] = []
  const receiptsInUse: ReceiptInUse[] = []
  let changed: ChangedSinceBase | undefined
  if (since) {
    const base = await readExportBase(since)
    changed = await changedSinceBase(client, base, signal)
    predicates.push(changed.exclude)
    incrementalBase = {group: base.group, changeCursor: base.changeCursor}
    chainBase = [...base.instances.keys()]
    description.push(`since:${base.group}`)
  }

  for (const path of receipts) {
    let arrived: Map<string, string>
    try {
      const receipt = await readReceipt(path)
      arrived = receipt.arrived
      receiptsInUse.push({path, target: receipt.header.target, importedAt: receipt.header.createdAt, arrived: arrived.size})
    } catch (error) {
      // A path that names no readable file is the command line's mistake; a file that is no receipt, the input's.
      if (isFileSystemError(error)) throw new UserFacingError(`cannot read --exclude-receipt ${path}: ${(error as NodeJS.ErrnoException).code}`, 'Check the path: give the import-receipt-*.jsonl file that import wrote on the far side.', 'usage', 'unreadable-file')
      throw new UserFacingError(`cannot use receipt ${path}: ${(error as Error).message}`, 'Give the import-receipt-*.jsonl file that import wrote on the far side.', 'bad-input', 'bad-receipt')
    }

    // Arrived, and with the bytes the source holds now: one stored again since (modified under the
    // same ID) has another MD5 than the far side confirmed, and goes again.
    predicates.push(async (instance) => {
      const confirmed = arrived.get(instance.id)
      return confirmed !== undefined && (await client.storedFileInfo(instance.id, signal))?.md5 === confirmed
    })
    description.push(`receipt:${path}:${arrived.size}`)
  }

  return {
    exclude: predicates.length > 0 ? async (instance, studyInstances) => {
      // Side data set since the base goes, whatever a receipt says: receipts record no side data.
      if (changed?.carries(instance, studyInstances)) return false
      for (const predicate of predicates) if (await predicate(instance)) return true
      return false
    } : undefined,
    description: description.join(','),
    incrementalBase,
    ...(changed ? {changeCursor: changed.readUpTo} : {}),
    chainBase,
    receipts: receiptsInUse,
  }
}
