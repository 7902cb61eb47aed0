import {type ChildProcess, spawn, spawnSync} from 'node:child_process'
import {existsSync, openSync, readFileSync} from 'node:fs'
import {mkdir, mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {homedir, tmpdir} from 'node:os'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {freePort} from './ports.js'

/**
 * Which Orthanc a test runs: '1.10' is the system's own (Debian 12's 1.10.1, or ORTHANC_BINARY),
 * '1.12' is Debian 13's 1.12.7 unpacked by scripts/install-orthanc-1.12.sh.
 */
export type OrthancVersion = '1.10' | '1.12'

export interface OrthancOptions {
  /** Default '1.10', the server every other test was written against. */
  version?: OrthancVersion
  name?: string
  /** Basic-auth users; none means authentication is off. */
  users?: Record<string, string>
  storageCompression?: boolean
  userMetadata?: Record<string, number>
  userContentType?: Record<string, number>
  overwriteInstances?: boolean
  /** Extra configuration merged last (PostgreSQL section, plugins...). */
  extra?: Record<string, unknown>
  /** Reuse an existing folder (storage and index) instead of a fresh one: restarts, recovery. */
  dir?: string
}

export interface OrthancServer {
  /** http://127.0.0.1:PORT, without credentials. */
  url: string
  /** The same URL with the first user's credentials in it. */
  authUrl: string
  port: number
  version: OrthancVersion
  dir: string
  storageDir: string
  options: OrthancOptions
  /** Stops the server (SIGTERM) and keeps its folder. */
  stop(): Promise<void>
  /** Kills the server (SIGKILL), as a crash would. */
  kill(): Promise<void>
  /** Starts it again on the same folder and port. */
  start(): Promise<void>
  /** Stops it and deletes its folder. */
  dispose(): Promise<void>
  /** An authenticated fetch against the server, for test assertions. */
  api(path: string, init?: RequestInit): Promise<Response>
  json<T = unknown>(path: string, init?: RequestInit): Promise<T>
}

export const ORTHANC_INSTALL_HINT =
  'Integration tests need a real Orthanc server. Install it with `sudo apt-get install -y orthanc` ' +
  '(Debian/Ubuntu), or set ORTHANC_BINARY to the path of an Orthanc executable.'

export function orthancBinary(): string {
  const candidates = [process.env.ORTHANC_BINARY, '/usr/sbin/Orthanc', '/usr/bin/Orthanc', '/usr/local/bin/Orthanc'].filter(Boolean) as string[]
  const found = candidates.find((path) => existsSync(path))
  if (found) return found
  const which = spawnSync('sh', ['-c', 'command -v Orthanc'], {encoding: 'utf8'})
  if (which.status === 0 && which.stdout.trim()) return which.stdout.trim()
  throw new Error(`Orthanc not found. ${ORTHANC_INSTALL_HINT}`)
}

export const ORTHANC_112_INSTALL_HINT =
  'Tests on Orthanc 1.12 need its private copy: run `bash scripts/install-orthanc-1.12.sh` ' +
  '(downloads Debian 13 packages once, needs no root), or point ORTHANC_112_ROOT at where it installed them.'

/** The folder scripts/install-orthanc-1.12.sh unpacks Orthanc 1.12.7 into; the two must agree. */
export function orthanc112Root(): string {
  if (process.env.ORTHANC_112_ROOT) return process.env.ORTHANC_112_ROOT
  const cache = process.env.XDG_CACHE_HOME || join(homedir(), '.cache')
  return join(cache, 'orthanc-replicate', 'orthanc-1.12.7')
}

/** What the install script writes last into the prefix, paths relative to it. */
interface PrefixManifest {
  orthancVersion: string
  loader: string
  libraryPath: string[]
  binary: string
  dicomDictionary: string
  gconvPath: string
  pluginsDir: string
}

const PREFIX_MANIFEST = 'orthanc-replicate-prefix.json'

function readPrefixManifest(root: string): PrefixManifest | undefined {
  const path = join(root, PREFIX_MANIFEST)
  return existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as PrefixManifest) : undefined
}

/**
 * Servers started by this process and not exited. A test that runs out of its time never reaches
 * its dispose: its server outlived the run (a 1.12.7 server whose PostgreSQL was stopped does not
 * even stop on SIGTERM). They are killed when the process exits or is told to.
 */
const running = new Set<ChildProcess>()
const killRunning = () => {
  for (const server of running) server.kill('SIGKILL')
}
process.once('exit', killRunning)
// The test runner ends its worker processes with SIGTERM, which runs no 'exit' handler.
process.once('SIGTERM', () => {
  killRunning()
  process.exit(143)
})

/** The versions startOrthanc can run on this machine right now. */
export function availableOrthancVersions(): OrthancVersion[] {
  const versions: OrthancVersion[] = []
  try {
    orthancBinary()
    versions.push('1.10')
  } catch {
    // not installed
  }

  if (readPrefixManifest(orthanc112Root())) versions.push('1.12')
  return versions
}

/** The plugin folder of a version's own packages (the PostgreSQL plugins must match the server that loads them). */
export function orthancPluginsDir(version: OrthancVersion): string | undefined {
  if (version === '1.10') return undefined
  const root = orthanc112Root()
  const manifest = readPrefixManifest(root)
  if (!manifest) throw new Error(`Orthanc 1.12 not found in ${root}. ${ORTHANC_112_INSTALL_HINT}`)
  return join(root, manifest.pluginsDir)
}

interface OrthancLaunch {
  command: string
  /** Arguments before Orthanc's own. */
  args: string[]
  env: NodeJS.ProcessEnv
}

function orthancLaunch(version: OrthancVersion): OrthancLaunch {
  if (version === '1.10') return {command: orthancBinary(), args: [], env: process.env}
  const root = orthanc112Root()
  const manifest = readPrefixManifest(root)
  if (!manifest) throw new Error(`Orthanc 1.12 not found in ${root}. ${ORTHANC_112_INSTALL_HINT}`)
  // Trixie's libraries need trixie's glibc: the prefix's own loader runs the server, so nothing
  // from the system's /usr/lib is mixed in, and no library path leaks into the system's programs.
  return {
    command: join(root, manifest.loader),
    args: ['--library-path', manifest.libraryPath.map((dir) => join(root, dir)).join(':'), join(root, manifest.binary)],
    env: {
      ...process.env,
      // Compiled-in paths point at the system's /usr: DCMTK's dictionary and glibc's charset converters.
      DCMDICTPATH: join(root, manifest.dicomDictionary),
      GCONV_PATH: join(root, manifest.gconvPath),
    },
  }
}

/** Starts a throwaway Orthanc on a free loopback port in a temporary folder, and waits until it answers. */
export async function startOrthanc(options: OrthancOptions = {}): Promise<OrthancServer> {
  const version = options.version ?? '1.10'
  const launch = orthancLaunch(version)
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'orthanc-test-')))
  const storageDir = join(dir, 'storage')
  await mkdir(storageDir, {recursive: true})
  await mkdir(join(dir, 'index'), {recursive: true})
  const port = await freePort()
  const users = options.users ?? {}
  const [firstUser] = Object.entries(users)
  const config = {
    Name: options.name ?? 'test',
    HttpPort: port,
    StorageDirectory: storageDir,
    IndexDirectory: join(dir, 'index'),
    DicomServerEnabled: false,
    RemoteAccessAllowed: false,
    AuthenticationEnabled: Object.keys(users).length > 0,
    RegisteredUsers: users,
    Plugins: [],
    StorageCompression: options.storageCompression ?? false,
    UserMetadata: options.userMetadata ?? {},
    UserContentType: options.userContentType ?? {},
    OverwriteInstances: options.overwriteInstances ?? false,
    HttpCompressionEnabled: true,
    LogExportedResources: false,
    // No storage cache: tests that damage a stored file must see the damage on the next read.
    MaximumStorageCacheSize: 0,
    ...options.extra,
  }
  const configPath = join(dir, 'orthanc.json')
  await writeFile(configPath, JSON.stringify(config, null, 2))
  const logPath = join(dir, 'orthanc.log')

  const url = `http://127.0.0.1:${port}`
  const authUrl = firstUser ? `http://${encodeURIComponent(firstUser[0])}:${encodeURIComponent(firstUser[1])}@127.0.0.1:${port}` : url
  const authHeader: Record<string, string> = firstUser
    ? {authorization: `Basic ${Buffer.from(`${firstUser[0]}:${firstUser[1]}`).toString('base64')}`}
    : {}

  let child: ChildProcess | undefined
  let exited: Promise<void> = Promise.resolve()

  const api = async (path: string, init: RequestInit = {}) =>
    fetch(url + path, {...init, headers: {...authHeader, ...(init.headers as Record<string, string> | undefined)}})

  const start = async () => {
    const log = openSync(logPath, 'a')
    const started = spawn(launch.command, [...launch.args, `--logfile=${logPath}`, configPath], {cwd: dir, env: launch.env, stdio: ['ignore', log, log]})
    child = started
    running.add(started)
    let exitedEarly = false
    exited = new Promise((resolve) =>
      started.once('exit', () => {
        running.delete(started)
        exitedEarly = true
        resolve()
      }),
    )
    const deadline = Date.now() + 30_000
    while (Date.now() < deadline && !exitedEarly) {
      try {
        const response = await api('/system')
        if (response.ok) {
          await response.arrayBuffer()
          return
        }
      } catch {
        // not listening yet
      }

      await sleep(100)
    }

    const logText = await readFile(logPath, 'utf8').catch(() => '')
    const why = exitedEarly ? `it exited with code ${started.exitCode}` : 'no answer within 30 s'
    throw new Error(`Orthanc did not start on port ${port}: ${why}\n${logText.split('\n').slice(-15).join('\n')}`)
  }

  const stopWith = async (signal: NodeJS.Signals) => {
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    child.kill(signal)
    await Promise.race([exited, sleep(15_000)])
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await exited
    }
  }

  await start()
  return {
    url,
    authUrl,
    port,
    version,
    dir,
    storageDir,
    options,
    stop: () => stopWith('SIGTERM'),
    kill: () => stopWith('SIGKILL'),
    start,
    async dispose() {
      await stopWith('SIGTERM')
      if (!options.dir) await rm(dir, {recursive: true, force: true})
    },
    api,
    async json<T>(path: string, init?: RequestInit) {
      const response = await api(path, init)
      if (!response.ok) throw new Error(`${init?.method ?? 'GET'} ${path}: HTTP ${response.status}`)
      return (await response.json()) as T
    },
  }
}

/** Uploads DICOM files the plain way, for setting up a test's source server. */
export async function uploadFiles(server: OrthancServer, paths: string[]): Promise<string[]> {
  const ids: string[] = []
  for (const path of paths) {
    const body = await readFile(path)
    const answer = await server.json<{ID: string; Status: string}>('/instances', {
      method: 'POST',
      body,
      headers: {'content-type': 'application/dicom'},
    })
    if (answer.Status !== 'Success' && answer.Status !== 'AlreadyStored') throw new Error(`upload of ${path}: ${answer.Status}`)
    ids.push(answer.ID)
  }

  return ids
}

/** Instance IDs and MD5s as the server stores them, for comparing two servers. */
export async function instanceMd5s(server: OrthancServer): Promise<Map<string, string>> {
  const ids = await server.json<string[]>('/instances')
  const result = new Map<string, string>()
  for (const id of ids) {
    const response = await server.api(`/instances/${id}/attachments/dicom/md5`)
    result.set(id, (await response.text()).trim())
  }

  return result
}
