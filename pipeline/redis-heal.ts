/**
 * Heals the Redis live view from the journal: the sink reports every tick it drops (outage, full
 * queue, lost connection, failed command) as a seq range (pipeline/heal-ranges.ts); once Redis
 * is back and keeping up, passes read the ticks topic (`read_committed`, from the first record
 * produced after the earliest pending drop) and write the dropped ticks back into their streams
 * in place (sinks/redis-heal.ts: same IDs as live, idempotent, in seq order).
 *
 * Lowest priority, never on the live path: a pass starts only while the sink is connected and
 * its queue is under half its limit, stops as soon as that ends, and writes at most
 * `redisHealTicksPerSecond` (token bucket, one second of burst). Healing runs beside the live
 * writes on its own connection, between the sink's pipelined writes.
 *
 * A pending range the journal read passed without finding (retention removed it) is given up,
 * counted in tickstream_redis_heal_abandoned_ticks_total and logged; so is a hole further behind
 * its stream's end than the writer moves. Pending ranges live in memory: those of a bridge that
 * restarts are not healed (docs/architecture.md).
 */
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { BarJournalHeader } from '../codecs/bar-snapshot.js';
import { decodeTickRecord, RecordHeader } from '../codecs/flat-record.js';
import { readJournal } from '../sinks/kafka/reader.js';
import type { RedisHealWriter } from '../sinks/redis-heal.js';
import { HealRanges } from './heal-ranges.js';

/** Records are produced after the drops they hold were recorded; this much earlier covers clock steps. */
const READ_MARGIN_MS = 5000;
/** Ticks per writer call at most (each call is one Lua script per stream, atomic in Redis). */
const MAX_CHUNK = 1000;
/** Entries after a hole the writer moves back at most per call (bounds one script's run time). */
export const MAX_MOVE_ENTRIES = 50_000;

export interface RedisHealerOptions {
  brokers: string;
  ticksTopic: string;
  ticksPerSecond: number;
  maxRanges: number;
  /** The live sink: healing waits while it is down or busy. */
  sink: { readonly connected: boolean; readonly queuedTicks: number };
  sinkMaxQueuedTicks: number;
  writer: RedisHealWriter;
  registry: Registry;
  logger: Logger;
  /** Time between passes while ranges are pending. Default 1000 ms. */
  intervalMs?: number;
}

/** A pass stops (and the next one resumes) when the live view needs Redis to itself. */
class Paused extends Error {}

export class RedisHealer {
  readonly #o: RedisHealerOptions;
  readonly #ranges: HealRanges;
  readonly #m;
  #timer: NodeJS.Timeout | null = null;
  #pass: Promise<void> | null = null;
  #closed = false;
  #tokens: number;
  #refilledAt = performance.now();
  #lastErrorLogAt = 0;

  constructor(options: RedisHealerOptions) {
    this.#o = options;
    this.#ranges = new HealRanges({ maxRanges: options.maxRanges });
    this.#tokens = options.ticksPerSecond;
    const registers = [options.registry];
    this.#m = {
      healed: new Counter({
        name: 'tickstream_redis_healed_ticks_total',
        help: 'Ticks the Redis live view dropped, written back into their streams from the journal',
        registers,
      }),
      present: new Counter({
        name: 'tickstream_redis_heal_present_ticks_total',
        help: 'Ticks healing found already in their stream (Redis stored them before a lost reply, or merged ranges)',
        registers,
      }),
      abandoned: new Counter({
        name: 'tickstream_redis_heal_abandoned_ticks_total',
        help: 'Dropped ticks not healed: gone from the journal (retention), or their hole too far behind the stream end',
        registers,
      }),
      pending: new Gauge({
        name: 'tickstream_redis_heal_pending_ticks',
        help: 'Dropped ticks waiting to be healed from the journal',
        registers,
      }),
    };
  }

  get pendingTicks(): number {
    return this.#ranges.pendingTicks;
  }

  /** The sink dropped seqs [lo, hi] of a source, handed to it at `atMs`. */
  record(source: string, lo: number, hi: number, atMs: number): void {
    if (this.#closed) return;
    this.#ranges.add(source, lo, hi, atMs);
    this.#m.pending.set(this.#ranges.pendingTicks);
  }

  start(): void {
    const every = this.#o.intervalMs ?? 1000;
    this.#timer = setInterval(() => {
      if (this.#pass || this.#ranges.rangeCount === 0 || !this.#healthy()) return;
      this.#pass = this.#run().finally(() => {
        this.#pass = null;
      });
    }, every);
    this.#timer.unref();
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    await this.#pass;
  }

  #healthy(): boolean {
    return (
      !this.#closed && this.#o.sink.connected && this.#o.sink.queuedTicks < this.#o.sinkMaxQueuedTicks / 2
    );
  }

  async #run(): Promise<void> {
    const since = this.#ranges.sinceMs;
    if (since === null) return;
    // What was pending when the pass began: a range the read passes without finding is lost.
    const before = new Map(this.#ranges.sources().map((s) => [s, this.#ranges.ranges(s)]));
    const seen = new Map<string, number>();
    try {
      await readJournal({
        brokers: this.#o.brokers,
        topic: this.#o.ticksTopic,
        fromTimestampMs: since - READ_MARGIN_MS,
        onMessages: async (messages) => {
          for (const m of messages) {
            if (!this.#healthy()) throw new Paused();
            const first = Number(m.headers[RecordHeader.SEQ_FIRST]);
            const last = Number(m.headers[RecordHeader.SEQ_LAST]);
            if (!Number.isFinite(first) || !Number.isFinite(last)) continue; // bar events: no ticks
            if (last > (seen.get(m.key) ?? 0)) seen.set(m.key, last);
            if (!this.#ranges.overlaps(m.key, first, last)) continue;
            await this.#heal(m.key, m.value, m.headers[BarJournalHeader.HELD_OUT]);
          }
        },
      });
    } catch (err) {
      if (err instanceof Paused) return;
      const now = Date.now();
      if (now - this.#lastErrorLogAt >= 10_000) {
        this.#lastErrorLogAt = now;
        this.#o.logger.warn(
          { err: (err as Error).message, pending: this.#ranges.pendingTicks },
          'redis healing pass failed; the next pass retries (logged at most every 10 s)',
        );
      }
      return;
    }
    this.#giveUpPassed(before, seen);
  }

  /** Writes back the pending ticks of one record, but not those the bridge held out of the live views. */
  async #heal(source: string, value: Buffer, heldOut: string | undefined): Promise<void> {
    const batch = decodeTickRecord(value);
    const skip = heldOut ? new Set(heldOut.split(',').map(Number)) : null;
    const rows: number[] = [];
    for (let i = 0; i < batch.length; i++) {
      const seq = batch.seq[i] as number;
      if (skip?.has(seq)) this.#ranges.remove(source, seq, seq);
      else if (this.#ranges.has(source, seq)) rows.push(i);
    }
    if (rows.length === 0) return;
    for (let from = 0; from < rows.length; from += MAX_CHUNK) {
      const chunk = rows.slice(from, from + MAX_CHUNK);
      await this.#take(chunk.length);
      if (!this.#healthy()) throw new Paused();
      const r = await this.#o.writer.heal(batch, chunk);
      this.#m.healed.inc(r.healed);
      this.#m.present.inc(r.present);
      if (r.abandoned)
        this.#abandon(source, r.abandoned, 'its hole is further behind the stream end than healing moves');
      // Contiguous runs of the chunk's seqs leave the pending set.
      let lo = batch.seq[chunk[0] as number] as number;
      let hi = lo;
      for (let k = 1; k <= chunk.length; k++) {
        const seq = k < chunk.length ? (batch.seq[chunk[k] as number] as number) : Number.NaN;
        if (seq === hi + 1) hi = seq;
        else {
          this.#ranges.remove(source, lo, hi);
          lo = seq;
          hi = seq;
        }
      }
      this.#m.pending.set(this.#ranges.pendingTicks);
    }
  }

  /** Waits until the bucket holds `n` tokens (ticksPerSecond a second, one second of burst). */
  async #take(n: number): Promise<void> {
    const rate = this.#o.ticksPerSecond;
    for (;;) {
      const now = performance.now();
      this.#tokens = Math.min(rate, this.#tokens + ((now - this.#refilledAt) / 1000) * rate);
      this.#refilledAt = now;
      if (this.#tokens >= Math.min(n, rate)) {
        this.#tokens -= n;
        return;
      }
      await new Promise((r) => setTimeout(r, Math.ceil(((Math.min(n, rate) - this.#tokens) / rate) * 1000)));
    }
  }

  /** Pending ranges from before the pass that the read went past without finding: not in the journal. */
  #giveUpPassed(before: Map<string, [number, number][]>, seen: Map<string, number>): void {
    for (const [source, ranges] of before) {
      const last = seen.get(source) ?? 0;
      for (const [lo, hi] of ranges) {
        const to = Math.min(hi, last);
        if (to < lo) continue;
        let lost = 0;
        for (const [a, b] of this.#ranges.ranges(source))
          lost += Math.max(0, Math.min(b, to) - Math.max(a, lo) + 1);
        if (lost === 0) continue;
        this.#ranges.remove(source, lo, to);
        this.#abandon(source, lost, `seqs ${lo}-${to} are not in the journal any more (retention)`);
      }
    }
    this.#m.pending.set(this.#ranges.pendingTicks);
  }

  #abandon(source: string, ticks: number, why: string): void {
    this.#m.abandoned.inc(ticks);
    this.#o.logger.warn(
      { source, ticks },
      `redis healing gives up on dropped ticks: ${why} (tickstream_redis_heal_abandoned_ticks_total); Kafka and Postgres have them`,
    );
  }
}
