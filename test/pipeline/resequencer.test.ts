import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Resequencer } from '../../pipeline/resequencer.js';

describe('Resequencer', () => {
  it('releases each source in ticket order whatever order the results come back in', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('a', 'b', 'c'), { minLength: 1, maxLength: 60 }).chain((sources) =>
          fc.tuple(
            fc.constant(sources),
            fc.shuffledSubarray(
              sources.map((_, i) => i),
              { minLength: sources.length },
            ),
          ),
        ),
        ([sources, order]) => {
          const released: Record<string, number[]> = {};
          const r = new Resequencer<number>((s, item) => {
            released[s] = [...(released[s] ?? []), item];
          });
          const tickets = sources.map((s) => r.ticket(s));
          for (const i of order) r.done(sources[i] as string, tickets[i] as number, tickets[i] as number);
          for (const s of new Set(sources)) {
            const n = sources.filter((x) => x === s).length;
            expect(released[s]).toEqual(Array.from({ length: n }, (_, k) => k));
          }
          expect(r.pending()).toBe(0);
        },
      ),
    );
  });

  it('holds a later result until the earlier one of the same source is done', () => {
    const out: string[] = [];
    const r = new Resequencer<string>((s, x) => out.push(`${s}:${x}`));
    const a0 = r.ticket('a');
    const a1 = r.ticket('a');
    const b0 = r.ticket('b');
    r.done('a', a1, 'second');
    r.done('b', b0, 'only');
    expect(out).toEqual(['b:only']);
    expect(r.pending('a')).toBe(2);
    r.done('a', a0, 'first');
    expect(out).toEqual(['b:only', 'a:first', 'a:second']);
  });
});
