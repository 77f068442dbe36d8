/**
 * 1-minute bars per source and symbol, bucketed by the tick's UTC time and closed on event
 * time only — never the wall clock — so replaying the journal gives the same bars.
 *
 * A bar [start, start + 60 s) closes when
 *  (a) a later tick of the same source and symbol arrives, or
 *  (b) the source's event time passes start + 60 s + `closeGraceMs`; the source's event time is
 *      its newest tick (any symbol) or a heartbeat's GMT time. The grace keeps a symbol polled a
 *      moment after another (the EA copies symbols one after the other) from being cut short.
 * A tick for a minute that already closed for its source and symbol is late: counted, left out.
 * Minutes without ticks have no bar. The open bar is not published until it closes.
 *
 * Deterministic across restarts and replays (docs/architecture.md#deterministic-bars): a
 * heartbeat changes nothing unless it closes a bar (so only closing heartbeats need to be in the
 * journal), and `snapshot`/`restore` carry a source's open bars, event time and closed minutes
 * through the resume state, so a restarted bridge continues exactly where the journal stands.
 * `tick_count` counts every tick of the minute whatever its flags; bid OHLC and spread use every
 * tick; last-price OHLC uses ticks with the LAST flag; volume sums volume_real over ticks with
 * the LAST or VOLUME flag.
 *
 * The arithmetic stays finite because the decoder refuses prices of magnitude 1e15 or more and
 * volume_real of 1e15 or more (codecs/ticks.ts): a spread is below 2e15, a minute's sums below
 * 1e21 even over millions of ticks. Ticks outside the time window never get here (ingest.ts).
 */
import type { Bar } from '../codecs/bar.js';
import type { BarSnapshot } from '../codecs/bar-snapshot.js';
import { type TickBatch, TickFlag } from '../codecs/tick-batch.js';

const MINUTE = 60_000;
/** The grace the bridge closes bars with (see (b) above); a replay must use the same. */
export const BAR_CLOSE_GRACE_MS = 5000;

interface SourceBars {
  open: Map<string, Bar>;
  /** Per symbol: bars starting before this are closed. */
  closedBefore: Map<string, number>;
  eventTimeMs: number;
  /** Earliest end (+ grace) among open bars: event time reaching it closes something. */
  nextCloseMs: number;
}

export class BarAggregator {
  readonly #closeGraceMs: number;
  readonly #sources = new Map<string, SourceBars>();
  #lateTicks = 0;

  constructor(options: { closeGraceMs: number }) {
    this.#closeGraceMs = options.closeGraceMs;
  }

  /** Ticks that came for a minute already closed, since start. */
  get lateTicks(): number {
    return this.#lateTicks;
  }

  /** Adds a batch (in seq order) and returns the bars it closed, oldest first. */
  add(batch: TickBatch): Bar[] {
    const state = this.#source(batch.source);
    const closed: Bar[] = [];
    for (let i = 0; i < batch.length; i++) {
      const symbol = batch.symbols[batch.symbolIndex[i] as number] as string;
      const utc = batch.utcMsc[i] as number;
      const start = utc - (((utc % MINUTE) + MINUTE) % MINUTE);
      if (start < (state.closedBefore.get(symbol) ?? Number.NEGATIVE_INFINITY)) {
        this.#lateTicks++;
        continue;
      }
      let bar = state.open.get(symbol);
      if (bar && bar.startMs !== start) {
        closed.push(bar);
        state.closedBefore.set(symbol, bar.startMs + MINUTE);
        bar = undefined;
      }
      if (!bar) {
        bar = newBar(batch.source, symbol, start, batch, i);
        state.open.set(symbol, bar);
        const due = start + MINUTE + this.#closeGraceMs;
        if (due < state.nextCloseMs) state.nextCloseMs = due;
      } else {
        addTick(bar, batch, i);
      }
      // Checked per tick, not per batch, so the bars do not depend on how ticks were batched.
      if (utc > state.eventTimeMs) {
        state.eventTimeMs = utc;
        if (utc >= state.nextCloseMs) this.#closeByEventTime(state, closed);
      }
    }
    return closed;
  }

  /**
   * Forgets a source (idle past sourceForgetAfterMs) and returns its open bars, closed. A tick
   * for one of those minutes arriving after that (rare after so long) opens a second bar for it.
   */
  forget(source: string): Bar[] {
    const state = this.#sources.get(source);
    this.#sources.delete(source);
    return state ? [...state.open.values()].sort((a, b) => a.startMs - b.startMs) : [];
  }

  /**
   * A heartbeat's GMT time: when it reaches the end (+ grace) of an open bar, the source's event
   * time moves on to it and the bars of quiet symbols close. A heartbeat that closes nothing
   * changes nothing, so replaying the journal needs only the closing ones (pipeline/bar-replay.ts).
   */
  heartbeat(source: string, gmtMs: number): Bar[] {
    const state = this.#sources.get(source);
    if (!state || gmtMs < state.nextCloseMs) return [];
    if (gmtMs > state.eventTimeMs) state.eventTimeMs = gmtMs;
    const closed: Bar[] = [];
    this.#closeByEventTime(state, closed);
    return closed;
  }

  /** A source's bar state (copies), or null when the source has none. */
  snapshot(source: string): BarSnapshot | null {
    const state = this.#sources.get(source);
    if (!state) return null;
    return {
      eventTimeMs: Number.isFinite(state.eventTimeMs) ? state.eventTimeMs : null,
      open: [...state.open.values()].map((b) => ({ ...b })),
      closedBefore: [...state.closedBefore],
    };
  }

  /** Sets a source's bar state from a snapshot (replaces whatever the source had). */
  restore(source: string, snapshot: BarSnapshot): void {
    const state: SourceBars = {
      open: new Map(snapshot.open.map((b) => [b.symbol, { ...b, source }])),
      closedBefore: new Map(snapshot.closedBefore),
      eventTimeMs: snapshot.eventTimeMs ?? Number.NEGATIVE_INFINITY,
      nextCloseMs: Number.POSITIVE_INFINITY,
    };
    for (const bar of state.open.values())
      state.nextCloseMs = Math.min(state.nextCloseMs, bar.startMs + MINUTE + this.#closeGraceMs);
    this.#sources.set(source, state);
  }

  #closeByEventTime(state: SourceBars, closed: Bar[]): void {
    const horizon = state.eventTimeMs - this.#closeGraceMs;
    state.nextCloseMs = Number.POSITIVE_INFINITY;
    for (const [symbol, bar] of state.open) {
      if (bar.startMs + MINUTE <= horizon) {
        closed.push(bar);
        state.open.delete(symbol);
        state.closedBefore.set(symbol, bar.startMs + MINUTE);
      } else {
        state.nextCloseMs = Math.min(state.nextCloseMs, bar.startMs + MINUTE + this.#closeGraceMs);
      }
    }
  }

  #source(source: string): SourceBars {
    let state = this.#sources.get(source);
    if (!state) {
      state = {
        open: new Map(),
        closedBefore: new Map(),
        eventTimeMs: Number.NEGATIVE_INFINITY,
        nextCloseMs: Number.POSITIVE_INFINITY,
      };
      this.#sources.set(source, state);
    }
    return state;
  }
}

function newBar(source: string, symbol: string, startMs: number, batch: TickBatch, i: number): Bar {
  const bid = batch.bid[i] as number;
  const spread = (batch.ask[i] as number) - bid;
  const bar: Bar = {
    source,
    symbol,
    startMs,
    open: bid,
    high: bid,
    low: bid,
    close: bid,
    tickCount: 1,
    spreadMin: spread,
    spreadMax: spread,
    spreadSum: spread,
    lastOpen: Number.NaN,
    lastHigh: Number.NaN,
    lastLow: Number.NaN,
    lastClose: Number.NaN,
    volume: 0,
    lastSeq: batch.seq[i] as number,
  };
  addTrade(bar, batch, i);
  return bar;
}

function addTick(bar: Bar, batch: TickBatch, i: number): void {
  const bid = batch.bid[i] as number;
  const spread = (batch.ask[i] as number) - bid;
  if (bid > bar.high) bar.high = bid;
  if (bid < bar.low) bar.low = bid;
  bar.close = bid;
  bar.tickCount++;
  if (spread < bar.spreadMin) bar.spreadMin = spread;
  if (spread > bar.spreadMax) bar.spreadMax = spread;
  bar.spreadSum += spread;
  bar.lastSeq = batch.seq[i] as number;
  addTrade(bar, batch, i);
}

function addTrade(bar: Bar, batch: TickBatch, i: number): void {
  const flags = batch.flags[i] as number;
  if (flags & TickFlag.LAST) {
    const last = batch.last[i] as number;
    if (Number.isNaN(bar.lastOpen)) {
      bar.lastOpen = last;
      bar.lastHigh = last;
      bar.lastLow = last;
    } else {
      if (last > bar.lastHigh) bar.lastHigh = last;
      if (last < bar.lastLow) bar.lastLow = last;
    }
    bar.lastClose = last;
  }
  if (flags & (TickFlag.LAST | TickFlag.VOLUME)) bar.volume += batch.volumeReal[i] as number;
}
