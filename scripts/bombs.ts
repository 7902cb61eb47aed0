// The long bomb runs: every bomb of test/integration/bombs*.test.ts at full size (1M tar entries,
// 3 GiB deflate bombs, a 1 GiB pax header), against real Orthanc servers, each run's peak RSS and
// time printed. For package.json: "bombs": "npm run build && node --import tsx scripts/bombs.ts".
// Arguments after -- go to vitest (e.g. -t "deflated").
import {spawnSync} from 'node:child_process'
import {fileURLToPath, URL} from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const result = spawnSync('npx', ['vitest', 'run', 'test/integration/bombs', ...process.argv.slice(2)], {
  cwd: root,
  stdio: 'inherit',
  env: {...process.env, BOMBS: 'long'},
})
process.exit(result.status ?? 1)
