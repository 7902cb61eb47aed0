// Preloaded into a CLI run (node --import) by test/helpers/measure.ts: on exit, writes the
// process's peak resident set size, VmHWM from /proc/self/status, in KiB. Not getrusage's
// ru_maxrss: Linux carries into it the size of the parent the child was forked from (the test
// runner), saved when exec replaced that copy, so it overstates a small child of a large parent.
import {readFileSync, writeFileSync} from 'node:fs'

const target = process.env.ORTHANC_REPLICATE_RSS_REPORT
if (target) {
  process.on('exit', () => {
    const match = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'))
    if (match) writeFileSync(target, JSON.stringify({peakRssKiB: Number(match[1])}))
  })
}
