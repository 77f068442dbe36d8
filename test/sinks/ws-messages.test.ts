import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { allocTickBatch, DIGITS_UNKNOWN } from '../../codecs/tick-batch.js';
import { tickObjects } from '../../sinks/ws/messages.js';

/** The text every tick object had before the byte writer: numbers as String(x). */
const reference = (t: Record<string, number>) =>
  `{"seq":${t.seq},"time":${t.time},"tsrv":${t.tsrv},"bid":${t.bid},"ask":${t.ask},"last":${t.last},"vol":${t.vol},"volr":${t.volr},"flags":${t.flags}}`;

const price = fc.oneof(
  fc.integer({ min: 0, max: 1e9 }).map((p) => p / 1e5),
  fc.integer({ min: 0, max: 1e7 }).map((p) => p / 1e3),
  fc.double(),
  fc.constant(0),
);
const tick = fc.record({
  seq: fc.maxSafeNat(),
  time: fc.integer({ min: 0, max: 2 ** 45 }),
  tsrv: fc.integer({ min: 0, max: 2 ** 45 }),
  bid: price,
  ask: price,
  last: price,
  vol: fc.maxSafeNat(),
  volr: fc.double(),
  flags: fc.nat(2 ** 32 - 1),
  sym: fc.nat(2),
});

describe('websocket tick objects', () => {
  it('write every tick as the String(x) text, with or without digits', () => {
    fc.assert(
      fc.property(fc.array(tick, { maxLength: 20 }), (ticks) => {
        const b = allocTickBatch('s', ['EURUSD', 'USDJPY', 'X'], ticks.length, [5, 3, DIGITS_UNKNOWN]);
        ticks.forEach((t, i) => {
          b.seq[i] = t.seq;
          b.utcMsc[i] = t.time;
          b.serverTimeMsc[i] = t.tsrv;
          b.bid[i] = t.bid;
          b.ask[i] = t.ask;
          b.last[i] = t.last;
          b.volume[i] = t.vol;
          b.volumeReal[i] = t.volr;
          b.flags[i] = t.flags;
          b.symbolIndex[i] = t.sym;
        });
        b.length = ticks.length;
        const idx = ticks.map((_, i) => i).filter((i) => i % 3 !== 1);
        expect(tickObjects(b, idx)).toBe(
          idx.map((i) => reference(ticks[i] as Record<string, number>)).join(','),
        );
      }),
      { numRuns: 3_000 },
    );
  });
});
