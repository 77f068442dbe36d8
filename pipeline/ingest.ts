/**
 * The data path between the EA ingress and the sinks:
 *
 *   bridge (accepted TICKS bytes) → per-source pending chunk → decode pool (piscina, bytes
 *   transferred) → resequencer (per-source order) → source state + bars → Kafka journal
 *   transaction → ACK to the EA; and, without waiting for Kafka, the live views (Redis,
 *   websockets), which drop rather than block.
 *
 * Backpressure: ticks accepted but not committed are counted against `maxQueuedTicks`; past
 * it the bridge stops reading sockets (TCP backpressure), and while the journal has no room no
 * new credit is granted, so EAs stop sending by themselves.
 */
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import type { IngressHandler, IngressServer, ResumeState, Session } from '../bridge/server.js';
import type { Bar } from '../codecs/bar.js';
import { fromWire } from '../codecs/errors.js';
import { encodeBar, RecordHeader, SCHEMA_VERSION, TICK_RECORD_CONTENT_TYPE } from '../codecs/flat-record.js';
import type { Heartbeat } from '../codecs/messages.js';
import { checkReportedOffset, createServerClock, type ServerClock } from '../codecs/server-clock.js';
import { allocTickBatch, type TickBatch } from '../codecs/tick-batch.js';
import type { JournalRecord, KafkaJournal, SourceState } from '../sinks/kafka/journal.js';
import { BarAggregator } from './bars.js';
import type { Config } from './config.js';
import type { DecodeResult, DecodeTask } from './decode-worker.js';
import type { Logger } from './logger.js';
import type { PipelineMetrics } from './metrics.js';
import { Resequencer } from './resequencer.js';

/** A live view: takes a batch without blocking, drops what it cannot keep up with. */
export interface LiveSink {
  write(batch: TickBatch): void;
  writeBars(bars: Bar[]): void;
}

interface Chunk {
  session: Session;
  bytes: Uint8Array;
  used: number;
  frames: number[];
  symbols: string[];
  symbolIndex: Map<string, number>;
  firstSeq: number;
  total: number;
  receivedAtMs: number;
}

/** The worker file next to this module; under vitest (TypeScript sources) the built one. */
export function decodeWorkerUrl(): string {
  const here = import.meta.url;
  return here.endsWith('.ts')
    ? fileURLToPath(new URL('../dist/pipeline/decode-worker.js', here))
    : fileURLToPath(new URL('./decode-worker.js', here));
}

export interface IngestOptions {
  config: Config;
  journal: KafkaJournal;
  live: LiveSink[];
  metrics: PipelineMetrics;
  logger: Logger;
  states: Map<string, SourceState>;
  crashPoint?: (name: string) => void;
}

export class Ingest implements IngressHandler {
  readonly #o: IngestOptions;
  readonly #pool: Piscina;
  readonly #reseq: Resequencer<DecodeResult>;
  readonly #bars: BarAggregator;
  readonly #pending = new Map<string, Chunk>();
  readonly #poisonedFrom = new Map<string, number>();
  readonly #lastTickAt = new Map<string, number>();
  readonly #clocks = new Map<string, ServerClock>();
  /** Per source: the next seq after what the journal has committed. */
  readonly #durableNext = new Map<string, number>();
  readonly #clockWarned = new Set<string>();
  #server: IngressServer | null = null;
  #queuedTicks = 0;
  #flushScheduled = false;
  #appends = 0;

  constructor(options: IngestOptions) {
    this.#o = options;
    this.#pool = new Piscina({
      filename: decodeWorkerUrl(),
      minThreads: options.config.decodeThreads,
      maxThreads: options.config.decodeThreads,
      idleTimeout: 60_000,
    });
    this.#reseq = new Resequencer((source, result) => this.#release(source, result));
    this.#bars = new BarAggregator({ closeGraceMs: 5000 });
    options.metrics.queuedTicksLimit.set(options.config.maxQueuedTicks);
    for (const [source, state] of options.states) this.#durableNext.set(source, state.nextSeq);
  }

  attach(server: IngressServer): void {
    this.#server = server;
  }

  get queuedTicks(): number {
    return this.#queuedTicks;
  }

  /** Decode tasks and journal appends still in flight. */
  get busy(): boolean {
    return this.#pending.size > 0 || this.#reseq.pending() > 0 || this.#appends > 0;
  }

  /** Per-source view for the status page. */
  sourceStates(): { source: string; nextSeq: number; committedSeq: number; lastTickAgeS: number | null }[] {
    const now = Date.now();
    return [...this.#o.states.values()].map((s) => {
      const at = this.#lastTickAt.get(s.source);
      return {
        source: s.source,
        nextSeq: s.nextSeq,
        // Committed to the journal, whether or not the source is connected now.
        committedSeq: (this.#durableNext.get(s.source) ?? 1) - 1,
        lastTickAgeS: at === undefined ? null : (now - at) / 1000,
      };
    });
  }

  hasRoom(): boolean {
    return this.#o.journal.hasRoom() && this.#queuedTicks < this.#o.config.maxQueuedTicks;
  }

  async resume(source: string): Promise<ResumeState> {
    // The replaced session's accepted ticks must be decoded and counted before we say where
    // this source stands, or the EA would be told to resend (or skip) some of them.
    this.#flush(source);
    while (this.#reseq.pending(source) > 0 || this.#pending.has(source))
      await new Promise((r) => setTimeout(r, 1));
    // …and committed: HELLO_ACK promises exactly what is durable, never ticks still in flight.
    while ((this.#durableNext.get(source) ?? 1) < (this.#o.states.get(source)?.nextSeq ?? 1)) {
      const failed = this.#o.journal.failure;
      if (failed) throw failed;
      await new Promise((r) => setTimeout(r, 2));
    }
    this.#poisonedFrom.delete(source);
    const state = this.#o.states.get(source);
    return {
      nextSeq: state?.nextSeq ?? 1,
      cursors: Object.entries(state?.cursors ?? {}).map(([symbol, c]) => ({
        symbol,
        lastMsc: c.lastMsc,
        countAtMsc: c.countAtMsc,
      })),
    };
  }

  onTicks(
    session: Session,
    symbol: string,
    firstSeq: number,
    count: number,
    structs: Uint8Array,
    receivedAtMs: number,
  ): void {
    const source = session.source;
    let chunk = this.#pending.get(source);
    if (chunk && chunk.used + structs.length > chunk.bytes.length) {
      this.#flush(source);
      chunk = undefined;
    }
    if (!chunk) {
      const capacity = Math.max(this.#o.config.decodeBatchTicks, count) * session.structSize;
      chunk = {
        session,
        bytes: new Uint8Array(capacity),
        used: 0,
        frames: [],
        symbols: [],
        symbolIndex: new Map(),
        firstSeq,
        total: 0,
        receivedAtMs,
      };
      this.#pending.set(source, chunk);
    }
    let index = chunk.symbolIndex.get(symbol);
    if (index === undefined) {
      index = chunk.symbols.length;
      chunk.symbols.push(symbol);
      chunk.symbolIndex.set(symbol, index);
    }
    chunk.bytes.set(structs, chunk.used);
    chunk.used += structs.length;
    chunk.frames.push(index, count);
    chunk.total += count;
    this.#queuedTicks += count;
    this.#o.metrics.ticksReceived.inc({ source }, count);
    this.#lastTickAt.set(source, Date.now());
    if (chunk.total >= this.#o.config.decodeBatchTicks) this.#flush(source);
    else if (!this.#flushScheduled) {
      // Gather what arrives in this turn of the event loop, then decode it.
      this.#flushScheduled = true;
      setImmediate(() => {
        this.#flushScheduled = false;
        for (const s of [...this.#pending.keys()]) this.#flush(s);
      });
    }
    this.#backpressure();
  }

  onHeartbeat(session: Session, hb: Heartbeat): void {
    this.#checkClock(session.source, hb.serverTimeMs, hb.gmtTimeMs);
    const bars = this.#bars.heartbeat(session.source, hb.gmtTimeMs);
    if (bars.length) this.#publishBars(bars, session.source);
  }

  onSessionOpen(session: Session): void {
    this.#o.metrics.sources.set(this.#server?.sources.length ?? 0);
    if (session.hello) this.#checkClock(session.source, session.hello.serverTimeMs, session.hello.gmtTimeMs);
  }

  /** Warns (once per source until it agrees again) when the terminal's clock contradicts the rule. */
  #checkClock(source: string, serverTimeMs: number, gmtTimeMs: number): void {
    const problem = checkReportedOffset(this.#clockFor(source), serverTimeMs, gmtTimeMs);
    if (problem === null) this.#clockWarned.delete(source);
    else if (!this.#clockWarned.has(source)) {
      this.#clockWarned.add(source);
      this.#o.metrics.clockMismatches.inc({ source });
      this.#o.logger.warn({ source }, problem);
    }
  }

  #clockFor(source: string): ServerClock {
    const rule = this.#o.config.sourceTimeZones[source] ?? this.#o.config.defaultServerTimeZone;
    let clock = this.#clocks.get(rule);
    if (!clock) {
      clock = createServerClock(rule);
      this.#clocks.set(rule, clock);
    }
    return clock;
  }

  onSessionClose(session: Session): void {
    this.#flush(session.source);
    this.#o.metrics.sources.set(this.#server?.sources.length ?? 0);
  }

  onRejected(code: string): void {
    this.#o.metrics.rejectedFrames.inc({ code });
  }

  onDuplicate(session: Session, ticks: number): void {
    this.#o.metrics.duplicates.inc({ source: session.source }, ticks);
  }

  onGap(session: Session, expected: number, got: number): void {
    this.#o.metrics.gaps.inc({ source: session.source });
    this.#o.metrics.resends.inc();
    this.#o.logger.warn({ source: session.source, expected, got }, 'seq gap: RESEND sent');
  }

  /** Flushes every pending chunk and waits until the journal has committed all of it. */
  async drain(deadlineMs: number): Promise<boolean> {
    for (const s of [...this.#pending.keys()]) this.#flush(s);
    const until = Date.now() + deadlineMs;
    while (this.busy && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    return !this.busy;
  }

  async close(): Promise<void> {
    await this.#pool.destroy();
  }

  #flush(source: string): void {
    const chunk = this.#pending.get(source);
    if (!chunk) return;
    this.#pending.delete(source);
    const bytes = chunk.bytes.buffer.slice(0, chunk.used) as ArrayBuffer;
    const frames = Uint32Array.from(chunk.frames);
    const task: DecodeTask = {
      source,
      symbols: chunk.symbols,
      structSize: chunk.session.structSize,
      clockRule: this.#o.config.sourceTimeZones[source] ?? this.#o.config.defaultServerTimeZone,
      recordTicks: this.#o.config.recordTicks,
      bytes,
      frames,
      firstSeq: chunk.firstSeq,
      total: chunk.total,
      receivedAtMs: chunk.receivedAtMs,
    };
    const ticket = this.#reseq.ticket(source);
    this.#o.metrics.decodeBatchTicks.observe(chunk.total);
    this.#pool.run(task, { transferList: [bytes, frames.buffer] }).then(
      (result: DecodeResult) => this.#reseq.done(source, ticket, result),
      (err: Error) => {
        this.#o.logger.error({ err: err.message, source }, 'decode worker failed');
        this.#reseq.done(source, ticket, {
          firstSeq: chunk.firstSeq,
          total: chunk.total,
          batch: allocTickBatch(source, [], 0),
          records: [],
          cursors: [],
          error: { code: 'ERR_INTERNAL', message: `decode worker failed: ${err.message}` },
        });
      },
    );
  }

  #release(source: string, result: DecodeResult): void {
    const { batch, firstSeq } = result;
    const poisoned = this.#poisonedFrom.get(source);
    if (result.error || (poisoned !== undefined && firstSeq >= poisoned)) {
      // Nothing of this task reaches the journal: the source resumes from its first seq.
      this.#queuedTicks -= result.total;
      if (result.error && poisoned === undefined) {
        const err = fromWire(result.error);
        this.#poisonedFrom.set(source, firstSeq);
        this.#o.metrics.rejectedFrames.inc({ code: err.code });
        this.#o.logger.warn(
          { source, code: err.code, reason: err.message },
          'ticks refused by the decoder; closing the source',
        );
        this.#server?.failSource(source, err.code, err.message);
      }
      this.#backpressure();
      return;
    }
    this.#o.metrics.ticksDecoded.inc(batch.length);
    const state = this.#o.states.get(source) ?? { source, nextSeq: 1, cursors: {}, updatedAtMs: 0 };
    const lastSeq = batch.seq[batch.length - 1] as number;
    state.nextSeq = lastSeq + 1;
    state.updatedAtMs = Date.now();
    for (const c of result.cursors) {
      const prev = state.cursors[c.symbol];
      state.cursors[c.symbol] =
        c.allAtLast && prev && prev.lastMsc === c.lastMsc
          ? { lastMsc: c.lastMsc, countAtMsc: prev.countAtMsc + c.countAtLast }
          : { lastMsc: c.lastMsc, countAtMsc: c.countAtLast };
    }
    this.#o.states.set(source, state);
    const bars = this.#bars.add(batch);
    this.#o.metrics.lateBarTicks.set(this.#bars.lateTicks);

    this.#o.crashPoint?.('after-decode-before-produce');
    const ticks: JournalRecord[] = [];
    let from = 0;
    for (const value of result.records) {
      const to = Math.min(batch.length, from + this.#o.config.recordTicks);
      ticks.push({
        key: source,
        value,
        headers: {
          [RecordHeader.SOURCE]: source,
          [RecordHeader.SEQ_FIRST]: String(batch.seq[from]),
          [RecordHeader.SEQ_LAST]: String(batch.seq[to - 1]),
          [RecordHeader.SCHEMA_VERSION]: String(SCHEMA_VERSION),
          [RecordHeader.CONTENT]: TICK_RECORD_CONTENT_TYPE,
        },
      });
      from = to;
    }
    const snapshot: SourceState = { ...state, cursors: { ...state.cursors } };
    this.#appends++;
    this.#o.journal
      .append({ ticks, bars: bars.map((b) => barRecord(b)), states: [snapshot] })
      .then(
        () => {
          this.#queuedTicks -= batch.length;
          this.#o.metrics.ticksCommitted.inc({ source }, batch.length);
          this.#durableNext.set(source, lastSeq + 1);
          if (batch.receivedAtMs)
            this.#o.metrics.receiptToCommit.observe(
              (performance.timeOrigin + performance.now() - batch.receivedAtMs) / 1000,
            );
          this.#o.crashPoint?.('after-commit-before-ack');
          this.#server?.ack(source, lastSeq);
          this.#backpressure();
        },
        (err: Error) =>
          this.#o.logger.error(
            { err: err.message, source },
            'journal append failed: these ticks stay un-ACKed',
          ),
      )
      .finally(() => this.#appends--);
    for (const sink of this.#o.live) sink.write(batch);
    if (bars.length) for (const sink of this.#o.live) sink.writeBars(bars);
    this.#o.metrics.barsClosed.inc(bars.length);
  }

  #publishBars(bars: Bar[], source: string): void {
    this.#o.metrics.barsClosed.inc(bars.length);
    this.#appends++;
    this.#o.journal
      .append({ ticks: [], bars: bars.map((b) => barRecord(b)), states: [] })
      .catch((err: Error) =>
        this.#o.logger.error({ err: err.message, source }, 'journal append of bars failed'),
      )
      .finally(() => this.#appends--);
    for (const sink of this.#o.live) sink.writeBars(bars);
  }

  #backpressure(): void {
    const limit = this.#o.config.maxQueuedTicks;
    this.#o.metrics.queuedTicks.set(this.#queuedTicks);
    if (this.#queuedTicks >= limit) this.#server?.setPaused(true);
    else if (this.#queuedTicks < limit * 0.8) {
      this.#server?.setPaused(false);
    }
  }
}

function barRecord(bar: Bar): JournalRecord {
  return {
    key: bar.source,
    value: encodeBar(bar),
    headers: { [RecordHeader.SOURCE]: bar.source, symbol: bar.symbol },
  };
}
