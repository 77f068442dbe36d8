/**
 * The Redis live view: pipelined XADD of every tick to `{prefix}:ticks:{SOURCE}:{SYMBOL}` with
 * `MAXLEN ~`, the latest quote per source and symbol in the hash `{prefix}:quote:{SOURCE}:{SYMBOL}`,
 * closed bars in the stream `{prefix}:bars:1m:{SOURCE}:{SYMBOL}`.
 *
 * Entry IDs come from the tick: `<utc ms>-<seq>`. Within one source and symbol both only grow,
 * so a resent tick gets the same ID and Redis refuses it (counted as a refused duplicate, not
 * an error) instead of storing it twice. Entry fields: b bid, a ask, l last, v volume,
 * vr volume_real, f flags, t server time ms, s seq. Bars use `<start ms>-<last seq>`.
 *
 * A live view never holds up the journal: `write` only queues; past `maxQueuedTicks` new ticks
 * are dropped and counted, and while Redis is down every flush fails fast (no offline queue)
 * and its ticks are dropped and counted, logged once per outage. No catch-up from the journal:
 * the gap is recorded in `tickstream_redis_dropped_ticks_total` and the log.
 */
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Bar } from '../codecs/bar.js';
import { ErrorCode, TickstreamError } from '../codecs/errors.js';
import type { TickBatch } from '../codecs/tick-batch.js';

export interface RedisSinkOptions {
  url: string;
  keyPrefix: string;
  streamMaxLen: number;
  maxQueuedTicks: number;
  maxPipelineCommands: number;
  registry: Registry;
  logger: Logger;
}

export class RedisSink {
  readonly #o: RedisSinkOptions;
  readonly #redis: Redis;
  #queue: TickBatch[] = [];
  #bars: Bar[] = [];
  #queuedTicks = 0;
  #flushing = false;
  #down = false;
  readonly #m;

  constructor(options: RedisSinkOptions) {
    this.#o = options;
    this.#redis = new Redis(options.url, {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: (times) => Math.min(times * 200, 2000),
    });
    this.#redis.on('error', () => undefined); // outages are reported once, by #outage
    this.#redis.on('ready', () => {
      if (this.#down) options.logger.info('redis is back: live view resumes');
      this.#down = false;
    });
    const registers = [options.registry];
    this.#m = {
      written: new Counter({
        name: 'tickstream_redis_ticks_written_total',
        help: 'Ticks XADDed to Redis streams',
        registers,
      }),
      dropped: new Counter({
        name: 'tickstream_redis_dropped_ticks_total',
        help: 'Ticks the Redis live view dropped (queue full or Redis down)',
        registers,
      }),
      refused: new Counter({
        name: 'tickstream_redis_duplicates_refused_total',
        help: 'Resent ticks Redis refused by their entry ID',
        registers,
      }),
      queued: new Gauge({
        name: 'tickstream_redis_queued_ticks',
        help: 'Ticks waiting for Redis',
        registers,
      }),
      limit: new Gauge({
        name: 'tickstream_redis_queued_ticks_limit',
        help: 'Configured redisMaxQueuedTicks',
        registers,
      }),
      flush: new Histogram({
        name: 'tickstream_redis_flush_seconds',
        help: 'One pipelined flush',
        buckets: [0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1],
        registers,
      }),
      latency: new Histogram({
        name: 'tickstream_receipt_to_redis_seconds',
        help: 'Bridge receipt of a tick to its XADD reply',
        buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1],
        registers,
      }),
    };
    this.#m.limit.set(options.maxQueuedTicks);
  }

  async start(): Promise<void> {
    await this.#redis.connect().catch((err: Error) => {
      throw new TickstreamError(
        ErrorCode.REDIS,
        `cannot reach Redis at ${this.#o.url} (${err.message}). Start Redis, fix --redis-url, or run with --redis-enabled false.`,
      );
    });
  }

  get queuedTicks(): number {
    return this.#queuedTicks;
  }

  write(batch: TickBatch): void {
    if (this.#queuedTicks + batch.length > this.#o.maxQueuedTicks) {
      this.#m.dropped.inc(batch.length);
      return;
    }
    this.#queue.push(batch);
    this.#queuedTicks += batch.length;
    this.#m.queued.set(this.#queuedTicks);
    this.#kick();
  }

  writeBars(bars: Bar[]): void {
    this.#bars.push(...bars);
    this.#kick();
  }

  async close(deadlineMs = 5000): Promise<void> {
    const until = Date.now() + deadlineMs;
    while ((this.#queue.length || this.#flushing) && Date.now() < until)
      await new Promise((r) => setTimeout(r, 5));
    this.#redis.disconnect();
  }

  #kick(): void {
    if (!this.#flushing) void this.#flush();
  }

  async #flush(): Promise<void> {
    this.#flushing = true;
    try {
      while (this.#queue.length || this.#bars.length) {
        const batches: TickBatch[] = [];
        let commands = 0;
        while (this.#queue.length && (commands === 0 || commands < this.#o.maxPipelineCommands)) {
          const b = this.#queue.shift() as TickBatch;
          batches.push(b);
          commands += b.length;
        }
        const bars = this.#bars.splice(0);
        await this.#write(batches, bars);
        for (const b of batches) this.#queuedTicks -= b.length;
        this.#m.queued.set(this.#queuedTicks);
      }
    } finally {
      this.#flushing = false;
    }
  }

  async #write(batches: TickBatch[], bars: Bar[]): Promise<void> {
    const ticks = batches.reduce((n, b) => n + b.length, 0);
    if (this.#redis.status !== 'ready') {
      this.#outage(ticks, 'not connected');
      return;
    }
    const started = performance.now();
    const p = this.#redis.pipeline();
    const prefix = this.#o.keyPrefix;
    const maxLen = String(this.#o.streamMaxLen);
    for (const b of batches) {
      const keys = b.symbols.map((s) => `${prefix}:ticks:${b.source}:${s}`);
      const lastOf = new Map<number, number>();
      for (let i = 0; i < b.length; i++) {
        const sym = b.symbolIndex[i] as number;
        lastOf.set(sym, i);
        p.xadd(
          keys[sym] as string,
          'MAXLEN',
          '~',
          maxLen,
          `${b.utcMsc[i]}-${b.seq[i]}`,
          'b',
          String(b.bid[i]),
          'a',
          String(b.ask[i]),
          'l',
          String(b.last[i]),
          'v',
          String(b.volume[i]),
          'vr',
          String(b.volumeReal[i]),
          'f',
          String(b.flags[i]),
          't',
          String(b.serverTimeMsc[i]),
          's',
          String(b.seq[i]),
        );
      }
      for (const [sym, i] of lastOf) {
        p.hset(`${prefix}:quote:${b.source}:${b.symbols[sym]}`, {
          bid: b.bid[i],
          ask: b.ask[i],
          last: b.last[i],
          time: b.utcMsc[i],
          server_time_msc: b.serverTimeMsc[i],
          seq: b.seq[i],
          flags: b.flags[i],
        });
      }
    }
    for (const bar of bars) {
      p.xadd(
        `${prefix}:bars:1m:${bar.source}:${bar.symbol}`,
        'MAXLEN',
        '~',
        maxLen,
        `${bar.startMs}-${bar.lastSeq}`,
        'o',
        String(bar.open),
        'h',
        String(bar.high),
        'l',
        String(bar.low),
        'c',
        String(bar.close),
        'n',
        String(bar.tickCount),
        'sa',
        String(bar.tickCount ? bar.spreadSum / bar.tickCount : 0),
        'v',
        String(bar.volume),
      );
    }
    let results: [Error | null, unknown][] | null;
    try {
      results = await p.exec();
    } catch (err) {
      this.#outage(ticks, (err as Error).message);
      return;
    }
    let refused = 0;
    let failed = 0;
    for (const [err] of results ?? []) {
      if (!err) continue;
      if (/equal or smaller/.test(err.message)) refused++;
      else failed++;
    }
    if (failed) this.#outage(failed, 'commands failed');
    this.#m.refused.inc(refused);
    this.#m.written.inc(Math.max(0, ticks - refused - failed));
    const now = performance.timeOrigin + performance.now();
    this.#m.flush.observe((performance.now() - started) / 1000);
    for (const b of batches) if (b.receivedAtMs) this.#m.latency.observe((now - b.receivedAtMs) / 1000);
  }

  #outage(ticks: number, why: string): void {
    this.#m.dropped.inc(ticks);
    if (!this.#down)
      this.#o.logger.warn(
        { why, url: this.#o.url },
        'redis unavailable: the live view drops ticks until it returns (counted in tickstream_redis_dropped_ticks_total)',
      );
    this.#down = true;
  }
}
