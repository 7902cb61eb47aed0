import type {Endpoint} from './model.js'
import type {OrthancClient} from './orthanc/client.js'
import {declaredUserMetadata} from './orthanc/metadata.js'

export interface ServerReport {
  /** The server as every summary names it (the same shape as a sync's source and target). */
  server: Endpoint
  name: string
  version: string
  apiVersion: number
  databaseVersion: number | null
  /** The index back-end: the built-in SQLite, or the plugin that replaces it. */
  databaseBackend: string
  /** Where files are stored: the built-in filesystem storage, or the plugin that replaces it. */
  storageBackend: string
  counts: {patients: number; studies: number; series: number; instances: number}
  /** Null where the server does not say. */
  disk: {storedBytes: number | null; uncompressedBytes: number | null}
  features: {
    labels: boolean
    attachmentInfo: boolean
    /** Detected on a stored instance; null when the server holds none to look at. */
    storageCompression: boolean | null
    overwriteInstances: boolean | null
  }
  /** What the server would take from a sync or an import, and what it would not: what is not carried to it. */
  accepts: {
    /** Labels: Orthanc 1.12.0 and later. */
    labels: boolean
    /** User metadata under these names (its UserMetadata); null when the server does not list them (before 1.12), so unknown. */
    userMetadata: string[] | null
    /** User attachments are written by content type number (1024 and above): every version takes them. */
    attachments: boolean
    /** Orthanc's own metadata (reception date, remote AET...): no REST call writes it, on any version. */
    systemMetadata: boolean
    /** Whether it takes uploads at all (Orthanc 1.12's ReadOnly); null when the server does not say. */
    uploads: boolean | null
  }
}

/** Everything `info` shows about a server, read from its REST API. */
export async function describeServer(client: OrthancClient, signal?: AbortSignal): Promise<ServerReport> {
  const system = await client.system(signal)
  const [statistics, features] = await Promise.all([client.statistics(signal), client.features(signal)])
  const bytes = (total: unknown) => (total === undefined ? null : Number(total))
  const storedBytes = bytes(statistics.TotalDiskSize)
  const uncompressedBytes = bytes(statistics.TotalUncompressedSize)
  const compression = await client.storageCompression(signal)
  const declared = declaredUserMetadata(system)
  return {
    server: {url: client.display, name: system.Name, version: system.Version},
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
    accepts: {
      labels: features.labels,
      userMetadata: declared ?? null,
      attachments: true,
      systemMetadata: false,
      uploads: system.ReadOnly === undefined ? null : !system.ReadOnly,
    },
  }
}
