/**
 * Seqs as sorted, disjoint, inclusive ranges [lo, hi]: the audit's memory grows with the number
 * of holes, not of ticks (100 M contiguous seqs are one range). Appending the next seq — the
 * journal's normal order — is O(1); a seq out of order costs a binary search and an insert.
 */
export class SeqRanges {
  readonly lo: number[] = [];
  readonly hi: number[] = [];
  /** Seqs added, duplicates included. */
  total = 0;
  duplicates = 0;
  /** Seqs not greater than the one before them (duplicates included). */
  outOfOrder = 0;
  #last = 0;

  add(seq: number): void {
    this.total++;
    if (this.#last > 0 && seq <= this.#last) this.outOfOrder++;
    this.#last = seq;
    const n = this.lo.length;
    const top = n ? (this.hi[n - 1] as number) : -2;
    if (seq === top + 1) {
      this.hi[n - 1] = seq;
      return;
    }
    if (seq > top) {
      this.lo.push(seq);
      this.hi.push(seq);
      return;
    }
    // The last range starting at or before seq.
    let a = 0;
    let b = n - 1;
    let i = -1;
    while (a <= b) {
      const mid = (a + b) >> 1;
      if ((this.lo[mid] as number) <= seq) {
        i = mid;
        a = mid + 1;
      } else b = mid - 1;
    }
    if (i >= 0 && seq <= (this.hi[i] as number)) {
      this.duplicates++;
      return;
    }
    const left = i >= 0 && (this.hi[i] as number) + 1 === seq;
    const right = i + 1 < n && (this.lo[i + 1] as number) - 1 === seq;
    if (left && right) {
      this.hi[i] = this.hi[i + 1] as number;
      this.lo.splice(i + 1, 1);
      this.hi.splice(i + 1, 1);
    } else if (left) this.hi[i] = seq;
    else if (right) this.lo[i + 1] = seq;
    else {
      this.lo.splice(i + 1, 0, seq);
      this.hi.splice(i + 1, 0, seq);
    }
  }

  /** Adds a whole range [lo, hi] already known to be disjoint from and after every other. */
  push(lo: number, hi: number): void {
    const n = this.lo.length;
    if (n && (this.hi[n - 1] as number) + 1 === lo) this.hi[n - 1] = hi;
    else {
      this.lo.push(lo);
      this.hi.push(hi);
    }
    this.total += hi - lo + 1;
    this.#last = hi;
  }

  get ranges(): number {
    return this.lo.length;
  }

  get min(): number | null {
    return this.lo.length ? (this.lo[0] as number) : null;
  }

  get max(): number | null {
    return this.hi.length ? (this.hi[this.hi.length - 1] as number) : null;
  }

  /** Distinct seqs. */
  size(): number {
    let n = 0;
    for (let i = 0; i < this.lo.length; i++) n += (this.hi[i] as number) - (this.lo[i] as number) + 1;
    return n;
  }

  /** The missing ranges between `from` and the last seq, and how many seqs they hold. */
  holes(from: number, limit = 5): { count: number; ranges: string[] } {
    let count = 0;
    const ranges: string[] = [];
    let next = from;
    for (let i = 0; i < this.lo.length; i++) {
      const lo = this.lo[i] as number;
      if (lo > next) {
        count += lo - next;
        if (ranges.length < limit) ranges.push(lo - 1 === next ? `${next}` : `${next}-${lo - 1}`);
      }
      next = Math.max(next, (this.hi[i] as number) + 1);
    }
    return { count, ranges };
  }

  /** The seqs in both. */
  intersect(other: SeqRanges): SeqRanges {
    const out = new SeqRanges();
    let i = 0;
    let j = 0;
    while (i < this.lo.length && j < other.lo.length) {
      const lo = Math.max(this.lo[i] as number, other.lo[j] as number);
      const hi = Math.min(this.hi[i] as number, other.hi[j] as number);
      if (lo <= hi) out.push(lo, hi);
      if ((this.hi[i] as number) < (other.hi[j] as number)) i++;
      else j++;
    }
    return out;
  }

  /** The seqs in [lo, hi]. */
  static of(lo: number, hi: number): SeqRanges {
    const r = new SeqRanges();
    if (lo <= hi) r.push(lo, hi);
    return r;
  }
}
