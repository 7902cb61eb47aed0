/**
 * Every attachment UUID of an index, to tell which storage files it does not know. A storage
 * folder holds one file per attachment, several million on a large server: as strings in a Set
 * they would cost some 60 bytes each. Here each costs 14 bytes: the UUIDs are bucketed by their
 * first two bytes (as Orthanc files them, `aa/bb/uuid`), and each bucket holds the other 14.
 * Built in two passes over the index: one to size the buckets, one to fill them.
 */
export class UuidSet {
  private constructor(
    private readonly starts: Uint32Array,
    private readonly records: Buffer,
    /** UUIDs that are not 32 hex digits (none in an index Orthanc wrote), kept as they are. */
    private readonly others: Set<string>,
  ) {}

  static async build(uuids: () => AsyncIterable<string>): Promise<UuidSet> {
    const counts = new Uint32Array(BUCKETS)
    for await (const uuid of uuids()) {
      const bytes = uuidBytes(uuid)
      if (bytes !== undefined) counts[bytes.readUInt16BE(0)]!++
    }

    const starts = new Uint32Array(BUCKETS + 1)
    for (let bucket = 0; bucket < BUCKETS; bucket++) starts[bucket + 1] = starts[bucket]! + counts[bucket]!
    const records = Buffer.alloc(starts[BUCKETS]! * RECORD)
    const filled = new Uint32Array(BUCKETS)
    const others = new Set<string>()
    for await (const uuid of uuids()) {
      const bytes = uuidBytes(uuid)
      if (bytes === undefined) {
        others.add(uuid.toLowerCase())
        continue
      }
      const bucket = bytes.readUInt16BE(0)
      // The second pass must see what the first saw; anything beyond is kept aside rather than lost.
      if (filled[bucket]! >= counts[bucket]!) {
        others.add(uuid.toLowerCase())
        continue
      }
      bytes.copy(records, (starts[bucket]! + filled[bucket]!++) * RECORD, 2)
    }
    return new UuidSet(starts, records, others)
  }

  has(uuid: string): boolean {
    const bytes = uuidBytes(uuid)
    if (bytes === undefined) return this.others.has(uuid.toLowerCase())
    const bucket = bytes.readUInt16BE(0)
    for (let index = this.starts[bucket]!; index < this.starts[bucket + 1]!; index++) {
      if (this.records.compare(bytes, 2, 16, index * RECORD, (index + 1) * RECORD) === 0) return true
    }
    return this.others.has(uuid.toLowerCase())
  }
}

const BUCKETS = 0x10000
const RECORD = 14
const HEX_UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i

function uuidBytes(uuid: string): Buffer | undefined {
  return HEX_UUID.test(uuid) ? Buffer.from(uuid.replaceAll('-', ''), 'hex') : undefined
}
