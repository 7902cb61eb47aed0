import {appendFileSync} from 'node:fs'

export async function load(url, context, nextLoad) {
  if (process.env.RECORD_MODULES_TO) appendFileSync(process.env.RECORD_MODULES_TO, `${url}\n`)
  return nextLoad(url, context)
}
