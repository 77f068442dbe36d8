// Feed arbitration rules in-process (pipeline/feed-arbiter.ts), on a fake clock in ms: every
// input carries its receipt time, as the journal does, so no test waits for anything.
import { describe, expect, it } from 'vitest';
import { configSchema, type FeedGroupConfig } from '../../pipeline/config.js';
import { type Decision, FeedArbiter, type TickRows } from '../../pipeline/feed-arbiter.js';

interface T {
  symbol: string;
  utc: number;
  bid: number;
  ask?: number;
  flags?: number;
}

function rows(source: string, ticks: T[]): TickRows {
  const symbols = [...new Set(ticks.map((t) => t.symbol))];
  return {
    source,
    symbols,
    length: ticks.length,
    symbolIndex: ticks.map((t) => symbols.indexOf(t.symbol)),
    utcMsc: ticks.map((t) => t.utc),
    bid: ticks.map((t) => t.bid),
    ask: ticks.map((t) => t.ask ?? t.bid + 0.0002),
    last: ticks.map(() => 0),
    volume: ticks.map(() => 0),
    flags: ticks.map((t) => t.flags ?? 6),
  };
}

function group(policy: FeedGroupConfig['policy'], extra: Partial<FeedGroupConfig> = {}): FeedGroupConfig {
  const cfg = configSchema.parse({
    feedGroups: [
      {
        symbol: 'EURUSD',
        policy,
        members: [
          { source: 'a', symbol: 'EURUSD.a' },
          { source: 'b', symbol: 'EURUSDm' },
        ],
        ...extra,
      },
    ],
  });
  return cfg.feedGroups[0] as FeedGroupConfig;
}

/** Feeds one tick per member per step; returns the merged (source, utc) list and decisions. */
class Harness {
  readonly arbiter: FeedArbiter;
  readonly sent: { source: string; utc: number; bid: number }[] = [];
  readonly decisions: Decision[] = [];
  constructor(cfg: FeedGroupConfig) {
    this.arbiter = new FeedArbiter([cfg]);
  }
  tick(source: 'a' | 'b', atMs: number, utc: number, bid = 1.1): void {
    const batch = rows(source, [{ symbol: source === 'a' ? 'EURUSD.a' : 'EURUSDm', utc, bid }]);
    const step = this.arbiter.onTicks(batch, atMs);
    this.decisions.push(...step.decisions);
    for (const p of step.picks) {
      expect(p.symbol).toBe('EURUSD');
      for (const r of p.rows)
        this.sent.push({ source, utc: batch.utcMsc[r] as number, bid: batch.bid[r] as number });
    }
  }
  down(source: 'a' | 'b', atMs: number, reason: 'disconnect' | 'clock' = 'disconnect'): void {
    this.decisions.push(...this.arbiter.onDown(source, reason, atMs));
  }
  active(): string | null {
    return this.arbiter.status()[0]?.active ?? null;
  }
}

describe('config', () => {
  it('accepts the issue’s feed group shape, with default timings', () => {
    const cfg = configSchema.parse({
      feedGroups: [
        {
          symbol: 'EURUSD',
          policy: 'first-seen',
          members: [
            { source: 'a', symbol: 'EURUSD.a' },
            { source: 'b', symbol: 'EURUSDm' },
          ],
        },
      ],
    });
    expect(cfg.feedGroups[0]).toMatchObject({ stallMs: 3000, maxLagMs: 5000, holdMs: 30_000 });
  });

  it('takes the JSON from an environment string and refuses a pair in two groups or the reserved source name', () => {
    const json = JSON.stringify([
      { symbol: 'X', policy: 'failover', members: [{ source: 'a', symbol: 'X1' }] },
      { symbol: 'Y', policy: 'failover', members: [{ source: 'a', symbol: 'X1' }] },
    ]);
    const r = configSchema.safeParse({ feedGroups: json });
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error?.issues)).toContain('a (source, symbol) pair feeds one group only');
    const merged = configSchema.safeParse({
      feedGroups: [{ symbol: 'X', policy: 'failover', members: [{ source: 'merged', symbol: 'X' }] }],
    });
    expect(JSON.stringify(merged.error?.issues)).toContain('reserved');
    expect(
      configSchema.safeParse({ feedGroups: [{ symbol: 'X', policy: 'best', members: [] }] }).success,
    ).toBe(false);
  });
});

describe('first-seen', () => {
  it('passes each tick once from whichever feed delivered it first; identical ticks of one feed are two ticks', () => {
    const feed: T[] = [];
    for (let i = 0; i < 200; i++)
      feed.push({ symbol: '', utc: 1_000 + Math.floor(i / 3), bid: 1.1 + (i % 7) / 1e4 });
    // Exact repeats inside the feed (same ms, prices, flags), as MT5 has them.
    feed.splice(50, 0, { ...(feed[50] as T) });
    feed.splice(120, 0, { ...(feed[120] as T) }, { ...(feed[120] as T) });
    const a = feed.map((t) => ({ ...t, symbol: 'EURUSD.a' }));
    const b = feed.map((t) => ({ ...t, symbol: 'EURUSDm' }));
    const arbiter = new FeedArbiter([group('first-seen')]);
    const out: number[] = [];
    let dup = 0;
    // Uneven batches, each feed ahead in turn.
    let ia = 0;
    let ib = 0;
    let at = 0;
    const sizes = [5, 1, 13, 2, 40, 3, 7];
    for (let k = 0; ia < a.length || ib < b.length; k++) {
      const fromA = k % 3 !== 2;
      const src = fromA ? a : b;
      const start = fromA ? ia : ib;
      const n = Math.min(sizes[k % sizes.length] as number, src.length - start);
      if (n <= 0) {
        if (fromA) ia = a.length;
        else ib = b.length;
        continue;
      }
      const batch = rows(fromA ? 'a' : 'b', src.slice(start, start + n));
      at += 10;
      const step = arbiter.onTicks(batch, at);
      for (const p of step.picks) for (const r of p.rows) out.push(start + r);
      dup += step.suppressed.get('EURUSD')?.duplicates ?? 0;
      if (fromA) ia += n;
      else ib += n;
    }
    // Every tick of the feed once, in order (index into the feed = the tick).
    expect(out).toEqual(feed.map((_, i) => i));
    expect(dup).toBe(feed.length);
  });

  it('never sends a tick older than the last one sent', () => {
    const arbiter = new FeedArbiter([group('first-seen')]);
    arbiter.onTicks(rows('a', [{ symbol: 'EURUSD.a', utc: 2000, bid: 1 }]), 1);
    const late = arbiter.onTicks(rows('b', [{ symbol: 'EURUSDm', utc: 1999, bid: 2 }]), 2);
    expect(late.picks).toEqual([]);
    expect(late.suppressed.get('EURUSD')).toEqual({ duplicates: 0, stale: 1 });
  });
});

describe('failover', () => {
  const cfg = group('failover', { stallMs: 1000, holdMs: 5000, maxLagMs: 2000 });

  it('follows the primary, switches on a stall while the secondary has ticks, and back only after the hold time', () => {
    const h = new Harness(cfg);
    for (let t = 0; t < 3000; t += 100) {
      h.tick('a', t, 10_000 + t);
      h.tick('b', t + 5, 10_000 + t);
    }
    expect(h.active()).toBe('a');
    // a goes quiet at 2900; b keeps sending.
    let switchedAt = -1;
    for (let t = 3000; t < 6000; t += 100) {
      h.tick('b', t, 10_000 + t);
      if (switchedAt < 0 && h.active() === 'b') switchedAt = t;
    }
    expect(switchedAt - 2900).toBeGreaterThan(1000);
    expect(switchedAt - 2900).toBeLessThanOrEqual(1100);
    expect(h.decisions.map((d) => [d.from, d.to, d.reason])).toEqual([
      [null, 'a', 'start'],
      ['a', 'b', 'stall'],
    ]);
    // a is back at 6000 and stays healthy: followed again at 6000 + holdMs, not before.
    let backAt = -1;
    for (let t = 6000; t < 13_000; t += 100) {
      h.tick('a', t, 10_000 + t);
      h.tick('b', t + 5, 10_000 + t);
      if (backAt < 0 && h.active() === 'a') backAt = t;
    }
    expect(backAt).toBe(6000 + 5000);
    expect(h.decisions.at(-1)).toMatchObject({ from: 'b', to: 'a', reason: 'recovered', atMs: 11_000 });
    // Never a tick older than the last one sent.
    for (let i = 1; i < h.sent.length; i++)
      expect((h.sent[i] as { utc: number }).utc).toBeGreaterThanOrEqual(
        (h.sent[i - 1] as { utc: number }).utc,
      );
  });

  it('a disconnect or a refused clock switches at once; a stall with no other feed flowing does not', () => {
    const h = new Harness(cfg);
    h.tick('a', 0, 100);
    h.tick('b', 1, 100);
    // Both quiet for long: nobody has ticks, so nobody is stalled.
    h.tick('a', 60_000, 200);
    expect(h.active()).toBe('a');
    h.down('a', 60_010);
    expect(h.active()).toBe('b');
    expect(h.decisions.at(-1)).toMatchObject({ from: 'a', to: 'b', reason: 'disconnect' });
    // A tick of a decoded before the disconnect (received earlier) does not bring it back.
    h.tick('a', 60_005, 201);
    expect(h.arbiter.status()[0]?.members[0]?.problem).toBe('disconnect');
    const g2 = new Harness(cfg);
    g2.tick('a', 0, 100);
    g2.tick('b', 1, 100);
    g2.down('a', 5, 'clock');
    expect(g2.decisions.at(-1)).toMatchObject({ to: 'b', reason: 'clock' });
  });

  it('switches away from a primary that falls behind the freshest feed', () => {
    const h = new Harness(cfg);
    for (let t = 0; t < 5000; t += 100) {
      h.tick('a', t, 10_000 + t / 2); // a's ticks fall behind: half speed in tick time
      h.tick('b', t + 1, 10_000 + t);
    }
    expect(h.active()).toBe('b');
    expect(h.decisions.at(-1)).toMatchObject({ from: 'a', to: 'b', reason: 'behind' });
  });

  it('a primary that flaps every second causes no more than one switch per hold time', () => {
    const flappy = group('failover', { stallMs: 1000, holdMs: 10_000, maxLagMs: 2000 });
    const h = new Harness(flappy);
    const end = 120_000;
    for (let t = 0; t < end; t += 100) {
      // a: up for a second, down for a second.
      const up = Math.floor(t / 1000) % 2 === 0;
      if (up) h.tick('a', t, t);
      else if (t % 1000 === 0) h.down('a', t);
      h.tick('b', t + 1, t);
    }
    const switches = h.decisions.filter((d) => d.reason !== 'start');
    expect(switches.length).toBeGreaterThanOrEqual(1);
    expect(switches.length).toBeLessThanOrEqual(Math.ceil(end / 10_000));
    for (let i = 1; i < switches.length; i++)
      expect((switches[i] as Decision).atMs - (switches[i - 1] as Decision).atMs).toBeGreaterThanOrEqual(
        10_000,
      );
    // It never went back to a: a was never healthy for 10 s in a row.
    expect(h.active()).toBe('b');
  });

  it('maps different broker symbol names to one canonical symbol, and only the followed member is sent', () => {
    const h = new Harness(cfg);
    h.tick('a', 0, 1, 1.5);
    h.tick('b', 1, 1, 2.5);
    expect(h.sent).toEqual([{ source: 'a', utc: 1, bid: 1.5 }]);
    // A symbol outside the group is not picked.
    const other = h.arbiter.onTicks(rows('a', [{ symbol: 'GBPUSD', utc: 5, bid: 1 }]), 2);
    expect(other.picks).toEqual([]);
  });
});
