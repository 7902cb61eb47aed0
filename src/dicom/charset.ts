/**
 * Text decoding as Orthanc does it, so that identifiers read here hash to the IDs Orthanc gives.
 * The rules follow Orthanc's FromDcmtkBridge::DetectEncoding, GetDicomEncoding (Enumerations.cpp)
 * and Toolbox::ConvertToUtf8 (OrthancFramework, 1.10 to 1.12), and were checked against the
 * Debian 1.10.1 server: test/integration/recovery-ids.test.ts.
 */

type Decoder = (bytes: Buffer) => string

export interface OrthancCharset {
  decode: Decoder
  /** Several values in Specific Character Set: Orthanc then strips ISO 2022 escape sequences after decoding. */
  codeExtensions: boolean
}

/** Orthanc's DefaultEncoding when a data set has no Specific Character Set (its configuration's default, Latin1). */
const DEFAULT_CHARSET: OrthancCharset = {decode: latin1, codeExtensions: false}

/**
 * The character set Orthanc decodes a data set's text with, from the raw value of (0008,0005)
 * (undefined when absent). The first non-empty value decides; one Orthanc does not support means
 * ASCII with every other byte dropped.
 */
export function orthancCharset(specificCharacterSet: Buffer | undefined): OrthancCharset {
  if (specificCharacterSet === undefined) return DEFAULT_CHARSET
  const tokens = byteStringValue(specificCharacterSet).toString('latin1').split('\\')
  const codeExtensions = tokens.length > 1
  for (const token of tokens) {
    const name = token.trim()
    if (name === '') continue
    return {decode: decoderFor(name), codeExtensions}
  }

  return {...DEFAULT_CHARSET, codeExtensions}
}

/** Decodes a value's bytes into the text Orthanc stores and hashes. */
export function decodeOrthancText(bytes: Buffer, charset: OrthancCharset): string {
  const text = charset.decode(bytes)
  return charset.codeExtensions ? removeIso2022EscapeSequences(text) : text
}

/**
 * What DCMTK hands Orthanc for a string value (DcmByteString): trailing spaces removed from the
 * whole value, then the value read as a C string, up to its first NUL byte. So "ABC \0" stays
 * "ABC " while "ABC\0 " becomes "ABC" (both checked on 1.10.1).
 */
export function byteStringValue(bytes: Buffer): Buffer {
  let end = bytes.length
  while (end > 0 && bytes[end - 1] === 0x20) end--
  const nul = bytes.indexOf(0, 0)
  return bytes.subarray(0, nul >= 0 && nul < end ? nul : end)
}

function decoderFor(name: string): Decoder {
  // GetDicomEncoding is case-insensitive. From 1.12.1 it also forgives "ISO_IR_100"; 1.10.1 reads
  // that as an unknown set (checked), and this reader follows 1.10.1: for such a file on a newer
  // target the ID is mispredicted, which costs one upload whose answer then decides.
  return SUPPORTED_CHARSETS.get(name.toUpperCase()) ?? asciiOnly
}

// Toolbox::ConvertToAscii keeps a byte when it is not NUL, at most 127, and a line feed or not a control character.
function asciiOnly(bytes: Buffer): string {
  let text = ''
  for (const byte of bytes) {
    if (byte !== 0 && byte <= 127 && (byte === 0x0a || (byte >= 0x20 && byte !== 0x7f))) text += String.fromCharCode(byte)
  }
  return text
}

// boost::locale's "skip" policy drops invalid sequences where TextDecoder puts U+FFFD.
function utf8SkippingInvalid(bytes: Buffer): string {
  return new TextDecoder('utf-8').decode(bytes).replaceAll('\uFFFD', '')
}

function latin1(bytes: Buffer): string {
  return bytes.toString('latin1')
}

// iconv maps 0x80-0x9F of the ISO 8859 sets to the C1 controls; WHATWG decoders give some of them other characters.
function singleByte(label: string): Decoder {
  const decoder = textDecoder(label)
  return (bytes) => {
    let text = ''
    for (const byte of bytes) text += byte >= 0x80 && byte <= 0x9f ? String.fromCharCode(byte) : decoder(Buffer.of(byte))
    return text
  }
}

// Orthanc reads ISO_IR 13 with iconv's SHIFT-JIS, where the single bytes 0x5C and 0x7E are
// the yen sign and the overline (JIS X 0201 Roman), not a backslash and a tilde.
function shiftJis(bytes: Buffer): string {
  const decode = textDecoder('shift_jis')
  let text = ''
  for (let index = 0; index < bytes.length; index++) {
    const byte = bytes[index]!
    const lead = (byte >= 0x81 && byte <= 0x9f) || (byte >= 0xe0 && byte <= 0xfc)
    if (lead && index + 1 < bytes.length) {
      text += decode(bytes.subarray(index, index + 2))
      index++
    } else if (byte === 0x5c) text += '\u00A5'
    else if (byte === 0x7e) text += '\u203E'
    else text += decode(bytes.subarray(index, index + 1))
  }
  return text
}

function textDecoder(label: string): Decoder {
  try {
    const decoder = new TextDecoder(label)
    return (bytes) => decoder.decode(bytes)
  } catch {
    // Node builds without full ICU lack the legacy encodings; Latin-1 keeps ASCII intact.
    return latin1
  }
}

/** The names GetDicomEncoding knows (Orthanc 1.10 to 1.12), in upper case; any other name means ASCII. */
const SUPPORTED_CHARSETS = new Map<string, Decoder>([
  ...both('6', asciiOnly),
  ['ISO_IR 192', utf8SkippingInvalid],
  ...both('100', latin1),
  ...both('101', singleByte('iso-8859-2')),
  ...both('109', singleByte('iso-8859-3')),
  ...both('110', singleByte('iso-8859-4')),
  ...both('148', singleByte('iso-8859-9')),
  ...both('144', singleByte('iso-8859-5')),
  ...both('127', singleByte('iso-8859-6')),
  ...both('126', singleByte('iso-8859-7')),
  ...both('138', singleByte('iso-8859-8')),
  ...both('166', singleByte('windows-874')),
  ...both('13', shiftJis),
  ['GB18030', textDecoder('gb18030')],
  ['GBK', textDecoder('gb18030')],
  // Orthanc hands these three to iconv's ISO 2022 converters, which this reader only approximates:
  // for values in them the target's answer to the upload is the truth.
  ['ISO 2022 IR 149', textDecoder('euc-kr')],
  ['ISO 2022 IR 87', textDecoder('iso-2022-jp')],
  ['ISO 2022 IR 58', textDecoder('gbk')],
])

function both(number: string, decoder: Decoder): Array<[string, Decoder]> {
  return [[`ISO_IR ${number}`, decoder], [`ISO 2022 IR ${number}`, decoder]]
}

// Toolbox::RemoveIso2022EscapeSequences, for the escape sequences that can survive decoding:
// ESC, intermediate bytes (0x20-0x2F), one final byte (0x30-0x7E).
function removeIso2022EscapeSequences(text: string): string {
  let kept = ''
  for (let index = 0; index < text.length; index++) {
    if (text.charCodeAt(index) !== ESCAPE) {
      kept += text[index]
      continue
    }
    let end = index + 1
    while (end < text.length && text.charCodeAt(end) >= 0x20 && text.charCodeAt(end) <= 0x2f) end++
    if (end < text.length && text.charCodeAt(end) >= 0x30 && text.charCodeAt(end) <= 0x7e) index = end
    else kept += text[index]
  }
  return kept
}

const ESCAPE = 0x1b
