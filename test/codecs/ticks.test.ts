import { existsSync, readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ErrorCode, TickstreamError } from '../../codecs/errors.js';
import { encodeFrame, FrameDecoder, MessageType } from '../../codecs/frame.js';
import { decodeTicksHeader, encodeTicks, TICKS_HEADER_BYTES } from '../../codecs/messages.js';
import { createServerClock } from '../../codecs/server-clock.js';
import { allocTickBatch, type TickBatch } from '../../codecs/tick-batch.js';
import { decodeTicksInto, encodeTickStructs, MAX_TIME_MSC } from '../../codecs/ticks.js';
import { dataDir } from '../helpers/procs.js';

const utc = createServerClock('UTC');
const tickArb = fc.record({
  msc: fc.integer({ min: 0, max: MAX_TIME_MSC - 1 }),
  bid: fc.double({ min: 0, max: 1e9, noNaN: true }),
  ask: fc.double({ min: 0, max: 1e9, noNaN: true }),
  last: fc.double({ min: 0, max: 1e9, noNaN: true }),
  volume: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  volumeReal: fc.double({ min: 0, max: 1e12, noNaN: true }),
  flags: fc.nat(2 ** 32 - 1),
});
type Tick = {
  msc: number;
  bid: number;
  ask: number;
  last: number;
  volume: number;
  volumeReal: number;
  flags: number;
};
const good: Tick = { msc: 1000, bid: 1, ask: 1, last: 0, volume: 0, volumeReal: 0, flags: 6 };

function batchFrom(ticks: Tick[]): TickBatch {
  const b = allocTickBatch('s', ['X'], ticks.length);
  ticks.forEach((t, i) => {
    b.serverTimeMsc[i] = t.msc;
    b.bid[i] = t.bid;
    b.ask[i] = t.ask;
    b.last[i] = t.last;
    b.volume[i] = t.volume;
    b.volumeReal[i] = t.volumeReal;
    b.flags[i] = t.flags;
  });
  b.length = ticks.length;
  return b;
}

const decodeOne = (t: Partial<Tick>, structSize = 60) => {
  const out = allocTickBatch('s', ['X'], 1);
  return decodeTicksInto(
    out,
    encodeTickStructs(batchFrom([{ ...good, ...t }]), 0, 1, structSize),
    structSize,
    1,
    0,
    1,
    utc,
  );
};

describe('MqlTick structs', () => {
  it('round-trip through 60-byte structs bit-exact, unknown flag bits kept', () => {
    fc.assert(
      fc.property(
        fc.array(tickArb, { maxLength: 50 }),
        fc.integer({ min: 1, max: 2 ** 50 }),
        (ticks, first) => {
          const structs = encodeTickStructs(batchFrom(ticks), 0, ticks.length);
          // The `time` field (seconds) is written alongside time_msc, as MT5 does.
          for (let i = 0; i < ticks.length; i++)
            expect(Buffer.from(structs.buffer, structs.byteOffset).readBigInt64LE(i * 60)).toBe(
              BigInt(Math.floor((ticks[i] as Tick).msc / 1000)),
            );
          const out = allocTickBatch('s', ['X'], ticks.length + 1);
          out.length = 1; // appends after what is there
          expect(decodeTicksInto(out, structs, 60, ticks.length, 0, first, utc)).toBeNull();
          expect(out.length).toBe(ticks.length + 1);
          ticks.forEach((t, k) => {
            const i = k + 1;
            expect([
              out.seq[i],
              out.symbolIndex[i],
              out.serverTimeMsc[i],
              out.utcMsc[i],
              out.bid[i],
              out.ask[i],
              out.last[i],
              out.volume[i],
              out.volumeReal[i],
              out.flags[i],
            ]).toEqual([first + k, 0, t.msc, t.msc, t.bid, t.ask, t.last, t.volume, t.volumeReal, t.flags]);
          });
        },
      ),
    );
  });

  it('writes into a caller buffer at an offset (TICKS payload built in place)', () => {
    const src = batchFrom([good, { ...good, bid: 2 }]);
    const out = new Uint8Array(TICKS_HEADER_BYTES + 120);
    const view = encodeTickStructs(src, 0, 2, 60, out, TICKS_HEADER_BYTES);
    expect(view.byteOffset).toBe(TICKS_HEADER_BYTES);
    expect(Buffer.from(view)).toEqual(Buffer.from(encodeTickStructs(src, 0, 2)));
  });

  it('accepts the 52-byte struct of older builds (volume_real = volume)', () => {
    const src = batchFrom([{ ...good, volume: 5, volumeReal: 99, flags: 1030 }]);
    const structs = encodeTickStructs(src, 0, 1, 52);
    expect(structs.length).toBe(52);
    const out = allocTickBatch('s', ['X'], 1);
    expect(decodeTicksInto(out, structs, 52, 1, 0, 1, utc)).toBeNull();
    expect([out.volume[0], out.volumeReal[0], out.flags[0]]).toEqual([5, 5, 1030]);
  });

  it.each([
    ['NaN bid', { bid: Number.NaN }],
    ['infinite ask', { ask: Number.POSITIVE_INFINITY }],
    ['-infinite last', { last: Number.NEGATIVE_INFINITY }],
    ['NaN volume_real', { volumeReal: Number.NaN }],
    ['negative volume_real', { volumeReal: -1 }],
    ['negative time_msc', { msc: -1 }],
    ['time_msc past 2^53', { msc: 2 ** 53 }],
    ['time_msc from the year 3000', { msc: Date.UTC(3000, 0, 1) }],
    ['volume past 2^53', { volume: 2 ** 53 }],
    // Once accepted: the old check summed the prices, 1e308 + (−1e308) + 0 is finite, and the
    // bar's spread ask − bid overflowed to −Infinity.
    ['bid 1e308 with ask −1e308', { bid: 1e308, ask: -1e308 }],
    [
      'bid = ask = 1e308 (refused as out of range, not as a sum that is not finite)',
      { bid: 1e308, ask: 1e308 },
    ],
    ['a price of 1e15', { last: 1e15 }],
    ['volume_real 1e308', { volumeReal: 1e308 }],
  ])('refuses %s with ERR_TICK_VALUE', (_, bad) => {
    expect(decodeOne(bad)?.code).toBe(ErrorCode.TICK_VALUE);
  });

  it('allows zero prices (exchange symbols may lack a side), -0 and negative prices (spreads, futures)', () => {
    expect(decodeOne({ bid: 0, ask: 0, last: 0 })).toBeNull();
    expect(decodeOne({ bid: -0 })).toBeNull();
    expect(decodeOne({ bid: -37.63, ask: -37.5, last: -37.6 })).toBeNull();
    expect(decodeOne({ msc: Date.UTC(3000, 0, 1) - 1 })).toBeNull();
    expect(decodeOne({ bid: 1e15 - 1, ask: -(1e15 - 1) })).toBeNull();
  });

  it('names the price bound in the refusal (a sum of 1e308s is not what was wrong)', () => {
    expect(decodeOne({ bid: 1e308, ask: 1e308 })?.message).toMatch(/below 1000000000000000 in magnitude/);
  });

  it('keeps the ticks before a bad one and names its seq', () => {
    const src = batchFrom([good, good, { ...good, ask: Number.NaN }, good]);
    const out = allocTickBatch('s', ['X'], 4);
    const err = decodeTicksInto(out, encodeTickStructs(src, 0, 4), 60, 4, 0, 100, utc);
    expect(err?.code).toBe(ErrorCode.TICK_VALUE);
    expect(err?.message).toMatch(/seq 102/);
    expect(out.length).toBe(2);
  });

  it('refuses a struct size that is neither 60 nor 52, a count that disagrees with the bytes, a full batch', () => {
    const out = allocTickBatch('s', ['X'], 4);
    expect(decodeTicksInto(out, new Uint8Array(56), 56, 1, 0, 1, utc)?.code).toBe(ErrorCode.STRUCT_SIZE);
    expect(decodeTicksInto(out, new Uint8Array(120), 60, 3, 0, 1, utc)?.code).toBe(ErrorCode.TICK_COUNT);
    expect(decodeTicksInto(out, new Uint8Array(120), 52, 2, 0, 1, utc)?.code).toBe(ErrorCode.TICK_COUNT);
    expect(decodeTicksInto(out, new Uint8Array(300), 60, 5, 0, 1, utc)?.code).toBe(ErrorCode.LIMIT);
    expect(out.length).toBe(0);
  });

  it('DST switching with a real IANA zone: ticks either side of a switch get the right UTC', () => {
    const athens = createServerClock('Europe/Athens');
    const at = (iso: string) => Date.parse(`${iso}Z`);
    // Server wall times around both 2024 EU switches, and the UTC each must become.
    const cases = [
      ['2024-03-31T02:59:59.999', '2024-03-31T00:59:59.999'], // last tick at UTC+2
      ['2024-03-31T04:00:00.000', '2024-03-31T01:00:00.000'], // first at UTC+3
      ['2024-10-27T03:59:59.999', '2024-10-27T00:59:59.999'], // last at UTC+3 (first pass)
      ['2024-10-27T04:00:00.000', '2024-10-27T02:00:00.000'], // UTC+2 again
    ] as const;
    const src = batchFrom(cases.map(([server]) => ({ ...good, msc: at(server) })));
    const out = allocTickBatch('s', ['X'], cases.length);
    expect(
      decodeTicksInto(out, encodeTickStructs(src, 0, cases.length), 60, cases.length, 0, 1, athens),
    ).toBeNull();
    expect([...out.utcMsc]).toEqual(cases.map(([, u]) => at(u)));
  });
});

const dukascopy = `${dataDir}dukascopy_BTCUSD_ticks_20230220T12_14_utc.csv`;

describe.skipIf(!existsSync(dukascopy))(
  'real ticks through the wire codecs (shared/data Dukascopy BTCUSD)',
  () => {
    it('UTC → Athens server time → 1000-tick TICKS frames → 1400-byte chunks → decoded: exact', () => {
      const rows = readFileSync(dukascopy, 'utf8').trim().split('\n').slice(1);
      const athens = createServerClock('Europe/Athens');
      const src = allocTickBatch('dukascopy', ['BTCUSD'], rows.length);
      rows.forEach((line, i) => {
        const [ts, ask, bid, askVol] = line.split(',').map(Number) as [number, number, number, number];
        src.serverTimeMsc[i] = athens.toServer(ts);
        src.utcMsc[i] = ts;
        src.bid[i] = bid;
        src.ask[i] = ask;
        src.volumeReal[i] = askVol;
        src.flags[i] = 6;
      });
      src.length = rows.length;
      const frames: Buffer[] = [];
      for (let from = 0; from < src.length; from += 1000) {
        const to = Math.min(src.length, from + 1000);
        const structs = encodeTickStructs(src, from, to);
        frames.push(
          encodeFrame(
            MessageType.TICKS,
            encodeTicks({ symbolId: 1, firstSeq: from + 1, count: to - from }, structs),
          ),
        );
      }
      const stream = Buffer.concat(frames);
      const out = allocTickBatch('dukascopy', ['BTCUSD'], src.length);
      const d = new FrameDecoder();
      const table = new Map([[1, 'BTCUSD']]);
      for (let o = 0; o < stream.length; o += 1400) {
        d.push(stream.subarray(o, o + 1400));
        for (let f = d.next(); f !== null; f = d.next()) {
          if (f instanceof TickstreamError) throw f;
          const h = decodeTicksHeader(f.payload, 60, table);
          if (h instanceof TickstreamError) throw h;
          const err = decodeTicksInto(
            out,
            f.payload.subarray(TICKS_HEADER_BYTES),
            60,
            h.count,
            0,
            h.firstSeq,
            athens,
          );
          expect(err).toBeNull();
        }
      }
      expect(d.end()).toBeNull();
      expect(out.length).toBe(rows.length);
      expect(out.length).toBeGreaterThan(14_000);
      for (const col of ['utcMsc', 'serverTimeMsc', 'bid', 'ask', 'volumeReal', 'flags'] as const)
        expect(out[col].subarray(0, out.length)).toEqual(src[col].subarray(0, src.length));
      expect(out.seq[out.length - 1]).toBe(rows.length);
      // February: Athens is UTC+2.
      expect((out.serverTimeMsc[0] as number) - (out.utcMsc[0] as number)).toBe(2 * 3_600_000);
    });
  },
);
