/**
 * 1-minute bars recomputed from the journal alone: the ticks topic read in order (each source's
 * records are in seq order in one partition) through the same BarAggregator the bridge runs.
 * Gives the bars the bridge published, byte for byte, across restarts, because everything that
 * shapes a bar is in the ticks topic (docs/architecture.md#deterministic-bars):
 *  - the ticks themselves, minus those the bridge held out of the bars (outside its time window),
 *    listed in the record's `held-out-seqs` header;
 *  - a heartbeat that closed bars: a record without ticks with a `bars-clock-ms` header;
 *  - a source forgotten when idle (its open bars closed): a record without ticks, `bars-forget`.
 * A restart changes nothing: the restarted bridge continues from the bar state journaled with the
 * last committed ticks, and the ticks of aborted transactions are neither in the journal nor in
 * that state.
 *
 *   const { closed, open } = await barsFromJournal({ brokers, ticksTopic: 'mt5.ticks' });
 */
import type { Bar } from '../codecs/bar.js';
import { BarJournalHeader, parseSeqs } from '../codecs/bar-snapshot.js';
import { decodeTickRecord } from '../codecs/flat-record.js';
import type { KafkaSecurity } from '../codecs/kafka-client.js';
import { allocTickBatch, type TickBatch } from '../codecs/tick-batch.js';
import { readJournal } from '../sinks/kafka/reader.js';
import { BAR_CLOSE_GRACE_MS, BarAggregator } from './bars.js';

/** Feeds records of the ticks topic (each source's in journal order) to a BarAggregator. */
export class JournalBars {
  readonly #agg = new BarAggregator({ closeGraceMs: BAR_CLOSE_GRACE_MS });
  readonly #sources = new Set<string>();

  /** Ticks for minutes already closed, left out (as the bridge did). */
  get lateTicks(): number {
    return this.#agg.lateTicks;
  }

  /** Applies one record; returns the bars it closed, oldest first. */
  add(m: { key: string; value: Uint8Array; headers: Record<string, string> }): Bar[] {
    const clock = m.headers[BarJournalHeader.CLOCK];
    if (clock !== undefined) return this.#agg.heartbeat(m.key, Number(clock));
    if (m.headers[BarJournalHeader.FORGET] !== undefined) {
      this.#sources.delete(m.key);
      return this.#agg.forget(m.key);
    }
    let batch = decodeTickRecord(m.value);
    if (batch.length === 0) return [];
    this.#sources.add(batch.source);
    const skip = m.headers[BarJournalHeader.HELD_OUT];
    if (skip) batch = withoutSeqs(batch, parseSeqs(skip));
    return this.#agg.add(batch);
  }

  /** The bars still open (not closed by anything in the records seen), per source, oldest first. */
  open(): Bar[] {
    return [...this.#sources].flatMap((s) => this.#agg.snapshot(s)?.open ?? []).sort(byKey);
  }
}

/** Orders bars by source, symbol, start. */
export function byKey(a: Bar, b: Bar): number {
  return a.source < b.source
    ? -1
    : a.source > b.source
      ? 1
      : a.symbol < b.symbol
        ? -1
        : a.symbol > b.symbol
          ? 1
          : a.startMs - b.startMs;
}

/**
 * Reads the ticks topic from its log start to its end (read_committed) and returns the bars
 * closed and still open, each ordered by source, symbol and start. `sources` limits it to some.
 */
export async function barsFromJournal(options: {
  brokers: string;
  security?: KafkaSecurity;
  ticksTopic: string;
  sources?: ReadonlySet<string>;
}): Promise<{ closed: Bar[]; open: Bar[]; lateTicks: number }> {
  const bars = new JournalBars();
  const closed: Bar[] = [];
  await readJournal({
    brokers: options.brokers,
    ...(options.security ? { security: options.security } : {}),
    topic: options.ticksTopic,
    onMessages: (messages) => {
      for (const m of messages) {
        if (options.sources && !options.sources.has(m.key)) continue;
        for (const bar of bars.add(m)) closed.push(bar);
      }
    },
  });
  return { closed: closed.sort(byKey), open: bars.open(), lateTicks: bars.lateTicks };
}

function withoutSeqs(batch: TickBatch, drop: ReadonlySet<number>): TickBatch {
  const out = allocTickBatch(batch.source, batch.symbols, batch.length);
  let n = 0;
  for (let i = 0; i < batch.length; i++) {
    if (drop.has(batch.seq[i] as number)) continue;
    out.seq[n] = batch.seq[i] as number;
    out.symbolIndex[n] = batch.symbolIndex[i] as number;
    out.serverTimeMsc[n] = batch.serverTimeMsc[i] as number;
    out.utcMsc[n] = batch.utcMsc[i] as number;
    out.bid[n] = batch.bid[i] as number;
    out.ask[n] = batch.ask[i] as number;
    out.last[n] = batch.last[i] as number;
    out.volume[n] = batch.volume[i] as number;
    out.volumeReal[n] = batch.volumeReal[i] as number;
    out.flags[n] = batch.flags[i] as number;
    n++;
  }
  out.length = n;
  return out;
}
