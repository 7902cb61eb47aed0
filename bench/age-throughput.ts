/**
 * How fast src/crypto encrypts and decrypts a volume, and how much memory it takes, beside the
 * `age` tool on the same file and, as floors, a plain file copy (cp, and Node's own stream
 * copy, which is our module without the cryptography).
 *
 *   node --import tsx bench/age-throughput.ts [--size-mb 1000] [--runs 3] [--dir DIR] [--skip-passphrase]
 *
 * Every measurement runs in its own process, file to file in one scratch folder (page cache
 * warm, no fsync), rounds interleaved so that a busy neighbour hurts every row alike. Our rows'
 * times are measured inside the worker around the stream alone (Node and tsx start-up excluded);
 * the others' are wall-clock. Peak RSS and CPU come from GNU time for every row.
 */

import {spawnSync} from 'node:child_process'
import {createHash, randomBytes} from 'node:crypto'
import {createReadStream, createWriteStream} from 'node:fs'
import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {availableParallelism, loadavg, tmpdir} from 'node:os'
import {join} from 'node:path'
import {pipeline} from 'node:stream/promises'
import {fileURLToPath} from 'node:url'
import {parseArgs} from 'node:util'

import {
  createDecryptingReader, createEncryptingWriter, readIdentityFile, readPassphraseFile,
} from '../src/crypto/age.js'
import {describeMachine} from './machine.js'
import {measureProcess} from './processes.js'
import {median} from './stats.js'

const self = fileURLToPath(import.meta.url)

interface Row {
  name: string
  command: (paths: Paths) => {command: string; args: string[]}
  /** Reads the time the worker measured around the stream, instead of wall-clock. */
  internalTime: boolean
  /** Which file the row reads, which it writes, so that decryption checks what it produced. */
  input: keyof Paths
  output: string
  checkAgainst?: keyof Paths
}

interface Paths {
  plain: string
  ours: string
  theirs: string
  oursPassphrase: string
  key: string
  recipient: string
  passphraseFile: string
  dir: string
}

interface Measurement {
  seconds: number
  cpuSeconds?: number
  maxRssMb?: number
}

async function worker(mode: string, input: string, output: string, key: string): Promise<void> {
  // Keys are read before the clock starts: their cost (scrypt excepted) is not the stream's.
  const started = {ms: 0}
  const time = async (work: () => Promise<void>) => {
    started.ms = performance.now()
    await work()
    console.log(JSON.stringify({ms: performance.now() - started.ms}))
  }

  const destination = () => createWriteStream(output, {highWaterMark: 1024 * 1024})
  if (mode === 'copy') await time(() => pipeline(createReadStream(input), destination()))
  else if (mode === 'encrypt') await time(() => pipeline(createReadStream(input), createEncryptingWriter(destination(), {recipients: [key]})))
  else if (mode === 'encrypt-passphrase') {
    const passphrase = await readPassphraseFile(key)
    await time(() => pipeline(createReadStream(input), createEncryptingWriter(destination(), {passphrase})))
  } else if (mode === 'decrypt') {
    const identities = await readIdentityFile(key)
    await time(() => pipeline(createDecryptingReader(createReadStream(input), {identities}), destination()))
  } else if (mode === 'decrypt-passphrase') {
    const passphrase = await readPassphraseFile(key)
    await time(() => pipeline(createDecryptingReader(createReadStream(input), {passphrases: [passphrase]}), destination()))
  } else {
    throw new Error(`unknown worker mode ${mode}`)
  }
}

function nodeWorker(mode: string, input: string, output: string, key: string) {
  return {command: process.execPath, args: ['--import', 'tsx', self, '--worker', mode, input, output, key]}
}

function rows(skipPassphrase: boolean): Row[] {
  const all: Row[] = [
    {name: 'copy floor: cp', command: (p) => ({command: 'cp', args: [p.plain, join(p.dir, 'copy-cp')]}), internalTime: false, input: 'plain', output: 'copy-cp'},
    {name: 'copy floor: Node stream pipeline', command: (p) => nodeWorker('copy', p.plain, join(p.dir, 'copy-node'), ''), internalTime: true, input: 'plain', output: 'copy-node'},
    {name: 'encrypt: age CLI (-r)', command: (p) => ({command: 'age', args: ['-r', p.recipient, '-o', p.theirs, p.plain]}), internalTime: false, input: 'plain', output: 'theirs.age'},
    {name: 'encrypt: ours (recipient)', command: (p) => nodeWorker('encrypt', p.plain, p.ours, p.recipient), internalTime: true, input: 'plain', output: 'ours.age'},
    {name: 'decrypt: age CLI (-d -i)', command: (p) => ({command: 'age', args: ['-d', '-i', p.key, '-o', join(p.dir, 'theirs.out'), p.ours]}), internalTime: false, input: 'ours', output: 'theirs.out', checkAgainst: 'plain'},
    {name: 'decrypt: ours (identity)', command: (p) => nodeWorker('decrypt', p.theirs, join(p.dir, 'ours.out'), p.key), internalTime: true, input: 'theirs', output: 'ours.out', checkAgainst: 'plain'},
  ]
  if (skipPassphrase) return all
  return [
    ...all,
    {name: 'encrypt: ours (passphrase, scrypt 2^18)', command: (p) => nodeWorker('encrypt-passphrase', p.plain, p.oursPassphrase, p.passphraseFile), internalTime: true, input: 'plain', output: 'ours-passphrase.age'},
    {name: 'decrypt: ours (passphrase, scrypt 2^18)', command: (p) => nodeWorker('decrypt-passphrase', p.oursPassphrase, join(p.dir, 'ours-passphrase.out'), p.passphraseFile), internalTime: true, input: 'oursPassphrase', output: 'ours-passphrase.out', checkAgainst: 'plain'},
  ]
}

async function sha256(path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

async function writeRandomFile(path: string, bytes: number): Promise<void> {
  const file = createWriteStream(path)
  await pipeline((function* () {
    for (let written = 0; written < bytes; written += 1024 * 1024) yield randomBytes(Math.min(1024 * 1024, bytes - written))
  })(), file)
}

async function main(): Promise<void> {
  const {values, positionals} = parseArgs({
    options: {
      'size-mb': {type: 'string', default: '1000'},
      runs: {type: 'string', default: '3'},
      dir: {type: 'string'},
      'skip-passphrase': {type: 'boolean', default: false},
      worker: {type: 'string'},
    },
    allowPositionals: true,
  })
  if (values.worker) {
    const [input, output, key] = positionals
    await worker(values.worker, input!, output!, key ?? '')
    return
  }

  for (const tool of ['age', 'age-keygen', 'cp']) {
    if (spawnSync(tool, ['--version']).error) throw new Error(`${tool} is missing: install the Debian package age`)
  }

  const bytes = Number(values['size-mb']) * 1_000_000
  const runs = Number(values.runs)
  const dir = await mkdtemp(join(values.dir ?? tmpdir(), 'age-bench-'))
  const loadBefore = loadavg()
  const started = Date.now()
  try {
    const paths: Paths = {
      plain: join(dir, 'plain.tar'), ours: join(dir, 'ours.age'), theirs: join(dir, 'theirs.age'), oursPassphrase: join(dir, 'ours-passphrase.age'),
      key: join(dir, 'key.txt'), recipient: '', passphraseFile: join(dir, 'passphrase.txt'), dir,
    }
    spawnSync('age-keygen', ['-o', paths.key])
    paths.recipient = spawnSync('age-keygen', ['-y', paths.key], {encoding: 'utf8'}).stdout.trim()
    await writeFile(paths.passphraseFile, `${randomBytes(16).toString('hex')}\n`, {mode: 0o600})
    process.stderr.write(`writing ${bytes / 1e6} MB of random data to ${paths.plain}\n`)
    await writeRandomFile(paths.plain, bytes)
    const expected = await sha256(paths.plain)

    const table = rows(values['skip-passphrase'])
    const results = new Map<string, Measurement[]>()
    for (let round = 1; round <= runs; round++) {
      for (const row of table) {
        const {command, args} = row.command(paths)
        const run = await measureProcess(command, args)
        if (run.code !== 0) throw new Error(`${row.name} failed (exit ${run.code}): ${run.stderr.trim().slice(0, 500)}`)
        const ms = row.internalTime ? (JSON.parse(run.stdout.trim().split('\n').at(-1)!) as {ms: number}).ms : run.wallMs
        results.set(row.name, [...(results.get(row.name) ?? []), {seconds: ms / 1000, cpuSeconds: run.cpuMs === undefined ? undefined : run.cpuMs / 1000, maxRssMb: run.maxRssKb === undefined ? undefined : run.maxRssKb / 1024}])
        if (round === 1 && row.checkAgainst && (await sha256(join(dir, row.output))) !== expected) throw new Error(`${row.name} did not give back the plaintext`)
        process.stderr.write(`round ${round}/${runs}: ${row.name}: ${(ms / 1000).toFixed(2)} s\n`)
      }
    }

    const machine = describeMachine()
    const lines = [
      `## age encryption of one ${bytes / 1e6} MB volume`,
      '',
      `Machine: ${availableParallelism()} cores (${machine.cpuModel}), ${machine.memory}, Node ${machine.node}, age ${spawnSync('age', ['--version'], {encoding: 'utf8'}).stdout.trim()} (Debian package), age-encryption ${await packageVersion()}; commit ${machine.commit}.`,
      `Load average before / after: ${loadBefore.map((load) => load.toFixed(2)).join(' ')} / ${loadavg().map((load) => load.toFixed(2)).join(' ')}; ${runs} runs, ${((Date.now() - started) / 60_000).toFixed(1)} minutes.`,
      '',
      '| measurement | median s | runs (s) | MB/s | CPU s (median) | peak RSS MB (max) |',
      '|---|---|---|---|---|---|',
      ...table.map((row) => {
        const measured = results.get(row.name)!
        const seconds = median(measured.map((one) => one.seconds))
        const cpu = measured.every((one) => one.cpuSeconds !== undefined) ? median(measured.map((one) => one.cpuSeconds!)).toFixed(2) : 'n/a'
        const rss = measured.every((one) => one.maxRssMb !== undefined) ? Math.max(...measured.map((one) => one.maxRssMb!)).toFixed(0) : 'n/a'
        return `| ${row.name} | ${seconds.toFixed(2)} | ${measured.map((one) => one.seconds.toFixed(2)).join(', ')} | ${(bytes / 1e6 / seconds).toFixed(0)} | ${cpu} | ${rss} |`
      }),
    ]
    console.log(lines.join('\n'))
  } finally {
    await rm(dir, {recursive: true, force: true})
  }
}

async function packageVersion(): Promise<string> {
  const manifest = JSON.parse(await readFile(new URL('../node_modules/age-encryption/package.json', import.meta.url), 'utf8')) as {version: string}
  return manifest.version
}

await main()
