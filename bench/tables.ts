import type {Corpus} from './corpus.js'
import {table} from './markdown.js'
import type {Method} from './methods.js'
import type {Samples} from './samples.js'
import {perSecond, ratio, seconds} from './stats.js'

export function runsList(samples: Samples, key: string): string {
  return samples.get(key).map((sample) => seconds(sample.ms)).join(', ')
}

export function cpu(samples: Samples, key: string, field: 'clientCpuMs' | 'orthancCpuMs'): string {
  return seconds(samples.median(key, field))
}

/** The worst run's background CPU: one disturbed run is enough to say so. */
export function maxBackground(samples: Samples, key: string): string {
  const values = samples.get(key).map((sample) => sample.backgroundCpuMs ?? 0)
  return values.length > 0 ? seconds(Math.max(...values)) : '—'
}

export function throughput(corpus: Corpus, ms: number): string[] {
  return [perSecond(corpus.count, ms), (corpus.bytes / 1e6 / (ms / 1000)).toFixed(1)]
}

function rss(samples: Samples, key: string): string {
  const kb = samples.median(key, 'rssKb')
  return Number.isFinite(kb) ? (kb / 1024).toFixed(0) : '—'
}

export function measurementTable(corpus: Corpus, samples: Samples, methods: Method[]): string {
  const rows = methods.map((method) => {
    const ms = samples.median(method.key)
    const reported = samples.median(method.key, 'reportedMs')
    return [method.label, seconds(ms), runsList(samples, method.key), ...throughput(corpus, ms), Number.isFinite(reported) ? seconds(reported) : '—',
      cpu(samples, method.key, 'clientCpuMs'), cpu(samples, method.key, 'orthancCpuMs'), maxBackground(samples, method.key), rss(samples, method.key)]
  })
  return table(['measurement', 'median s', 'runs (s)', 'instances/s', 'MB/s', 'tool-reported s', 'client CPU s', 'Orthanc CPU s', 'other CPU s (max)', 'peak RSS MB'], rows)
}

export function ratioTable(samples: Samples): string {
  const time = (key: string) => samples.median(key)
  const clientCpu = (key: string) => samples.median(key, 'clientCpuMs')
  const rows: Array<[string, string, number, number | undefined, ('at least' | 'at most')?]> = [
    ['sync vs naive copier', 'naive / sync', time('naive') / time('sync'), 2.5],
    ['ceiling vs sync', 'ceiling / sync', time('ceiling') / time('sync'), 0.8],
    ['ceiling vs import', 'ceiling / import', time('ceiling') / time('import'), 0.85],
    ['raw download vs export', 'raw download / export', time('raw-download') / time('export'), 0.7],
    ['unchecked-copy floor vs naive copier', 'naive / unchecked-copy floor', time('naive') / time('unchecked-copy'), undefined],
    ['checked-copy floor vs naive copier', 'naive / checked-copy floor', time('naive') / time('checked-copy'), undefined],
    ['ceiling vs checked-copy floor', 'ceiling / checked-copy floor', time('ceiling') / time('checked-copy'), undefined],
    ['sync vs checked-copy floor', 'checked-copy floor / sync', time('checked-copy') / time('sync'), undefined],
    ['ceiling vs checked-upload floor', 'ceiling / checked-upload floor', time('ceiling') / time('checked-upload'), undefined],
    ['import vs checked-upload floor', 'checked-upload floor / import', time('checked-upload') / time('import'), undefined],
    ['pipe vs sync', 'sync / pipe', time('sync') / time('pipe'), undefined],
    ['import vs sequential uploader', 'sequential / import', time('sequential') / time('import'), undefined],
    ['ceiling vs archive import', 'ceiling / archive import', time('ceiling') / time('import-archive'), undefined],
    ['ZIP batches vs ceiling', 'ceiling / ZIP batches', time('ceiling') / time('zip-batches'), undefined],
    // What the tool itself costs, beside a client that does only the checks: CPU, not time, so that it does not depend on the machine's load.
    ['client CPU of sync vs checked-copy floor', 'sync CPU s / checked-copy floor CPU s', clientCpu('sync') / clientCpu('checked-copy'), 1.3, 'at most'],
    ['client CPU of import vs checked-upload floor', 'import CPU s / checked-upload floor CPU s', clientCpu('import') / clientCpu('checked-upload'), 1.2, 'at most'],
    // The floors above run warm, in the bench's process; a tool run never does. The same floors as a new process's first job:
    ['checked-copy floor: new process vs warm', 'new-process floor CPU s / in-process floor CPU s', clientCpu('checked-copy-fresh') / clientCpu('checked-copy'), undefined],
    ['checked-upload floor: new process vs warm', 'new-process floor CPU s / in-process floor CPU s', clientCpu('checked-upload-fresh') / clientCpu('checked-upload'), undefined],
    ['client CPU of sync vs checked-copy floor in a new process', 'sync CPU s / new-process checked-copy floor CPU s', clientCpu('sync') / clientCpu('checked-copy-fresh'), 1.3, 'at most'],
    // What the one request a lossless copy adds on 1.10.1 (each instance's attachment list) costs, and sync beside the floor that makes it.
    ['lossless vs checked-copy floor, both in a new process', 'lossless floor CPU s / checked-copy floor CPU s', clientCpu('lossless-copy-fresh') / clientCpu('checked-copy-fresh'), undefined],
    ['client CPU of sync vs lossless checked-copy floor in a new process', 'sync CPU s / new-process lossless floor CPU s', clientCpu('sync') / clientCpu('lossless-copy-fresh'), 1.3, 'at most'],
    ['client CPU of import vs checked-upload floor in a new process', 'import CPU s / new-process checked-upload floor CPU s', clientCpu('import') / clientCpu('checked-upload-fresh'), 1.2, 'at most'],
  ]
  // A section that did not measure a ratio's methods leaves that ratio out.
  return table(['ratio', 'definition (median times, or CPU seconds where said)', 'value', 'target', 'met'], rows.filter(([, , value]) => Number.isFinite(value)).map(([name, definition, value, target, direction = 'at least']) => [
    name, definition, ratio(value), target === undefined ? '—' : `${direction === 'at least' ? '≥' : '≤'} ${target}`,
    target === undefined ? '—' : (direction === 'at least' ? value >= target : value <= target) ? 'yes' : '**no**',
  ]))
}
