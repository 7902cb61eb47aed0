import {Flags} from '@oclif/core'

import {UserFacingError} from '../errors.js'
import {SMALL_INSTANCE_BYTES, ZIP_BY_DEFAULT_MEAN_BYTES, ZIP_BY_DEFAULT_MIN_ANSWER_MS, ZIP_BY_DEFAULT_MIN_INSTANCES} from '../sinks/upload-batcher.js'
import {type BandwidthBuckets, bandwidthBuckets, BandwidthSyntaxError, parseBandwidthLimit} from '../transfer/bandwidth.js'

const MAX_CONCURRENCY = 64

/** --concurrency and --bwlimit, shared by the commands that move instances; `what` names what runs at once. */
export function transferFlags(what: string) {
  return {
    concurrency: Flags.string({
      char: 'c',
      description: `${what} at once: a number from 1 to ${MAX_CONCURRENCY}, or auto, which starts at 8 and finds the number the link and the server reward (rises while throughput rises, backs off on errors, 503s and rising latency)`,
      default: 'auto',
    }),
    bwlimit: Flags.string({
      description: 'most instance data per second, each way: 10M (MiB/s), 512K, UP:DOWN such as 10M:off, or a timetable such as "08:00,20M 19:00,off" (rclone\'s syntax); default: no limit',
    }),
  }
}

/** For the commands that upload: sync and import. */
export const uploadFlags = {
  'zip-uploads': Flags.boolean({
    description: `send the small instances (up to ${SMALL_INSTANCE_BYTES / 1024} KiB) waiting for an upload together in one ZIP (Orthanc 1.8.2+); each is still confirmed by its MD5. Default: on when the job is known beforehand to be at least ${ZIP_BY_DEFAULT_MIN_INSTANCES} instances of ${ZIP_BY_DEFAULT_MEAN_BYTES / 1024} KiB or less on average (a sync's plan, archive volumes, a DICOM folder's first files) and the target answers in ${ZIP_BY_DEFAULT_MIN_ANSWER_MS} ms or more; --no-zip-uploads sends one instance per request`,
    allowNo: true,
  }),
}

export interface TransferSettings {
  /** A fixed concurrency; undefined is adaptive. */
  concurrency?: number
  bandwidth?: BandwidthBuckets
}

export function transferSettingsFromFlags(flags: {concurrency: string; bwlimit?: string}): TransferSettings {
  const text = flags.concurrency.trim().toLowerCase()
  let concurrency: number | undefined
  if (text !== 'auto') {
    concurrency = Number(text)
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > MAX_CONCURRENCY) {
      throw new UserFacingError(`--concurrency "${flags.concurrency}" is neither auto nor a whole number from 1 to ${MAX_CONCURRENCY}`, 'Leave it out (auto) to let the tool find the best number, or give one such as 8.', 'usage', 'bad-concurrency')
    }
  }

  let bandwidth: BandwidthBuckets | undefined
  if (flags.bwlimit !== undefined) {
    try {
      bandwidth = bandwidthBuckets(parseBandwidthLimit(flags.bwlimit))
    } catch (error) {
      if (!(error instanceof BandwidthSyntaxError)) throw error
      throw new UserFacingError(error.message, 'For example --bwlimit 10M, --bwlimit 10M:off (uploads:downloads) or --bwlimit "08:00,20M 19:00,off".', 'usage', 'bad-bwlimit')
    }
  }

  return {concurrency, bandwidth}
}
