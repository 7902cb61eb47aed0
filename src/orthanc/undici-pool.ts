import {createRequire} from 'node:module'

import type {Pool as UndiciPool} from 'undici'

const requireHere = createRequire(import.meta.url)

/**
 * undici's Pool without the rest of undici. `import 'undici'` also loads fetch, WebSocket,
 * caches, cookies and mocks, which the tool never uses: 75-95 ms of every command's start on
 * the machine measured, against 25-35 ms for the pool and its request API. sync's first request
 * then goes out 40-50 ms sooner. undici publishes no sub-paths, so this names its files; if
 * a release moves them, the whole package is loaded as before (`slim` says which happened).
 */
export function loadPool(): {Pool: typeof UndiciPool; slim: boolean} {
  try {
    const Pool = requireHere('undici/lib/dispatcher/pool.js') as typeof UndiciPool
    const Dispatcher = requireHere('undici/lib/dispatcher/dispatcher.js') as {prototype: object}
    // As undici's own index does: request(), stream() and the rest are methods of every dispatcher.
    Object.assign(Dispatcher.prototype, requireHere('undici/lib/api/index.js'))
    return {Pool, slim: true}
  } catch {
    return {Pool: (requireHere('undici') as typeof import('undici')).Pool, slim: false}
  }
}
