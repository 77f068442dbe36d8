import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Bar } from '../../codecs/bar.js';
import { allocTickBatch, TickFlag } from '../../codecs/tick-batch.js';
import { BarAggregator } from '../../pipeline/bars.js';

interface T {
  symbol: string;
  utc: number;
  bid: number;
  ask: number;
  last?: number;
  vol?: number;
  flags?: number;
}

function batchOf(source: string, ticks: T[], firstSeq = 1) {
  const symbols = [...new Set(ticks.map((t) => t.symbol))];
  const b = allocTickBatch(source, symbols, ticks.length);
  ticks.forEach((t, i) => {
    b.seq[i] = firstSeq + i;
    b.symbolIndex[i] = symbols.indexOf(t.symbol);
    b.utcMsc[i] = t.utc;
    b.serverTimeMsc[i] = t.utc;
    b.bid[i] = t.bid;
    b.ask[i] = t.ask;
    b.last[i] = t.last ?? 0;
    b.volumeReal[i] = t.vol ?? 0;
    b.flags[i] = t.flags ?? TickFlag.BID | TickFlag.ASK;
  });
  b.length = ticks.length;
  return b;
}

const M = 60_000;

describe('BarAggregator', () => {
  it('forgetting a source hands back its open bars (oldest first) and drops its state', () => {
    const agg = new BarAggregator({ closeGraceMs: 5000 });
    agg.add(
      batchOf('s', [
        { symbol: 'B', utc: 2 * M + 1, bid: 1, ask: 1.1 },
        { symbol: 'A', utc: M + 1, bid: 2, ask: 2.1 },
      ]),
    );
    expect(agg.forget('s').map((b) => [b.symbol, b.startMs])).toEqual([
      ['A', M],
      ['B', 2 * M],
    ]);
    expect(agg.forget('s')).toEqual([]);
    // Nothing of the forgotten state is left: an earlier minute is not late any more.
    expect(agg.add(batchOf('s', [{ symbol: 'A', utc: 1, bid: 2, ask: 2.1 }]))).toEqual([]);
    expect(agg.lateTicks).toBe(0);
  });

  it('closes a bar on the next tick of a later minute, with bid OHLC and spread stats', () => {
    const agg = new BarAggregator({ closeGraceMs: 5000 });
    const closed = agg.add(
      batchOf('s', [
        { symbol: 'EURUSD', utc: 0 * M + 1, bid: 1.1, ask: 1.2 },
        { symbol: 'EURUSD', utc: 0 * M + 2, bid: 1.3, ask: 1.35 },
        { symbol: 'EURUSD', utc: 0 * M + 3, bid: 1.0, ask: 1.3 },
        { symbol: 'EURUSD', utc: 1 * M, bid: 1.2, ask: 1.25 },
      ]),
    );
    expect(closed).toHaveLength(1);
    const bar = closed[0] as Bar;
    expect(bar).toMatchObject({
      startMs: 0,
      open: 1.1,
      high: 1.3,
      low: 1.0,
      close: 1.0,
      tickCount: 3,
      lastSeq: 3,
    });
    expect(bar.spreadMin).toBeCloseTo(0.05);
    expect(bar.spreadMax).toBeCloseTo(0.3);
    expect(bar.spreadSum / bar.tickCount).toBeCloseTo((0.1 + 0.05 + 0.3) / 3);
    expect(Number.isNaN(bar.lastOpen)).toBe(true);
  });

  it('keeps last-price OHLC and volume from trade ticks only', () => {
    const agg = new BarAggregator({ closeGraceMs: 0 });
    const trade = TickFlag.LAST | TickFlag.VOLUME | TickFlag.BUY;
    const [bar] = agg.add(
      batchOf('s', [
        { symbol: 'BTC', utc: 10, bid: 100, ask: 101 },
        { symbol: 'BTC', utc: 20, bid: 100, ask: 101, last: 100.5, vol: 0.25, flags: trade },
        { symbol: 'BTC', utc: 30, bid: 100, ask: 101, last: 99.5, vol: 1, flags: trade | 1024 },
        { symbol: 'BTC', utc: 2 * M, bid: 100, ask: 101 },
      ]),
    );
    expect(bar).toMatchObject({
      lastOpen: 100.5,
      lastHigh: 100.5,
      lastLow: 99.5,
      lastClose: 99.5,
      volume: 1.25,
    });
  });

  it('closes a quiet symbol once the source event time passes its end plus the grace, and counts late ticks', () => {
    const agg = new BarAggregator({ closeGraceMs: 5000 });
    expect(agg.add(batchOf('s', [{ symbol: 'A', utc: 100, bid: 1, ask: 2 }]))).toEqual([]);
    expect(agg.add(batchOf('s', [{ symbol: 'B', utc: M + 4000, bid: 1, ask: 2 }]))).toEqual([]);
    const closed = agg.add(batchOf('s', [{ symbol: 'B', utc: M + 5000, bid: 1, ask: 2 }]));
    expect(closed.map((b) => b.symbol)).toEqual(['A']);
    expect(agg.add(batchOf('s', [{ symbol: 'A', utc: 200, bid: 1, ask: 2 }]))).toEqual([]);
    expect(agg.lateTicks).toBe(1);
    expect(agg.heartbeat('s', 2 * M + 5000).map((b) => b.symbol)).toEqual(['B']);
  });

  it('gives the same bars however the ticks are split into batches (replay is deterministic)', () => {
    const tick = fc.record({
      symbol: fc.constantFrom('A', 'B'),
      dt: fc.integer({ min: 0, max: 40_000 }),
      bid: fc.double({ min: 1, max: 2, noNaN: true }),
    });
    fc.assert(
      fc.property(
        fc.array(tick, { maxLength: 200 }),
        fc.array(fc.nat(200), { maxLength: 10 }),
        (raw, cuts) => {
          let t = 0;
          const ticks: T[] = raw.map((r) => {
            t += r.dt;
            return { symbol: r.symbol, utc: t, bid: r.bid, ask: r.bid + 0.001 };
          });
          const whole = new BarAggregator({ closeGraceMs: 3000 }).add(batchOf('s', ticks));
          const agg = new BarAggregator({ closeGraceMs: 3000 });
          const points = [...new Set(cuts.map((c) => c % (ticks.length + 1)))].sort((a, b) => a - b);
          const split: Bar[] = [];
          let from = 0;
          for (const p of [...points, ticks.length]) {
            if (p > from) split.push(...agg.add(batchOf('s', ticks.slice(from, p), from + 1)));
            from = Math.max(from, p);
          }
          expect(split).toEqual(whole);
        },
      ),
    );
  });
});
