import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SeqRanges } from '../../pipeline/seq-ranges.js';

/** The obvious model: a count per seq. */
function model(seqs: number[]) {
  const counts = new Map<number, number>();
  for (const s of seqs) counts.set(s, (counts.get(s) ?? 0) + 1);
  const max = Math.max(0, ...seqs);
  let holes = 0;
  for (let s = 1; s <= max; s++) if (!counts.has(s)) holes++;
  return { distinct: counts.size, duplicates: seqs.length - counts.size, holes };
}

describe('SeqRanges', () => {
  it('agrees with a count per seq for any order of seqs', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 200 }), { maxLength: 400 }), (seqs) => {
        const r = new SeqRanges();
        for (const s of seqs) r.add(s);
        const m = model(seqs);
        expect(r.size()).toBe(m.distinct);
        expect(r.duplicates).toBe(m.duplicates);
        expect(r.holes(1).count).toBe(m.holes);
        for (let i = 1; i < r.ranges; i++)
          expect(r.lo[i] as number).toBeGreaterThan((r.hi[i - 1] as number) + 1);
      }),
    );
  });

  it('holds a million contiguous seqs as one range, and intersects ranges', () => {
    const r = new SeqRanges();
    for (let s = 1; s <= 1_000_000; s++) r.add(s);
    expect(r.ranges).toBe(1);
    expect(r.holes(1)).toEqual({ count: 0, ranges: [] });
    const other = SeqRanges.of(10, 19);
    other.push(500_000, 2_000_000);
    expect(r.intersect(other).size()).toBe(10 + 500_001);
  });

  it('reports the first holes as ranges, from where the audit starts', () => {
    const r = new SeqRanges();
    for (const s of [5, 6, 9, 12, 13]) r.add(s);
    expect(r.holes(1)).toEqual({ count: 8, ranges: ['1-4', '7-8', '10-11'] });
    expect(r.holes(5)).toEqual({ count: 4, ranges: ['7-8', '10-11'] });
  });
});
