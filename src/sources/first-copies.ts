import type {InstanceInTransit} from '../model.js'
import {reportFailure, type SourceEvents} from './source-events.js'

/**
 * The first copy met of each instance in a walk, to tell a later one apart: the same bytes (a
 * duplicate, harmless), or other bytes under the same UIDs. Nothing in a folder says which of two
 * different ones is right: the first is taken and the other is named, never sent after it, where
 * a target that overwrites would keep whichever came last without a word.
 *
 * Memory: per instance its ID and MD5 in binary form and the first copy's path, some 200 bytes:
 * about 200 MB per million instances.
 */
export class FirstCopies {
  // Compact instance ID -> compact MD5 (16 characters), then the first copy's label.
  private readonly first = new Map<string, string>()

  has(instanceId: string): boolean {
    return this.first.has(compactHex(instanceId))
  }

  /** Remembers a copy known to be newer than the one met before (a later export's), in its place. */
  supersede(instanceId: string, md5: string, label: string): void {
    this.first.set(compactHex(instanceId), compactHex(md5) + label)
  }

  /** Remembers the first copy; for a later one, says whether it is the same or names the first. */
  meet(instanceId: string, md5: string, label: string): {kind: 'first'} | {kind: 'identical'} | {kind: 'different'; firstLabel: string} {
    const key = compactHex(instanceId)
    const first = this.first.get(key)
    if (first === undefined) {
      this.first.set(key, compactHex(md5) + label)
      return {kind: 'first'}
    }
    return first.startsWith(compactHex(md5)) ? {kind: 'identical'} : {kind: 'different', firstLabel: first.slice(COMPACT_MD5_LENGTH)}
  }
}

const COMPACT_MD5_LENGTH = 16

/**
 * Whether to send a unit: the first copy of its instance met, or another with the same bytes (the
 * target skips it: hard links, a folder given twice); another with other bytes is named as
 * failed, not sent after the first.
 */
export function takeFirstCopy(copies: FirstCopies, unit: InstanceInTransit, events: SourceEvents): boolean {
  const met = copies.meet(unit.instanceId, unit.md5, unit.label)
  // Sent after the first: the import counts the instance once (see InstanceInTransit.earlierCopy).
  if (met.kind === 'identical') unit.earlierCopy = unit.md5
  if (met.kind === 'different') reportFailure(events, {id: unit.instanceId, path: unit.label, kind: 'contradiction', reason: differentCopyReason(met.firstLabel)})
  return met.kind !== 'different'
}

/** Why a different copy of an instance already taken is left out, with the way out. */
export function differentCopyReason(firstPath: string): string {
  return `another copy of this instance, with other bytes than ${firstPath} (the one taken), was left out: nothing tells which is right. Compare the two; if this one is, remove the other (and the instance from the target, if it was imported), then run again`
}

// An ID or MD5 in hex as a one-byte string of its binary value: 20 characters instead of 44 for
// an instance ID, which roughly halves what remembering a million of them costs.
function compactHex(hex: string): string {
  return Buffer.from(hex.replaceAll('-', ''), 'hex').toString('latin1')
}
