import {Errors, Flags} from '@oclif/core'

import {MAX_SHARDS} from '../archive/manifest-schema.js'
import {formatSize, parseDuration, parseSize} from '../util/size.js'

/**
 * Flag types whose values are parsed when oclif parses the flags, not inside run(): a bad value
 * stops the command before anything is opened, as oclif's own integer flag does (a CLIError:
 * usage, exit 2), and run() receives numbers and objects, not text to check again.
 */

/** A byte size: 700MB, 4GiB, 1.5 GB, 65536. Help shows the default as a size too. */
export const sizeFlag = Flags.custom<number, {min?: number}>({
  async parse(input, _context, options) {
    const bytes = parseSize(input)
    if (bytes === undefined) throw new Errors.CLIError(`"${input}" is not a size: write it like 700MB, 4GiB or 1500000000`)
    if (options.min !== undefined && bytes < options.min) throw new Errors.CLIError(`"${input}" is less than ${formatSize(options.min)}`)
    return bytes
  },
  async defaultHelp(context) {
    return typeof context.options.default === 'number' ? formatSize(context.options.default) : undefined
  },
})

/** A fraction from 0 to 1 (0.1 is a tenth). */
export const fractionFlag = Flags.custom<number>({
  async parse(input) {
    const value = Number(input)
    if (input.trim() === '' || !(value >= 0 && value <= 1)) throw new Errors.CLIError(`"${input}" is not a number from 0 to 1 (0.1 is a tenth)`)
    return value
  },
})

/** A date as DICOM writes it: YYYYMMDD. */
export const dicomDateFlag = Flags.custom<string>({
  async parse(input) {
    const match = /^(\d{4})(\d{2})(\d{2})$/.exec(input)
    const [, year, month, day] = match ?? []
    const date = match ? new Date(Date.UTC(Number(year), Number(month) - 1, Number(day))) : undefined
    if (!date || date.getUTCMonth() !== Number(month) - 1 || date.getUTCDate() !== Number(day)) {
      throw new Errors.CLIError(`"${input}" is not a date: write it as DICOM does, YYYYMMDD, e.g. 20240131`)
    }

    return input
  },
})

/** Part K of N (1 <= K <= N). */
export const shardFlag = Flags.custom<{index: number; count: number}>({
  async parse(input) {
    const match = /^(\d+)\/(\d+)$/.exec(input.trim())
    const index = Number(match?.[1])
    const count = Number(match?.[2])
    if (!match || count < 1 || index < 1 || index > count) throw new Errors.CLIError(`"${input}" is not K/N with 1 <= K <= N: --shard 3/8 is the third of eight parts`)
    // An archive records its shard: one of more parts than it can hold would export and then never import.
    if (count > MAX_SHARDS) throw new Errors.CLIError(`"${input}" cuts the job into more than ${MAX_SHARDS} parts, the most an archive records`)
    return {index, count}
  },
})

/** The longest wait a Node timer holds (2^31 - 1 ms, 24.8 days): a longer one fires at once, over and over. */
export const MAX_TIMER_SECONDS = Math.floor((2 ** 31 - 1) / 1000)

/** A duration: 30s, 5m, 1h, or a number of seconds. In milliseconds. */
export const durationFlag = Flags.custom<number, {min?: number}>({
  async parse(input, _context, options) {
    const ms = parseDuration(input)
    if (ms === undefined) throw new Errors.CLIError(`"${input}" is not a duration: write it like 30s, 5m, 1h or 90`)
    if (options.min !== undefined && ms < options.min) throw new Errors.CLIError(`"${input}" is shorter than ${options.min / 1000} s`)
    if (ms > MAX_TIMER_SECONDS * 1000) throw new Errors.CLIError(`"${input}" is longer than ${MAX_TIMER_SECONDS} s (24 days), the longest wait this tool keeps`)
    return ms
  },
})
