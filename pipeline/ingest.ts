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
 *
 * Server time (docs/operations.md#server-time-zones): a source with a configured rule
 * (`sourceTimeZones`, else `defaultServerTimeZone`) is converted with it, and refused with
 * ERR_TIME_ZONE whenever the clocks its terminal reports (HELLO, every HEARTBEAT) contradict
 * it; a source without a rule is converted with the offset its terminal reports, re-read at
 * every heartbeat. Either way no tick is converted with an offset the terminal contradicts.
 */
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import type { IngressHandler, IngressServer, ResumeState, Session } from '../bridge/server.js';
import type { Bar } from '../codecs/bar.js';
import { ErrorCode, fromWire, TickstreamError } from '../codecs/errors.js';
import { encodeBar, RecordHeader, SCHEMA_VERSION, TICK_RECORD_CONTENT_TYPE } from '../codecs/flat-record.js';
import type { Heartbeat } from '../codecs/messages.js';
import {
  checkReportedOffset,
  createServerClock,
  formatOffset,
  reportedOffsetRule,
  type ServerClock,
} from '../codecs/server-clock.js';
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
  /** The server clock rule in force when the first of these ticks arrived. */
  clockRule: string;
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

/** How a source's server time becomes UTC, as /status shows it. */
interface SourceClock {
  /** The rule its ticks are converted with now. */
  rule: string;
  /** Where the rule comes from: the config, or the offset the terminal reports (no rule configured). */
  ruleFrom: 'config' | 'terminal';
  /** The offset (server − GMT, ms) the terminal last reported. */
  reportedOffsetMs: number;
  /** Why the source is refused, while the terminal contradicts the configured rule. */
  problem: string | null;
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
  readonly #sourceClocks = new Map<string, SourceClock>();
  /** Per source: the next seq after what the journal has committed. */
  readonly #durableNext = new Map<string, number>();
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

  /** Per-source view for the status page: every source with a state or a clock heard from it. */
  sourceStates(): {
    source: string;
    nextSeq: number;
    committedSeq: number;
    lastTickAgeS: number | null;
    timeZoneRule: string | null;
    timeZoneRuleFrom: SourceClock['ruleFrom'] | null;
    reportedOffset: string | null;
    clockProblem: string | null;
  }[] {
    const now = Date.now();
    const sources = new Set([...this.#o.states.keys(), ...this.#sourceClocks.keys()]);
    return [...sources].map((source) => {
      const at = this.#lastTickAt.get(source);
      const clock = this.#sourceClocks.get(source);
      return {
        source,
        nextSeq: this.#o.states.get(source)?.nextSeq ?? 1,
        // Committed to the journal, whether or not the source is connected now.
        committedSeq: (this.#durableNext.get(source) ?? 1) - 1,
        lastTickAgeS: at === undefined ? null : (now - at) / 1000,
        timeZoneRule: clock?.rule ?? this.#configuredRule(source),
        timeZoneRuleFrom: clock?.ruleFrom ?? null,
        reportedOffset: clock ? formatOffset(clock.reportedOffsetMs) : null,
        clockProblem: clock?.problem ?? null,
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
    // Before HELLO_ACK: a terminal that contradicts its rule is refused before it sends a tick.
    const hello = this.#server?.session(source)?.hello;
    if (hello) this.#checkClock(source, hello.serverTimeMs, hello.gmtTimeMs);
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
    const clock = this.#sourceClocks.get(source);
    if (!clock || clock.problem !== null) {
      // Unreachable while the bridge asks resume() before reading ticks; never guess a clock.
      this.#o.metrics.rejectedFrames.inc({ code: ErrorCode.TIME_ZONE });
      session.fail(ErrorCode.TIME_ZONE, `no server clock rule for source ${source}: reconnect`);
      return;
    }
    let chunk = this.#pending.get(source);
    if (chunk && chunk.used + structs.length > chunk.bytes.length) {
      this.#flush(source);
      chunk = undefined;
    }
    if (!chunk) {
      const capacity = Math.max(this.#o.config.decodeBatchTicks, count) * session.structSize;
      chunk = {
        session,
        clockRule: clock.rule,
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
    try {
      this.#checkClock(session.source, hb.serverTimeMs, hb.gmtTimeMs);
    } catch (err) {
      const e = err as TickstreamError;
      this.#o.metrics.rejectedFrames.inc({ code: e.code });
      this.#server?.failSource(session.source, e.code, e.message);
      return;
    }
    const bars = this.#bars.heartbeat(session.source, hb.gmtTimeMs);
    if (bars.length) this.#publishBars(bars, session.source);
  }

  onSessionOpen(_session: Session): void {
    this.#o.metrics.sources.set(this.#server?.sources.length ?? 0);
  }

  /**
   * Applies the time-zone policy to the clocks a terminal reports (HELLO, HEARTBEAT). With a
   * configured rule: throws ERR_TIME_ZONE when the terminal contradicts it (the source is
   * refused until the rule or the terminal's clock is fixed; nothing is converted with a rule
   * known to be wrong). Without one: converts with the reported offset from now on.
   */
  #checkClock(source: string, serverTimeMs: number, gmtTimeMs: number): void {
    const configured = this.#configuredRule(source);
    const previous = this.#sourceClocks.get(source);
    const reportedOffsetMs = serverTimeMs - gmtTimeMs;
    if (configured !== null) {
      const problem = checkReportedOffset(this.#clock(configured), serverTimeMs, gmtTimeMs);
      const message =
        problem &&
        `${problem}; source ${source} is refused until sourceTimeZones (--source-time-zones ${source}=RULE) or the terminal's clock is fixed`;
      this.#sourceClocks.set(source, {
        rule: configured,
        ruleFrom: 'config',
        reportedOffsetMs,
        problem: message,
      });
      if (message === null) return;
      this.#o.metrics.clockMismatches.inc({ source });
      this.#o.logger.error(
        { source, rule: configured, reportedOffset: formatOffset(reportedOffsetMs) },
        message,
      );
      throw new TickstreamError(ErrorCode.TIME_ZONE, message);
    }
    let rule: string;
    try {
      rule = reportedOffsetRule(serverTimeMs, gmtTimeMs);
    } catch (err) {
      const message = `source ${source} has no time zone rule and its terminal reports an impossible offset (${(err as Error).message}): fix the terminal's clock or configure sourceTimeZones`;
      this.#sourceClocks.set(source, {
        rule: previous?.rule ?? '',
        ruleFrom: 'terminal',
        reportedOffsetMs,
        problem: message,
      });
      this.#o.metrics.clockMismatches.inc({ source });
      this.#o.logger.error({ source, reportedOffsetMs }, message);
      throw new TickstreamError(ErrorCode.TIME_ZONE, message);
    }
    if (previous?.ruleFrom === 'terminal' && previous.rule !== rule && previous.problem === null) {
      // Ticks already gathered were stamped under the old offset: decode them with it.
      this.#flush(source);
      this.#o.metrics.clockOffsetChanges.inc({ source });
      this.#o.logger.warn(
        { source, from: previous.rule, to: rule },
        `the terminal of source ${source} now reports ${rule} (was ${previous.rule}): ticks from now on are converted with ${rule}; configure sourceTimeZones so that DST switches apply at the tick's own time`,
      );
    } else if (previous === undefined || previous.ruleFrom !== 'terminal') {
      this.#o.logger.warn(
        { source, rule },
        `source ${source} has no time zone rule: its ticks are converted with the offset its terminal reports (${rule}), re-read at every heartbeat; ticks sent late across a DST switch would be off by the change: configure sourceTimeZones (--source-time-zones ${source}=Europe/Athens)`,
      );
    }
    this.#sourceClocks.set(source, { rule, ruleFrom: 'terminal', reportedOffsetMs, problem: null });
  }

  /** The configured rule of a source, or null when it has none (then its terminal's offset is used). */
  #configuredRule(source: string): string | null {
    return this.#o.config.sourceTimeZones[source] ?? (this.#o.config.defaultServerTimeZone || null);
  }

  #clock(rule: string): ServerClock {
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
      clockRule: chunk.clockRule,
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
