/**
 * What one loader transaction does with a run of tick records from one partition: which ticks
 * it COPYs, which it parks (ticks_parked) and how many records it takes. Pure, no I/O, so the
 * rules are testable in milliseconds.
 *
 * Rules (issue 20): every daily partition a transaction writes or creates holds locks until it
 * commits, so a transaction touches at most `maxDays` UTC days — records that would exceed it
 * wait for the next transaction, and a single record spanning more days than that on its own is
 * parked whole (`days`). Ticks dated outside [minUtcMs, maxUtcMs] would create a partition for
 * a year nobody queries (a tick dated 2999) and are parked (`time-window`); the rest of their
 * record loads. A record that does not decode is parked (`undecodable`).
 */
import { decodeTickRecord } from '../../codecs/flat-record.js';
import { allocTickBatch, type TickBatch } from '../../codecs/tick-batch.js';

export const DAY_MS = 86_400_000;

export type ParkKind = 'days' | 'time-window' | 'undecodable' | 'retries';

export interface Parked {
  /** Index of the record in the input. */
  index: number;
  kind: ParkKind;
  source: string;
  seqs: number[];
  error: string;
}

export interface LoadPlan {
  /** Records this transaction covers; the others wait for the next one. */
  taken: number;
  /** In-window ticks to COPY. */
  batches: TickBatch[];
  /** UTC days (ms since the epoch / DAY_MS) the batches touch, ascending. */
  days: number[];
  ticks: number;
  parked: Parked[];
}

export interface PlanLimits {
  minUtcMs: number;
  maxUtcMs: number;
  maxDays: number;
}

/**
 * How many records from the head of a partition's consumed run one transaction may take: the
 * offsets must rise. One consume call can span a re-assignment of the partition: it returns
 * what it fetched before the loader's seek to the stored offset and then the same records again
 * from after the seek. The first offset that does not rise ends the run; the next transaction
 * starts below the stored offset, and the loader re-claims the partition and seeks again.
 */
export function risingRun(offsets: readonly number[]): number {
  let n = offsets.length > 0 ? 1 : 0;
  while (n < offsets.length && (offsets[n] as number) > (offsets[n - 1] as number)) n++;
  return n;
}

export function planTicks(values: readonly Uint8Array[], limits: PlanLimits): LoadPlan {
  const plan: LoadPlan = { taken: 0, batches: [], days: [], ticks: 0, parked: [] };
  const days = new Set<number>();
  for (let index = 0; index < values.length; index++) {
    let batch: TickBatch;
    try {
      batch = decodeTickRecord(values[index] as Uint8Array);
    } catch (err) {
      plan.parked.push({ index, kind: 'undecodable', source: '', seqs: [], error: (err as Error).message });
      plan.taken = index + 1;
      continue;
    }
    const own = new Set<number>();
    const outside: number[] = [];
    for (let i = 0; i < batch.length; i++) {
      const t = batch.utcMsc[i] as number;
      if (t < limits.minUtcMs || t > limits.maxUtcMs) outside.push(i);
      else own.add(Math.floor(t / DAY_MS));
    }
    if (own.size > limits.maxDays) {
      plan.parked.push({
        index,
        kind: 'days',
        source: batch.source,
        seqs: Array.from(batch.seq.subarray(0, batch.length)),
        error: `one record spans ${own.size} UTC days, more than loaderMaxDaysPerTransaction (${limits.maxDays}): each day is a partition locked by the transaction`,
      });
      plan.taken = index + 1;
      continue;
    }
    let added = 0;
    for (const d of own) if (!days.has(d)) added++;
    // The record would take the transaction past its day limit: it starts the next one.
    if (days.size + added > limits.maxDays && plan.taken > 0) break;
    for (const d of own) days.add(d);
    if (outside.length > 0) {
      plan.parked.push({
        index,
        kind: 'time-window',
        source: batch.source,
        seqs: outside.map((i) => batch.seq[i] as number),
        error: `tick time outside ${new Date(limits.minUtcMs).toISOString()} .. ${new Date(limits.maxUtcMs).toISOString()} (loaderMaxTickAgeDays / loaderMaxTickFutureDays)`,
      });
      batch = without(batch, outside);
    }
    if (batch.length > 0) {
      plan.batches.push(batch);
      plan.ticks += batch.length;
    }
    plan.taken = index + 1;
  }
  plan.days = [...days].sort((a, b) => a - b);
  return plan;
}

/** A copy of `batch` without the rows in `drop` (ascending). */
function without(batch: TickBatch, drop: number[]): TickBatch {
  const out = allocTickBatch(batch.source, batch.symbols, batch.length - drop.length);
  out.receivedAtMs = batch.receivedAtMs;
  let d = 0;
  let n = 0;
  for (let i = 0; i < batch.length; i++) {
    if (d < drop.length && drop[d] === i) {
      d++;
      continue;
    }
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
