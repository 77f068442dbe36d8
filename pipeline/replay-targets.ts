/**
 * Where `tickstream replay` writes the ticks it reads back from the journal: stdout or a file
 * (JSON lines or CSV), the Redis live view (sinks/redis/sink.ts, the live sink itself), or a Postgres
 * rebuild of ticks and bars_1m (sinks/postgres/rebuild.ts, bars recomputed with BarAggregator),
 * or websocket clients of a replay server (sinks/ws/server.ts, the live publisher itself).
 * Each `write` resolves once the target can take more, so memory stays a few records.
 */
import { once } from 'node:events';
import { createWriteStream, openSync } from 'node:fs';
import type { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { destination, type Logger, pino } from 'pino';
import { Registry } from 'prom-client';
import { ErrorCode, TickstreamError } from '../codecs/errors.js';
import type { TickBatch } from '../codecs/tick-batch.js';
import type { JournalMessage } from '../sinks/kafka/reader.js';
import {
  type PostgresRebuild,
  PostgresRebuild as Rebuild,
  type RebuildRange,
} from '../sinks/postgres/rebuild.js';
import { RedisSink } from '../sinks/redis/sink.js';
import { WsServer } from '../sinks/ws/server.js';
import { JournalBars } from './bar-replay.js';
import { type Config, wsServerSettings } from './config.js';

export interface ReplayTarget {
  /**
   * Every record of the selected sources, whole and in seq order, before the range filters
   * (what bars are computed from, with the bar clock and forget records the bridge journaled).
   */
  see?(record: JournalMessage): void;
  /** The ticks of the range (non-empty), each source in seq order. */
  write(batch: TickBatch): Promise<void>;
  /** Ends the output; returns what to add to the summary line (after "to"). */
  finish(): Promise<string>;
  /** Gives up after an error or an early stop, leaving nothing half done where it can. */
  abort(): Promise<void>;
  /** Gets ready before the journal is read (the websocket server waits for its clients). */
  start?(): Promise<void>;
  /** Rejects when the replay is to stop early (a signal): paced waits race it. */
  readonly stopped?: Promise<never>;
  /** Per partition: read no further than this offset (the Postgres loader's position). */
  readonly endOffsets?: ReadonlyMap<number, number>;
}

/** The reader of a closed stdout (`tickstream replay | head`) went away: stop, not an error. */
export class OutputClosed extends Error {}

/** Output columns, in order: the CSV header and the JSON keys. */
const COLUMNS = [
  'source',
  'seq',
  'symbol',
  'time',
  'server_time',
  'bid',
  'ask',
  'last',
  'volume',
  'volume_real',
  'flags',
] as const;

export type Format = 'jsonl' | 'csv';

// JSON has no NaN or Infinity; the decoders reject them, this keeps a line valid regardless.
const jsonNumber = (v: number) => (Number.isFinite(v) ? String(v) : 'null');
const csvField = (s: string) => (/[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s);

/** The lines of the ticks of `batch`. */
function formatBatch(batch: TickBatch, format: Format): string {
  const quote = format === 'jsonl' ? (s: string) => JSON.stringify(s) : csvField;
  // Names are quoted once per record, not per tick.
  const source = quote(batch.source);
  const symbols = batch.symbols.map(quote);
  let text = '';
  for (let i = 0; i < batch.length; i++) {
    const seq = batch.seq[i] as number;
    const time = batch.utcMsc[i] as number;
    const symbol = symbols[batch.symbolIndex[i] as number] ?? quote('');
    const server = batch.serverTimeMsc[i] as number;
    const bid = batch.bid[i] as number;
    const ask = batch.ask[i] as number;
    const last = batch.last[i] as number;
    const volume = batch.volume[i] as number;
    const volumeReal = batch.volumeReal[i] as number;
    const flags = batch.flags[i] as number;
    text +=
      format === 'jsonl'
        ? `{"source":${source},"seq":${seq},"symbol":${symbol},"time":${time},"server_time":${server},"bid":${jsonNumber(bid)},"ask":${jsonNumber(ask)},"last":${jsonNumber(last)},"volume":${volume},"volume_real":${jsonNumber(volumeReal)},"flags":${flags}}\n`
        : `${source},${seq},${symbol},${time},${server},${bid},${ask},${last},${volume},${volumeReal},${flags}\n`;
  }
  return text;
}

/** stdout or a file: waits for 'drain' when the stream is full, so memory stays one record. */
export class StreamTarget implements ReplayTarget {
  readonly #stream: Writable;
  readonly #name: string;
  readonly #format: Format;
  #error: NodeJS.ErrnoException | null = null;
  #started = false;

  /** Opens `path` (replaced) at once, so a bad path fails before the broker is asked. */
  static open(path: string | undefined, format: Format, usage: (m: string) => Error): StreamTarget {
    if (path === undefined) return new StreamTarget(process.stdout, 'stdout', format);
    let fd: number;
    try {
      fd = openSync(path, 'w');
    } catch (err) {
      throw usage(`--out cannot open '${path}' (${(err as Error).message})`);
    }
    return new StreamTarget(createWriteStream('', { fd }), path, format);
  }

  private constructor(stream: Writable, name: string, format: Format) {
    this.#stream = stream;
    this.#name = name;
    this.#format = format;
    stream.on('error', (err: NodeJS.ErrnoException) => {
      this.#error ??= err;
    });
  }

  async write(batch: TickBatch): Promise<void> {
    // One write per record: a fetch of 500 records of thousands of ticks each would otherwise
    // build a string of hundreds of MB before the first byte leaves.
    await this.#write(formatBatch(batch, this.#format));
  }

  async finish(): Promise<string> {
    await this.#header();
    if (this.#stream !== process.stdout) {
      this.#stream.end();
      await once(this.#stream, 'finish').catch(() => undefined);
    }
    this.#check();
    return this.#name;
  }

  async abort(): Promise<void> {
    if (this.#stream !== process.stdout) this.#stream.destroy();
  }

  async #header(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    if (this.#format === 'csv') await this.#write(`${COLUMNS.join(',')}\n`);
  }

  async #write(text: string): Promise<void> {
    await this.#header();
    this.#check();
    // once() rejects on 'error': the error is already kept, #check turns it into ours.
    if (!this.#stream.write(text)) await once(this.#stream, 'drain').catch(() => undefined);
    this.#check();
  }

  #check(): void {
    if (!this.#error) return;
    if (this.#error.code === 'EPIPE') throw new OutputClosed();
    throw new TickstreamError(
      ErrorCode.INTERNAL,
      `cannot write ${this.#name} (${this.#error.message}): check the path and the free space`,
    );
  }
}

/** How often a replay waiting for room in the Redis sink's queue looks again. */
const QUEUE_POLL_MS = 2;

const counterValue = async (registry: Registry, name: string): Promise<number> =>
  (await registry.getSingleMetric(name)?.get())?.values[0]?.value ?? 0;

/**
 * The Redis live view's keys under `redisKeyPrefix`, written by the live sink itself: the same
 * stream keys, entry IDs (`<utc ms>-<seq>`), fields and quote hashes. Entries already there
 * are refused by their ID (counted, not an error), so a replay over what is there adds nothing.
 */
export class RedisTarget implements ReplayTarget {
  readonly #sink: RedisSink;
  readonly #registry: Registry;
  readonly #prefix: string;
  readonly #window: number;

  static async open(config: Config): Promise<RedisTarget> {
    const registry = new Registry();
    const sink = new RedisSink({
      url: config.redisUrl,
      keyPrefix: config.redisKeyPrefix,
      streamMaxLen: config.redisStreamMaxLen,
      maxQueuedTicks: config.redisMaxQueuedTicks,
      maxPipelineCommands: 20_000, // as pipeline/serve.ts
      registry,
      // stdout may carry data in other targets: logs go to stderr.
      logger: pino({ name: 'tickstream-replay', level: config.logLevel }, destination(2)),
    });
    await sink.start();
    return new RedisTarget(sink, registry, config);
  }

  private constructor(sink: RedisSink, registry: Registry, config: Config) {
    this.#sink = sink;
    this.#registry = registry;
    this.#prefix = config.redisKeyPrefix;
    // Half the sink's queue: the sink drops past its limit, replay waits before it.
    this.#window = Math.max(1, Math.floor(config.redisMaxQueuedTicks / 2));
  }

  async write(batch: TickBatch): Promise<void> {
    // Polled, not drained: waiting for an empty queue would leave Redis idle while the next
    // records are read.
    while (this.#sink.queuedTicks > 0 && this.#sink.queuedTicks + batch.length > this.#window) {
      if (!this.#sink.connected) break; // write() counts the drop; finish() reports it
      await sleep(QUEUE_POLL_MS);
    }
    this.#sink.write(batch);
  }

  async finish(): Promise<string> {
    while (this.#sink.queuedTicks > 0 && this.#sink.connected) await this.#sink.drain(1000);
    await this.#sink.close();
    const added = await counterValue(this.#registry, 'tickstream_redis_ticks_written_total');
    const there = await counterValue(this.#registry, 'tickstream_redis_duplicates_refused_total');
    const dropped = await counterValue(this.#registry, 'tickstream_redis_dropped_ticks_total');
    if (dropped > 0)
      throw new TickstreamError(
        ErrorCode.REDIS,
        `${dropped} ticks did not reach Redis (${added} added, ${there} already there): Redis went away or refused them; run the same replay again once it is back (it adds only what is missing)`,
      );
    return `redis prefix '${this.#prefix}' (${added} added, ${there} already there)`;
  }

  async abort(): Promise<void> {
    await this.#sink.close(0);
  }
}

const MINUTE_MS = 60_000;
const DAY_MS = 86_400_000;

/**
 * Rebuilds ticks and bars_1m in `postgresSchema` for the range. Bars are recomputed as the
 * bridge made them (JournalBars: its aggregator, its journaled heartbeat closes and forgets)
 * from every record of the selected sources (not only the range's), so late
 * ticks are left out as live did; kept are the closed bars of the range's symbols whose minute
 * lies wholly inside [--from, --to). A minute still open at the end is left as it is, as live
 * does (an open bar is not published until it closes).
 */
export class PostgresTarget implements ReplayTarget {
  readonly #rebuild: PostgresRebuild;
  readonly #bars = new JournalBars();
  readonly #range: RebuildRange;
  readonly #schema: string;
  readonly #minUtcMs: number;
  readonly #maxUtcMs: number;
  #outside = 0;

  static async open(config: Config, range: RebuildRange): Promise<PostgresTarget> {
    const rebuild = await Rebuild.open(
      {
        postgresUrl: config.postgresUrl,
        schema: config.postgresSchema,
        ticksTopic: config.ticksTopic,
        loaderGroupId: config.loaderGroupId,
        maxDays: config.loaderMaxDaysPerTransaction,
        chunkTicks: config.loaderMaxBatchTicks,
      },
      range,
    );
    return new PostgresTarget(rebuild, range, config);
  }

  private constructor(rebuild: PostgresRebuild, range: RebuildRange, config: Config) {
    this.#rebuild = rebuild;
    this.#range = range;
    this.#schema = config.postgresSchema;
    // The loader parks ticks outside this window instead of loading them: so does the rebuild.
    const now = Date.now();
    this.#minUtcMs = now - config.loaderMaxTickAgeDays * DAY_MS;
    this.#maxUtcMs = now + config.loaderMaxTickFutureDays * DAY_MS;
  }

  get endOffsets(): ReadonlyMap<number, number> {
    return this.#rebuild.loaderOffsets;
  }

  see(record: JournalMessage): void {
    const symbols = this.#range.symbols;
    const barsFrom = this.#range.barsFromMs;
    const keep = this.#bars
      .add(record)
      .filter(
        (b) =>
          b.startMs >= barsFrom &&
          b.startMs + MINUTE_MS <= this.#range.toMs &&
          (symbols === null || symbols.includes(b.symbol)),
      );
    if (keep.length) this.#rebuild.bars(keep);
  }

  async write(batch: TickBatch): Promise<void> {
    let inside = true;
    for (let i = 0; i < batch.length && inside; i++) {
      const t = batch.utcMsc[i] as number;
      inside = t >= this.#minUtcMs && t <= this.#maxUtcMs;
    }
    if (inside) return this.#rebuild.ticks(batch);
    const keep: number[] = [];
    for (let i = 0; i < batch.length; i++) {
      const t = batch.utcMsc[i] as number;
      if (t >= this.#minUtcMs && t <= this.#maxUtcMs) keep.push(i);
    }
    this.#outside += batch.length - keep.length;
    if (keep.length) await this.#rebuild.ticks(pick(batch, keep));
  }

  async finish(): Promise<string> {
    const r = await this.#rebuild.commit();
    const parked = this.#outside
      ? `, ${this.#outside} outside loaderMaxTickAgeDays/loaderMaxTickFutureDays left out as the loader does`
      : '';
    return `postgres schema '${this.#schema}' (${r.ticksInserted} ticks replaced ${r.ticksDeleted} rows, ${r.barsWritten} bars replaced ${r.barsDeleted}${parked})`;
  }

  async abort(): Promise<void> {
    await this.#rebuild.abort();
  }
}

/** A new batch of the rows `rows` (ascending) of `batch`. */
export function pick(batch: TickBatch, rows: readonly number[]): TickBatch {
  const n = rows.length;
  const out: TickBatch = {
    source: batch.source,
    symbols: batch.symbols,
    symbolDigits: batch.symbolDigits,
    length: n,
    receivedAtMs: 0,
    seq: new Float64Array(n),
    symbolIndex: new Uint16Array(n),
    serverTimeMsc: new Float64Array(n),
    utcMsc: new Float64Array(n),
    bid: new Float64Array(n),
    ask: new Float64Array(n),
    last: new Float64Array(n),
    volume: new Float64Array(n),
    volumeReal: new Float64Array(n),
    flags: new Uint32Array(n),
  };
  for (let k = 0; k < n; k++) {
    const i = rows[k] as number;
    out.seq[k] = batch.seq[i] as number;
    out.symbolIndex[k] = batch.symbolIndex[i] as number;
    out.serverTimeMsc[k] = batch.serverTimeMsc[i] as number;
    out.utcMsc[k] = batch.utcMsc[i] as number;
    out.bid[k] = batch.bid[i] as number;
    out.ask[k] = batch.ask[i] as number;
    out.last[k] = batch.last[i] as number;
    out.volume[k] = batch.volume[i] as number;
    out.volumeReal[k] = batch.volumeReal[i] as number;
    out.flags[k] = batch.flags[i] as number;
  }
  return out;
}

/** Rows [from, to) of `batch` as a batch of views (no copy). */
export function slice(batch: TickBatch, from: number, to: number): TickBatch {
  return {
    source: batch.source,
    symbols: batch.symbols,
    symbolDigits: batch.symbolDigits,
    length: to - from,
    receivedAtMs: batch.receivedAtMs,
    seq: batch.seq.subarray(from, to),
    symbolIndex: batch.symbolIndex.subarray(from, to),
    serverTimeMsc: batch.serverTimeMsc.subarray(from, to),
    utcMsc: batch.utcMsc.subarray(from, to),
    bid: batch.bid.subarray(from, to),
    ask: batch.ask.subarray(from, to),
    last: batch.last.subarray(from, to),
    volume: batch.volume.subarray(from, to),
    volumeReal: batch.volumeReal.subarray(from, to),
    flags: batch.flags.subarray(from, to),
  };
}

/** A signal ended a replay early: the target is closed, the summary says so. */
export class ReplayStopped extends Error {
  constructor(
    readonly signal: NodeJS.Signals,
    /** What the summary line names after "to". */
    readonly where: string,
  ) {
    super(`stopped by ${signal}`);
  }
}

/** How often a websocket replay waiting for its clients' buffers looks again. */
const WS_POLL_MS = 2;
/** How often a websocket replay waiting for its clients to subscribe looks again. */
const WS_CLIENTS_POLL_MS = 50;
/** Binds only this host can reach (as serve's check before it warns about missing tokens). */
const LOOPBACK = /^(127\.|::1$|localhost$)/;
/** Exit status of a replay stopped by a signal (the shell's 128 + signal number). */
const SIGNAL_STATUS: Record<string, number> = { SIGINT: 130, SIGTERM: 143 };

export const signalStatus = (signal: NodeJS.Signals): number => SIGNAL_STATUS[signal] ?? 1;

export interface WsTargetOptions {
  /** Subscribed clients to wait for before the first tick goes out. */
  waitClients: number;
  /** A client over its backpressure limit this long is left to the slow-consumer policy. */
  stallMs: number;
}

/**
 * A replay server for backtests: a WsServer (serve's protocol and options, no journal sessions)
 * marked `replay`, publishing the range through its live path once `waitClients` clients have
 * subscribed, so a live consumer pointed at it gets the history as it would live. Nobody loses
 * ticks to conflation: each write waits while any client has more than half its backpressure
 * limit unsent (the slow-consumer policy applies only to a client stuck there for `stallMs`). At the
 * end every client's buffer drains, each gets `{"type":"replay_end","ticks":N}`, and the server
 * closes. SIGINT/SIGTERM stop it at once (`stopped` rejects; the server closes on abort).
 */
export class WsTarget implements ReplayTarget {
  readonly #server: WsServer;
  readonly #url: string;
  readonly #limit: number;
  readonly #o: WsTargetOptions;
  readonly #stopped: Promise<never>;
  #signal: NodeJS.Signals | null = null;
  readonly #onSignal = (signal: NodeJS.Signals) => {
    this.#signal ??= signal;
    this.#stop?.(new ReplayStopped(signal, this.#where));
  };
  #stop: ((err: ReplayStopped) => void) | null = null;
  #ticks = 0;
  #closed = false;
  /** Clients left to the slow-consumer policy after a stall (see #belowLimit). */
  readonly #givenUp = new WeakSet<object>();
  readonly #logger: Logger;

  static async open(config: Config, options: WsTargetOptions): Promise<WsTarget> {
    const logger = pino({ name: 'tickstream-replay', level: config.logLevel }, destination(2));
    if (config.wsTokens.length === 0 && !LOOPBACK.test(config.httpHost))
      logger.warn(
        { host: config.httpHost },
        'the replay server listens beyond loopback WITHOUT tokens: anyone who reaches it can read the replayed ticks. Set --ws-tokens.',
      );
    const server = new WsServer({
      ...wsServerSettings(config),
      replay: true,
      registry: new Registry(),
      logger,
    });
    const port = await server.start();
    const host = config.httpHost.includes(':') ? `[${config.httpHost}]` : config.httpHost;
    const url = `${config.httpTlsCert ? 'wss' : 'ws'}://${host}:${port}/ws`;
    process.stderr.write(`replay: serving ${url}\n`);
    return new WsTarget(server, url, config.wsMaxBackpressureBytes, options, logger);
  }

  private constructor(
    server: WsServer,
    url: string,
    limit: number,
    options: WsTargetOptions,
    logger: Logger,
  ) {
    this.#server = server;
    this.#logger = logger;
    this.#url = url;
    // Half the limit: a write sends one message per symbol of a batch, the room left takes them
    // all without one passing the limit (where the slow-consumer policy would apply).
    this.#limit = Math.floor(limit / 2);
    this.#o = options;
    this.#stopped = new Promise<never>((_, reject) => {
      this.#stop = reject;
    });
    // Nobody may be awaiting it when the signal comes: not an unhandled rejection.
    this.#stopped.catch(() => undefined);
    process.on('SIGINT', this.#onSignal);
    process.on('SIGTERM', this.#onSignal);
  }

  get #where(): string {
    return `websocket clients on ${this.#url}`;
  }

  /** Rejects with ReplayStopped once SIGINT or SIGTERM came. */
  get stopped(): Promise<never> {
    return this.#stopped;
  }

  async start(): Promise<void> {
    const n = this.#o.waitClients;
    process.stderr.write(`replay: waiting for ${n} client(s) to subscribe on ${this.#url}\n`);
    while (this.#server.subscribedCount < n) await this.#pause(WS_CLIENTS_POLL_MS);
  }

  async write(batch: TickBatch): Promise<void> {
    if (this.#signal) throw new ReplayStopped(this.#signal, this.#where);
    await this.#belowLimit();
    this.#server.write(batch);
    this.#ticks += batch.length;
  }

  async finish(): Promise<string> {
    await this.#belowLimit(0);
    this.#server.broadcast({ type: 'replay_end', ticks: this.#ticks });
    await this.#belowLimit(0);
    await this.#close();
    return this.#where;
  }

  async abort(): Promise<void> {
    await this.#close();
  }

  async #close(): Promise<void> {
    // A signal during finish's drain aborts after it: the server closes once.
    if (this.#closed) return;
    this.#closed = true;
    process.off('SIGINT', this.#onSignal);
    process.off('SIGTERM', this.#onSignal);
    await this.#server.close(this.#signal ? `replay stopped by ${this.#signal}` : 'replay over');
  }

  /**
   * Waits while a client has more than `most` bytes unsent. A client stuck over it for `stallMs`
   * is waited for no more (the slow-consumer policy applies to it) until it is below again.
   */
  async #belowLimit(most = this.#limit): Promise<void> {
    const since = new Map<object, number>();
    for (;;) {
      const now = performance.now();
      let waiting = false;
      for (const [client, bytes] of this.#server.buffered()) {
        if (bytes <= most) {
          this.#givenUp.delete(client);
          continue;
        }
        if (this.#givenUp.has(client)) continue;
        const from = since.get(client) ?? now;
        since.set(client, from);
        if (now - from < this.#o.stallMs) waiting = true;
        else {
          this.#givenUp.add(client);
          this.#logger.warn(
            { bytes, stallMs: this.#o.stallMs },
            'a websocket client read too little for --ws-stall-ms: the replay goes on without waiting for it (wsSlowConsumerPolicy applies to it)',
          );
        }
      }
      if (!waiting) return;
      await this.#pause();
    }
  }

  async #pause(ms = WS_POLL_MS): Promise<void> {
    await Promise.race([sleep(ms), this.#stopped]);
  }
}
