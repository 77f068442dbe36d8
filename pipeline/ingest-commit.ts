/**
 * Commit and fan-out, the last stage of the ingest (pipeline/ingest.ts): a released batch's
 * tick records, closed bars and the source's resume state go to the journal in one append, and
 * the batch goes to the live views at once, not waiting for Kafka. What the journal answers
 * (committed, fenced) goes back to the ingest, which ACKs or closes the source.
 */
import type { Bar } from '../codecs/bar.js';
import { BarJournalHeader, formatSeqs } from '../codecs/bar-snapshot.js';
import { ErrorCode, TickstreamError } from '../codecs/errors.js';
import {
  encodeBar,
  RecordHeader,
  SCHEMA_VERSION,
  TICK_RECORD_CONTENT_TYPE,
  TickRecordEncoder,
} from '../codecs/flat-record.js';
import { allocTickBatch, type TickBatch } from '../codecs/tick-batch.js';
import type { JournalRecord, KafkaJournal, SourceState } from '../sinks/kafka/journal.js';
import type { Logger } from './logger.js';
import type { PipelineMetrics } from './metrics.js';

/** A live view: takes a batch without blocking, drops what it cannot keep up with. */
export interface LiveSink {
  write(batch: TickBatch): void;
  writeBars(bars: Bar[]): void;
  /** Drops what the view keeps per source (the pipeline forgot an idle source). */
  forgetSource(source: string): void;
}

/** What the ingest needs of the journal (a fake in tests). */
export type IngestJournal = Pick<KafkaJournal, 'append' | 'hasRoom' | 'failure'>;

/** One released batch, ready to commit. */
export interface CommitBatch {
  source: string;
  /** Every tick of the batch, as journaled. */
  batch: TickBatch;
  /** The ticks within the time window (the batch itself when all are): live views and bars. */
  live: TickBatch;
  /** The batch's tick records (decode worker), `recordTicks` ticks each. */
  records: Uint8Array[];
  /** Bars closed by these ticks, and merged-feed records and bars, if any. */
  bars: Bar[];
  merged: { records: JournalRecord[]; bars: Bar[] } | null;
  /** The source's resume state as of this batch (with its bar state). */
  state: SourceState;
}

export interface IngestCommitOptions {
  journal: IngestJournal;
  live: LiveSink[];
  metrics: Pick<PipelineMetrics, 'barsClosed' | 'journalAppendFailures'>;
  logger: Logger;
  recordTicks: number;
  /** The batch committed: its ticks may be ACKed. */
  committed(source: string, batch: TickBatch): void;
  /** Another bridge claimed the source: the batch is not committed, never ACKed. */
  fenced(source: string, epoch: number, ticks: number, err: TickstreamError): void;
}

export class IngestCommit {
  readonly #o: IngestCommitOptions;
  /** Encodes the tick records without ticks that carry bar events (commitBars). */
  readonly #eventEncoder = new TickRecordEncoder();
  #appends = 0;

  constructor(options: IngestCommitOptions) {
    this.#o = options;
  }

  /** Journal appends in flight. */
  get appends(): number {
    return this.#appends;
  }

  /** Appends the batch to the journal and hands it to the live views. */
  commit(c: CommitBatch): void {
    const { source, batch, live, bars, merged, state } = c;
    const ticks: JournalRecord[] = [];
    // Seqs held out of the bars (time window), so a replay of the journal leaves them out too.
    const skipped = live === batch ? null : heldOut(batch, live);
    let from = 0;
    for (const value of c.records) {
      const to = Math.min(batch.length, from + this.#o.recordTicks);
      const headers: Record<string, string> = {
        [RecordHeader.SOURCE]: source,
        [RecordHeader.SEQ_FIRST]: String(batch.seq[from]),
        [RecordHeader.SEQ_LAST]: String(batch.seq[to - 1]),
        [RecordHeader.SCHEMA_VERSION]: String(SCHEMA_VERSION),
        [RecordHeader.CONTENT]: TICK_RECORD_CONTENT_TYPE,
      };
      const skip = skipped?.filter(
        (seq) => seq >= (batch.seq[from] as number) && seq <= (batch.seq[to - 1] as number),
      );
      if (skip?.length) headers[BarJournalHeader.HELD_OUT] = formatSeqs(skip);
      ticks.push({ key: source, value, headers });
      from = to;
    }
    this.#appends++;
    this.#o.journal
      .append({
        ticks,
        bars: (merged ? [...bars, ...merged.bars] : bars).map((b) => barRecord(b)),
        states: [state],
        ...(merged ? { merged: merged.records } : {}),
      })
      .then(
        () => this.#o.committed(source, batch),
        (err: Error) => {
          if (err instanceof TickstreamError && err.code === ErrorCode.SOURCE_FENCED) {
            this.#o.fenced(source, state.epoch ?? 0, batch.length, err);
            return;
          }
          this.#o.metrics.journalAppendFailures.inc({ what: 'ticks' });
          this.#o.logger.error(
            { err: err.message, source, ticks: batch.length },
            'journal append failed: these ticks stay un-ACKed (the EA resends them)',
          );
        },
      )
      .finally(() => this.#appends--);
    if (live.length) for (const sink of this.#o.live) sink.write(live);
    if (bars.length) for (const sink of this.#o.live) sink.writeBars(bars);
    this.#o.metrics.barsClosed.inc(bars.length);
  }

  /**
   * Journals bars closed by something other than a tick (a heartbeat, forgetting the source)
   * with that event as a tick record without ticks, and the source's bar state, in one
   * transaction, so the journal alone reproduces them (pipeline/bar-replay.ts).
   */
  commitBars(bars: Bar[], source: string, event: Record<string, string>, state: SourceState | null): void {
    this.#o.metrics.barsClosed.inc(bars.length);
    this.#appends++;
    const marker: JournalRecord = {
      key: source,
      value: this.#eventEncoder.encode(allocTickBatch(source, [], 0)),
      headers: {
        [RecordHeader.SOURCE]: source,
        [RecordHeader.SCHEMA_VERSION]: String(SCHEMA_VERSION),
        [RecordHeader.CONTENT]: TICK_RECORD_CONTENT_TYPE,
        ...event,
      },
    };
    this.#o.journal
      .append({ ticks: [marker], bars: bars.map((b) => barRecord(b)), states: state ? [state] : [] })
      .catch((err: Error) => {
        this.#o.metrics.journalAppendFailures.inc({ what: 'bars' });
        this.#o.logger.error(
          { err: err.message, source, bars: bars.length },
          'journal append of bars failed: these bars are not in Kafka (the live views got them)',
        );
      })
      .finally(() => this.#appends--);
    if (bars.length) for (const sink of this.#o.live) sink.writeBars(bars);
  }

  /** The live views drop what they keep of a forgotten source. */
  forgetSource(source: string): void {
    for (const sink of this.#o.live) sink.forgetSource(source);
  }
}

function barRecord(bar: Bar): JournalRecord {
  return {
    key: bar.source,
    value: encodeBar(bar),
    headers: { [RecordHeader.SOURCE]: bar.source, symbol: bar.symbol },
  };
}

/** Seqs of `batch` not in `kept` (a subsequence of it). */
function heldOut(batch: TickBatch, kept: TickBatch): number[] {
  const out: number[] = [];
  let k = 0;
  for (let i = 0; i < batch.length; i++) {
    if (k < kept.length && kept.seq[k] === batch.seq[i]) k++;
    else out.push(batch.seq[i] as number);
  }
  return out;
}
