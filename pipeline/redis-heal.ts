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
import { BarJournalHeader, parseSeqs } from '../codecs/bar-snapshot.js';
import { decodeTickRecord, RecordHeader } from '../codecs/flat-record.js';
import { type KafkaSecurity, SERVE_CONSUMER_PREFETCH } from '../codecs/kafka-client.js';
import { allocTickBatch } from '../codecs/tick-batch.js';
import { readJournal } from '../sinks/kafka/reader.js';
import type { RedisHealWriter } from '../sinks/redis-heal.js';
import { HealRanges } from './heal-ranges.js';

/** Records are produced after the drops they hold were recorded; this much earlier covers clock steps. */
const READ_MARGIN_MS = 5000;
/**
 * Ticks of one stream per writer call at most. Each call moves the stream's entries after the
 * hole once, so few large calls cost far less than many small ones; one call of this many runs
 * for some milliseconds in Redis (one Lua script, atomic).
 */
const STREAM_CHUNK = 5000;
/** Ticks gathered for writing over all streams at most; past it the largest gathering is written. */
const MAX_GATHERED = 100_000;
/** Entries after a hole the writer moves back at most per call (bounds one script's run time). */
export const MAX_MOVE_ENTRIES = 20_000;

export interface RedisHealerOptions {
  brokers: string;
  security?: KafkaSecurity;
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

/** Values kept per gathered tick (copied out of its record, so records are not held). */
const FIELDS = 9;

/** Pending ticks of one stream read from the journal, waiting to be written. */
interface Gathered {
  source: string;
  symbol: string;
  /** Per tick: seq, utc, server time, bid, ask, last, volume, volume_real, flags. */
  values: number[];
  ticks: number;
}

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
  readonly #gathered = new Map<string, Gathered>();
  #gatheredTicks = 0;

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

  /**
   * Stops healing. A pass in progress stops at its next record or write; it is awaited at most
   * `deadlineMs` (closing the writer then fails a call still waiting on Redis).
   */
  async close(deadlineMs = 2000): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    const pass = this.#pass;
    if (!pass) return;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, deadlineMs);
    });
    await Promise.race([pass, deadline]);
    clearTimeout(timer);
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
    // Pending seqs this pass found in the journal (written back, or held out of the live views).
    const handled = new HealRanges({ maxRanges: this.#o.maxRanges });
    try {
      await readJournal({
        brokers: this.#o.brokers,
        ...(this.#o.security ? { security: this.#o.security } : {}),
        topic: this.#o.ticksTopic,
        fromTimestampMs: since - READ_MARGIN_MS,
        // Healing runs inside serve at redisHealTicksPerSecond: a small prefetch keeps up with it.
        prefetch: SERVE_CONSUMER_PREFETCH,
        onMessages: async (messages) => {
          for (const m of messages) {
            if (!this.#healthy()) throw new Paused();
            const first = Number(m.headers[RecordHeader.SEQ_FIRST]);
            const last = Number(m.headers[RecordHeader.SEQ_LAST]);
            if (!Number.isFinite(first) || !Number.isFinite(last)) continue; // bar events: no ticks
            if (last > (seen.get(m.key) ?? 0)) seen.set(m.key, last);
            if (!this.#ranges.overlaps(m.key, first, last)) continue;
            await this.#gather(m.key, m.value, m.headers[BarJournalHeader.HELD_OUT], handled);
          }
        },
      });
      for (const g of [...this.#gathered.values()]) await this.#write(g);
    } catch (err) {
      // What was gathered and not written stays pending: the next pass reads it again.
      this.#gathered.clear();
      this.#gatheredTicks = 0;
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
    this.#settle(before, seen, handled);
  }

  /** Gathers the pending ticks of one record, but not those the bridge held out of the live views. */
  async #gather(
    source: string,
    value: Buffer,
    heldOut: string | undefined,
    handled: HealRanges,
  ): Promise<void> {
    const batch = decodeTickRecord(value);
    const skip = heldOut ? parseSeqs(heldOut) : null;
    for (let i = 0; i < batch.length; i++) {
      const seq = batch.seq[i] as number;
      if (!this.#ranges.has(source, seq)) continue;
      handled.add(source, seq, seq, 0);
      if (skip?.has(seq)) continue;
      const symbol = batch.symbols[batch.symbolIndex[i] as number] as string;
      const key = `${source}\u0000${symbol}`;
      let g = this.#gathered.get(key);
      if (!g) {
        g = { source, symbol, values: [], ticks: 0 };
        this.#gathered.set(key, g);
      }
      g.values.push(
        seq,
        batch.utcMsc[i] as number,
        batch.serverTimeMsc[i] as number,
        batch.bid[i] as number,
        batch.ask[i] as number,
        batch.last[i] as number,
        batch.volume[i] as number,
        batch.volumeReal[i] as number,
        batch.flags[i] as number,
      );
      g.ticks++;
      this.#gatheredTicks++;
      if (g.ticks >= STREAM_CHUNK) await this.#write(g);
    }
    while (this.#gatheredTicks > MAX_GATHERED) {
      let largest: Gathered | null = null;
      for (const g of this.#gathered.values()) if (!largest || g.ticks > largest.ticks) largest = g;
      await this.#write(largest as Gathered);
    }
  }

  /** Writes one stream's gathered ticks back (rate-limited) and takes them off the pending set. */
  async #write(g: Gathered): Promise<void> {
    this.#gathered.delete(`${g.source}\u0000${g.symbol}`);
    this.#gatheredTicks -= g.ticks;
    const n = g.ticks;
    if (n === 0) return;
    const batch = allocTickBatch(g.source, [g.symbol], n);
    const v = g.values;
    for (let k = 0; k < n; k++) {
      const o = k * FIELDS;
      batch.seq[k] = v[o] as number;
      batch.symbolIndex[k] = 0;
      batch.utcMsc[k] = v[o + 1] as number;
      batch.serverTimeMsc[k] = v[o + 2] as number;
      batch.bid[k] = v[o + 3] as number;
      batch.ask[k] = v[o + 4] as number;
      batch.last[k] = v[o + 5] as number;
      batch.volume[k] = v[o + 6] as number;
      batch.volumeReal[k] = v[o + 7] as number;
      batch.flags[k] = v[o + 8] as number;
    }
    batch.length = n;
    await this.#take(n);
    if (!this.#healthy()) throw new Paused();
    const r = await this.#o.writer.heal(
      batch,
      Array.from({ length: n }, (_, k) => k),
    );
    this.#m.healed.inc(r.healed);
    this.#m.present.inc(r.present);
    if (r.abandoned)
      this.#abandon(g.source, r.abandoned, 'its hole is further behind the stream end than healing moves');
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

  /**
   * After a whole pass: what was pending when it began, up to the last seq the read saw of each
   * source, is done — written back, held out, or (not found: retention removed it) abandoned.
   * Ranges the read did not reach (ticks not committed yet) stay for the next pass.
   */
  #settle(before: Map<string, [number, number][]>, seen: Map<string, number>, handled: HealRanges): void {
    for (const [source, ranges] of before) {
      const last = seen.get(source) ?? 0;
      const found = handled.ranges(source);
      for (const [lo, hi] of ranges) {
        const to = Math.min(hi, last);
        if (to < lo) continue;
        let inJournal = 0;
        for (const [a, b] of found) inJournal += Math.max(0, Math.min(b, to) - Math.max(a, lo) + 1);
        this.#ranges.remove(source, lo, to);
        const lost = to - lo + 1 - inJournal;
        if (lost > 0)
          this.#abandon(source, lost, `seqs in ${lo}-${to} are not in the journal any more (retention)`);
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
