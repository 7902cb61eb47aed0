export const IMPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2'
export const EXPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2.1'
export const DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2.1.99'
export const EXPLICIT_VR_BIG_ENDIAN = '1.2.840.10008.1.2.2'
export const RLE_LOSSLESS = '1.2.840.10008.1.2.5'
const JPIP_REFERENCED_DEFLATE = '1.2.840.10008.1.2.4.95'
const JPIP_HTJ2K_REFERENCED_DEFLATE = '1.2.840.10008.1.2.4.205'

export interface DataSetEncoding {
  explicitVr: boolean
  littleEndian: boolean
}

export interface TransferSyntaxLayout extends DataSetEncoding {
  // The whole data set after the file meta group is a raw deflate stream.
  deflated: boolean
}

export const IMPLICIT_LITTLE_ENDIAN_ENCODING: DataSetEncoding = {explicitVr: false, littleEndian: true}
export const EXPLICIT_LITTLE_ENDIAN_ENCODING: DataSetEncoding = {explicitVr: true, littleEndian: true}

// Every transfer syntax not listed here (JPEG, JPEG-LS, JPEG 2000, RLE, MPEG, HTJ2K...)
// only changes how pixel data is encapsulated; the data set itself is explicit VR
// little endian, so that is the right default for syntaxes we have never heard of.
export function transferSyntaxLayout(uid: string): TransferSyntaxLayout {
  switch (uid) {
    case IMPLICIT_VR_LITTLE_ENDIAN:
      return {explicitVr: false, littleEndian: true, deflated: false}
    case EXPLICIT_VR_BIG_ENDIAN:
      return {explicitVr: true, littleEndian: false, deflated: false}
    case DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
    case JPIP_REFERENCED_DEFLATE:
    case JPIP_HTJ2K_REFERENCED_DEFLATE:
      return {explicitVr: true, littleEndian: true, deflated: true}
    default:
      return {explicitVr: true, littleEndian: true, deflated: false}
  }
}
