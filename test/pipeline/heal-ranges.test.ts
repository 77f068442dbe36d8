// The Redis healer's bookkeeping of dropped seqs, against a plain Set model: adds merge, removes
// split, the bound on ranges only ever widens the pending set (healing skips what is present).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HealRanges } from '../../pipeline/heal-ranges.js';

const op = fc.oneof(
  fc.record({
    kind: fc.constant('add' as const),
    source: fc.constantFrom('a', 'b'),
    lo: fc.integer({ min: 1, max: 200 }),
    len: fc.nat(20),
  }),
  fc.record({
    kind: fc.constant('remove' as const),
    source: fc.constantFrom('a', 'b'),
    lo: fc.integer({ min: 1, max: 200 }),
    len: fc.nat(20),
  }),
);

function expand(r: HealRanges, source: string): number[] {
  return r.ranges(source).flatMap(([lo, hi]) => Array.from({ length: hi - lo + 1 }, (_, i) => lo + i));
}

describe('HealRanges', () => {
  it('holds exactly the added minus the removed seqs, as sorted disjoint non-touching ranges', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        const r = new HealRanges({ maxRanges: 1000 });
        const model = new Map<string, Set<number>>([
          ['a', new Set()],
          ['b', new Set()],
        ]);
        for (const o of ops) {
          const set = model.get(o.source) as Set<number>;
          if (o.kind === 'add') r.add(o.source, o.lo, o.lo + o.len, 1);
          else r.remove(o.source, o.lo, o.lo + o.len);
          for (let s = o.lo; s <= o.lo + o.len; s++) o.kind === 'add' ? set.add(s) : set.delete(s);
        }
        let total = 0;
        let count = 0;
        for (const [source, set] of model) {
          expect(expand(r, source)).toEqual([...set].sort((x, y) => x - y));
          const ranges = r.ranges(source);
          for (let i = 1; i < ranges.length; i++)
            expect((ranges[i]?.[0] as number) > (ranges[i - 1]?.[1] as number) + 1).toBe(true);
          for (const s of set) expect(r.has(source, s)).toBe(true);
          total += set.size;
          count += ranges.length;
        }
        expect(r.pendingTicks).toBe(total);
        expect(r.rangeCount).toBe(count);
      }),
    );
  });

  it('past maxRanges merges the closest neighbours: memory bounded, nothing dropped is lost', () => {
    const r = new HealRanges({ maxRanges: 3 });
    for (const [lo, hi] of [
      [1, 2],
      [10, 10],
      [12, 12],
      [30, 31],
      [100, 100],
    ] as const)
      r.add('a', lo, hi, 5);
    expect(r.rangeCount).toBe(3);
    // Gaps 10→12 (2), then 2→10 (8) are the smallest at each overflow.
    expect(r.ranges('a')).toEqual([
      [1, 12],
      [30, 31],
      [100, 100],
    ]);
    expect(r.pendingTicks).toBe(12 + 2 + 1);
    for (const s of [1, 2, 10, 12, 30, 31, 100]) expect(r.has('a', s)).toBe(true);
  });

  it('keeps the earliest drop time of what is still pending, and forgets a healed source', () => {
    const r = new HealRanges({ maxRanges: 10 });
    expect(r.sinceMs).toBeNull();
    r.add('a', 5, 9, 2000);
    r.add('b', 1, 1, 1000);
    r.add('a', 20, 20, 500);
    expect(r.sinceMs).toBe(500);
    expect(r.overlaps('a', 10, 19)).toBe(false);
    expect(r.overlaps('a', 9, 19)).toBe(true);
    r.remove('b', 1, 1);
    expect(r.sources()).toEqual(['a']);
    r.remove('a', 20, 20);
    expect(r.sinceMs).toBe(2000); // the earlier drop was healed: reading starts later
    r.remove('a', 1, 100);
    expect(r.sinceMs).toBeNull();
    expect(r.pendingTicks).toBe(0);
  });
});
