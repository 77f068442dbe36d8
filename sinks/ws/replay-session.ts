/**
 * Websocket sessions that read the tick journal (docs/websocket.md):
 *
 * - **replay** (`{"op":"replay","id":…}`): the journal's ticks of a range, matching channels,
 *   paced on event time (`speed`), as `replay` messages and a final `replay_end`;
 * - **resume** (`{"op":"resume","after":{SOURCE:SEQ}}`): the ticks a reconnecting client missed,
 *   from the journal, then the live ticks that arrived meanwhile (held per client), with no hole
 *   and no repeat per (source, seq).
 *
 * Both pull the journal a batch at a time through a cursor the server is given (serve wires the
 * Kafka one), wait for the client's drain whenever its unsent bytes pass the limit (never drop)
 * and yield the event loop between records, so the live path is never held up by them.
 */
import { ErrorCode, TickstreamError } from '../../codecs/errors.js';
import { decodeTickRecord, type TickRecordEncoder } from '../../codecs/flat-record.js';
import type { TickBatch } from '../../codecs/tick-batch.js';
import { pick, tickObjects } from './messages.js';

/** One journal record, routed by its key (the source) and seq headers without decoding. */
export interface JournalRecord {
  key: string;
  value: Uint8Array;
  /** NaN when the record has no seq headers. */
  seqFirst: number;
  seqLast: number;
}

/** Committed records from the journal's start; `next()` returns [] when none came in a poll. */
export interface JournalCursor {
  next(): Promise<JournalRecord[]>;
  /** True once every partition was read up to its end as of the opening. */
  readonly reachedOpeningEnd: boolean;
  close(): Promise<void>;
}

export type OpenJournal = () => Promise<JournalCursor>;

export interface PacerLike {
  wait(eventTimeMs: number): Promise<void>;
}

/** The socket as sessions see it. */
export interface SessionSocket {
  readonly binary: boolean;
  readonly closed: boolean;
  send(data: string | Uint8Array, binary: boolean): void;
  buffered(): number;
}

interface SessionContext {
  socket: SessionSocket;
  maxBuffered: number;
  encoder: TickRecordEncoder;
  /** Records decoded between two yields of the event loop. */
  ticksPerTurn: number;
}

/** Base: backpressure waits, cancellation, yields. */
abstract class JournalSession {
  protected readonly ctx: SessionContext;
  #cancelled = false;
  #drained: (() => void) | null = null;
  #sinceYield = 0;

  constructor(ctx: SessionContext) {
    this.ctx = ctx;
  }

  get cancelled(): boolean {
    return this.#cancelled || this.ctx.socket.closed;
  }

  cancel(): void {
    this.#cancelled = true;
    this.drained();
  }

  /** The server calls this on the socket's drain (and on close). */
  drained(): void {
    const wake = this.#drained;
    this.#drained = null;
    wake?.();
  }

  /** Resolves once the client's unsent bytes are at most the limit (or the session ended). */
  protected async room(): Promise<void> {
    while (!this.cancelled && this.ctx.socket.buffered() > this.ctx.maxBuffered) {
      await new Promise<void>((resolve) => {
        this.#drained = resolve;
      });
    }
  }

  /** Gives the event loop back after `ticksPerTurn` decoded ticks. */
  protected async turn(ticks: number): Promise<void> {
    this.#sinceYield += ticks;
    if (this.#sinceYield < this.ctx.ticksPerTurn) return;
    this.#sinceYield = 0;
    await new Promise((resolve) => setImmediate(resolve));
  }

  /** Rows of each symbol of `batch` that `keep` accepts, in order. */
  protected slices(batch: TickBatch, keep: (symbol: string, i: number) => boolean): Map<string, number[]> {
    const out = new Map<string, number[]>();
    for (let i = 0; i < batch.length; i++) {
      const symbol = batch.symbols[batch.symbolIndex[i] as number] ?? '';
      if (!keep(symbol, i)) continue;
      let rows = out.get(symbol);
      if (!rows) {
        rows = [];
        out.set(symbol, rows);
      }
      rows.push(i);
    }
    return out;
  }
}

export const channelMatches = (channels: ReadonlySet<string>, source: string, symbol: string): boolean =>
  channels.has('*') || channels.has(symbol) || channels.has(`${source}:${symbol}`);

export interface ReplayRequest {
  id: string;
  channels: ReadonlySet<string>;
  /** Only this source (required with seq bounds). */
  source: string | null;
  fromMs: number;
  toMs: number;
  fromSeq: number;
  toSeq: number;
}

export class ReplaySession extends JournalSession {
  readonly #req: ReplayRequest;
  readonly #pacer: PacerLike;
  #ticks = 0;

  constructor(ctx: SessionContext, req: ReplayRequest, pacer: PacerLike) {
    super(ctx);
    this.#req = req;
    this.#pacer = pacer;
  }

  get id(): string {
    return this.#req.id;
  }

  /** Sends the range; resolves with the ticks sent (the caller sends `replay_end`). */
  async run(cursor: JournalCursor, onTicks: (n: number) => void): Promise<number> {
    const r = this.#req;
    const idJson = JSON.stringify(r.id);
    while (!this.cancelled) {
      const records = await cursor.next();
      for (const rec of records) {
        if (this.cancelled) break;
        if (r.source !== null && rec.key !== r.source) continue;
        if (rec.seqLast < r.fromSeq || rec.seqFirst > r.toSeq) continue;
        const batch = decodeTickRecord(rec.value);
        await this.turn(batch.length);
        const slices = this.slices(batch, (symbol, i) => {
          const seq = batch.seq[i] as number;
          const time = batch.utcMsc[i] as number;
          return (
            seq >= r.fromSeq &&
            seq <= r.toSeq &&
            time >= r.fromMs &&
            time < r.toMs &&
            channelMatches(r.channels, batch.source, symbol)
          );
        });
        for (const [symbol, idx] of slices) {
          await this.#pacer.wait(batch.utcMsc[idx[0] as number] as number);
          await this.room();
          if (this.cancelled) break;
          const head = `{"type":"replay","id":${idJson},"source":${JSON.stringify(batch.source)},"symbol":${JSON.stringify(symbol)}`;
          if (this.ctx.socket.binary) {
            // Text header, then the ticks as one binary TickRecord in the same turn: nothing
            // can come between the two.
            this.ctx.socket.send(`${head},"count":${idx.length},"binary":true}`, false);
            this.ctx.socket.send(this.ctx.encoder.encode(pick(batch, idx)), true);
          } else this.ctx.socket.send(`${head},"ticks":[${tickObjects(batch, idx)}]}`, false);
          this.#ticks += idx.length;
          onTicks(idx.length);
        }
      }
      if (cursor.reachedOpeningEnd) break;
    }
    return this.#ticks;
  }
}

/** A live slice held for a resuming client until its catch-up from the journal is over. */
interface Held {
  batch: TickBatch;
  symbol: string;
}

export interface ResumeOptions {
  channels: ReadonlySet<string>;
  /** Source → the last seq the client has. */
  after: ReadonlyMap<string, number>;
  /** Source → the newest seq published live before the resume (the journal must reach it). */
  targets: ReadonlyMap<string, number>;
  maxHeldTicks: number;
  /** Give up when the journal brings nothing new for this long before the catch-up is over. */
  idleTimeoutMs: number;
}

/**
 * Catch-up of one client. While active, the server hands it the live slices of the sources
 * named in `after` (`hold`) instead of sending them. The journal is read until it covers, for
 * every such source, the newest seq published live before the resume began (live ticks reach
 * websockets before their Kafka commit, so the journal is followed past its end as of the
 * opening until they are committed); the held slices then go out without the seqs the journal
 * already covered. Ticks of a source: journal (after, covered], then held (covered, …].
 */
export class ResumeSession extends JournalSession {
  readonly #o: ResumeOptions;
  /** Source → highest seq read from the journal (every symbol, sent or not). */
  readonly #covered = new Map<string, number>();
  #held: Held[] = [];
  #heldTicks = 0;
  #active = true;
  #overflow = false;

  constructor(ctx: SessionContext, options: ResumeOptions) {
    super(ctx);
    this.#o = options;
    for (const [source, seq] of options.after) this.#covered.set(source, seq);
  }

  /** True while live ticks of `source` must be handed to `hold`. */
  holds(source: string): boolean {
    return this.#active && this.#covered.has(source);
  }

  /** Keeps a live slice; false when over the bound (the session then fails with ERR_LIMIT). */
  hold(batch: TickBatch, symbol: string, idx: number[]): boolean {
    if (this.#overflow) return false;
    if (this.#heldTicks + idx.length > this.#o.maxHeldTicks) {
      this.#overflow = true;
      this.#held = [];
      this.drained();
      return false;
    }
    this.#heldTicks += idx.length;
    this.#held.push({ batch: pick(batch, idx), symbol });
    return true;
  }

  get overflowed(): boolean {
    return this.#overflow;
  }

  #done(cursor: JournalCursor): boolean {
    if (!cursor.reachedOpeningEnd) return false;
    for (const [source, target] of this.#o.targets)
      if ((this.#covered.get(source) ?? 0) < target) return false;
    return true;
  }

  /**
   * Runs the catch-up; resolves with the covered seq per source when it is over, or throws a
   * TickstreamError (ERR_LIMIT over the held bound, ERR_KAFKA when the journal stalls).
   */
  async run(cursor: JournalCursor, onTicks: (n: number) => void): Promise<Record<string, number>> {
    let progressAt = Date.now();
    while (!this.cancelled && !this.#overflow && !this.#done(cursor)) {
      const records = await cursor.next();
      if (records.length) progressAt = Date.now();
      else if (Date.now() - progressAt > this.#o.idleTimeoutMs)
        throw new TickstreamError(
          ErrorCode.KAFKA,
          `the journal brought nothing new for ${this.#o.idleTimeoutMs} ms before the resume caught up with live: resume again later`,
        );
      for (const rec of records) {
        if (this.cancelled || this.#overflow) break;
        const covered = this.#covered.get(rec.key);
        if (covered === undefined || rec.seqLast <= covered) continue;
        const batch = decodeTickRecord(rec.value);
        await this.turn(batch.length);
        const from = this.#covered.get(rec.key) ?? covered;
        let top = from;
        const slices = this.slices(batch, (symbol, i) => {
          const seq = batch.seq[i] as number;
          if (seq <= from) return false;
          if (seq > top) top = seq;
          return channelMatches(this.#o.channels, batch.source, symbol);
        });
        for (const [symbol, idx] of slices) {
          await this.room();
          if (this.cancelled || this.#overflow) break;
          this.#send(batch, symbol, idx, true);
          onTicks(idx.length);
        }
        this.#covered.set(rec.key, top);
      }
    }
    if (this.#overflow) throw this.#overflowError();
    const covered = Object.fromEntries(this.#covered);
    if (this.cancelled) return covered;
    // What the journal covered per source: the held live ticks are sent above it only.
    this.ctx.socket.send(JSON.stringify({ type: 'resumed', sources: covered }), false);
    // The held live slices, without what the journal covered; new live ticks keep being held
    // until the last one is out, so the order stays.
    while (this.#held.length && !this.cancelled) {
      await this.room();
      if (this.#overflow) throw this.#overflowError();
      const h = this.#held.shift();
      if (!h) break;
      this.#heldTicks -= h.batch.length;
      const floor = this.#covered.get(h.batch.source) ?? 0;
      const idx: number[] = [];
      for (let i = 0; i < h.batch.length; i++) if ((h.batch.seq[i] as number) > floor) idx.push(i);
      if (idx.length === 0) continue;
      // The floor stays the journal's: the held slices never overlap each other, and a batch's
      // later symbols carry seqs below its earlier symbols' last ones.
      this.#send(h.batch, h.symbol, idx, false);
    }
    this.#active = false;
    return covered;
  }

  #overflowError(): TickstreamError {
    return new TickstreamError(
      ErrorCode.LIMIT,
      `more than ${this.#o.maxHeldTicks} live ticks arrived while the resume caught up (wsResumeMaxHeldTicks): reconnect and resume again from the last seq you got`,
    );
  }

  #send(batch: TickBatch, symbol: string, idx: number[], resumed: boolean): void {
    const s = this.ctx.socket;
    if (s.binary) s.send(this.ctx.encoder.encode(pick(batch, idx)), true);
    else
      s.send(
        `{"type":"ticks","source":${JSON.stringify(batch.source)},"symbol":${JSON.stringify(symbol)},"rt":${batch.receivedAtMs}${resumed ? ',"resumed":true' : ''},"ticks":[${tickObjects(batch, idx)}]}`,
        false,
      );
  }
}

// Date.parse takes a date-time without a zone as local time: such input is made UTC first.
const ISO_TIME = /^\d{4}-\d{2}-\d{2}(?:[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)(Z|[+-]\d{2}:\d{2})?)?$/i;

/** A replay bound: epoch ms (number or digits) or a UTC ISO time; NaN when it is neither. */
export function parseTime(raw: string | number): number {
  if (typeof raw === 'number') return raw;
  if (/^\d+$/.test(raw)) return Number(raw);
  const m = ISO_TIME.exec(raw);
  const zone = m?.[1] !== undefined && m[2] === undefined ? 'Z' : '';
  return m ? Date.parse(`${raw.replace(' ', 'T')}${zone}`) : Number.NaN;
}
