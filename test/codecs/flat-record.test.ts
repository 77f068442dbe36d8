import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeBar, decodeTickRecord, encodeBar, TickRecordEncoder } from '../../codecs/flat-record.js';
import { allocTickBatch } from '../../codecs/tick-batch.js';

const row = fc.record({
  seq: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
  sym: fc.nat(2),
  msc: fc.integer({ min: -(2 ** 45), max: 2 ** 45 }),
  price: fc.double({ noNaN: true }),
  volume: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  flags: fc.nat(2 ** 32 - 1),
});

describe('FlatBuffers tick records', () => {
  it('round-trip any batch, whole or sliced, one tick per record included', () => {
    const enc = new TickRecordEncoder();
    fc.assert(
      fc.property(fc.array(row, { maxLength: 40 }), fc.nat(), (rows, cut) => {
        const b = allocTickBatch('src-1', ['EURUSD', 'GBPUSD', 'ÄÖÜ.x'], rows.length);
        rows.forEach((r, i) => {
          b.seq[i] = r.seq;
          b.symbolIndex[i] = r.sym;
          b.serverTimeMsc[i] = r.msc;
          b.utcMsc[i] = r.msc - 7_200_000;
          b.bid[i] = r.price;
          b.ask[i] = -r.price;
          b.last[i] = r.price / 3;
          b.volume[i] = r.volume;
          b.volumeReal[i] = r.volume / 7;
          b.flags[i] = r.flags;
        });
        b.length = rows.length;
        const from = rows.length ? cut % rows.length : 0;
        for (const [lo, hi] of [
          [0, rows.length],
          [from, rows.length],
          [from, Math.min(from + 1, rows.length)],
        ] as const) {
          const d = decodeTickRecord(enc.encode(b, lo, hi));
          expect(d.source).toBe('src-1');
          expect(d.length).toBe(hi - lo);
          for (let i = 0; i < d.length; i++) {
            expect(d.symbols[d.symbolIndex[i] as number]).toBe(b.symbols[b.symbolIndex[lo + i] as number]);
            for (const k of [
              'seq',
              'serverTimeMsc',
              'utcMsc',
              'bid',
              'ask',
              'last',
              'volume',
              'volumeReal',
              'flags',
            ] as const) {
              expect(d[k][i]).toBe(b[k][lo + i]);
            }
          }
        }
      }),
    );
  });
  it('decodes from an unaligned Kafka buffer and refuses bytes that are no TickRecord', () => {
    const b = allocTickBatch('s', ['X'], 1);
    b.length = 1;
    b.seq[0] = 9;
    const bytes = new TickRecordEncoder().encode(b);
    const unaligned = new Uint8Array(bytes.length + 3).subarray(3);
    unaligned.set(bytes);
    expect(decodeTickRecord(unaligned).seq[0]).toBe(9);
    expect(() => decodeTickRecord(new Uint8Array(16))).toThrow(/not a tickstream TickRecord/);
  });
  it('bars round-trip, NaN last prices included', () => {
    const bar = {
      source: 's',
      symbol: 'BTCUSD',
      startMs: 1_676_894_400_000,
      open: 1,
      high: 2,
      low: 0.5,
      close: 1.5,
      tickCount: 7,
      spreadMin: 0.1,
      spreadMax: 0.3,
      spreadSum: 1.2,
      lastOpen: Number.NaN,
      lastHigh: Number.NaN,
      lastLow: Number.NaN,
      lastClose: Number.NaN,
      volume: 0,
      lastSeq: 77,
    };
    expect(decodeBar(encodeBar(bar))).toEqual(bar);
  });
});
