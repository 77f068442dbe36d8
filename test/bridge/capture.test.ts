/**
 * Property tests of the EA's capture logic (bridge/capture.ts, mirrored from
 * bridge/mql5/TickStream.mq5) against an independent model of the terminal written here:
 *
 * - `Terminal`: one growing tick history per symbol and `copyTicksRange(from, to)` that returns,
 *   at the moment of the call, every tick with from ≤ time_msc ≤ to in history order (both ends
 *   inclusive, as docs/protocol.md §5 says). It does not reuse capture.ts's ArrayHistory; `HistoryView` only
 *   adapts its answer to the index-range interface TickCapture reads (`SymbolHistory`).
 * - `Journal`: the bridge side. It commits what the EA sent, in seq order, only the next
 *   contiguous seq, and answers HELLO_ACK with `next_seq` and, per symbol it has ticks of, the
 *   cursor (newest time_msc committed, ticks of that ms committed) — docs/protocol.md §4–§5.
 *
 * Random schedules mix: history growth (bursts of many ticks in one millisecond; "late" ticks that
 * land in a millisecond a poll already covered, including the newest ms a poll already read;
 * ticks ahead of the clock), polls at random `now` (also twice in the same ms), ACKs of random
 * prefixes, ACKs lost in transit (the journal commits but the EA hears it only from the next
 * HELLO_ACK), reconnects (`resume(…, amnesia = false)`) and EA restarts (the capture object is
 * dropped, a new one adopts HELLO_ACK's `next_seq` and cursors, as bridge/client.ts does), with
 * small buffer capacities so capture often pauses on a full buffer.
 *
 * Known semantic limit, stated rather than tested: the model's histories are append-only with
 * non-decreasing time_msc. A tick can arrive late into any millisecond at or after the newest
 * tick already in the history — also one a poll has already read, where the count skip of the
 * cursor finds it — but never *before* a tick already there. A tick inserted older than the
 * cursor's millisecond (or between ticks already read) cannot be found by any
 * (last_msc, count_at_msc) cursor over CopyTicksRange, and it would also shift the history
 * indices TickCapture keeps for buffered ticks. MT5 is not known to make such inserts; capture.ts
 * and the EA assume per-symbol history is append-only, and the EA has no rescan that would catch
 * one (it would be lost silently).
 *
 * A symbol HELLO_ACK has no cursor for starts at `startMsc` (−∞ here and in bridge/client.ts, so
 * all history; the EA's LiveCursor starts it at the newest tick, protocol.md §5.7): that is its
 * origin for the run. The adoption branch (a bridge that lost ticks it had ACKed: `lose`) goes
 * back to the bridge's cursors, or to the origin for a symbol the bridge has none of. A bridge
 * never loses what was committed before the EA's current run started (the EA could not know
 * those ticks), so `lose` truncates the journal no further back than the last restart.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type Cursor, type SymbolHistory, TickCapture } from '../../bridge/capture.js';

// Per-step checks throw plain errors (cheaper than `expect` in a hot loop; fast-check reports them).
function same<T>(actual: T, expected: T, what: string): void {
  if (actual !== expected) throw new Error(`${what}: got ${String(actual)}, expected ${String(expected)}`);
}

function holds(ok: boolean, what: string): void {
  if (!ok) throw new Error(what);
}

// ---------------------------------------------------------------------------------------------
// Model of the terminal
// ---------------------------------------------------------------------------------------------

interface ModelTick {
  /** Unique over all symbols: the tick's identity. */
  id: number;
  symbol: number;
  /** Position in its symbol's history (stable: the history only grows at the end). */
  index: number;
  msc: number;
}

class Terminal {
  readonly histories: ModelTick[][];
  #nextId = 1;
  constructor(symbols: number) {
    this.histories = Array.from({ length: symbols }, () => []);
  }

  append(symbol: number, msc: number): void {
    const h = this.histories[symbol]!;
    const newest = h.length > 0 ? h[h.length - 1]!.msc : Number.NEGATIVE_INFINITY;
    if (msc < newest) throw new Error('model: history is append-only in time');
    h.push({ id: this.#nextId++, symbol, index: h.length, msc });
  }

  /** CopyTicksRange(symbol, COPY_TICKS_ALL, from, to): both ends inclusive, history order. */
  copyTicksRange(symbol: number, fromMsc: number, toMsc: number): ModelTick[] {
    return this.histories[symbol]!.filter((t) => fromMsc <= t.msc && t.msc <= toMsc);
  }

  /** Ticks a cursor has already passed: those before its ms, plus `countAtMsc` of its ms. */
  cursorPosition(symbol: number, c: Cursor): number {
    const h = this.histories[symbol]!;
    const before = h.filter((t) => t.msc < c.lastMsc).length;
    const atMs = h.filter((t) => t.msc === c.lastMsc).length;
    if (c.countAtMsc > atMs)
      throw new Error(`cursor counts ${c.countAtMsc} ticks at ${c.lastMsc}, history has ${atMs}`);
    return before + c.countAtMsc;
  }

  countUpTo(symbol: number, nowMsc: number): number {
    return this.histories[symbol]!.filter((t) => t.msc <= nowMsc).length;
  }
}

/** TickCapture's view of one symbol: the index range of what copyTicksRange returns now. */
class HistoryView implements SymbolHistory {
  readonly #terminal: Terminal;
  readonly #symbol: number;
  constructor(terminal: Terminal, symbol: number) {
    this.#terminal = terminal;
    this.#symbol = symbol;
  }
  range(fromMsc: number, toMsc: number): [number, number] {
    const got = this.#terminal.copyTicksRange(this.#symbol, fromMsc, toMsc);
    if (got.length === 0) {
      const at = this.#terminal.histories[this.#symbol]!.filter((t) => t.msc < fromMsc).length;
      return [at, at];
    }
    const first = got[0]!.index;
    got.forEach((t, i) => {
      if (t.index !== first + i) throw new Error('model: CopyTicksRange answer is not contiguous');
    });
    return [first, first + got.length];
  }
  timeAt(index: number): number {
    const t = this.#terminal.histories[this.#symbol]![index];
    if (t === undefined) throw new Error(`timeAt(${index}) outside the history of symbol ${this.#symbol}`);
    return t.msc;
  }
}

// ---------------------------------------------------------------------------------------------
// Model of the bridge's journal
// ---------------------------------------------------------------------------------------------

class Journal {
  nextSeq = 1;
  /** Committed ticks, by seq (index seq − 1). */
  readonly ticks: ModelTick[] = [];
  readonly #cursors = new Map<number, Cursor>();

  commit(seq: number, tick: ModelTick): void {
    same(seq, this.nextSeq, 'the journal accepts only the next contiguous seq');
    this.ticks.push(tick);
    this.nextSeq++;
    const c = this.#cursors.get(tick.symbol);
    if (c && c.lastMsc === tick.msc) c.countAtMsc++;
    else this.#cursors.set(tick.symbol, { lastMsc: tick.msc, countAtMsc: 1 });
  }

  /** The bridge lost every tick from seq `length + 1` on (and its cursors went back with them). */
  truncate(length: number): void {
    this.ticks.length = length;
    this.nextSeq = length + 1;
    this.#cursors.clear();
    for (const t of this.ticks) {
      const c = this.#cursors.get(t.symbol);
      if (c && c.lastMsc === t.msc) c.countAtMsc++;
      else this.#cursors.set(t.symbol, { lastMsc: t.msc, countAtMsc: 1 });
    }
  }

  committedOf(symbol: number): ModelTick[] {
    return this.ticks.filter((t) => t.symbol === symbol);
  }

  /** HELLO_ACK's cursors: only symbols the journal has ticks of. */
  helloAckCursors(names: string[]): { symbol: string; lastMsc: number; countAtMsc: number }[] {
    return [...this.#cursors].map(([k, c]) => ({
      symbol: names[k]!,
      lastMsc: c.lastMsc,
      countAtMsc: c.countAtMsc,
    }));
  }
}

// ---------------------------------------------------------------------------------------------
// Schedules
// ---------------------------------------------------------------------------------------------

type Op =
  /**
   * n new ticks for one symbol. `same`: in the newest tick's ms (a burst; late if a poll already
   * read that ms). `late`: in a ms between the newest tick and the last poll's `now`, which that
   * poll already covered. `next`: just after the clock. `ahead`: well past the next polls.
   * `spread`: one ms apart instead of all in one ms.
   */
  | {
      op: 'grow';
      symbol: number;
      n: number;
      when: 'same' | 'late' | 'next' | 'ahead';
      u: number;
      spread: boolean;
    }
  /** Advance the terminal clock by dt ms (0: poll the same ms again) and poll. */
  | { op: 'poll'; dt: number }
  /** The journal commits a prefix (u% of what is sent but uncommitted) and the ACK arrives. */
  | { op: 'ack'; u: number }
  /** As `ack`, but the ACK is lost: the EA learns it only from the next HELLO_ACK. */
  | { op: 'lostAck'; u: number }
  /** Reconnect, memory intact: resume(next_seq, cursors, amnesia = false). */
  | { op: 'reconnect' }
  /** EA restart: a new TickCapture adopts HELLO_ACK's next_seq and cursors. */
  | { op: 'restart' }
  /**
   * The bridge loses a suffix of its journal (u% of what it committed in this EA run), then the
   * EA reconnects, memory intact: below its buffer, HELLO_ACK's next_seq makes it adopt the
   * bridge's state.
   */
  | { op: 'lose'; u: number };

interface Weights {
  grow: number;
  poll: number;
  ack: number;
  lostAck: number;
  reconnect: number;
  restart: number;
  lose?: number;
}

function opArb(symbols: number, w: Weights): fc.Arbitrary<Op> {
  return fc.oneof(
    {
      weight: w.grow,
      arbitrary: fc.record({
        op: fc.constant('grow' as const),
        symbol: fc.nat(symbols - 1),
        n: fc.oneof(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 4, max: 12 })),
        when: fc.constantFrom('same' as const, 'late' as const, 'next' as const, 'ahead' as const),
        u: fc.nat(100),
        spread: fc.boolean(),
      }),
    },
    { weight: w.poll, arbitrary: fc.record({ op: fc.constant('poll' as const), dt: fc.nat(4) }) },
    { weight: w.ack, arbitrary: fc.record({ op: fc.constant('ack' as const), u: fc.nat(100) }) },
    { weight: w.lostAck, arbitrary: fc.record({ op: fc.constant('lostAck' as const), u: fc.nat(100) }) },
    { weight: w.reconnect, arbitrary: fc.constant({ op: 'reconnect' as const }) },
    { weight: w.restart, arbitrary: fc.constant({ op: 'restart' as const }) },
    {
      weight: w.lose ?? 0,
      arbitrary: fc.record({ op: fc.constant('lose' as const), u: fc.integer({ min: 1, max: 100 }) }),
    },
  );
}

interface Scenario {
  symbols: number;
  capacity: number;
  ops: Op[];
}

function scenarioArb(w: Weights, maxCapacity: number): fc.Arbitrary<Scenario> {
  return fc.integer({ min: 1, max: 3 }).chain((symbols) =>
    fc.record({
      symbols: fc.constant(symbols),
      capacity: fc.integer({ min: 1, max: maxCapacity }),
      ops: fc.array(opArb(symbols, w), { minLength: 1, maxLength: 80, size: 'medium' }),
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// The driver: runs a schedule against TickCapture, checking every step
// ---------------------------------------------------------------------------------------------

interface Outcome {
  restarts: number;
  /** Reconnects where the EA dropped its buffer for the bridge's state. */
  adoptions: number;
  pausedPolls: number;
  lateTicks: number;
}

function run(s: Scenario): Outcome {
  const terminal = new Terminal(s.symbols);
  const names = Array.from({ length: s.symbols }, (_, k) => `SYM${k}`);
  const views = names.map((_, k) => new HistoryView(terminal, k));
  const journal = new Journal();
  const out: Outcome = { restarts: 0, adoptions: 0, pausedPolls: 0, lateTicks: 0 };
  // Journal length when the current EA run started: what the bridge can never lose (see `lose`).
  let runStart = 0;
  let now = 0;
  let lastPollAt = Number.NEGATIVE_INFINITY;

  // What the EA captured and still holds, by seq: recorded when the seq was given.
  let held = new Map<number, ModelTick>();
  // Per symbol, the history index the current capture object must take next.
  let nextIndex: number[] = [];
  let capture!: TickCapture;

  const tickAt = (seq: number): ModelTick => {
    const { symbol, index } = capture.at(seq);
    const t = terminal.histories[symbol]?.[index];
    if (t === undefined) throw new Error(`at(${seq}) = {symbol ${symbol}, index ${index}}: no such tick`);
    return t;
  };

  /** A fresh capture object adopting HELLO_ACK after a connect with an empty memory. */
  const startEa = (): void => {
    capture = new TickCapture(names, views, s.capacity);
    capture.resume(journal.nextSeq, journal.helloAckCursors(names), true);
    runStart = journal.nextSeq - 1;
    adopted('restart');
  };

  /** After HELLO_ACK was adopted: an empty buffer at next_seq, each cursor just past the journal. */
  const adopted = (what: string): void => {
    held = new Map();
    // (2) numbering continues from HELLO_ACK's next_seq: no committed seq is given again.
    same(capture.nextSeq, journal.nextSeq, `${what}: nextSeq = HELLO_ACK next_seq`);
    same(capture.bufferStart, journal.nextSeq, `${what}: bufferStart = HELLO_ACK next_seq`);
    same(capture.buffered, 0, `${what}: empty buffer`);
    // (4) the cursor points just past what the journal holds of each symbol (for a symbol the
    // journal has nothing of, that is the run's origin: the start of history here).
    nextIndex = names.map((_, k) => {
      const pos = terminal.cursorPosition(k, capture.cursors[k]!);
      same(pos, journal.committedOf(k).length, `${what}: cursor of symbol ${k}`);
      return pos;
    });
  };

  const checkInvariants = (): void => {
    // (3) bounded buffer, and every held tick is still the one its seq was given to (no eviction,
    // no overwrite of an un-ACKed slot).
    holds(
      capture.buffered >= 0 && capture.buffered <= s.capacity,
      `buffered ${capture.buffered} within capacity`,
    );
    holds(
      capture.bufferStart <= journal.nextSeq && journal.nextSeq <= capture.nextSeq,
      `bufferStart ${capture.bufferStart} ≤ journal next_seq ${journal.nextSeq} ≤ nextSeq ${capture.nextSeq}`,
    );
    for (let seq = capture.bufferStart; seq < capture.nextSeq; seq++)
      same(tickAt(seq).id, held.get(seq)?.id, `held seq ${seq}`);
    // Cursors say exactly what this capture object has taken.
    names.forEach((_, k) => {
      const c = capture.cursors[k]!;
      same(terminal.cursorPosition(k, c), nextIndex[k], `cursor position of symbol ${k}`);
      const i = nextIndex[k]!;
      if (i > 0) same(c.lastMsc, terminal.histories[k]![i - 1]!.msc, `cursor ms of symbol ${k}`);
    });
  };

  const poll = (): number => {
    const before = capture.nextSeq;
    const wasFull = capture.buffered >= s.capacity;
    const cursorsBefore = capture.cursors.map((c) => ({ ...c }));
    const taken = capture.poll(now);
    lastPollAt = now;
    same(capture.nextSeq - before, taken, 'poll returns what it numbered');
    if (wasFull) {
      // (3) a full buffer pauses capture: nothing taken, cursors hold.
      out.pausedPolls++;
      same(taken, 0, 'a poll with a full buffer takes nothing');
      same(JSON.stringify(capture.cursors), JSON.stringify(cursorsBefore), 'a full buffer holds the cursors');
    }
    // (1)+(2) new seqs are contiguous, each tick the next one of its symbol in history order.
    for (let seq = before; seq < capture.nextSeq; seq++) {
      const t = tickAt(seq);
      same(t.index, nextIndex[t.symbol], `seq ${seq}: symbol ${t.symbol} history index`);
      holds(t.msc <= now, `seq ${seq}: tick at ${t.msc} taken by a poll at ${now}`);
      nextIndex[t.symbol]!++;
      held.set(seq, t);
    }
    // (1) no loss: unless the buffer filled, every symbol is caught up to `now`.
    if (capture.buffered < s.capacity)
      names.forEach((_, k) => {
        same(nextIndex[k], terminal.countUpTo(k, now), `symbol ${k} caught up to ${now}`);
      });
    return taken;
  };

  /** The journal commits seqs up to `upTo` (what the EA sent); ACK delivered or not. */
  const commit = (upTo: number, deliverAck: boolean): void => {
    for (let seq = journal.nextSeq; seq <= upTo; seq++) {
      const t = tickAt(seq);
      same(t.id, held.get(seq)?.id, `sent seq ${seq}`);
      journal.commit(seq, t);
    }
    if (deliverAck) {
      const start = capture.bufferStart;
      capture.ack(upTo);
      for (const seq of held.keys()) if (seq <= upTo) held.delete(seq);
      same(capture.bufferStart, Math.max(upTo + 1, start), 'ACK frees exactly up to its seq');
    }
  };

  const prefix = (u: number): number =>
    journal.nextSeq - 1 + Math.round((u / 100) * (capture.nextSeq - journal.nextSeq));

  startEa();
  for (const o of s.ops) {
    switch (o.op) {
      case 'grow': {
        const h = terminal.histories[o.symbol]!;
        const newest = h.length > 0 ? h[h.length - 1]!.msc : 0;
        let t: number;
        if (o.when === 'same') t = newest;
        else if (o.when === 'late') t = newest + Math.floor((o.u / 100) * Math.max(0, now - newest));
        else if (o.when === 'next') t = Math.max(newest, now + 1 + (o.u % 3));
        else t = Math.max(newest, now + 5 + o.u);
        for (let i = 0; i < o.n; i++) {
          const msc = t + (o.spread ? i : 0);
          if (msc <= lastPollAt) out.lateTicks++;
          terminal.append(o.symbol, msc);
        }
        break;
      }
      case 'poll':
        now += o.dt;
        poll();
        break;
      case 'ack':
        commit(prefix(o.u), true);
        break;
      case 'lostAck':
        commit(prefix(o.u), false);
        break;
      case 'reconnect': {
        capture.resume(journal.nextSeq, journal.helloAckCursors(names), false);
        for (const seq of held.keys()) if (seq < journal.nextSeq) held.delete(seq);
        // Below next_seq the bridge has it all; from next_seq on everything is still held.
        same(capture.bufferStart, journal.nextSeq, 'reconnect: bufferStart = HELLO_ACK next_seq');
        break;
      }
      case 'restart':
        out.restarts++;
        startEa();
        break;
      case 'lose': {
        const committedInRun = journal.nextSeq - 1 - runStart;
        journal.truncate(journal.nextSeq - 1 - Math.round((o.u / 100) * committedInRun));
        const adopt = journal.nextSeq < capture.bufferStart;
        capture.resume(journal.nextSeq, journal.helloAckCursors(names), false);
        if (adopt) {
          out.adoptions++;
          adopted('adoption');
        } else {
          for (const seq of held.keys()) if (seq < journal.nextSeq) held.delete(seq);
          same(capture.bufferStart, journal.nextSeq, 'reconnect: bufferStart = HELLO_ACK next_seq');
        }
        break;
      }
    }
    checkInvariants();
  }

  // Drain at the final `now`: commit and ACK everything, poll with an empty buffer, until a
  // poll with room takes nothing.
  for (let guard = 0; ; guard++) {
    if (guard > 10_000) throw new Error('drain does not finish');
    commit(capture.nextSeq - 1, true);
    checkInvariants();
    const taken = poll();
    checkInvariants();
    if (taken === 0) break;
  }

  // (1) every tick up to the final poll's time is committed exactly once, in history order per
  // symbol; (2) the journal's seqs are 1..N (it only accepts the next seq, so this is its length).
  const ids = journal.ticks.map((t) => t.id);
  expect(new Set(ids).size, 'no tick committed twice').toBe(ids.length);
  names.forEach((_, k) => {
    const want = terminal.histories[k]!.filter((t) => t.msc <= now).map((t) => t.id);
    expect(
      journal.committedOf(k).map((t) => t.id),
      `symbol ${k}: committed = history up to ${now}`,
    ).toEqual(want);
  });
  expect(journal.nextSeq - 1).toBe(names.reduce((n, _, k) => n + terminal.countUpTo(k, now), 0));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

const RUNS = 200;
const STATS = process.env.CAPTURE_STATS !== undefined;

describe('TickCapture against a model of the terminal (CopyTicksRange, late ticks, restarts)', () => {
  it('hand-written: a burst split by a full buffer, a late tick in a read ms, a restart', () => {
    const ops: Op[] = [
      { op: 'grow', symbol: 0, n: 5, when: 'next', u: 0, spread: false }, // 5 ticks at ms 1
      { op: 'poll', dt: 1 }, // now 1: takes 3 (capacity), pauses mid-millisecond
      { op: 'poll', dt: 0 }, // full: nothing
      { op: 'ack', u: 100 },
      { op: 'poll', dt: 0 }, // the other 2 of ms 1
      { op: 'grow', symbol: 0, n: 2, when: 'same', u: 0, spread: false }, // late, in ms 1 (read)
      { op: 'lostAck', u: 50 },
      { op: 'restart' },
      { op: 'poll', dt: 0 },
      { op: 'ack', u: 100 },
    ];
    const out = run({ symbols: 1, capacity: 3, ops });
    expect(out).toEqual({ restarts: 1, adoptions: 0, pausedPolls: 1, lateTicks: 2 });
  });

  it('(1)(2) every tick up to the final poll is taken once, in history order, seqs 1..N', () => {
    let restarts = 0;
    let late = 0;
    fc.assert(
      fc.property(
        scenarioArb({ grow: 6, poll: 6, ack: 3, lostAck: 1, reconnect: 1, restart: 1 }, 12),
        (s) => {
          const o = run(s);
          restarts += o.restarts;
          late += o.lateTicks;
        },
      ),
      { seed: 20240611, numRuns: RUNS },
    );
    if (STATS) console.log({ restarts, late });
    // The schedules really exercise what they claim to.
    expect(restarts).toBeGreaterThan(RUNS / 2);
    expect(late).toBeGreaterThan(RUNS);
  });

  it('(3) a full buffer never exceeds its capacity, never evicts, and pauses the cursors', () => {
    let paused = 0;
    fc.assert(
      fc.property(scenarioArb({ grow: 6, poll: 8, ack: 1, lostAck: 1, reconnect: 1, restart: 1 }, 3), (s) => {
        paused += run(s).pausedPolls;
      }),
      { seed: 7031, numRuns: RUNS },
    );
    if (STATS) console.log({ paused });
    expect(paused).toBeGreaterThan(RUNS);
  });

  it('(4) after EA restarts capture resumes exactly after the journal cursor', () => {
    let restarts = 0;
    fc.assert(
      fc.property(scenarioArb({ grow: 6, poll: 5, ack: 2, lostAck: 3, reconnect: 2, restart: 4 }, 6), (s) => {
        restarts += run(s).restarts;
      }),
      { seed: 990217, numRuns: RUNS },
    );
    if (STATS) console.log({ restarts });
    expect(restarts).toBeGreaterThan(RUNS * 2);
  });

  it('(5) a bridge that lost ACKed ticks is adopted: re-read from its cursors or the origin, nothing lost', () => {
    let adoptions = 0;
    fc.assert(
      fc.property(
        scenarioArb({ grow: 6, poll: 5, ack: 3, lostAck: 1, reconnect: 1, restart: 1, lose: 2 }, 8),
        (s) => {
          adoptions += run(s).adoptions;
        },
      ),
      { seed: 190619, numRuns: RUNS },
    );
    if (STATS) console.log({ adoptions });
    expect(adoptions).toBeGreaterThan(RUNS / 2);
  });

  it('hand-written adoption: the bridge loses a symbol entirely; it is re-read from where this run started it', () => {
    const ops: Op[] = [
      { op: 'grow', symbol: 0, n: 2, when: 'next', u: 0, spread: true },
      { op: 'grow', symbol: 1, n: 3, when: 'next', u: 0, spread: true },
      { op: 'poll', dt: 10 },
      { op: 'ack', u: 100 }, // seqs 1..5 committed and ACKed: the buffer is empty
      { op: 'grow', symbol: 1, n: 2, when: 'next', u: 0, spread: false },
      { op: 'poll', dt: 10 }, // seqs 6..7 held
      { op: 'lose', u: 100 }, // the journal is empty again: next_seq 1 < buffer start 6
      { op: 'poll', dt: 0 }, // everything re-read, seqs 1..7
    ];
    const out = run({ symbols: 2, capacity: 10, ops });
    expect(out.adoptions).toBe(1);
  });
});
