import type {Endpoint} from '../model.js'
import type {OrthancClient} from './client.js'

/** The server as summaries name it: its URL without credentials, its name and version (GET /system, asked once per client). */
export async function endpointOf(client: OrthancClient, signal?: AbortSignal): Promise<Endpoint> {
  const system = await client.system(signal)
  return {url: client.display, name: system.Name, version: system.Version}
}
