import {execFile, spawnSync} from 'node:child_process'
import {existsSync, readdirSync} from 'node:fs'
import {appendFile, chown, mkdtemp, readFile, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {dirname, join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'
import {promisify} from 'node:util'

import {type OrthancVersion, orthancPluginsDir} from './orthanc.js'
import {freePort} from './ports.js'

const execFileAsync = promisify(execFile)

export const POSTGRES_INSTALL_HINT =
  'Install PostgreSQL and the Orthanc PostgreSQL plugins with `sudo apt-get install -y postgresql orthanc-postgresql` (Debian/Ubuntu).'

export interface PostgresServer {
  host: string
  port: number
  /** Superuser; authentication is "trust", so there is no password. */
  user: string
  /** Temporary folder holding the cluster (data/), its log and its unix socket. */
  dir: string
  createDatabase(name: string): Promise<void>
  /** Stops the server and deletes its folder. */
  dispose(): Promise<void>
}

export interface OrthancPostgresPlugins {
  index: string
  storage: string
}

const SERVER_TOOLS = ['initdb', 'pg_ctl', 'postgres', 'pg_isready', 'createdb']
// The account the Debian package creates; PostgreSQL will not run as root.
const SERVICE_USER = 'postgres'
const SUPERUSER = 'postgres'
const HOST = '127.0.0.1'

function commandPath(name: string): string | undefined {
  const which = spawnSync('sh', ['-c', `command -v ${name}`], {encoding: 'utf8'})
  return which.status === 0 && which.stdout.trim() ? which.stdout.trim() : undefined
}

/** The bin folder of the newest PostgreSQL server installed: Debian keeps initdb and pg_ctl off PATH, under /usr/lib/postgresql/VERSION/bin. */
export function postgresBinDir(): string {
  const root = '/usr/lib/postgresql'
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((name) => /^\d+(\.\d+)?$/.test(name))
        .sort((a, b) => Number.parseFloat(b) - Number.parseFloat(a))
    : []
  for (const version of versions) {
    const bin = join(root, version, 'bin')
    if (SERVER_TOOLS.every((tool) => existsSync(join(bin, tool)))) return bin
  }

  const initdb = commandPath('initdb')
  if (initdb && SERVER_TOOLS.every((tool) => existsSync(join(dirname(initdb), tool)))) return dirname(initdb)
  throw new Error(`PostgreSQL server binaries (${SERVER_TOOLS.join(', ')}) not found under ${root}/*/bin or on PATH. ${POSTGRES_INSTALL_HINT}`)
}

/**
 * The Orthanc PostgreSQL index and storage plugins built for `version`; for the system's Orthanc,
 * ORTHANC_PLUGINS_DIR points elsewhere than the usual package locations.
 */
export function orthancPostgresPlugins(version: OrthancVersion = '1.10'): OrthancPostgresPlugins {
  const ownDir = orthancPluginsDir(version)
  const dirs = ownDir ? [ownDir] : ([process.env.ORTHANC_PLUGINS_DIR, '/usr/share/orthanc/plugins', '/usr/lib/orthanc/plugins', '/usr/local/share/orthanc/plugins'].filter(Boolean) as string[])
  for (const dir of dirs) {
    const index = join(dir, 'libOrthancPostgreSQLIndex.so')
    const storage = join(dir, 'libOrthancPostgreSQLStorage.so')
    if (existsSync(index) && existsSync(storage)) return {index, storage}
  }

  throw new Error(`Orthanc PostgreSQL plugins (libOrthancPostgreSQLIndex.so, libOrthancPostgreSQLStorage.so) not found in ${dirs.join(', ')}. ${POSTGRES_INSTALL_HINT}`)
}

/** The `extra` configuration for startOrthanc that puts both its index and its storage in `database`. */
export function orthancPostgresConfig(pg: Pick<PostgresServer, 'host' | 'port' | 'user'>, database: string, version: OrthancVersion = '1.10'): Record<string, unknown> {
  const plugins = orthancPostgresPlugins(version)
  return {
    Plugins: [plugins.index, plugins.storage],
    PostgreSQL: {
      EnableIndex: true,
      EnableStorage: true,
      Host: pg.host,
      Port: pg.port,
      Database: database,
      Username: pg.user,
      Password: '',
      // The advisory lock would make a restarted Orthanc wait for the old session to go away.
      Lock: false,
    },
  }
}

/** How to run the server binaries: as the service account when we are root, else as ourselves. */
function serverCommandPrefix(): string[] {
  if (process.getuid?.() !== 0) return []
  const runuser = ['/usr/sbin/runuser', '/sbin/runuser'].find((path) => existsSync(path)) ?? commandPath('runuser')
  if (runuser) return [runuser, '-u', SERVICE_USER, '--']
  const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find((path) => existsSync(path)) ?? commandPath('setpriv')
  if (setpriv) return [setpriv, `--reuid=${SERVICE_USER}`, `--regid=${SERVICE_USER}`, '--init-groups', '--']
  throw new Error('Running as root, but neither runuser nor setpriv is available to start PostgreSQL as an unprivileged user.')
}

async function run(command: string[], cwd: string): Promise<string> {
  const [file, ...args] = command as [string, ...string[]]
  try {
    const {stdout} = await execFileAsync(file, args, {cwd, encoding: 'utf8'})
    return stdout
  } catch (error) {
    const failed = error as {stdout?: string; stderr?: string; message: string}
    throw new Error(`${command.join(' ')} failed: ${failed.message}\n${failed.stderr ?? ''}${failed.stdout ?? ''}`)
  }
}

async function serviceIds(): Promise<{uid: number; gid: number}> {
  const uid = Number((await run(['id', '-u', SERVICE_USER], '/')).trim())
  const gid = Number((await run(['id', '-g', SERVICE_USER], '/')).trim())
  return {uid, gid}
}

function confString(value: string): string {
  return `'${value.replaceAll('\\', '\\\\').replaceAll("'", "''")}'`
}

/** Starts a throwaway PostgreSQL cluster on a free loopback port in a temporary folder, and waits until it accepts connections. */
export async function startPostgres(): Promise<PostgresServer> {
  const bin = postgresBinDir()
  const asService = serverCommandPrefix()
  const dir = await mkdtemp(join(tmpdir(), 'postgres-test-'))
  const dataDir = join(dir, 'data')
  const logPath = join(dir, 'postgres.log')
  const server = (tool: string, ...args: string[]) => run([...asService, join(bin, tool), ...args], dir)
  let started = false

  const stop = async () => {
    if (!started) return
    started = false
    await server('pg_ctl', 'stop', '-D', dataDir, '-m', 'fast', '-w', '-s').catch(() => undefined)
  }

  try {
    if (asService.length > 0) {
      let ids: {uid: number; gid: number}
      try {
        ids = await serviceIds()
      } catch {
        throw new Error(`Running as root, and there is no "${SERVICE_USER}" user to run PostgreSQL as. ${POSTGRES_INSTALL_HINT}`)
      }

      // mkdtemp makes the folder 0700 for us; handing it over lets the service account create the cluster and socket in it.
      await chown(dir, ids.uid, ids.gid)
      await run([...asService, 'test', '-w', dir], dir).catch(() => {
        throw new Error(`The "${SERVICE_USER}" user cannot reach ${dir}; point TMPDIR at a folder whose parents it can traverse, such as /tmp.`)
      })
    }

    await server('initdb', '-D', dataDir, '-U', SUPERUSER, '--auth=trust', '--encoding=UTF8', '--locale=C', '--no-sync', '--no-instructions')
    const port = await freePort()
    // Appending keeps the file owned by the service account; the last setting wins. Durability is pointless for a test cluster.
    const settings = {
      listen_addresses: confString(HOST),
      port: String(port),
      unix_socket_directories: confString(dir),
      fsync: 'off',
      synchronous_commit: 'off',
      full_page_writes: 'off',
    }
    await appendFile(join(dataDir, 'postgresql.conf'), `\n${Object.entries(settings).map(([key, value]) => `${key} = ${value}`).join('\n')}\n`)

    started = true
    await server('pg_ctl', 'start', '-D', dataDir, '-l', logPath, '-w', '-t', '30', '-s').catch(async (error: Error) => {
      const log = await readFile(logPath, 'utf8').catch(() => '')
      throw new Error(`${error.message}\n${log.split('\n').slice(-15).join('\n')}`)
    })

    // pg_ctl -w only knows the postmaster is up; this proves the TCP listener the clients will use.
    const ready = [join(bin, 'pg_isready'), '-q', '-h', HOST, '-p', String(port), '-U', SUPERUSER]
    for (let attempt = 0; ; attempt++) {
      try {
        await run(ready, dir)
        break
      } catch (error) {
        if (attempt >= 50) throw error
        await sleep(100)
      }
    }

    return {
      host: HOST,
      port,
      user: SUPERUSER,
      dir,
      async createDatabase(name: string) {
        await run([join(bin, 'createdb'), '-h', HOST, '-p', String(port), '-U', SUPERUSER, name], dir)
      },
      async dispose() {
        await stop()
        await rm(dir, {recursive: true, force: true})
      },
    }
  } catch (error) {
    await stop()
    await rm(dir, {recursive: true, force: true})
    throw error
  }
}
