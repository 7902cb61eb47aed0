/**
 * A simulated Orthanc that answers the listing and planning routes for a server of any size,
 * computing every answer on the fly: `node --import tsx simulated-orthanc.ts <instances> [<present-fraction>]`.
 * Prints its port on stdout. Instance k belongs to study floor(k / 100), series by halves.
 */
import {createHash} from 'node:crypto'
import {createServer, type ServerResponse} from 'node:http'

const PER_STUDY = 100
const instances = Number(process.argv[2] ?? '1000')
const studies = Math.ceil(instances / PER_STUDY)

const orthancId = (kind: string, index: number) => {
  const hex = createHash('sha1').update(`${kind}:${index}`).digest('hex')
  return `${hex.slice(0, 8)}-${hex.slice(8, 16)}-${hex.slice(16, 24)}-${hex.slice(24, 32)}-${hex.slice(32, 40)}`
}

const studyIds = Array.from({length: studies}, (_, index) => orthancId('study', index))
const studyIndex = new Map(studyIds.map((id, index) => [id, index]))

function studyJson(index: number) {
  return {
    ID: studyIds[index], Type: 'Study', ParentPatient: orthancId('patient', index),
    MainDicomTags: {StudyInstanceUID: `2.25.${index + 1}`, StudyDate: '20240101', AccessionNumber: `A${index}`},
    PatientMainDicomTags: {PatientID: `P${index}`, PatientName: `SIM^${index}`},
    Series: [orthancId('series', index * 2), orthancId('series', index * 2 + 1)],
  }
}

function instancesOf(study: number) {
  const first = study * PER_STUDY
  const last = Math.min(instances, first + PER_STUDY)
  const result = []
  for (let index = first; index < last; index++) {
    result.push({
      ID: orthancId('instance', index), Type: 'Instance', FileSize: 130_000, IndexInSeries: index - first + 1,
      ParentSeries: orthancId('series', study * 2 + ((index - first) % 2)), MainDicomTags: {SOPInstanceUID: `2.25.${index + 1}.1`},
    })
  }

  return result
}

/** Writes a big JSON array piece by piece, respecting backpressure, as Orthanc streams its own. */
function streamArray(response: ServerResponse, count: number, item: (index: number) => string) {
  response.writeHead(200, {'content-type': 'application/json'})
  let index = 0
  const more = () => {
    let ok = true
    while (ok && index < count) {
      const parts: string[] = []
      for (let batch = 0; batch < 1000 && index < count; batch++, index++) parts.push(item(index))
      ok = response.write((index <= 1000 ? '[' : ',') + parts.join(','))
    }

    if (index >= count) response.end(count === 0 ? '[]' : ']')
    else response.once('drain', more)
  }

  more()
}

const json = (response: ServerResponse, value: unknown, status = 200) => {
  response.writeHead(status, {'content-type': 'application/json'})
  response.end(JSON.stringify(value))
}

const server = createServer((request, response) => {
  const url = new URL(request.url ?? '/', 'http://simulated')
  const parts = url.pathname.split('/').filter(Boolean)
  if (url.pathname === '/system') return json(response, {Name: 'simulated', Version: '1.10.1', ApiVersion: 16, DatabaseBackendPlugin: null, StorageAreaPlugin: null})
  if (url.pathname === '/statistics') return json(response, {CountInstances: instances, CountStudies: studies, CountSeries: studies * 2, CountPatients: studies, TotalDiskSize: '0', TotalUncompressedSize: '0'})
  if (url.pathname === '/instances') return streamArray(response, instances, (index) => `"${orthancId('instance', index)}"`)
  if (url.pathname === '/studies') {
    const expand = url.searchParams.has('expand')
    return streamArray(response, studies, (index) => (expand ? JSON.stringify(studyJson(index)) : `"${studyIds[index]}"`))
  }

  if (url.pathname === '/changes') {
    if (url.searchParams.has('last')) return json(response, {Changes: [], Done: true, Last: instances})
    const since = Number(url.searchParams.get('since') ?? 0)
    const limit = Number(url.searchParams.get('limit') ?? 100)
    const changes = []
    for (let seq = since + 1; seq <= Math.min(instances, since + limit); seq++) {
      changes.push({ChangeType: 'NewInstance', ID: orthancId('instance', seq - 1), ResourceType: 'Instance', Seq: seq, Date: '20240101T000000', Path: ''})
    }

    return json(response, {Changes: changes, Done: since + limit >= instances, Last: Math.min(instances, since + limit)})
  }

  if (parts[0] === 'studies' && parts[1]) {
    const index = studyIndex.get(parts[1])
    if (index === undefined) return json(response, {Message: 'Unknown resource'}, 404)
    if (parts.length === 2) return json(response, studyJson(index))
    if (parts[2] === 'instances') return json(response, instancesOf(index))
    if (parts[2] === 'series') {
      return json(response, [0, 1].map((half) => ({ID: orthancId('series', index * 2 + half), Type: 'Series', ParentStudy: studyIds[index], MainDicomTags: {SeriesInstanceUID: `2.25.${index + 1}.${half}`, Modality: 'CT'}})))
    }
  }

  json(response, {Message: 'Unknown resource'}, 404)
})

server.keepAliveTimeout = 5000
server.listen(0, '127.0.0.1', () => {
  const address = server.address()
  process.stdout.write(`${typeof address === 'object' && address ? address.port : 0}\n`)
})
