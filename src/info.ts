import type {OrthancClient} from './orthanc/client.js'

export interface ServerReport {
  server: string
  name: string
  version: string
  apiVersion: number
  databaseVersion: number | null
  /** The index back-end: the built-in SQLite, or the plugin that replaces it. */
  databaseBackend: string
  /** Where files are stored: the built-in filesystem storage, or the plugin that replaces it. */
  storageBackend: string
  counts: {patients: number; studies: number; series: number; instances: number}
  disk: {storedBytes: number; uncompressedBytes: number}
  features: {
    labels: boolean
    attachmentInfo: boolean
    /** Detected on a stored instance; null when the server holds none to look at. */
    storageCompression: boolean | null
    overwriteInstances: boolean | null
  }
}

/** Everything `info` shows about a server, read from its REST API. */
export async function describeServer(client: OrthancClient, signal?: AbortSignal): Promise<ServerReport> {
  const system = await client.system(signal)
  const [statistics, features] = await Promise.all([client.statistics(signal), client.features(signal)])
  const storedBytes = Number(statistics.TotalDiskSize)
  const uncompressedBytes = Number(statistics.TotalUncompressedSize)
  const compression = await client.storageCompression(signal)
  return {
    server: client.display,
    name: system.Name,
    version: system.Version,
    apiVersion: system.ApiVersion,
    databaseVersion: system.DatabaseVersion ?? null,
    databaseBackend: system.DatabaseBackendPlugin ?? 'SQLite (built-in)',
    storageBackend: system.StorageAreaPlugin ?? 'filesystem (built-in)',
    counts: {
      patients: statistics.CountPatients,
      studies: statistics.CountStudies,
      series: statistics.CountSeries,
      instances: statistics.CountInstances,
    },
    disk: {storedBytes, uncompressedBytes},
    features: {
      labels: features.labels,
      attachmentInfo: features.attachmentInfo,
      storageCompression: compression ?? null,
      overwriteInstances: system.OverwriteInstances ?? null,
    },
  }
}
