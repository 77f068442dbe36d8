/**
 * The ticks a live view dropped and has yet to heal: per source, sorted disjoint inclusive seq
 * ranges, merged as they come (a 20 s outage at 100k ticks/s is one range per source, not
 * 2 M seqs). Memory is bounded by `maxRanges` over all sources: one more range than that
 * merges the two closest neighbours of one source, so the pending set only grows to cover seqs
 * that were not dropped — harmless, healing is idempotent (those are found present and skipped).
 * Each range also keeps the earliest time one of its ticks reached the sink, so the healer can
 * start reading the journal there rather than at its log start.
 */
interface SourceRanges {
  lo: number[];
  hi: number[];
  /** Per range: when its earliest tick reached the sink. */
  at: number[];
}

export class HealRanges {
  readonly #maxRanges: number;
  readonly #sources = new Map<string, SourceRanges>();
  #ranges = 0;
  #ticks = 0;

  constructor(options: { maxRanges: number }) {
    this.#maxRanges = Math.max(1, options.maxRanges);
  }

  /** Seqs pending (including those merges added). */
  get pendingTicks(): number {
    return this.#ticks;
  }

  get rangeCount(): number {
    return this.#ranges;
  }

  /** The earliest time a pending tick reached the sink, or null when nothing is pending. */
  get sinceMs(): number | null {
    let since: number | null = null;
    for (const r of this.#sources.values())
      for (const at of r.at) if (since === null || at < since) since = at;
    return since;
  }

  sources(): string[] {
    return [...this.#sources.keys()];
  }

  /** The pending ranges of a source, as [lo, hi] pairs (a copy). */
  ranges(source: string): [number, number][] {
    const r = this.#sources.get(source);
    return r ? r.lo.map((lo, i) => [lo, r.hi[i] as number]) : [];
  }

  has(source: string, seq: number): boolean {
    const r = this.#sources.get(source);
    if (!r) return false;
    const i = lastAtOrBefore(r.lo, seq);
    return i >= 0 && seq <= (r.hi[i] as number);
  }

  /** True when some seq in [lo, hi] is pending for the source. */
  overlaps(source: string, lo: number, hi: number): boolean {
    const r = this.#sources.get(source);
    if (!r) return false;
    const i = lastAtOrBefore(r.lo, hi);
    return i >= 0 && (r.hi[i] as number) >= lo;
  }

  /** Marks [lo, hi] of a source dropped at `atMs`. */
  add(source: string, lo: number, hi: number, atMs: number): void {
    if (hi < lo) return;
    let r = this.#sources.get(source);
    if (!r) {
      r = { lo: [], hi: [], at: [] };
      this.#sources.set(source, r);
    }
    const n = r.lo.length;
    // The usual case: drops come in seq order.
    if (n === 0 || lo > (r.hi[n - 1] as number) + 1) {
      r.lo.push(lo);
      r.hi.push(hi);
      r.at.push(atMs);
      this.#ranges++;
      this.#ticks += hi - lo + 1;
    } else {
      // Ranges touching [lo - 1, hi + 1] become one.
      const a = lastAtOrBefore(r.hi, lo - 2) + 1; // first range ending at or after lo - 1
      let b = lastAtOrBefore(r.lo, hi + 1); // last range starting at or before hi + 1
      let newLo = lo;
      let newHi = hi;
      let newAt = atMs;
      if (a <= b) {
        newLo = Math.min(lo, r.lo[a] as number);
        newHi = Math.max(hi, r.hi[b] as number);
        for (let i = a; i <= b; i++) {
          this.#ticks -= (r.hi[i] as number) - (r.lo[i] as number) + 1;
          newAt = Math.min(newAt, r.at[i] as number);
        }
      } else b = a - 1;
      r.lo.splice(a, b - a + 1, newLo);
      r.hi.splice(a, b - a + 1, newHi);
      r.at.splice(a, b - a + 1, newAt);
      this.#ranges += 1 - (b - a + 1);
      this.#ticks += newHi - newLo + 1;
    }
    while (this.#ranges > this.#maxRanges && this.#mergeClosest());
  }

  /** Forgets [lo, hi] of a source (healed, or known lost). */
  remove(source: string, lo: number, hi: number): void {
    const r = this.#sources.get(source);
    if (!r || hi < lo) return;
    const lows: number[] = [];
    const highs: number[] = [];
    const ats: number[] = [];
    for (let i = 0; i < r.lo.length; i++) {
      const a = r.lo[i] as number;
      const b = r.hi[i] as number;
      const at = r.at[i] as number;
      if (b < lo || a > hi) {
        lows.push(a);
        highs.push(b);
        ats.push(at);
        continue;
      }
      this.#ticks -= Math.min(b, hi) - Math.max(a, lo) + 1;
      if (a < lo) {
        lows.push(a);
        highs.push(lo - 1);
        ats.push(at);
      }
      if (b > hi) {
        lows.push(hi + 1);
        highs.push(b);
        ats.push(at);
      }
    }
    this.#ranges += lows.length - r.lo.length;
    if (lows.length === 0) this.#sources.delete(source);
    else {
      r.lo = lows;
      r.hi = highs;
      r.at = ats;
    }
  }

  /** Joins the two neighbouring ranges (of one source) with the smallest gap between them. */
  #mergeClosest(): boolean {
    let best: SourceRanges | null = null;
    let at = -1;
    let gap = Number.POSITIVE_INFINITY;
    for (const r of this.#sources.values())
      for (let i = 0; i + 1 < r.lo.length; i++) {
        const g = (r.lo[i + 1] as number) - (r.hi[i] as number);
        if (g < gap) {
          gap = g;
          best = r;
          at = i;
        }
      }
    if (!best) return false; // one range per source: nothing to merge (maxRanges below the source count)
    this.#ticks += gap - 1;
    best.hi[at] = best.hi[at + 1] as number;
    best.at[at] = Math.min(best.at[at] as number, best.at[at + 1] as number);
    best.lo.splice(at + 1, 1);
    best.hi.splice(at + 1, 1);
    best.at.splice(at + 1, 1);
    this.#ranges--;
    return true;
  }
}

/** Index of the last value ≤ x in ascending `values`, or -1. */
function lastAtOrBefore(values: readonly number[], x: number): number {
  let a = 0;
  let b = values.length - 1;
  let i = -1;
  while (a <= b) {
    const mid = (a + b) >> 1;
    if ((values[mid] as number) <= x) {
      i = mid;
      a = mid + 1;
    } else b = mid - 1;
  }
  return i;
}
