/**
 * Merged feeds (issue 14) wired into the pipeline: the ingest hands every accepted batch of a
 * feed-group member to `onBatch` in the order it releases them, and every source that goes down
 * to `onDown`; the rules are in pipeline/feed-arbiter.ts.
 *
 * Outputs of each canonical symbol, beside the per-source ones:
 * - Kafka `mergedTicksTopic` (one partition, so one order): per input batch one TickRecord of
 *   the ticks it sent (the record's `source` and seqs are the source's own, its symbols the
 *   canonical ones), appended with the source's ticks in the same journal entry, so it commits
 *   in the same transaction and the EA's ACK covers it; a `down` record per source that went
 *   down; a `decision` record (JSON: symbol, atMs, from, to, reason) per failover switch; a
 *   `start` record when serve starts (arbitration state starts afresh).
 *   The input records carry what the rules read (source, seq range, receipt time, ticks held
 *   out of the live views), so `recomputeMergedFeed` rebuilds the merged stream and its
 *   decisions from the journal alone.
 * - Live views, as a source named `merged`: Redis `{prefix}:ticks:merged:{SYMBOL}`,
 *   `{prefix}:quote:merged:{SYMBOL}`, websocket channel `merged:{SYMBOL}`, 1-minute bars of
 *   source `merged` (journaled with the batch, in `bars_1m` through the loader). Their `seq` is
 *   the merged stream's own counter (restarts at 1 with serve), so stream IDs grow.
 */
import type { Registry } from 'prom-client';
import { Counter, Gauge } from 'prom-client';
import type { Bar } from '../codecs/bar.js';
import { ErrorCode, TickstreamError } from '../codecs/errors.js';
import {
  decodeTickRecord,
  RecordHeader,
  SCHEMA_VERSION,
  TICK_RECORD_CONTENT_TYPE,
  TickRecordEncoder,
} from '../codecs/flat-record.js';
import { allocTickBatch, type TickBatch } from '../codecs/tick-batch.js';
import type { JournalRecord, KafkaJournal } from '../sinks/kafka/journal.js';
import { type JournalMessage, readJournal } from '../sinks/kafka/reader.js';
import { BarAggregator } from './bars.js';
import { type FeedGroupConfig, MERGED_SOURCE } from './config.js';
import { type Decision, FeedArbiter, type GroupStatus, type Pick } from './feed-arbiter.js';
import type { LiveSink } from './ingest-commit.js';
import type { Logger } from './logger.js';

/** Record key of everything in the merged topic (one partition: one order). */
const MERGED_KEY = 'feeds';
const JSON_CONTENT = 'application/json';
/** Headers of merged-topic records (beside RecordHeader's). */
export const MergedHeader = {
  KIND: 'kind',
  INPUT_SEQ_FIRST: 'input-seq-first',
  INPUT_SEQ_LAST: 'input-seq-last',
  RECEIVED_AT: 'received-at-ms',
  HELD_OUT: 'held-out',
  REASON: 'reason',
} as const;
type Kind = 'start' | 'ticks' | 'down' | 'decision';

/** One tick of a merged stream, as compared by the replay check. */
export interface MergedTick {
  symbol: string;
  source: string;
  seq: number;
  utcMsc: number;
  bid: number;
  ask: number;
  last: number;
  volume: number;
  flags: number;
}

export interface MergedFeedOptions {
  groups: readonly FeedGroupConfig[];
  journal: KafkaJournal;
  live: LiveSink[];
  registry: Registry;
  logger: Logger;
}

export class MergedFeed {
  readonly #o: MergedFeedOptions;
  readonly #arbiter: FeedArbiter;
  readonly #encoder = new TickRecordEncoder();
  readonly #bars = new BarAggregator({ closeGraceMs: 5000 });
  /** Per canonical symbol: the merged stream's own seq (Redis IDs, bars). */
  readonly #seq = new Map<string, number>();
  readonly #m;

  constructor(options: MergedFeedOptions) {
    this.#o = options;
    this.#arbiter = new FeedArbiter(options.groups);
    const registers = [options.registry];
    const arbiter = this.#arbiter;
    this.#m = {
      switches: new Counter({
        name: 'tickstream_feed_switches_total',
        help: 'Failover switches of a merged feed, by canonical symbol and reason (stall, behind, disconnect, clock, recovered, start)',
        labelNames: ['symbol', 'reason'],
        registers,
      }),
      suppressed: new Counter({
        name: 'tickstream_feed_suppressed_ticks_total',
        help: "Ticks kept out of a merged stream: kind=duplicate (another source's copy went first), kind=stale (older than the last tick sent)",
        labelNames: ['symbol', 'kind'],
        registers,
      }),
      merged: new Counter({
        name: 'tickstream_feed_merged_ticks_total',
        help: 'Ticks sent on a merged stream, by canonical symbol',
        labelNames: ['symbol'],
        registers,
      }),
    };
    new Gauge({
      name: 'tickstream_feed_active_source',
      help: 'Per feed group member: 1 for the source the merged stream follows (failover) or took its last tick from (first-seen), else 0',
      labelNames: ['symbol', 'source'],
      registers,
      collect() {
        for (const g of arbiter.status())
          for (const m of g.members)
            this.set({ symbol: g.symbol, source: m.source }, g.active === m.source ? 1 : 0);
      },
    });
    new Gauge({
      name: 'tickstream_feed_lag_seconds',
      help: 'How far (tick time) each member of a feed group lags the freshest member',
      labelNames: ['symbol', 'source'],
      registers,
      collect() {
        for (const g of arbiter.status())
          for (const m of g.members)
            if (m.lagMs !== null) this.set({ symbol: g.symbol, source: m.source }, m.lagMs / 1000);
      },
    });
    new Gauge({
      name: 'tickstream_feed_symbols_without_healthy_source',
      help: 'Feed groups (canonical symbols) none of whose members is healthy',
      registers,
      collect() {
        this.set(arbiter.status().filter((g) => !g.healthy).length);
      },
    });
  }

  /** Journals the start marker: a replay starts arbitration afresh here, as this process did. */
  start(): void {
    this.#append(record('start', new Uint8Array(0), {}), 'start marker');
  }

  /** True when the source is a member of some feed group. */
  follows(source: string): boolean {
    return this.#arbiter.follows(source);
  }

  /**
   * An accepted batch (`batch`, what is journaled) and the part of it in the time window
   * (`live`): the merged ticks go to the live views now; the returned records and bars must be
   * appended with the batch's own ticks (same transaction).
   */
  onBatch(batch: TickBatch, live: TickBatch): { records: JournalRecord[]; bars: Bar[] } {
    const atMs = batch.receivedAtMs || Date.now();
    const step = this.#arbiter.onTicks(live, atMs);
    const records: JournalRecord[] = [];
    const origin = mergedRows(live, step.picks, live.source);
    const headers: Record<string, string> = {
      [RecordHeader.SOURCE]: batch.source,
      [MergedHeader.INPUT_SEQ_FIRST]: String(batch.seq[0]),
      [MergedHeader.INPUT_SEQ_LAST]: String(batch.seq[batch.length - 1]),
      [MergedHeader.RECEIVED_AT]: String(atMs),
      [RecordHeader.SCHEMA_VERSION]: String(SCHEMA_VERSION),
    };
    if (live.length < batch.length) headers[MergedHeader.HELD_OUT] = heldOut(batch, live).join(',');
    records.push(record('ticks', this.#encoder.encode(origin), headers, TICK_RECORD_CONTENT_TYPE));
    for (const d of step.decisions) records.push(this.#decision(d));
    for (const [symbol, c] of step.suppressed) {
      if (c.duplicates) this.#m.suppressed.inc({ symbol, kind: 'duplicate' }, c.duplicates);
      if (c.stale) this.#m.suppressed.inc({ symbol, kind: 'stale' }, c.stale);
    }
    let bars: Bar[] = [];
    if (origin.length) {
      const out = mergedRows(live, step.picks, MERGED_SOURCE);
      for (let i = 0; i < out.length; i++) {
        const symbol = out.symbols[out.symbolIndex[i] as number] as string;
        const seq = (this.#seq.get(symbol) ?? 0) + 1;
        this.#seq.set(symbol, seq);
        out.seq[i] = seq;
      }
      for (const p of step.picks) this.#m.merged.inc({ symbol: p.symbol }, p.rows.length);
      bars = this.#bars.add(out);
      for (const sink of this.#o.live) sink.write(out);
      if (bars.length) for (const sink of this.#o.live) sink.writeBars(bars);
    }
    return { records, bars };
  }

  /** A member source went down: its session closed, or its terminal's clock is refused. */
  onDown(source: string, reason: 'disconnect' | 'clock'): void {
    if (!this.#arbiter.follows(source)) return;
    const atMs = performance.timeOrigin + performance.now();
    const decisions = this.#arbiter.onDown(source, reason, atMs);
    const records = [
      record('down', new Uint8Array(0), {
        [RecordHeader.SOURCE]: source,
        [MergedHeader.REASON]: reason,
        [MergedHeader.RECEIVED_AT]: String(atMs),
      }),
      ...decisions.map((d) => this.#decision(d)),
    ];
    for (const r of records) this.#append(r, `${reason} of source ${source}`);
  }

  status(): GroupStatus[] {
    return this.#arbiter.status();
  }

  #decision(d: Decision): JournalRecord {
    this.#m.switches.inc({ symbol: d.symbol, reason: d.reason });
    this.#o.logger.warn(
      d,
      `merged feed ${d.symbol}: now follows ${d.to} (was ${d.from ?? 'none'}): ${d.reason}`,
    );
    return record(
      'decision',
      Buffer.from(JSON.stringify(d)),
      { [MergedHeader.REASON]: d.reason },
      JSON_CONTENT,
    );
  }

  #append(r: JournalRecord, what: string): void {
    this.#o.journal
      .append({ ticks: [], bars: [], states: [], merged: [r] })
      .catch((err: Error) =>
        this.#o.logger.error(
          { err: err.message },
          `journal append of the merged feed's ${what} failed: a replay of the journal will not see it`,
        ),
      );
  }
}

function record(
  kind: Kind,
  value: Uint8Array,
  headers: Record<string, string>,
  content = JSON_CONTENT,
): JournalRecord {
  return {
    key: MERGED_KEY,
    value,
    headers: { [MergedHeader.KIND]: kind, [RecordHeader.CONTENT]: content, ...headers },
  };
}

/** Seqs of `batch` missing from `live` (held out of the live views by the time window). */
function heldOut(batch: TickBatch, live: TickBatch): number[] {
  const kept = new Set(live.seq.subarray(0, live.length));
  const out: number[] = [];
  for (let i = 0; i < batch.length; i++)
    if (!kept.has(batch.seq[i] as number)) out.push(batch.seq[i] as number);
  return out;
}

/** A batch of the picked rows of `from`, symbols renamed to the canonical ones, in row order. */
function mergedRows(from: TickBatch, picks: Pick[], source: string): TickBatch {
  const rows: [number, number][] = [];
  picks.forEach((p, k) => {
    for (const r of p.rows) rows.push([r, k]);
  });
  rows.sort((a, b) => a[0] - b[0]);
  const out = allocTickBatch(
    source,
    picks.map((p) => p.symbol),
    rows.length,
  );
  out.receivedAtMs = from.receivedAtMs;
  rows.forEach(([r, k], i) => {
    out.seq[i] = from.seq[r] as number;
    out.symbolIndex[i] = k;
    out.serverTimeMsc[i] = from.serverTimeMsc[r] as number;
    out.utcMsc[i] = from.utcMsc[r] as number;
    out.bid[i] = from.bid[r] as number;
    out.ask[i] = from.ask[r] as number;
    out.last[i] = from.last[r] as number;
    out.volume[i] = from.volume[r] as number;
    out.volumeReal[i] = from.volumeReal[r] as number;
    out.flags[i] = from.flags[r] as number;
  });
  out.length = rows.length;
  return out;
}

function ticksOf(batch: TickBatch): MergedTick[] {
  return Array.from({ length: batch.length }, (_, i) => ({
    symbol: batch.symbols[batch.symbolIndex[i] as number] as string,
    source: batch.source,
    seq: batch.seq[i] as number,
    utcMsc: batch.utcMsc[i] as number,
    bid: batch.bid[i] as number,
    ask: batch.ask[i] as number,
    last: batch.last[i] as number,
    volume: batch.volume[i] as number,
    flags: batch.flags[i] as number,
  }));
}

export interface MergedStream {
  ticks: MergedTick[];
  decisions: Decision[];
}

/** The merged streams and decisions as journaled (the merged topic's ticks and decision records, in order). */
export function journaledMergedFeed(messages: readonly JournalMessage[]): MergedStream {
  const out: MergedStream = { ticks: [], decisions: [] };
  for (const m of messages) {
    const kind = m.headers[MergedHeader.KIND];
    if (kind === 'ticks') out.ticks.push(...ticksOf(decodeTickRecord(m.value)));
    else if (kind === 'decision') out.decisions.push(JSON.parse(m.value.toString()) as Decision);
  }
  return out;
}

/**
 * Recomputes the merged streams and decisions from the journal: the merged topic's input
 * records (in order) replayed through a fresh arbiter, their ticks taken from the source ticks
 * (`sourceTicks`: the ticks topic's records). Arbitration restarts at each `start` record, as
 * serve did. Equal to `journaledMergedFeed` of the same messages when the journal is complete.
 */
export function recomputeMergedFeed(
  groups: readonly FeedGroupConfig[],
  merged: readonly JournalMessage[],
  sourceTicks: readonly JournalMessage[],
): MergedStream {
  // (source, seq) → the decoded record and row holding it.
  const rows = new Map<string, Map<number, [TickBatch, number]>>();
  for (const m of sourceTicks) {
    const b = decodeTickRecord(m.value);
    let bySeq = rows.get(b.source);
    if (!bySeq) {
      bySeq = new Map();
      rows.set(b.source, bySeq);
    }
    for (let i = 0; i < b.length; i++) bySeq.set(b.seq[i] as number, [b, i]);
  }
  const out: MergedStream = { ticks: [], decisions: [] };
  let arbiter = new FeedArbiter(groups);
  for (const m of merged) {
    const kind = m.headers[MergedHeader.KIND] as Kind;
    const atMs = Number(m.headers[MergedHeader.RECEIVED_AT]);
    const source = m.headers[RecordHeader.SOURCE] ?? '';
    if (kind === 'start') arbiter = new FeedArbiter(groups);
    else if (kind === 'down') {
      const reason = m.headers[MergedHeader.REASON] === 'clock' ? 'clock' : 'disconnect';
      out.decisions.push(...arbiter.onDown(source, reason, atMs));
    } else if (kind === 'ticks') {
      const first = Number(m.headers[MergedHeader.INPUT_SEQ_FIRST]);
      const last = Number(m.headers[MergedHeader.INPUT_SEQ_LAST]);
      const held = new Set((m.headers[MergedHeader.HELD_OUT] ?? '').split(',').filter(Boolean).map(Number));
      const input = rebuild(source, first, last, held, rows.get(source));
      const step = arbiter.onTicks(input, atMs);
      out.decisions.push(...step.decisions);
      out.ticks.push(...ticksOf(mergedRows(input, step.picks, source)));
    }
  }
  return out;
}

/** The batch of `source` with seqs [first, last] minus `held`, from the journaled ticks. */
function rebuild(
  source: string,
  first: number,
  last: number,
  held: Set<number>,
  bySeq: Map<number, [TickBatch, number]> | undefined,
): TickBatch {
  const symbols: string[] = [];
  const index = new Map<string, number>();
  const batch = allocTickBatch(source, symbols, last - first + 1);
  let n = 0;
  for (let seq = first; seq <= last; seq++) {
    if (held.has(seq)) continue;
    const hit = bySeq?.get(seq);
    if (!hit)
      throw new TickstreamError(
        ErrorCode.KAFKA,
        `the ticks topic has no tick ${source}#${seq} that the merged topic names as an input: read the ticks topic that serve wrote (--ticks-topic), before retention removed that tick`,
      );
    const [b, i] = hit;
    const name = b.symbols[b.symbolIndex[i] as number] as string;
    let k = index.get(name);
    if (k === undefined) {
      k = symbols.length;
      symbols.push(name);
      index.set(name, k);
    }
    batch.seq[n] = seq;
    batch.symbolIndex[n] = k;
    batch.serverTimeMsc[n] = b.serverTimeMsc[i] as number;
    batch.utcMsc[n] = b.utcMsc[i] as number;
    batch.bid[n] = b.bid[i] as number;
    batch.ask[n] = b.ask[i] as number;
    batch.last[n] = b.last[i] as number;
    batch.volume[n] = b.volume[i] as number;
    batch.volumeReal[n] = b.volumeReal[i] as number;
    batch.flags[n] = b.flags[i] as number;
    n++;
  }
  batch.length = n;
  return batch;
}

/** Reads the merged topic and the ticks topic to their ends and returns both versions of the merged feed. */
export async function replayMergedFeed(options: {
  brokers: string;
  ticksTopic: string;
  mergedTopic: string;
  groups: readonly FeedGroupConfig[];
}): Promise<{ journaled: MergedStream; recomputed: MergedStream }> {
  const merged: JournalMessage[] = [];
  const ticks: JournalMessage[] = [];
  await readJournal({
    brokers: options.brokers,
    topic: options.mergedTopic,
    onMessages: (m) => void merged.push(...m),
  });
  const members = new Set(options.groups.flatMap((g) => g.members.map((m) => m.source)));
  await readJournal({
    brokers: options.brokers,
    topic: options.ticksTopic,
    onMessages: (m) => void ticks.push(...m.filter((x) => members.has(x.key))),
  });
  merged.sort((a, b) => a.offset - b.offset);
  return {
    journaled: journaledMergedFeed(merged),
    recomputed: recomputeMergedFeed(options.groups, merged, ticks),
  };
}
