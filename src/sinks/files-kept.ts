import type {OrthancClient} from '../orthanc/client.js'
import {UserFacingError} from '../errors.js'
import {filesNotKept} from '../orthanc/errors.js'
import {TargetMismatchError} from './target-mismatch.js'

/** Reads back tried in a run before the check gives up (a route refused, a link failing). */
const ATTEMPTS = 3

/**
 * The MD5 a target records is no proof that it keeps the file: with StoreDicom false (or a
 * storage that lost its files) it records the MD5 of each file it is sent, and keeps none. So
 * once per run one instance stored or found there is read back whole. The verdict that the target
 * keeps no files stops the job; other bytes handed back fail that instance; a read-back that could
 * not be made (the instance gone meanwhile, a route refused, a link failing) fails nothing, and
 * the next instance is tried, a few times at most.
 */
export class FilesKeptCheck {
  private settled = false
  private attempts = 0
  private running?: Promise<void>

  constructor(private readonly client: OrthancClient) {}

  /** Whether a read-back is still to be made this run. */
  get wanted(): boolean {
    return !this.settled && this.attempts < ATTEMPTS
  }

  async check(instanceId: string, md5: string, signal?: AbortSignal): Promise<void> {
    if (!this.wanted && !this.running) return
    const running = this.running
    if (running) return running.catch((error: unknown) => {
      // Only the verdict on the whole target concerns the instances that waited for it.
      if (error instanceof UserFacingError) throw error
    })
    this.attempts++
    const probe = this.readBack(instanceId, md5, signal)
    this.running = probe
    try {
      await probe
    } catch (error) {
      if (error instanceof UserFacingError || error instanceof TargetMismatchError) throw error
    } finally {
      this.running = undefined
    }
  }

  private async readBack(instanceId: string, md5: string, signal?: AbortSignal): Promise<void> {
    const verdict = await this.client.fileKept(instanceId, md5, signal)
    if (verdict === 'missing') {
      this.settled = true
      throw filesNotKept(this.client.display, instanceId)
    }
    if (verdict === 'other-bytes') throw new TargetMismatchError(this.client.display, instanceId, md5, '', 'handed-back')
    if (verdict === 'kept') this.settled = true
  }
}
