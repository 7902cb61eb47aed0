// Maps the first value of Specific Character Set (0008,0005) to a WHATWG encoding label.
// ISO 2022 code extensions (escape sequences switching character sets mid-value) are not
// interpreted: such values are decoded with the base character set only.
const ENCODINGS: Record<string, string> = {
  'ISO_IR 192': 'utf-8',
  'ISO_IR 101': 'iso-8859-2',
  'ISO_IR 109': 'iso-8859-3',
  'ISO_IR 110': 'iso-8859-4',
  'ISO_IR 144': 'iso-8859-5',
  'ISO_IR 127': 'iso-8859-6',
  'ISO_IR 126': 'iso-8859-7',
  'ISO_IR 138': 'iso-8859-8',
  'ISO_IR 148': 'iso-8859-9',
  'ISO_IR 203': 'iso-8859-15',
  'ISO_IR 166': 'windows-874',
  'ISO_IR 13': 'shift_jis',
  'ISO 2022 IR 13': 'shift_jis',
  'GB18030': 'gb18030',
  'GBK': 'gbk',
}

// Anything else, including a missing (0008,0005) (which means ASCII) and ISO_IR 100,
// is read as Latin-1, Orthanc's default "DefaultEncoding".
export function decodeText(bytes: Buffer, specificCharacterSet: string): string {
  const first = specificCharacterSet.split('\\')[0]?.trim() ?? ''
  const label = ENCODINGS[first]
  if (label !== undefined) {
    try {
      return new TextDecoder(label).decode(bytes)
    } catch {
      // Node builds without full ICU lack the legacy encodings; Latin-1 keeps ASCII intact.
    }
  }
  return bytes.toString('latin1')
}
