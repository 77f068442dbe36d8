/**
 * The EA's capture logic, mirrored from bridge/mql5/TickStream.mq5 so it can be tested here:
 *
 * - every timer poll asks `CopyTicksRange(symbol, from = cursor.lastMsc, to = now)` — both ends
 *   inclusive — and skips the first `cursor.countAtMsc` ticks stamped `lastMsc` (already taken);
 * - a tick gets its seq once, when first captured, from one per-source counter;
 * - captured ticks wait in a bounded buffer until ACKed; when it is full capture pauses and the
 *   cursors hold (nothing is evicted), so the terminal's history is the overflow store;
 * - after a reconnect, what is buffered from HELLO_ACK's `nextSeq` on is sent again; an EA that
 *   lost its memory takes `nextSeq` and the cursors from HELLO_ACK and re-reads history;
 * - a bridge whose state this buffer cannot continue from (it lost ticks it had ACKed, or holds
 *   seqs this EA never sent) is adopted the same way: the buffer is dropped and every symbol is
 *   re-read from the bridge's cursor, or, without one, from where this run started it (its
 *   origin), so no tick captured but not committed is lost (TickStream.mq5 OnHelloAck agrees).
 * Ticks that arrive late in an already-read millisecond are found by the count skip; a tick
 * inserted *before* the cursor's millisecond after it was passed cannot be seen by
 * CopyTicksRange from the cursor (MT5 history is append-only per symbol in practice).
 */

/** The terminal's tick history of one symbol: times ascending, as CopyTicksRange sees it. */
export interface SymbolHistory {
  /** Index range [from, to) of ticks with lastMsc ≤ time_msc ≤ toMsc (inclusive ends). */
  range(fromMsc: number, toMsc: number): [number, number];
  timeAt(index: number): number;
}

export interface Cursor {
  lastMsc: number;
  countAtMsc: number;
}

export class TickCapture {
  readonly symbols: string[];
  readonly #histories: SymbolHistory[];
  readonly #capacity: number;
  readonly cursors: Cursor[];
  readonly #startMsc: number;
  /** Each symbol's cursor when this run's capture began (first HELLO_ACK); null before it. */
  #origins: Cursor[] | null = null;
  /** Seq the next captured tick gets. */
  nextSeq = 1;
  /** Buffered ticks are seqs [bufferStart, nextSeq). */
  bufferStart = 1;
  readonly #symbolOf: Uint16Array;
  readonly #indexOf: Float64Array;
  #head = 0;

  constructor(
    symbols: string[],
    histories: SymbolHistory[],
    capacity: number,
    startMsc = Number.NEGATIVE_INFINITY,
  ) {
    this.symbols = symbols;
    this.#histories = histories;
    this.#capacity = capacity;
    this.#startMsc = startMsc;
    this.cursors = symbols.map(() => ({ lastMsc: startMsc, countAtMsc: 0 }));
    this.#symbolOf = new Uint16Array(capacity);
    this.#indexOf = new Float64Array(capacity);
  }

  get buffered(): number {
    return this.nextSeq - this.bufferStart;
  }

  /** Adopts the bridge's view after a (re)connect. `amnesia`: the EA lost its memory. */
  resume(
    nextSeq: number,
    cursors: { symbol: string; lastMsc: number; countAtMsc: number }[],
    amnesia: boolean,
  ): void {
    // A bridge that stands outside what this buffer can continue from (it lost data, or another
    // terminal wrote this source) is followed as after a restart: its state is the truth.
    if (amnesia || nextSeq < this.bufferStart || nextSeq > this.nextSeq) {
      this.nextSeq = nextSeq;
      this.bufferStart = nextSeq;
      this.#head = 0;
      // Whatever was read before this point is forgotten: the bridge's cursors are the truth, and
      // a symbol it has none of goes back to where this run started it (the live start on the
      // first HELLO_ACK). Not "live" again: that would skip what was captured but not committed.
      this.symbols.forEach((name, k) => {
        const c = cursors.find((x) => x.symbol === name);
        const origin = this.#origins?.[k] ?? { lastMsc: this.#startMsc, countAtMsc: 0 };
        this.cursors[k] = c ? { lastMsc: c.lastMsc, countAtMsc: c.countAtMsc } : { ...origin };
      });
      this.#origins ??= this.cursors.map((c) => ({ ...c }));
      return;
    }
    // Ticks below nextSeq are already accepted by the bridge: no need to keep them.
    if (nextSeq > this.bufferStart) this.ack(Math.min(nextSeq, this.nextSeq) - 1);
  }

  /** One timer poll: takes new ticks of every symbol up to `nowMsc`, while the buffer has room. */
  poll(nowMsc: number): number {
    let taken = 0;
    for (let k = 0; k < this.symbols.length; k++) {
      const room = this.#capacity - this.buffered;
      if (room <= 0) break;
      const h = this.#histories[k] as SymbolHistory;
      const c = this.cursors[k] as Cursor;
      let [from, to] = h.range(c.lastMsc, nowMsc);
      // CopyTicksRange includes `from`: skip what this millisecond already gave.
      let skip = c.countAtMsc;
      while (skip > 0 && from < to && h.timeAt(from) === c.lastMsc) {
        from++;
        skip--;
      }
      to = Math.min(to, from + room);
      for (let i = from; i < to; i++) {
        const slot = (this.#head + this.buffered) % this.#capacity;
        this.#symbolOf[slot] = k;
        this.#indexOf[slot] = i;
        this.nextSeq++;
        const t = h.timeAt(i);
        if (t === c.lastMsc) c.countAtMsc++;
        else {
          c.lastMsc = t;
          c.countAtMsc = 1;
        }
      }
      taken += Math.max(0, to - from);
    }
    return taken;
  }

  /** Frees buffered ticks up to and including `seq`. */
  ack(seq: number): void {
    const upTo = Math.min(seq + 1, this.nextSeq);
    if (upTo <= this.bufferStart) return;
    this.#head = (this.#head + (upTo - this.bufferStart)) % this.#capacity;
    this.bufferStart = upTo;
  }

  /** The buffered tick with this seq: its symbol index and history index. */
  at(seq: number): { symbol: number; index: number } {
    const slot = (this.#head + (seq - this.bufferStart)) % this.#capacity;
    return { symbol: this.#symbolOf[slot] as number, index: this.#indexOf[slot] as number };
  }
}

/** A SymbolHistory over ascending time columns, where ticks become visible as `now` passes them. */
export class ArrayHistory implements SymbolHistory {
  readonly times: Float64Array;
  constructor(times: Float64Array) {
    this.times = times;
  }
  range(fromMsc: number, toMsc: number): [number, number] {
    return [lowerBound(this.times, fromMsc), upperBound(this.times, toMsc)];
  }
  timeAt(index: number): number {
    return this.times[index] as number;
  }
}

function lowerBound(a: Float64Array, v: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((a[mid] as number) < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function upperBound(a: Float64Array, v: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((a[mid] as number) <= v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
