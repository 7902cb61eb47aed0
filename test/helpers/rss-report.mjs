// Preloaded into a CLI run (node --import) by test/helpers/measure.ts: on exit, writes the
// process's peak resident set size as the kernel counted it (getrusage ru_maxrss, in KiB).
import {writeFileSync} from 'node:fs'

const target = process.env.ORTHANC_REPLICATE_RSS_REPORT
if (target) {
  process.on('exit', () => {
    writeFileSync(target, JSON.stringify({maxRssKiB: process.resourceUsage().maxRSS}))
  })
}
