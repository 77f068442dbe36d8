/**
 * The data path between the EA ingress and the sinks:
 *
 *   bridge (accepted TICKS bytes) → per-source pending chunk → decode pool (piscina, bytes
 *   transferred) → resequencer (per-source order) → source state + bars → Kafka journal
 *   transaction → ACK to the EA; and, without waiting for Kafka, the live views (Redis,
 *   websockets), which drop rather than block.
 *
 * Three files: batching and the decode pool (pipeline/ingest-batcher.ts); commit and fan-out
 * (pipeline/ingest-commit.ts); and here, between them, each source's state, its durable seq
 * and resume, clocks, time window, bars, limits and credit.
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
 *
 * Time sanity: a tick later than `tickMaxAheadMs` past the bridge's clock, or past the source's
 * own clock (its HELLO/heartbeat GMT time, advanced by the bridge's clock since), or (when
 * `tickMaxBehindMs` is set) earlier than that before the bridge's clock, is journaled like any
 * other (it is what the terminal sent, and seqs stay contiguous) but held out of the live views
 * and the bars, counted and logged. One tick dated 2999 once poisoned a Redis stream's IDs and a
 * symbol's bars for good.
 *
 * Bounded state: live state (bars, snapshots, clocks, metric labels) is kept for `maxSources`
 * sources and `maxSymbols` (source, symbol) pairs; one more is refused with ERR_LIMIT. A source
 * without a session or a tick for `sourceForgetAfterMs` is forgotten (its open bars are closed
 * and published first). Its resume state stays: forgetting it would make the EA resend from
 * seq 1. Only the first `metricsMaxSourceLabels` sources (until forgotten) get a `source`
 * label; the others count under `_other`.
 */
import type { IngressHandler, IngressServer, ResumeState, Session } from '../bridge/server.js';
import type { Bar } from '../codecs/bar.js';
import { BarJournalHeader, barSnapshotFromJson, barSnapshotToJson } from '../codecs/bar-snapshot.js';
import { ErrorCode, fromWire, TickstreamError } from '../codecs/errors.js';
import type { Heartbeat } from '../codecs/messages.js';
import {
  checkReportedOffset,
  createServerClock,
  formatOffset,
  reportedOffsetRule,
  type ServerClock,
} from '../codecs/server-clock.js';
import { allocTickBatch, type TickBatch } from '../codecs/tick-batch.js';
import type { JournalRecord, SourceState } from '../sinks/kafka/journal.js';
import { BAR_CLOSE_GRACE_MS, BarAggregator } from './bars.js';
import type { Config } from './config.js';
import type { DecodeResult } from './decode-worker.js';
import { DecodeBatcher } from './ingest-batcher.js';
import { IngestCommit, type IngestJournal, type LiveSink } from './ingest-commit.js';
import type { Logger } from './logger.js';
import type { PipelineMetrics } from './metrics.js';

/** The `source` label of sources past metricsMaxSourceLabels. */
export const OTHER_SOURCES_LABEL = '_other';
/** Out-of-window ticks are logged at most this often per source. */
const TIME_LOG_INTERVAL_MS = 10_000;

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

/** What the ingest needs of the ingress server (a fake in tests). */
export type IngestServer = Pick<IngressServer, 'ack' | 'failSource' | 'setPaused' | 'session' | 'sources'>;

/** Claims a source for this bridge at HELLO and says where the journal stands (pipeline/source-claims.ts). */
export interface SourceClaimer {
  claim(source: string): Promise<SourceState>;
}

export interface IngestOptions {
  config: Config;
  journal: IngestJournal;
  claims: SourceClaimer;
  live: LiveSink[];
  metrics: PipelineMetrics;
  logger: Logger;
  states: Map<string, SourceState>;
  crashPoint?: (name: string) => void;
  /** Merged feeds (pipeline/merged-feed.ts): member batches in release order, sources going down. */
  feeds?: FeedHook;
}

/** What the ingest tells the merged feeds; their records join the batch's journal entry. */
export interface FeedHook {
  follows(source: string): boolean;
  onBatch(batch: TickBatch, live: TickBatch): { records: JournalRecord[]; bars: Bar[] };
  onDown(source: string, reason: 'disconnect' | 'clock'): void;
}

export class Ingest implements IngressHandler {
  readonly #o: IngestOptions;
  readonly #decode: DecodeBatcher;
  readonly #bars: BarAggregator;
  readonly #poisonedFrom = new Map<string, number>();
  readonly #lastTickAt = new Map<string, number>();
  readonly #clocks = new Map<string, ServerClock>();
  readonly #sourceClocks = new Map<string, SourceClock>();
  /** Per source: the next seq after what the journal has committed. */
  readonly #durableNext = new Map<string, number>();
  /** Sources another bridge claimed: nothing of theirs commits here until they say HELLO again. */
  readonly #fenced = new Set<string>();
  /** Source → when last seen (session open, tick, heartbeat): the sources with live state. */
  readonly #active = new Map<string, number>();
  /** Known symbols of each active source; #symbolCount pairs in all. */
  readonly #symbolsOf = new Map<string, Set<string>>();
  #symbolCount = 0;
  /** The source's own clock: its last reported GMT time, and the bridge's clock then. */
  readonly #gmtClocks = new Map<string, { gmtMs: number; atMs: number }>();
  readonly #timeLoggedAt = new Map<string, number>();
  #lateLoggedAt = 0;
  /** Sources with their own metric label (at most metricsMaxSourceLabels). */
  readonly #labelled = new Set<string>();
  readonly #forgetTimer: NodeJS.Timeout;
  readonly #commit: IngestCommit;
  #server: IngestServer | null = null;
  #queuedTicks = 0;

  constructor(options: IngestOptions) {
    this.#o = options;
    this.#decode = new DecodeBatcher({
      decodeThreads: options.config.decodeThreads,
      decodeBatchTicks: options.config.decodeBatchTicks,
      recordTicks: options.config.recordTicks,
      metrics: options.metrics,
      logger: options.logger,
      release: (source, result) => this.#release(source, result),
    });
    this.#commit = new IngestCommit({
      journal: options.journal,
      live: options.live,
      metrics: options.metrics,
      logger: options.logger,
      recordTicks: options.config.recordTicks,
      committed: (source, batch) => this.#committed(source, batch),
      fenced: (source, epoch, ticks, err) => this.#onFenced(source, epoch, ticks, err),
    });
    this.#bars = new BarAggregator({ closeGraceMs: BAR_CLOSE_GRACE_MS });
    options.metrics.queuedTicksLimit.set(options.config.maxQueuedTicks);
    let openBars = 0;
    for (const [source, state] of options.states) {
      this.#durableNext.set(source, state.nextSeq);
      // The open bars as of the committed ticks: the EA resends from nextSeq onto them.
      if (state.bars) {
        const snapshot = barSnapshotFromJson(source, state.bars);
        this.#bars.restore(source, snapshot);
        openBars += snapshot.open.length;
      }
      delete state.bars;
    }
    if (openBars)
      options.logger.info({ openBars }, 'open 1-minute bars restored from the journal (resume state)');
    const sweepMs = Math.min(60_000, Math.max(100, Math.floor(options.config.sourceForgetAfterMs / 4)));
    this.#forgetTimer = setInterval(() => this.#forgetIdle(), sweepMs);
    this.#forgetTimer.unref();
  }

  attach(server: IngestServer): void {
    this.#server = server;
  }

  get queuedTicks(): number {
    return this.#queuedTicks;
  }

  /** Decode tasks and journal appends still in flight. */
  get busy(): boolean {
    return this.#decode.pending() || this.#commit.appends > 0;
  }

  /**
   * Per-source view for the status page: the sources with live state or a clock heard from
   * them (both bounded: maxSources, forgotten when idle), not every source the journal ever saw.
   */
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
    const sources = new Set([...this.#active.keys(), ...this.#sourceClocks.keys()]);
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

  /** Sets the gauges read at scrape time (per-source ones for labelled sources only). */
  updateGauges(): void {
    const now = Date.now();
    for (const source of this.#labelled) {
      const at = this.#lastTickAt.get(source);
      if (at !== undefined) this.#o.metrics.lastTickAge.set({ source }, (now - at) / 1000);
    }
  }

  /** The `source` label for a metric: the source itself if it has one of the labels, else `_other`. */
  #label(source: string): string {
    return this.#labelled.has(source) ? source : OTHER_SOURCES_LABEL;
  }

  /**
   * Marks a source active now. It takes a label while fewer than metricsMaxSourceLabels sources
   * have one; a label is held until its source is forgotten, never taken from an active source,
   * so every counter stays monotonic and the labels plus `_other` always add up to the total.
   */
  #touch(source: string): void {
    this.#active.delete(source); // re-inserted last: the map stays in order of activity
    this.#active.set(source, Date.now());
    if (this.#labelled.size < this.#o.config.metricsMaxSourceLabels) this.#labelled.add(source);
  }

  #unlabel(source: string): void {
    if (!this.#labelled.delete(source)) return;
    const m = this.#o.metrics;
    for (const metric of [
      m.ticksReceived,
      m.ticksCommitted,
      m.duplicates,
      m.clockMismatches,
      m.clockOffsetChanges,
      m.gaps,
      m.lastTickAge,
      m.ticksOutOfWindow,
    ])
      metric.remove({ source });
  }

  /** Drops the live state of sources idle past sourceForgetAfterMs (not their resume state). */
  #forgetIdle(): void {
    const horizon = Date.now() - this.#o.config.sourceForgetAfterMs;
    for (const [source, seenAt] of this.#active) {
      if (seenAt > horizon) break; // in order of activity: the rest were seen later
      if (this.#server?.session(source) || this.#decode.pending(source)) continue;
      const bars = this.#bars.forget(source);
      // Journaled even without open bars: the closed minutes are forgotten too, and a replay must know.
      if (bars.length || this.#o.states.has(source))
        this.#publishBars(bars, source, { [BarJournalHeader.FORGET]: '1' });
      this.#commit.forgetSource(source);
      this.#active.delete(source);
      this.#symbolCount -= this.#symbolsOf.get(source)?.size ?? 0;
      this.#symbolsOf.delete(source);
      this.#lastTickAt.delete(source);
      this.#gmtClocks.delete(source);
      this.#sourceClocks.delete(source);
      this.#timeLoggedAt.delete(source);
      this.#unlabel(source);
      this.#o.metrics.sourcesForgotten.inc();
      this.#o.logger.info(
        { source, idleS: Math.round((Date.now() - seenAt) / 1000), closedBars: bars.length },
        'source idle past sourceForgetAfterMs: its live state is forgotten (its resume state is kept)',
      );
    }
    this.#stateGauges();
  }

  #stateGauges(): void {
    this.#o.metrics.sourcesKnown.set(this.#active.size);
    this.#o.metrics.symbolsKnown.set(this.#symbolCount);
  }

  /** False (and the source failed with ERR_LIMIT) when one more source or pair would pass a limit. */
  #admitSymbol(session: Session, symbol: string): boolean {
    const source = session.source;
    let symbols = this.#symbolsOf.get(source);
    if (symbols?.has(symbol)) return true;
    if (this.#symbolCount >= this.#o.config.maxSymbols) {
      this.#o.metrics.stateRefusals.inc({ what: 'symbols' });
      this.#refuseSource(
        source,
        `the bridge holds live state for ${this.#o.config.maxSymbols} (source, symbol) pairs already (maxSymbols): symbol ${symbol} of source ${source} is refused; raise --max-symbols or lower --source-forget-after-ms`,
      );
      return false;
    }
    if (!symbols) {
      symbols = new Set();
      this.#symbolsOf.set(source, symbols);
    }
    symbols.add(symbol);
    this.#symbolCount++;
    this.#stateGauges();
    return true;
  }

  #refuseSource(source: string, message: string): void {
    this.#o.logger.warn({ source, code: ErrorCode.LIMIT }, message);
    this.#server?.failSource(source, ErrorCode.LIMIT, message);
  }

  hasRoom(): boolean {
    return this.#o.journal.hasRoom() && this.#queuedTicks < this.#o.config.maxQueuedTicks;
  }

  async resume(source: string): Promise<ResumeState> {
    // The replaced session's accepted ticks must be decoded and counted before we say where
    // this source stands, or the EA would be told to resend (or skip) some of them.
    this.#decode.flush(source);
    while (this.#decode.pending(source)) await new Promise((r) => setTimeout(r, 1));
    // …and committed: HELLO_ACK promises exactly what is durable, never ticks still in flight.
    // (Fenced ones never commit here: the claim below reads what the journal has instead.)
    while (
      !this.#fenced.has(source) &&
      (this.#durableNext.get(source) ?? 1) < (this.#o.states.get(source)?.nextSeq ?? 1)
    ) {
      const failed = this.#o.journal.failure;
      if (failed) throw failed;
      await new Promise((r) => setTimeout(r, 2));
    }
    this.#poisonedFrom.delete(source);
    // Before HELLO_ACK: a terminal that contradicts its rule is refused before it sends a tick.
    const hello = this.#server?.session(source)?.hello;
    if (hello) this.#checkClock(source, hello.serverTimeMs, hello.gmtTimeMs);
    // The source may have been served by another bridge since: claim it, and resume from the
    // journal as it stands after every transaction that began before the claim.
    const ownNext = this.#durableNext.get(source);
    const state = await this.#o.claims.claim(source);
    // Another bridge committed ticks of this source since (it moved here): its open bars, saved
    // with that state, replace what this bridge held, so the bars go on where the ticks do.
    if (state.bars && state.nextSeq !== ownNext)
      this.#bars.restore(source, barSnapshotFromJson(source, state.bars));
    delete state.bars;
    this.#o.states.set(source, state);
    this.#durableNext.set(source, state.nextSeq);
    this.#fenced.delete(source);
    return {
      nextSeq: state.nextSeq,
      cursors: Object.entries(state.cursors).map(([symbol, c]) => ({
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
    // A session refused at open (maxSources) is closing: what it still sent is not taken.
    if (!this.#active.has(source)) return;
    if (!this.#admitSymbol(session, symbol)) {
      // Ticks before this frame go on; from its seq on nothing of this session is journaled
      // (the EA resends them after a reconnect, and meets the same limit until it is raised).
      this.#decode.flush(source);
      if (!this.#poisonedFrom.has(source)) this.#poisonedFrom.set(source, firstSeq);
      return;
    }
    this.#decode.add({ session, clockRule: clock.rule, symbol, firstSeq, count, structs, receivedAtMs });
    this.#queuedTicks += count;
    this.#touch(source);
    this.#o.metrics.ticksReceived.inc({ source: this.#label(source) }, count);
    this.#lastTickAt.set(source, Date.now());
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
    if (!this.#active.has(session.source)) return; // refused at open (maxSources)
    this.#touch(session.source);
    this.#gmtClocks.set(session.source, { gmtMs: hb.gmtTimeMs, atMs: Date.now() });
    // A clock far ahead (a terminal set to 2999) would close every bar of the source at once
    // and make its later ticks late: event time moves at most to the window's edge.
    const gmt = Math.min(hb.gmtTimeMs, Date.now() + this.#o.config.tickMaxAheadMs);
    const bars = this.#bars.heartbeat(session.source, gmt);
    if (bars.length) this.#publishBars(bars, session.source, { [BarJournalHeader.CLOCK]: String(gmt) });
  }

  onSessionOpen(session: Session): void {
    this.#o.metrics.sources.set(this.#server?.sources.length ?? 0);
    const source = session.source;
    if (!this.#active.has(source) && this.#active.size >= this.#o.config.maxSources) {
      this.#sourceClocks.delete(source); // set by resume(); nothing of a refused source is kept
      this.#o.metrics.stateRefusals.inc({ what: 'sources' });
      this.#refuseSource(
        source,
        `the bridge holds live state for ${this.#o.config.maxSources} sources already (maxSources): source ${source} is refused; raise --max-sources or lower --source-forget-after-ms`,
      );
      return;
    }
    this.#touch(source);
    this.#stateGauges();
    if (session.hello) this.#gmtClocks.set(source, { gmtMs: session.hello.gmtTimeMs, atMs: Date.now() });
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
      // Labelled by name even before the source holds live state (it is refused at HELLO): a
      // source with a configured rule is one of a bounded set, and the operator must see which.
      this.#o.metrics.clockMismatches.inc({ source });
      this.#o.feeds?.onDown(source, 'clock');
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
      this.#o.metrics.clockMismatches.inc({ source: this.#label(source) });
      this.#o.feeds?.onDown(source, 'clock');
      this.#o.logger.error({ source, reportedOffsetMs }, message);
      throw new TickstreamError(ErrorCode.TIME_ZONE, message);
    }
    if (previous?.ruleFrom === 'terminal' && previous.rule !== rule && previous.problem === null) {
      // Ticks already gathered were stamped under the old offset: decode them with it.
      this.#decode.flush(source);
      this.#o.metrics.clockOffsetChanges.inc({ source: this.#label(source) });
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
    this.#decode.flush(session.source);
    this.#o.feeds?.onDown(session.source, 'disconnect');
    this.#o.metrics.sources.set(this.#server?.sources.length ?? 0);
  }

  onRejected(code: string): void {
    this.#o.metrics.rejectedFrames.inc({ code });
  }

  onDuplicate(session: Session, ticks: number): void {
    this.#o.metrics.duplicates.inc({ source: this.#label(session.source) }, ticks);
  }

  onGap(session: Session, expected: number, got: number): void {
    this.#o.metrics.gaps.inc({ source: this.#label(session.source) });
    this.#o.metrics.resends.inc();
    this.#o.logger.warn({ source: session.source, expected, got }, 'seq gap: RESEND sent');
  }

  /** Flushes every pending chunk and waits until the journal has committed all of it. */
  async drain(deadlineMs: number): Promise<boolean> {
    this.#decode.flushAll();
    const until = Date.now() + deadlineMs;
    while (this.busy && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    return !this.busy;
  }

  async close(): Promise<void> {
    clearInterval(this.#forgetTimer);
    await this.#decode.close();
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
    const live = this.#inTimeWindow(source, batch);
    const lateBefore = this.#bars.lateTicks;
    const bars = this.#bars.add(live);
    if (this.#bars.lateTicks > lateBefore) this.#lateTicks(source, this.#bars.lateTicks - lateBefore);

    const merged = this.#o.feeds?.follows(source) ? this.#o.feeds.onBatch(batch, live) : null;
    this.#o.crashPoint?.('after-decode-before-produce');
    this.#commit.commit({
      source,
      batch,
      live,
      records: result.records,
      bars,
      merged,
      state: this.#stateRecord(state),
    });
  }

  /** The journal committed the batch: ACK its last seq. */
  #committed(source: string, batch: TickBatch): void {
    const lastSeq = batch.seq[batch.length - 1] as number;
    this.#queuedTicks -= batch.length;
    this.#o.metrics.ticksCommitted.inc({ source: this.#label(source) }, batch.length);
    this.#durableNext.set(source, lastSeq + 1);
    if (batch.receivedAtMs)
      this.#o.metrics.receiptToCommit.observe(
        (performance.timeOrigin + performance.now() - batch.receivedAtMs) / 1000,
      );
    this.#o.crashPoint?.('after-commit-before-ack');
    this.#server?.ack(source, lastSeq);
    this.#backpressure();
  }

  /**
   * Another bridge claimed the source: these ticks are not committed and never ACKed. The
   * session (if it is still here, under the fenced epoch) is closed; the terminal reconnects,
   * and a HELLO here claims the source back with the journal's state.
   */
  #onFenced(source: string, epoch: number, ticks: number, err: TickstreamError): void {
    this.#queuedTicks -= ticks;
    this.#backpressure();
    if ((this.#o.states.get(source)?.epoch ?? 0) !== epoch) return; // claimed again since
    if (!this.#fenced.has(source)) {
      this.#fenced.add(source);
      this.#o.logger.warn({ source, epoch, ticks }, err.message);
    }
    this.#server?.failSource(source, ErrorCode.SOURCE_FENCED, err.message);
  }

  #lateTicks(source: string, n: number): void {
    this.#o.metrics.lateBarTicks.set(this.#bars.lateTicks);
    const now = Date.now();
    if (now - this.#lateLoggedAt < TIME_LOG_INTERVAL_MS) return;
    this.#lateLoggedAt = now;
    this.#o.logger.warn(
      { source, ticks: n, sinceStart: this.#bars.lateTicks },
      'ticks for a 1-minute bar already closed: journaled and live, but left out of the bars (tickstream_bar_late_ticks; logged at most every 10 s). The source sent ticks out of time order',
    );
  }

  /**
   * The batch, or a copy without its ticks outside the time window (see the header); those
   * are counted and logged (at most every 10 s per source, with the first one's seq and time).
   */
  #inTimeWindow(source: string, batch: TickBatch): TickBatch {
    const now = Date.now();
    const ahead = this.#o.config.tickMaxAheadMs;
    let latest = now + ahead;
    const clock = this.#gmtClocks.get(source);
    if (clock) latest = Math.min(latest, clock.gmtMs + (now - clock.atMs) + ahead);
    const behind = this.#o.config.tickMaxBehindMs;
    const earliest = behind > 0 ? now - behind : Number.NEGATIVE_INFINITY;
    const utc = batch.utcMsc;
    let out = 0;
    let first = -1;
    for (let i = 0; i < batch.length; i++) {
      const t = utc[i] as number;
      if (t > latest || t < earliest) {
        if (first < 0) first = i;
        out++;
      }
    }
    if (out === 0) return batch;
    this.#o.metrics.ticksOutOfWindow.inc({ source: this.#label(source) }, out);
    const loggedAt = this.#timeLoggedAt.get(source) ?? 0;
    if (now - loggedAt >= TIME_LOG_INTERVAL_MS) {
      this.#timeLoggedAt.set(source, now);
      const t = utc[first] as number;
      this.#o.logger.warn(
        {
          source,
          ticks: out,
          seq: batch.seq[first],
          symbol: batch.symbols[batch.symbolIndex[first] as number],
          tickTime: new Date(t).toISOString(),
          window: [
            Number.isFinite(earliest) ? new Date(earliest).toISOString() : null,
            new Date(latest).toISOString(),
          ],
        },
        "ticks outside the time window around the bridge and source clocks: journaled, but kept out of Redis, websockets and bars (tickstream_ticks_out_of_time_window_total; logged at most every 10 s per source). Check the source's server time zone rule and its broker feed.",
      );
    }
    return pickRows(batch, (i) => {
      const t = utc[i] as number;
      return t <= latest && t >= earliest;
    });
  }

  /** Journals bars closed by a heartbeat or by forgetting the source, with the source's state. */
  #publishBars(bars: Bar[], source: string, event: Record<string, string>): void {
    const state = this.#o.states.get(source);
    this.#commit.commitBars(bars, source, event, state ? this.#stateRecord(state) : null);
  }

  /** The resume state to journal: a copy, with the source's bar state as of now. */
  #stateRecord(state: SourceState): SourceState {
    const bars = this.#bars.snapshot(state.source);
    return { ...state, cursors: { ...state.cursors }, bars: bars ? barSnapshotToJson(bars) : null };
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

/** A new batch of the rows of `batch` that `keep` accepts, in order (rare path: allocates). */
function pickRows(batch: TickBatch, keep: (i: number) => boolean): TickBatch {
  const rows: number[] = [];
  for (let i = 0; i < batch.length; i++) if (keep(i)) rows.push(i);
  const out = allocTickBatch(batch.source, batch.symbols, rows.length, batch.symbolDigits);
  out.receivedAtMs = batch.receivedAtMs;
  rows.forEach((from, to) => {
    out.seq[to] = batch.seq[from] as number;
    out.symbolIndex[to] = batch.symbolIndex[from] as number;
    out.serverTimeMsc[to] = batch.serverTimeMsc[from] as number;
    out.utcMsc[to] = batch.utcMsc[from] as number;
    out.bid[to] = batch.bid[from] as number;
    out.ask[to] = batch.ask[from] as number;
    out.last[to] = batch.last[from] as number;
    out.volume[to] = batch.volume[from] as number;
    out.volumeReal[to] = batch.volumeReal[from] as number;
    out.flags[to] = batch.flags[from] as number;
  });
  out.length = rows.length;
  return out;
}
