/**
 * BagIt 1.0 (RFC 8493) tag files: rendering for the writer, parsing for the reader. Payload
 * paths in this format never need RFC 8493's percent-encoding (they are IDs and numbers), and
 * manifests use two spaces between checksum and path so that `sha256sum -c` reads them too.
 */

export const BAGIT_TXT = 'BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n'

export function renderChecksumManifest(entries: Iterable<[path: string, sha256: string]>): string {
  let text = ''
  for (const [path, sha256] of entries) text += `${sha256}  ${path}\n`
  return text
}

export function parseChecksumManifest(text: string, fileName: string): Map<string, string> {
  const entries = new Map<string, string>()
  for (const [lineNumber, line] of text.split('\n').entries()) {
    if (line.trim() === '') continue
    const match = /^([0-9a-f]{64})[ \t]+\*?(.+)$/.exec(line)
    if (!match) throw new BagFormatError(`${fileName} line ${lineNumber + 1} is not "<sha256> <path>"`)
    const path = decodeBagPath(match[2]!)
    if (entries.has(path)) throw new BagFormatError(`${fileName} line ${lineNumber + 1} lists ${path} a second time`)
    entries.set(path, match[1]!)
  }

  return entries
}

export interface BagInfo {
  payloadBytes: number
  payloadFiles: number
  group: string
  volume: number
  volumeCount: number
  baggingDate: string
  software: string
  description: string
}

export function renderBagInfo(info: BagInfo): string {
  const fields: Array<[string, string]> = [
    ['Bag-Software-Agent', info.software],
    ['Bagging-Date', info.baggingDate],
    ['Payload-Oxum', `${info.payloadBytes}.${info.payloadFiles}`],
    ['Bag-Group-Identifier', info.group],
    ['Bag-Count', `${info.volume} of ${info.volumeCount}`],
    ['External-Description', info.description],
  ]
  return fields.map(([name, value]) => `${name}: ${value.replace(/\s*\n\s*/g, ' ')}\n`).join('')
}

export function parseBagInfo(text: string): Map<string, string> {
  const fields = new Map<string, string>()
  let last: string | undefined
  for (const line of text.split('\n')) {
    if (/^[ \t]/.test(line) && last) {
      fields.set(last, `${fields.get(last)} ${line.trim()}`)
      continue
    }

    const colon = line.indexOf(':')
    if (colon <= 0) continue
    last = line.slice(0, colon).trim()
    fields.set(last, line.slice(colon + 1).trim())
  }

  return fields
}

/** RFC 8493 §2.1.3: CR, LF and % in paths are percent-encoded. */
function decodeBagPath(path: string): string {
  return path.replace(/%0D/gi, '\r').replace(/%0A/gi, '\n').replace(/%25/g, '%')
}

export class BagFormatError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'BagFormatError'
  }
}
