import {describe, expect, it} from 'vitest'

import {bandwidthAt, BandwidthSyntaxError, parseBandwidthLimit, TokenBucket} from '../../src/transfer/bandwidth.js'

const KiB = 1024
const MiB = 1024 * 1024

describe('parseBandwidthLimit (rclone syntax)', () => {
  it('reads one rate for both directions, KiB/s without a suffix, binary suffixes, off', () => {
    expect(parseBandwidthLimit('10M').slots).toEqual([{minutes: 0, upload: 10 * MiB, download: 10 * MiB}])
    expect(parseBandwidthLimit('512').slots).toEqual([{minutes: 0, upload: 512 * KiB, download: 512 * KiB}])
    expect(parseBandwidthLimit('1.5G').slots[0]!.upload).toBe(1.5 * 1024 * MiB)
    expect(parseBandwidthLimit('8192B').slots[0]!.upload).toBe(8192)
    expect(parseBandwidthLimit('10MiB').slots[0]!.upload).toBe(10 * MiB)
    expect(parseBandwidthLimit('off').slots).toEqual([{minutes: 0, upload: undefined, download: undefined}])
    expect(parseBandwidthLimit('0').slots[0]!.upload).toBeUndefined()
  })

  it('reads UP:DOWN', () => {
    expect(parseBandwidthLimit('10M:off').slots).toEqual([{minutes: 0, upload: 10 * MiB, download: undefined}])
    expect(parseBandwidthLimit('256K:1M').slots).toEqual([{minutes: 0, upload: 256 * KiB, download: MiB}])
  })

  it('reads a timetable, with days or without, separated by spaces or semicolons', () => {
    expect(parseBandwidthLimit('08:00,20M 19:00,off').slots).toEqual([
      {day: undefined, minutes: 480, upload: 20 * MiB, download: 20 * MiB},
      {day: undefined, minutes: 1140, upload: undefined, download: undefined},
    ])
    expect(parseBandwidthLimit('Mon-00:00,512;Fri-23:59,10M:off;Sat-10:00,1M').slots.map((slot) => [slot.day, slot.minutes])).toEqual([[1, 0], [5, 1439], [6, 600]])
  })

  it('refuses what it cannot read, naming it', () => {
    for (const text of ['', 'fast', '10X', '1M:2M:3M', ':1M', '25:00,1M', '08:61,1M', 'Mun-08:00,1M', '08:00,1M 19:00', '8M 19:00,off']) {
      expect(() => parseBandwidthLimit(text), text).toThrow(BandwidthSyntaxError)
    }

    expect(() => parseBandwidthLimit('08:00,fast')).toThrow('"fast" is not a rate')
  })

  it('reads the documented units only: B, K, M, G, T, or KiB, MiB, GiB, TiB', () => {
    const good: Array<[text: string, bytes: number]> = [
      ['4', 4 * KiB], ['4.5', 4.5 * KiB], ['4096B', 4096], ['4K', 4 * KiB], ['10MB', 10 * MiB], ['512KB', 512 * KiB], ['1GB', 1024 * MiB], ['512k', 512 * KiB], ['512KiB', 512 * KiB], ['10M', 10 * MiB], ['10m', 10 * MiB],
      ['10MiB', 10 * MiB], ['10MIB', 10 * MiB], ['1.5G', 1.5 * 1024 * MiB], ['2GiB', 2 * 1024 * MiB], ['1T', 1024 * 1024 * MiB], ['1TiB', 1024 * 1024 * MiB],
    ]
    for (const [text, bytes] of good) expect(parseBandwidthLimit(text).slots, text).toEqual([{minutes: 0, upload: bytes, download: bytes}])
    for (const text of ['off', 'OFF', '0', '0.0', '0K', '0B']) expect(parseBandwidthLimit(text).slots, text).toEqual([{minutes: 0, upload: undefined, download: undefined}])

    const bits: Array<[text: string, message: string]> = [
      ['10Mb', '"10Mb" has a lowercase b, which means bits: rates are in bytes, so write 10M (or 10MiB) for 10 MiB/s'],
      ['10mib', 'write 10M (or 10MiB) for 10 MiB/s'],
      ['1.5Gb', 'write 1.5G (or 1.5GiB) for 1.5 GiB/s'],
      ['100kb', 'write 100K (or 100KiB) for 100 KiB/s'],
      ['2048b', 'write 2048B for 2048 bytes/s'],
      ['08:00,10Mb', '"10Mb" has a lowercase b'],
    ]
    for (const [text, message] of bits) expect(() => parseBandwidthLimit(text), text).toThrow(message)

    for (const text of ['10ib', '10bb', '10Mi', '10MiBB', '10iB', '10BM', '10P', '10PiB', '1e3', '.5M', '10M:10Kbps']) {
      expect(() => parseBandwidthLimit(text), text).toThrow(BandwidthSyntaxError)
      expect(() => parseBandwidthLimit(text), text).toThrow('is not a rate: write it like 512K, 10M, 1.5G or off (units B, K, M, G, T, or KiB, MiB, GiB, TiB, all binary)')
    }
  })

  it('refuses a rate below 4 KiB/s, which would stall a transfer (a proxy gives up on a body that pauses a minute)', () => {
    for (const text of ['0.0001', '0.5', '1', '4095B', '3.9K', '1M:0.5K', '08:00,1M 19:00,100B']) {
      expect(() => parseBandwidthLimit(text), text).toThrow(BandwidthSyntaxError)
      expect(() => parseBandwidthLimit(text), text).toThrow('is below the least rate, 4K (4 KiB/s), and would stall the transfer: give 4K or more, or off for no limit')
    }
  })

  it('refuses a time of day without a rate rather than reading it as UP:DOWN in KiB/s', () => {
    for (const text of ['08:00', '12:30', '0:00', '23:59', ' 08:00 ', '08:00,12:30', '08:00,1M 19:00,19:30']) {
      expect(() => parseBandwidthLimit(text), text).toThrow(BandwidthSyntaxError)
      expect(() => parseBandwidthLimit(text), text).toThrow('looks like a time of day without a rate: a timetable entry is HH:MM,RATE')
    }

    // UP:DOWN with units, or 0 (no limit) on one side, still reads as rates.
    expect(parseBandwidthLimit('12K:30K').slots).toEqual([{minutes: 0, upload: 12 * KiB, download: 30 * KiB}])
    expect(parseBandwidthLimit('10M:0').slots).toEqual([{minutes: 0, upload: 10 * MiB, download: undefined}])
    expect(parseBandwidthLimit('0:1M').slots).toEqual([{minutes: 0, upload: undefined, download: MiB}])
    expect(parseBandwidthLimit('08:00,12K:30K').slots).toEqual([{day: undefined, minutes: 480, upload: 12 * KiB, download: 30 * KiB}])
  })

  it('refuses two entries that set the rate at the same minute of the same day, naming both', () => {
    const clashes: Array<[text: string, message: string]> = [
      ['Mon-08:00,1M 08:00,off', '"Mon-08:00,1M" and "08:00,off" both set the rate at 08:00 on Monday'],
      ['08:00,off Mon-08:00,1M', '"08:00,off" and "Mon-08:00,1M" both set the rate at 08:00 on Monday'],
      ['08:00,20M 08:00,off', '"08:00,20M" and "08:00,off" both set the rate at 08:00 every day'],
      ['8:00,20M;08:00,20M', '"8:00,20M" and "08:00,20M" both set the rate at 08:00 every day'],
      ['Sat-10:00,1M 19:00,off sat-10:00,2M', '"Sat-10:00,1M" and "sat-10:00,2M" both set the rate at 10:00 on Saturday'],
    ]
    for (const [text, message] of clashes) {
      expect(() => parseBandwidthLimit(text), text).toThrow(BandwidthSyntaxError)
      expect(() => parseBandwidthLimit(text), text).toThrow(message)
    }

    // Other days or other minutes do not clash.
    for (const text of ['Mon-08:00,1M Tue-08:00,off', 'Mon-08:00,1M 08:01,off', '08:00,1M 19:00,off', 'Sun-00:00,1M Sat-00:00,off 12:00,2M']) {
      expect(() => parseBandwidthLimit(text), text).not.toThrow()
    }
  })
})

describe('bandwidthAt', () => {
  // 2026-12-02 is a Wednesday.
  const at = (day: number, hours: number, minutes = 0) => new Date(2026, 11, 2 + ((day - 3 + 7) % 7), hours, minutes)

  it('takes the latest entry of the day, and the last one of the day before at night', () => {
    const schedule = parseBandwidthLimit('08:00,20M 19:00,off')
    expect(bandwidthAt(schedule, at(3, 8, 0)).upload).toBe(20 * MiB)
    expect(bandwidthAt(schedule, at(3, 18, 59)).upload).toBe(20 * MiB)
    expect(bandwidthAt(schedule, at(3, 19, 0)).upload).toBeUndefined()
    expect(bandwidthAt(schedule, at(3, 7, 59)).upload).toBeUndefined()
  })

  it('wraps round the week with days, and lets daily entries hold on every day', () => {
    const weekly = parseBandwidthLimit('Mon-08:00,1M Fri-18:00,off')
    expect(bandwidthAt(weekly, at(3, 12)).upload).toBe(MiB)
    expect(bandwidthAt(weekly, at(6, 12)).upload).toBeUndefined()
    // Sunday night is still Friday evening's entry; Monday 07:59 too.
    expect(bandwidthAt(weekly, at(0, 23)).upload).toBeUndefined()
    expect(bandwidthAt(weekly, at(1, 7, 59)).upload).toBeUndefined()
    const mixed = parseBandwidthLimit('Sat-00:00,off 08:00,2M')
    expect(bandwidthAt(mixed, at(6, 7)).upload).toBeUndefined()
    expect(bandwidthAt(mixed, at(6, 9)).upload).toBe(2 * MiB)
    expect(bandwidthAt(mixed, at(2, 7)).upload).toBe(2 * MiB)
  })

  it('keeps the two directions of UP:DOWN apart', () => {
    expect(bandwidthAt(parseBandwidthLimit('07:00,1M:4M'), at(3, 9))).toEqual({upload: MiB, download: 4 * MiB})
  })
})

describe('TokenBucket', () => {
  it('holds the rate over many reservations, whatever their sizes, with a burst of a tenth of a second at most', () => {
    let now = 0
    let rate: number | undefined = MiB
    const bucket = new TokenBucket(() => rate, () => now)
    // Callers reserve, wait as told, send; the clock moves on to the end of each wait.
    let sent = 0
    for (let index = 0; index < 1000; index++) {
      const bytes = [64 * KiB, 1500, 16 * KiB, 130_000][index % 4]!
      now += bucket.reserve(bytes)
      sent += bytes
    }

    const seconds = now / 1000
    expect(sent / seconds).toBeLessThanOrEqual(MiB * 1.001)
    expect(sent / seconds).toBeGreaterThan(MiB * 0.99)
    rate = undefined
    expect(bucket.reserve(100 * MiB)).toBe(0)
  })

  it('queues concurrent reservations behind each other', () => {
    const now = 0
    const bucket = new TokenBucket(() => 100 * KiB, () => now)
    const waits = Array.from({length: 4}, () => bucket.reserve(100 * KiB))
    expect(waits).toEqual([1000, 2000, 3000, 4000])
  })

  it('refills with time, up to a tenth of a second at the rate (at least 64 KiB)', () => {
    let now = 0
    const bucket = new TokenBucket(() => MiB, () => now)
    now = 60_000
    // Idle for a minute: only the burst is saved, not a minute's worth.
    expect(bucket.reserve(0.1 * MiB)).toBe(0)
    expect(bucket.reserve(0.1 * MiB)).toBeCloseTo(100, 5)
  })

  it('follows a rate that changes (a timetable), from the moment it changes', () => {
    let now = 0
    const limit: {rate?: number} = {}
    const bucket = new TokenBucket(() => limit.rate, () => now)
    expect(bucket.reserve(10 * MiB)).toBe(0)
    limit.rate = MiB
    expect(bucket.reserve(MiB)).toBeCloseTo(1000, 5)
    now = 1000
    expect(bucket.reserve(512 * KiB)).toBeCloseTo(500, 5)
  })
})
