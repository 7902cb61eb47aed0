/**
 * The quickstart's main job: two throwaway Orthanc servers on loopback, sample studies on the
 * first, then the tool's own commands carry them to the second through archive volumes, as across
 * an air gap. Everything lives in a temporary folder that is removed at the end.
 */
import {spawnSync} from 'node:child_process'
import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'

import {generateAwkwardSet, generateStudySet, SAMPLE_OPTIONS} from '../fixtures/generate.js'
import {instanceMd5s, startOrthanc, uploadFiles} from '../test/helpers/orthanc.js'

const cli = fileURLToPath(new URL('../bin/run.js', import.meta.url))

function step(title: string, args: string[]): void {
  process.stdout.write(`\n=== ${title}\n$ orthanc-replicate ${args.join(' ')}\n`)
  const result = spawnSync(process.execPath, [cli, ...args], {stdio: 'inherit'})
  if (result.status !== 0) throw new Error(`orthanc-replicate ${args[0]} exited with ${result.status}`)
}

const work = await mkdtemp(join(tmpdir(), 'orthanc-replicate-demo-'))
const source = await startOrthanc({name: 'demo-source', users: {demo: 'demo-password'}})
const target = await startOrthanc({name: 'demo-target', users: {demo: 'demo-password'}})
try {
  const files = [
    ...(await generateStudySet(join(work, 'dicom', 'studies'), SAMPLE_OPTIONS)),
    ...(await generateAwkwardSet(join(work, 'dicom', 'awkward'), {largeBytes: 600_000})),
  ]
  await uploadFiles(source, files.map((file) => file.path))
  process.stdout.write(`Source ${source.url} holds ${files.length} sample instances; target ${target.url} is empty.\n`)
  process.env.ORTHANC_USERNAME = 'demo'
  process.env.ORTHANC_PASSWORD = 'demo-password'

  step('Check the source', ['info', '--server', source.url])
  const usb = join(work, 'usb-drive')
  step('Export to archive volumes (a USB drive)', ['export', '--source', source.url, '--output', usb, '--max-volume-size', '1MB'])
  step('Verify the volumes offline, on the far side', ['verify', usb])
  step('Import the volumes on the far side', ['import', '--target', target.url, '--receipt', join(work, 'receipt.jsonl'), usb])
  step('Import again: nothing to do', ['import', '--target', target.url, '--no-receipt', usb])
  step('Confirm every archived instance is on the target', ['verify', usb, '--target', target.url])

  const later = await generateStudySet(join(work, 'dicom', 'later'), {...SAMPLE_OPTIONS, patients: 1, seed: 'demo-later'})
  await uploadFiles(source, later.map((file) => file.path))
  process.stdout.write(`\n${later.length} more instances arrive on the source.\n`)
  step('Plan a direct sync', ['sync', '--source', source.url, '--target', target.url, '--dry-run'])
  step('Sync: only the new instances move', ['sync', '--source', source.url, '--target', target.url])
  step('Compare the two servers', ['diff', '--source', source.url, '--target', target.url])
  step('Check the target', ['info', '--server', target.url])

  const [before, after] = await Promise.all([instanceMd5s(source), instanceMd5s(target)])
  const identical = before.size === after.size && [...before].every(([id, md5]) => after.get(id) === md5)
  process.stdout.write(`\n${identical ? 'OK' : 'MISMATCH'}: ${after.size} of ${before.size} instances on the target, same IDs and MD5s.\n`)
  if (!identical) process.exitCode = 1
} catch (error) {
  process.stderr.write(`\nDemo failed: ${(error as Error).message}\n`)
  process.exitCode = 1
} finally {
  await Promise.all([source.dispose(), target.dispose()])
  await rm(work, {recursive: true, force: true})
}
