import {mkdtemp, readFile, rm, stat, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {PassThrough} from 'node:stream'

import {Config} from '@oclif/core'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {flagNamesOf} from '../../src/cli/base-command.js'
import {dicomDateFlag, durationFlag, fractionFlag, shardFlag, sizeFlag} from '../../src/cli/flag-types.js'
import {describeProgress, ProgressMeter} from '../../src/cli/progress-renderer.js'
import {describePlan, Reporter, type ReporterOptions} from '../../src/cli/reporter.js'
import {listed} from '../../src/cli/summary.js'
import {formatSize, parseDuration, parseSize} from '../../src/util/size.js'

/** A stderr to read back, a terminal or not. */
function fakeStderr(isTTY: boolean): NodeJS.WriteStream & {text(): string} {
  const stream = new PassThrough() as unknown as NodeJS.WriteStream & {text(): string}
  const chunks: string[] = []
  stream.on('data', (chunk: Buffer) => chunks.push(chunk.toString()))
  Object.assign(stream, {isTTY, text: () => chunks.join('')})
  return stream
}

const reporterOptions = (overrides: Partial<ReporterOptions> = {}): ReporterOptions => ({command: 'sync', version: '0.0.0', json: false, flags: {}, flagNames: [], ...overrides})

describe('progress, measured', () => {
  it('a phase without bytes (planning) gets counts, no rate; a transfer gets bytes, rate and ETA against its totals', () => {
    let now = 0
    const meter = new ProgressMeter(() => now)
    meter.update({phase: 'planning', done: 10})
    now = 1000
    meter.update({phase: 'planning', done: 200})
    expect(describeProgress(meter.snapshot()!)).toBe('planning: 200 instances')

    meter.update({phase: 'sync', done: 0, total: 100, bytes: 0, totalBytes: 100 * 1024 * 1024})
    now = 3000
    meter.update({phase: 'sync', done: 20, total: 100, bytes: 20 * 1024 * 1024, totalBytes: 100 * 1024 * 1024})
    const snapshot = meter.snapshot()!
    // The rate of the transfer phase alone: 20 MiB in 2 s.
    expect(snapshot.bytesPerSecond).toBe(10 * 1024 * 1024)
    expect(snapshot.etaMs).toBe(8000)
    expect(describeProgress(snapshot)).toBe('sync: 20/100 instances  20.0 MiB/100 MiB  10.0 MiB/s  ETA 8.0 s')
  })

  it('measures the rate over the last seconds, not since the start', () => {
    let now = 0
    const meter = new ProgressMeter(() => now)
    meter.update({phase: 'export', done: 0, bytes: 0})
    // A slow minute, then a fast stretch.
    for (let second = 1; second <= 60; second++) {
      now = second * 1000
      meter.update({phase: 'export', done: second, bytes: second * 1024})
    }

    for (let second = 61; second <= 80; second++) {
      now = second * 1000
      meter.update({phase: 'export', done: second, bytes: 60 * 1024 + (second - 60) * 1024 * 1024})
    }

    expect(meter.snapshot()!.bytesPerSecond).toBeGreaterThan(900 * 1024)
  })

  it('says the plan in one or two lines', () => {
    expect(describePlan('export', {type: 'plan', instances: 3, bytes: 2048, volumes: 2, volumesDone: 1})).toBe('Plan: 3 instance(s) (2.0 KiB) to export in 2 volume(s), 1 of them finished by an earlier run.')
    expect(describePlan('sync', {type: 'plan', instances: 1, bytes: 10, present: 4, studies: {complete: 1, partial: 1, missing: 0}, undeclaredUserMetadata: ['Reviewed']}))
      .toBe('Plan: 1 instance(s) (10 B) to send, 4 already there.\nStudies on the target: 1 complete, 1 partial, 0 missing.\nNot carried: the target does not declare user metadata "Reviewed" in its UserMetadata; values under that name will be left out (declare them there first to keep them).')
  })

  it('lists the first 20 of a list and how many more', () => {
    const lines = listed(Array.from({length: 25}, (_, index) => `id-${index}`), 1012)
    expect(lines).toHaveLength(21)
    expect(lines.at(-1)).toBe('  ... and 992 more (see --json)')
    expect(listed(['a'])).toEqual(['  a'])
  })
})

describe('the reporter', () => {
  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reporter-test-'))
  })
  afterAll(async () => {
    await rm(dir, {recursive: true, force: true})
  })

  it('on a terminal: progress, the plan, hints; results are not its business', async () => {
    const stderr = fakeStderr(true)
    const reporter = await Reporter.open(reporterOptions({stderr}))
    reporter.onProgress({phase: 'comparing', done: 5, total: 5})
    reporter.onEvent({type: 'plan', instances: 5, bytes: 500, present: 0})
    reporter.hint('Next: something')
    reporter.detail('only with --verbose')
    await reporter.close({exitCode: 0})
    const text = stderr.text()
    expect(text).toContain('\r\u001B[2Kcomparing: 5/5 instances')
    // The progress line is cleared before a line is written above it.
    expect(text).toContain('\r\u001B[2KPlan: 5 instance(s) (500 B) to send, 0 already there.\n')
    expect(text).toContain('Next: something\n')
    expect(text).not.toContain('only with --verbose')
  })

  it('not on a terminal: no progress; --quiet: warnings only; --json: no notes or hints; --verbose: failures and retries as they come', async () => {
    const piped = fakeStderr(false)
    const plain = await Reporter.open(reporterOptions({stderr: piped}))
    plain.onProgress({phase: 'sync', done: 1, bytes: 1})
    plain.note('a note')
    await plain.close({exitCode: 0})
    expect(piped.text()).toBe('a note\n')

    for (const flags of [{quiet: true}, {}]) {
      const stderr = fakeStderr(true)
      const reporter = await Reporter.open(reporterOptions({stderr, flags, json: !flags.quiet}))
      reporter.onProgress({phase: 'sync', done: 1, bytes: 1})
      reporter.note('a note')
      reporter.hint('a hint')
      reporter.warn('an outage')
      await reporter.close({exitCode: 0})
      expect(stderr.text()).toBe('Warning: an outage\n')
    }

    const stderr = fakeStderr(false)
    const verbose = await Reporter.open(reporterOptions({stderr, flags: {verbose: true}}))
    verbose.onEvent({type: 'failure', problem: {id: 'abc', path: 'vol.tar', kind: 'checksum', reason: 'MD5 differs'}})
    verbose.onHttpRetry({request: 'GET /instances/abc/file', attempt: 1, reason: 'HTTP 503'})
    await verbose.close({exitCode: 10})
    expect(stderr.text()).toBe('failed: vol.tar: abc: MD5 differs\nretry 1: GET /instances/abc/file: HTTP 503\n')
  })

  it('--log-file: JSON lines appended to a private file, paths left out', async () => {
    const log = join(dir, 'run.log')
    await writeFile(log, '{"event":"earlier run"}\n', {mode: 0o644})
    const reporter = await Reporter.open(reporterOptions({stderr: fakeStderr(false), flags: {'log-file': log, quiet: true}, flagNames: ['source', 'log-file']}))
    reporter.onEvent({type: 'plan', instances: 2, bytes: 20})
    reporter.onEvent({type: 'failure', problem: {id: 'abc', path: '/data/Smith^John/1.dcm', kind: 'not-dicom', reason: 'not DICOM'}})
    reporter.result({transferred: 1, failed: 1, failures: [{id: 'abc'}], dryRun: false})
    await reporter.close({exitCode: 10, error: 'partial-failure'})
    expect((await stat(log)).mode & 0o777).toBe(0o600)
    const lines = (await readFile(log, 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>)
    expect(lines.map((line) => line.event)).toEqual(['earlier run', 'start', 'plan', 'failure', 'end'])
    expect(lines[1]).toMatchObject({command: 'sync', flags: ['source', 'log-file']})
    expect(lines[3]).toEqual({time: expect.any(String), event: 'failure', id: 'abc', kind: 'not-dicom', reason: 'not DICOM'})
    expect(lines[4]).toEqual({time: expect.any(String), event: 'end', exitCode: 10, durationMs: expect.any(Number), dryRun: false, transferred: 1, failed: 1, error: 'partial-failure'})
  })
})

describe('flags parsed when oclif parses them', () => {
  let config: Config
  beforeAll(async () => {
    config = await Config.load({root: process.cwd()})
  })

  const parse = <T>(flag: {parse?: unknown}, input: string, options: Record<string, unknown> = {}) => (flag.parse as (input: string, context: unknown, options: unknown) => Promise<T>)(input, {config}, options)

  it('sizes, shown as they would be typed', async () => {
    expect(await parse(sizeFlag({}), '700MB')).toBe(700_000_000)
    expect(await parse(sizeFlag({}), '4GiB')).toBe(4 * 1024 ** 3)
    await expect(parse(sizeFlag({}), '1K', {min: 65_536})).rejects.toThrow(/"1K" is less than 64KiB/)
    await expect(parse(sizeFlag({}), 'big')).rejects.toThrow(/is not a size/)
    expect(formatSize(4 * 1024 ** 3 - 64 * 1024 ** 2)).toBe('4032MiB')
    expect(formatSize(700_000_000)).toBe('700MB')
    expect(formatSize(1234)).toBe('1234')
    expect(parseSize(formatSize(4227858432))).toBe(4227858432)
  })

  it('fractions, dates, shards and durations', async () => {
    expect(await parse(fractionFlag({}), '0.25')).toBe(0.25)
    await expect(parse(fractionFlag({}), '1.5')).rejects.toThrow(/from 0 to 1/)
    await expect(parse(fractionFlag({}), '')).rejects.toThrow(/from 0 to 1/)
    expect(await parse(dicomDateFlag({}), '20240229')).toBe('20240229')
    await expect(parse(dicomDateFlag({}), '20230229')).rejects.toThrow(/is not a date/)
    await expect(parse(dicomDateFlag({}), '2024-01-31')).rejects.toThrow(/YYYYMMDD/)
    expect(await parse(shardFlag({}), '3/8')).toEqual({index: 3, count: 8})
    await expect(parse(shardFlag({}), '9/8')).rejects.toThrow(/K\/N/)
    // Exported, and then refused by every import and verify: the archive records at most 1,000,000 parts.
    expect(await parse(shardFlag({}), '1000000/1000000')).toEqual({index: 1_000_000, count: 1_000_000})
    await expect(parse(shardFlag({}), '928961/2000000')).rejects.toThrow(/more than 1000000 parts/)
    expect(await parse(durationFlag({}), '30s')).toBe(30_000)
    expect(await parse(durationFlag({}), '5m')).toBe(300_000)
    expect(parseDuration('90')).toBe(90_000)
    await expect(parse(durationFlag({}), '10ms', {min: 1000})).rejects.toThrow(/shorter than 1 s/)
  })
})

describe('a bad flag in one line', () => {
  it('keeps oclif\'s reason and drops its boilerplate', async () => {
    const {usageMessage} = await import('../../src/cli/usage-message.js')
    expect(usageMessage('Parsing --shard \n\t"9/8" is not K/N with 1 <= K <= N\nSee more help with --help')).toBe('--shard: "9/8" is not K/N with 1 <= K <= N')
    expect(usageMessage('The following error occurred:\n  Missing required flag source\nSee more help with --help')).toBe('Missing required flag source')
    // A missing argument is said as a sentence, its description beside its name, not joined with semicolons.
    expect(usageMessage('Missing 1 required arg:\npath  archive volume(s), or - for stdin\nNote: --identity allows multiple values. Because of this you need to provide all arguments before providing that flag.\nAlternatively, you can use "--" to signify the end of the flags and the beginning of arguments.\nSee more help with --help'))
      .toBe('Missing 1 required arg: path (archive volume(s), or - for stdin). Note: --identity allows multiple values. Because of this you need to provide all arguments before providing that flag. Alternatively, you can use "--" to signify the end of the flags and the beginning of arguments.')
    expect(usageMessage('The following errors occurred:\n  Missing required flag source\n  Missing required flag output\nSee more help with --help')).toBe('Missing required flag source; Missing required flag output')
    expect(usageMessage('Nonexistent flag: --bogus\nSee more help with --help')).toBe('Nonexistent flag: --bogus')
  })

  // "Nonexistent flag: --passphrase=hunter2": a mistyped flag's value may be a secret.
  it('names an unknown flag without the value given to it', async () => {
    const {usageMessage} = await import('../../src/cli/usage-message.js')
    const values = ['hunter2', 'a, --b=c', 'x\ny, -z', 'p@ss:w/rd#é', '=', '']
    for (const value of values) {
      const flags = [`--passphrase=${value}`, `-P${value}`, '--bogus']
      const message = `Nonexistent flags: ${flags.join(', ')}\nSee more help with --help`
      // From oclif's list of the words; failing that, from its message alone.
      for (const shown of [usageMessage(message, flags), usageMessage(message)]) {
        expect(shown, JSON.stringify(value)).toMatch(/^Nonexistent flags: --passphrase\b/)
        for (const part of value.split(/[\s,=-]+/).filter((text) => text.length >= 2)) expect(shown, JSON.stringify(value)).not.toContain(part)
      }

      expect(usageMessage(message, flags)).toBe('Nonexistent flags: --passphrase, -P, --bogus')
    }

    expect(usageMessage('Nonexistent flag: --passphrase=hunter2\nSee more help with --help', ['--passphrase=hunter2'])).toBe('Nonexistent flag: --passphrase')
  })
})

describe('the flags a log records', () => {
  it('names the flags and never a value, attached to a short flag or after a long flag\'s =', () => {
    expect(flagNamesOf(['--source', 'http://pacs', '-o/exports/Smith_John_1961', '--patient-id=P123', '-q', '--json', '--', 'Smith'])).toEqual(['source', 'o', 'patient-id', 'q', 'json'])
  })
})
