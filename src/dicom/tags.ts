// Tags are numbers (group * 0x10000 + element) rather than bit-shifted values,
// because shifting group 0xFFFE would produce a negative 32-bit integer.
export function tagOf(group: number, element: number): number {
  return group * 0x10000 + element
}

export function formatTag(tag: number): string {
  const hex = tag.toString(16).toUpperCase().padStart(8, '0')
  return `(${hex.slice(0, 4)},${hex.slice(4)})`
}

export const FILE_META_GROUP = 0x0002
export const FILE_META_GROUP_LENGTH = tagOf(0x0002, 0x0000)
export const TRANSFER_SYNTAX_UID = tagOf(0x0002, 0x0010)

export const SPECIFIC_CHARACTER_SET = tagOf(0x0008, 0x0005)
export const SOP_INSTANCE_UID = tagOf(0x0008, 0x0018)
export const PATIENT_ID = tagOf(0x0010, 0x0020)
export const STUDY_INSTANCE_UID = tagOf(0x0020, 0x000d)
export const SERIES_INSTANCE_UID = tagOf(0x0020, 0x000e)
export const ROWS = tagOf(0x0028, 0x0010)
export const FLOAT_PIXEL_DATA = tagOf(0x7fe0, 0x0008)
export const DOUBLE_FLOAT_PIXEL_DATA = tagOf(0x7fe0, 0x0009)
export const PIXEL_DATA = tagOf(0x7fe0, 0x0010)

export const ITEM = tagOf(0xfffe, 0xe000)
export const ITEM_DELIMITATION = tagOf(0xfffe, 0xe00d)
export const SEQUENCE_DELIMITATION = tagOf(0xfffe, 0xe0dd)
