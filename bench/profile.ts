import {mkdir} from 'node:fs/promises'
import {join} from 'node:path'

import {table} from './markdown.js'
import type {MethodContext} from './methods.js'
import {type CountingProxy, startCountingProxy} from './request-profile.js'
import {expectInstances, startServer} from './servers.js'
import {runTool} from './tool.js'

interface Profiled {
  command: string
  /** performance.now() when the command was started. */
  started: number
  sides: Array<{server: string; proxy: CountingProxy}>
}

/**
 * Runs sync, import and export once more, through counting proxies, to show how many requests
 * and connections each instance costs. These runs are not timed.
 */
export async function profileRequests(context: MethodContext): Promise<string> {
  const {cleanup, corpus, source} = context
  const profiles: Profiled[] = []
  const proxy = async (url: string) => {
    const started = await startCountingProxy(url)
    cleanup.defer(`proxy ${started.url}`, () => started.close())
    return started
  }

  {
    const target = await startServer(cleanup, 'bench-target')
    const [sourceProxy, targetProxy] = [await proxy(source.url), await proxy(target.url)]
    const started = performance.now()
    await runTool(['sync', '--source', sourceProxy.url, '--target', targetProxy.url], corpus.count, 'sync (profiled)')
    await expectInstances(target, corpus.count, 'sync (profiled)')
    profiles.push({command: 'sync', started, sides: [{server: 'source', proxy: sourceProxy}, {server: 'target', proxy: targetProxy}]})
    await cleanup.release(target.name)
    cleanup.retire(target.server.dir)
  }

  {
    const target = await startServer(cleanup, 'bench-target')
    const targetProxy = await proxy(target.url)
    const started = performance.now()
    await runTool(['import', '--target', targetProxy.url, '--no-receipt', corpus.dir], corpus.count, 'import (profiled)')
    await expectInstances(target, corpus.count, 'import (profiled)')
    profiles.push({command: 'import (folder)', started, sides: [{server: 'target', proxy: targetProxy}]})
    await cleanup.release(target.name)
    cleanup.retire(target.server.dir)
  }

  {
    const dir = await cleanup.tempDir('export-profile')
    const sourceProxy = await proxy(source.url)
    await mkdir(join(dir, 'volumes'))
    const started = performance.now()
    await runTool(['export', '--source', sourceProxy.url, '--output', join(dir, 'volumes')], corpus.count, 'export (profiled)')
    profiles.push({command: 'export', started, sides: [{server: 'source', proxy: sourceProxy}]})
    cleanup.retire(dir)
  }

  const perInstance = (count: number) => (count / corpus.count).toFixed(2)
  const rows: string[][] = []
  for (const {command, started, sides} of profiles) {
    const at = (time: number | undefined) => (time === undefined ? '' : ((time - started) / 1000).toFixed(2))
    let total = 0
    for (const {server, proxy: counted} of sides) {
      const routes = [...counted.requests.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
      for (const [route, count] of routes) {
        total += count
        const time = counted.times.get(route)
        rows.push([command, server, `\`${route}\``, String(count), perInstance(count), `${at(time?.first)} – ${at(time?.last)}`])
      }

      rows.push([command, server, 'TCP connections opened', String(counted.connections), perInstance(counted.connections), ''])
    }

    rows.push([command, 'all', '**requests in all**', String(total), `**${perInstance(total)}**`, ''])
  }

  const naive = [['naive copier (by construction)', 'source + target', '`GET /instances/{id}/file`, `POST /instances`', String(2 * corpus.count + 1), '2.00 (+ 2 connections)', '']]
  return table(['command', 'server', 'request', 'count', 'per instance', 'first – last (s after start)'], [...rows, ...naive])
}
