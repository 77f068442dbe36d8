// Bars across restarts and replays, in-process: a snapshot taken at any point, sent through its
// JSON form (as the sources topic stores it) and restored into a new aggregator, continues to
// exactly the bars of an uninterrupted run; the journal's records alone (ticks, closing
// heartbeats, forgets, held-out seqs) give the same bars again.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Bar } from '../../codecs/bar.js';
import {
  BarJournalHeader,
  barSnapshotFromJson,
  barSnapshotToJson,
  formatSeqs,
  parseSeqs,
} from '../../codecs/bar-snapshot.js';
import { TickRecordEncoder } from '../../codecs/flat-record.js';
import { allocTickBatch, TickFlag } from '../../codecs/tick-batch.js';
import { JournalBars } from '../../pipeline/bar-replay.js';
import { BAR_CLOSE_GRACE_MS, BarAggregator } from '../../pipeline/bars.js';

interface T {
  symbol: string;
  utc: number;
  bid: number;
  last?: number;
  flags?: number;
}

function batchOf(source: string, ticks: T[], firstSeq: number) {
  const symbols = [...new Set(ticks.map((t) => t.symbol))];
  const b = allocTickBatch(source, symbols, ticks.length);
  ticks.forEach((t, i) => {
    b.seq[i] = firstSeq + i;
    b.symbolIndex[i] = symbols.indexOf(t.symbol);
    b.utcMsc[i] = t.utc;
    b.serverTimeMsc[i] = t.utc;
    b.bid[i] = t.bid;
    b.ask[i] = t.bid + 0.0001;
    b.last[i] = t.last ?? 0;
    b.volumeReal[i] = t.last === undefined ? 0 : 1;
    b.flags[i] = t.flags ?? TickFlag.BID | TickFlag.ASK;
  });
  b.length = ticks.length;
  return b;
}

const M = 60_000;
const tickArb = fc.record({
  symbol: fc.constantFrom('A', 'B', 'C'),
  // Mostly forward, now and then backwards (late ticks), sometimes a jump past a minute.
  dt: fc.integer({ min: -70_000, max: 50_000 }),
  bid: fc.double({ min: 1, max: 2, noNaN: true }),
  trade: fc.boolean(),
});

function ticksOf(raw: { symbol: string; dt: number; bid: number; trade: boolean }[]): T[] {
  let t = 10 * M;
  return raw.map((r) => {
    t = Math.max(0, t + r.dt);
    return r.trade
      ? { symbol: r.symbol, utc: t, bid: r.bid, last: r.bid, flags: TickFlag.LAST }
      : { symbol: r.symbol, utc: t, bid: r.bid };
  });
}

describe('bar state across a restart', () => {
  it('a snapshot through JSON and restore continues to the bars of an uninterrupted run', () => {
    fc.assert(
      fc.property(fc.array(tickArb, { maxLength: 150 }), fc.nat(150), (raw, cutAt) => {
        const ticks = ticksOf(raw);
        const cut = cutAt % (ticks.length + 1);
        const whole = new BarAggregator({ closeGraceMs: BAR_CLOSE_GRACE_MS });
        const expected = [...whole.add(batchOf('s', ticks, 1))];
        const before = new BarAggregator({ closeGraceMs: BAR_CLOSE_GRACE_MS });
        const got: Bar[] = cut ? before.add(batchOf('s', ticks.slice(0, cut), 1)) : [];
        const snap = before.snapshot('s');
        const after = new BarAggregator({ closeGraceMs: BAR_CLOSE_GRACE_MS });
        if (snap)
          after.restore('s', barSnapshotFromJson('s', JSON.parse(JSON.stringify(barSnapshotToJson(snap)))));
        if (cut < ticks.length) got.push(...after.add(batchOf('s', ticks.slice(cut), cut + 1)));
        expect(got).toEqual(expected);
        if (ticks.length) expect(after.snapshot('s')).toEqual(whole.snapshot('s'));
        expect(before.lateTicks + after.lateTicks).toBe(whole.lateTicks);
      }),
    );
  });

  it('keeps NaN last prices and the closed minutes through JSON', () => {
    const agg = new BarAggregator({ closeGraceMs: BAR_CLOSE_GRACE_MS });
    agg.add(
      batchOf(
        's',
        [
          { symbol: 'A', utc: 100, bid: 1.5 },
          { symbol: 'A', utc: M + 1, bid: 1.25 },
        ],
        1,
      ),
    );
    const snap = agg.snapshot('s');
    expect(snap?.open[0]?.lastOpen).toBeNaN();
    const back = barSnapshotFromJson(
      's',
      JSON.parse(JSON.stringify(barSnapshotToJson(snap as NonNullable<typeof snap>))),
    );
    expect(back).toEqual(snap);
    expect(back.closedBefore).toEqual([['A', M]]);
  });

  it('a heartbeat that closes nothing changes nothing; one that closes moves the event time', () => {
    const agg = new BarAggregator({ closeGraceMs: BAR_CLOSE_GRACE_MS });
    expect(agg.heartbeat('s', 5 * M)).toEqual([]); // no state yet: none made
    expect(agg.snapshot('s')).toBeNull();
    agg.add(batchOf('s', [{ symbol: 'A', utc: 100, bid: 1 }], 1));
    const snap = agg.snapshot('s');
    expect(agg.heartbeat('s', M + BAR_CLOSE_GRACE_MS - 1)).toEqual([]);
    expect(agg.snapshot('s')).toEqual(snap);
    expect(agg.heartbeat('s', M + BAR_CLOSE_GRACE_MS).map((b) => b.startMs)).toEqual([0]);
    expect(agg.snapshot('s')?.eventTimeMs).toBe(M + BAR_CLOSE_GRACE_MS);
  });
});

describe('held-out seq lists', () => {
  it('round-trip as runs', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 1, max: 300 }), { maxLength: 80 }), (raw) => {
        const seqs = [...raw].sort((a, b) => a - b);
        expect([...parseSeqs(formatSeqs(seqs))]).toEqual(seqs);
      }),
    );
    expect(formatSeqs([7, 12, 13, 14, 15])).toBe('7,12-15');
  });
});

describe('bars recomputed from journal records', () => {
  const encoder = new TickRecordEncoder();
  const record = (source: string, ticks: T[], firstSeq: number, headers: Record<string, string> = {}) => ({
    key: source,
    value: encoder.encode(batchOf(source, ticks, firstSeq)),
    headers,
  });
  const event = (source: string, headers: Record<string, string>) => ({
    key: source,
    value: encoder.encode(allocTickBatch(source, [], 0)),
    headers,
  });

  it('ticks, a closing heartbeat, held-out seqs and a forget give the live bars', () => {
    // The live run: the bridge's aggregator with the same events, held-out tick 3 never added.
    const live = new BarAggregator({ closeGraceMs: BAR_CLOSE_GRACE_MS });
    const liveBars: Bar[] = [];
    const t1: T[] = [
      { symbol: 'A', utc: 1000, bid: 1 },
      { symbol: 'B', utc: 2000, bid: 2 },
      { symbol: 'A', utc: 3000, bid: 9 }, // held out (say, out of the time window)
    ];
    liveBars.push(...live.add(batchOf('s', t1.slice(0, 2), 1)));
    liveBars.push(...live.heartbeat('s', M + BAR_CLOSE_GRACE_MS)); // closes A and B of minute 0
    liveBars.push(...live.add(batchOf('s', [{ symbol: 'A', utc: 30_000, bid: 3 }], 4))); // late now
    liveBars.push(...live.add(batchOf('s', [{ symbol: 'A', utc: 2 * M, bid: 4 }], 5)));
    liveBars.push(...live.forget('s'));
    liveBars.push(...live.add(batchOf('s', [{ symbol: 'A', utc: 2 * M + 10, bid: 5 }], 6)));

    const replay = new JournalBars();
    const out: Bar[] = [];
    for (const m of [
      record('s', t1, 1, { [BarJournalHeader.HELD_OUT]: '3' }),
      event('s', { [BarJournalHeader.CLOCK]: String(M + BAR_CLOSE_GRACE_MS) }),
      record('s', [{ symbol: 'A', utc: 30_000, bid: 3 }], 4),
      record('s', [{ symbol: 'A', utc: 2 * M, bid: 4 }], 5),
      event('s', { [BarJournalHeader.FORGET]: '1' }),
      record('s', [{ symbol: 'A', utc: 2 * M + 10, bid: 5 }], 6),
    ])
      out.push(...replay.add(m));
    expect(out).toEqual(liveBars);
    expect(out.map((b) => [b.symbol, b.startMs, b.tickCount, b.close])).toEqual([
      ['A', 0, 1, 1],
      ['B', 0, 1, 2],
      ['A', 2 * M, 1, 4],
    ]);
    expect(replay.lateTicks).toBe(1);
    expect(replay.open().map((b) => [b.symbol, b.startMs, b.close])).toEqual([['A', 2 * M, 5]]);
  });
});
