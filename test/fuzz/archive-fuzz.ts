import {createHash} from 'node:crypto'
import {mkdir, mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {Readable} from 'node:stream'

import {describeFailure} from '../../src/cli/failure.js'
import {importInstances, importOutcome, type ImportSummary} from '../../src/import/import.js'
import type {ImportInput} from '../../src/import/inputs.js'
import {OrthancClient} from '../../src/orthanc/client.js'
import {resolveEndpoint} from '../../src/orthanc/endpoint.js'
import {archiveFile, archiveStream} from '../../src/sources/archive-source.js'
import {verifyArchives, verifyOutcome} from '../../src/verify/verify.js'
import {makeCorpus, volumeFiles} from '../helpers/corpus.js'
import {runCli} from '../helpers/cli.js'
import {type OrthancServer, startOrthanc, uploadFiles} from '../helpers/orthanc.js'
import {ALWAYS_REFUSED, type Baseline, baselineFrom, makeVariant, type Variant, type VariantClass, VARIANT_CLASSES} from './archive-variants.js'

/**
 * The archive fuzz harness: a real export from a real Orthanc, variants of it, and the
 * invariant every variant must keep when imported into a real Orthanc and verified:
 * - no altered or unlisted byte reaches the target (every upload, metadata value and attachment
 *   the tool sends is checked against the original export);
 * - exit 0 only for an archive that yields exactly the export;
 * - import and verify agree; no exit 1; no hang.
 */

const md5 = (data: Buffer | string) => createHash('md5').update(data).digest('hex')

/** What the export holds, instance by instance, from the source itself. */
interface Original {
  md5: string
  userMetadata: Record<string, string>
  /** Attachment MD5 by content type. */
  attachments: Map<string, string>
}

export interface FuzzWorld {
  source: OrthancServer
  target: OrthancServer
  client: OrthancClient
  baseline: Baseline
  original: Map<string, Original>
  work: string
  /** What the tool sent to the target during the current variant that the export does not hold. */
  violations: string[]
  dispose(): Promise<void>
}

export interface VariantResult {
  variant: Variant
  importOutcome: string
  verifyOutcome: string
  transferred: number
  problems: number
  ms: number
  failures: string[]
}

const USER_METADATA = {Reviewed: 1030}
const USER_CONTENT_TYPES = {Report: 1040}

/** Starts a source and a target, exports a small corpus with side data into volumes and into a stream. */
export async function createFuzzWorld(work: string): Promise<FuzzWorld> {
  await mkdir(work, {recursive: true})
  const config = {userMetadata: USER_METADATA, userContentType: USER_CONTENT_TYPES}
  const [source, target] = await Promise.all([startOrthanc({name: 'fuzz-source', ...config}), startOrthanc({name: 'fuzz-target', ...config})])
  const corpus = (await makeCorpus(join(work, 'fixtures'))).filter((record) => record.label !== 'large')
  await uploadFiles(source, corpus.map((record) => record.path))
  for (const [index, record] of corpus.slice(0, 4).entries()) {
    await source.api(`/instances/${record.orthancId}/metadata/Reviewed`, {method: 'PUT', body: `reviewed-${index}`})
    if (index % 2 === 0) await source.api(`/instances/${record.orthancId}/attachments/Report`, {method: 'PUT', body: `report of ${record.orthancId}\n`})
  }

  const original = new Map<string, Original>()
  for (const id of await source.json<string[]>('/instances')) {
    const metadata = await source.json<Record<string, string>>(`/instances/${id}/metadata?expand`)
    const attachments = new Map<string, string>()
    for (const name of await source.json<string[]>(`/instances/${id}/attachments`)) {
      if (name === 'dicom' || name === 'dicom-until-pixel-data') continue
      const info = await source.json<{ContentType: number; UncompressedMD5: string}>(`/instances/${id}/attachments/${name}/info`)
      attachments.set(String(info.ContentType), info.UncompressedMD5)
    }
    original.set(id, {md5: (await (await source.api(`/instances/${id}/attachments/dicom/md5`)).text()).trim(), userMetadata: {Reviewed: metadata.Reviewed ?? ''}, attachments})
  }

  const volumesDir = join(work, 'volumes')
  const exported = await runCli(['export', '--source', source.url, '--output', volumesDir, '--max-volume-size', '300000', '--json'])
  if (exported.code !== 0) throw new Error(`export failed: ${exported.stderr}`)
  const streamed = await runCli(['export', '--source', source.url, '--output', '-', '--max-volume-size', '300000'])
  if (streamed.code !== 0) throw new Error(`export - failed: ${streamed.stderr}`)
  const volumes = await Promise.all((await volumeFiles(volumesDir)).map(async (path) => ({name: path.split('/').at(-1)!, bytes: await readFile(path)})))
  const baseline = await baselineFrom(volumes, streamed.stdoutBytes)

  const client = new OrthancClient(resolveEndpoint({url: target.url, env: {}}), {connections: 6, retry: {retries: 2, minDelayMs: 50, maxDelayMs: 200}})
  const world: FuzzWorld = {
    source, target, client, baseline, original, work, violations: [],
    async dispose() {
      await client.close()
      await Promise.all([source.dispose(), target.dispose()])
    },
  }
  spyOnWrites(world)
  return world
}

/** Every write the tool makes to the target is compared with the original export as it happens. */
function spyOnWrites(world: FuzzWorld): void {
  const {client, original} = world
  const known = new Set([...original.values()].map((entry) => entry.md5))
  const upload = client.uploadInstance.bind(client)
  client.uploadInstance = async (body, signal) => {
    const bytes = typeof body === 'function' ? Buffer.alloc(0) : Buffer.from(body)
    if (!known.has(md5(bytes))) world.violations.push(`uploaded bytes with MD5 ${md5(bytes)}, which the export does not hold`)
    return upload(body, signal)
  }
  // Every level goes through these: the export has side data on instances only.
  const setMetadata = client.setResourceMetadata.bind(client)
  client.setResourceMetadata = async (level, id, name, value, signal) => {
    if (level !== 'instance' || original.get(id)?.userMetadata[name] !== value) world.violations.push(`wrote metadata ${name}=${JSON.stringify(value)} on ${level} ${id}, which the export does not hold`)
    return setMetadata(level, id, name, value, signal)
  }
  const putAttachment = client.putResourceAttachment.bind(client)
  client.putResourceAttachment = async (level, id, name, data, signal) => {
    if (level !== 'instance' || original.get(id)?.attachments.get(name) !== md5(data)) world.violations.push(`wrote attachment ${name} (MD5 ${md5(data)}) on ${level} ${id}, which the export does not hold`)
    return putAttachment(level, id, name, data, signal)
  }
  client.addResourceLabel = async (level, id, label) => {
    world.violations.push(`added label ${label} on ${level} ${id}, and the export has none`)
  }
}

/** Imports and verifies one variant, and checks the invariant; returns what broke it, if anything. */
export async function runVariant(world: FuzzWorld, variant: Variant, timeoutMs = 30_000): Promise<VariantResult> {
  const started = Date.now()
  world.violations = []
  const failures: string[] = []
  for (const id of await world.target.json<string[]>('/instances')) await world.target.api(`/instances/${id}`, {method: 'DELETE'})

  const dir = await mkdtemp(join(world.work, 'variant-'))
  const inputsOf = async (): Promise<ImportInput[]> => {
    if ('stream' in variant.input) return [{kind: 'archive-stream', label: 'stdin', stream: Readable.from([variant.input.stream])}]
    const paths = []
    for (const file of variant.input.files) {
      const path = join(dir, file.name)
      await writeFile(path, file.bytes)
      paths.push({kind: 'archive-file' as const, path})
    }
    return paths
  }

  let summary: ImportSummary | undefined
  let imported = 'error'
  let verified = 'error'
  const deadline = new AbortController()
  const timer = setTimeout(() => deadline.abort(new Error(`no result within ${timeoutMs} ms`)), timeoutMs)
  try {
    summary = await importInstances({client: world.client, inputs: await inputsOf(), concurrency: 4, dryRun: false, spoolDir: dir, signal: deadline.signal})
    imported = importOutcome(summary)
  } catch (error) {
    const failure = describeFailure(error)
    failures.push(`import would exit ${failure.exitCode}: ${failure.message}`)
  }

  try {
    const inputs = (await inputsOf()).map((input) => (input.kind === 'archive-stream' ? archiveStream(input.label, input.stream) : archiveFile(input.path)))
    verified = verifyOutcome(await verifyArchives(inputs, {concurrency: 4, spoolDir: dir, signal: deadline.signal}))
  } catch (error) {
    const failure = describeFailure(error)
    failures.push(`verify would exit ${failure.exitCode}: ${failure.message}`)
  } finally {
    clearTimeout(timer)
    await rm(dir, {recursive: true, force: true})
  }

  failures.push(...world.violations)
  if (summary && imported === 'ok') {
    // Exit 0 only for an archive that is exactly the export.
    if (summary.transferred + summary.skipped !== world.original.size) failures.push(`exit 0 with ${summary.transferred + summary.skipped} of ${world.original.size} instances`)
    const onTarget = await world.target.json<string[]>('/instances')
    if (onTarget.length !== world.original.size) failures.push(`exit 0 but the target holds ${onTarget.length} of ${world.original.size} instances`)
    failures.push(...await sideDataDifferences(world))
  }
  if (ALWAYS_REFUSED.has(variant.kind) && imported === 'ok' && !variant.name.startsWith('unaltered')) failures.push('exit 0 for an archive of a class that is always bad input')
  if (imported !== 'error' && verified !== 'error' && (imported === 'ok') !== (verified === 'ok')) failures.push(`import says ${imported}, verify says ${verified}`)

  return {variant, importOutcome: imported, verifyOutcome: verified, transferred: summary?.transferred ?? 0, problems: summary?.problemCount ?? 0, ms: Date.now() - started, failures}
}

/** The variants of one run: `perClass` of each class, seeds from `firstSeed`. */
export async function* variantsOf(baseline: Baseline, perClass: number, firstSeed = 1, classes: VariantClass[] = VARIANT_CLASSES): AsyncGenerator<Variant> {
  for (let seed = firstSeed; seed < firstSeed + perClass; seed++) {
    for (const kind of classes) yield makeVariant(baseline, kind, seed)
  }
}

/** After an exit 0: every instance's user metadata and attachments on the target are the export's. */
async function sideDataDifferences(world: FuzzWorld): Promise<string[]> {
  const differences: string[] = []
  for (const [id, expected] of world.original) {
    const metadata = await world.target.json<Record<string, string>>(`/instances/${id}/metadata?expand`)
    if ((metadata.Reviewed ?? '') !== expected.userMetadata.Reviewed) differences.push(`exit 0 but ${id} has metadata Reviewed=${JSON.stringify(metadata.Reviewed)}`)
    for (const [contentType, md5] of expected.attachments) {
      const response = await world.target.api(`/instances/${id}/attachments/${contentType}/md5`)
      const actual = response.ok ? (await response.text()).trim() : `HTTP ${response.status}`
      if (actual !== md5) differences.push(`exit 0 but ${id} attachment ${contentType} is ${actual}`)
    }
  }
  return differences
}
