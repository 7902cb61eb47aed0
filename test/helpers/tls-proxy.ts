import {type ChildProcess, execFileSync, spawn} from 'node:child_process'
import {existsSync} from 'node:fs'
import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'
import {connect} from 'node:net'

import {freePort} from './ports.js'

export interface TlsProxy {
  /** https://localhost:PORT */
  url: string
  caFile: string
  clientCertFile: string
  clientKeyFile: string
  /** Each request nginx answered, as `METHOD URI STATUS`, in order (logged when accessLog was asked). */
  requests(): Promise<string[]>
  dispose(): Promise<void>
}

export const NGINX_INSTALL_HINT = 'TLS tests need nginx: install it with `sudo apt-get install -y nginx-light`.'

function openssl(args: string[], cwd: string) {
  execFileSync('openssl', args, {cwd, stdio: 'pipe'})
}

export interface TlsProxyOptions {
  requireClientCert?: boolean
  /** nginx's client_max_body_size, as nginx writes it ("1m", "64k"); default: no limit. */
  maxBodySize?: string
  /** Log each request for requests(). */
  accessLog?: boolean
}

/**
 * A real TLS-terminating nginx in front of a plain-HTTP Orthanc, with a throwaway CA that
 * signs both the server certificate and a client certificate, as many sites deploy Orthanc.
 */
export async function startTlsProxy(upstreamPort: number, options: TlsProxyOptions = {}): Promise<TlsProxy> {
  const nginx = ['/usr/sbin/nginx', '/usr/bin/nginx'].find((path) => existsSync(path))
  if (!nginx) throw new Error(`nginx not found. ${NGINX_INSTALL_HINT}`)
  const dir = await mkdtemp(join(tmpdir(), 'tls-proxy-'))
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=orthanc-replicate test CA'], dir)
  await writeFile(join(dir, 'server.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n')
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost'], dir)
  openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'server.ext'], dir)
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'client.key', '-out', 'client.csr', '-subj', '/CN=replicator'], dir)
  openssl(['x509', '-req', '-in', 'client.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'client.pem', '-days', '2'], dir)

  const port = await freePort()
  const conf = `
worker_processes 1;
daemon off;
user root;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
  log_format requests '$request_method $uri $status';
  access_log ${options.accessLog ? `${dir}/access.log requests` : 'off'};
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  client_max_body_size ${options.maxBodySize ?? '0'};
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${dir}/server.pem;
    ssl_certificate_key ${dir}/server.key;
    ssl_client_certificate ${dir}/ca.pem;
    ssl_verify_client ${options.requireClientCert ? 'on' : 'off'};
    location / {
      proxy_pass http://127.0.0.1:${upstreamPort};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_request_buffering off;
      proxy_buffering off;
    }
  }
}
`
  await writeFile(join(dir, 'nginx.conf'), conf)
  const child: ChildProcess = spawn(nginx, ['-p', dir, '-c', join(dir, 'nginx.conf')], {stdio: 'ignore'})
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const deadline = Date.now() + 15_000
  for (;;) {
    if (await canConnect(port)) break
    if (Date.now() > deadline || child.exitCode !== null) {
      const log = await readFile(join(dir, 'error.log'), 'utf8').catch(() => '')
      throw new Error(`nginx did not start: ${log}`)
    }

    await sleep(50)
  }

  return {
    url: `https://localhost:${port}`,
    caFile: join(dir, 'ca.pem'),
    clientCertFile: join(dir, 'client.pem'),
    clientKeyFile: join(dir, 'client.key'),
    async requests() {
      const log = await readFile(join(dir, 'access.log'), 'utf8').catch(() => '')
      return log.split('\n').filter(Boolean)
    },
    async dispose() {
      child.kill('SIGQUIT')
      await Promise.race([exited, sleep(5000)])
      if (child.exitCode === null) child.kill('SIGKILL')
      await rm(dir, {recursive: true, force: true})
    },
  }
}

async function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}
