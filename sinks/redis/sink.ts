/**
 * The Redis live view's transport: connection, handshake, reconnect with backoff, pipelined
 * writes, reply counting, the bounded queue and drop accounting. Which commands a batch
 * becomes (keys, entry IDs, fields) is sinks/redis/encoding.ts; the URL is sinks/redis/endpoint.ts.
 *
 * The view: pipelined XADD of every tick to `{prefix}:ticks:{SOURCE}:{SYMBOL}` with
 * `MAXLEN ~`, the latest quote per source and symbol in the hash `{prefix}:quote:{SOURCE}:{SYMBOL}`,
 * closed bars in the stream `{prefix}:bars:1m:{SOURCE}:{SYMBOL}`.
 *
 * Entry IDs come from the tick: `<ms>-<seq>`, where ms is the tick's UTC time, or the greatest
 * ms this sink already gave that stream when the tick is earlier (time going backwards: the
 * tick is stored, under the stream's last ms, instead of refused). Seq grows within a source
 * and symbol, so IDs grow, and a resent tick gets an ID at or below the stream's last one:
 * Redis refuses it (counted as a refused duplicate, not an error) instead of storing it twice,
 * also after a restart. The per-stream ms lives in memory only: right after a restart a tick
 * earlier than the stream's last entry is refused (counted as a duplicate) until a later one
 * comes. Ticks far in the future never get here (the time window, pipeline/ingest.ts), so one
 * cannot push a stream's IDs ahead of real time for good. Entry fields: b bid, a ask, l last,
 * v volume, vr volume_real, f flags, t server time ms, s seq. Bars use `<start ms>-<last seq>`.
 *
 * Nothing is dropped silently: ticks in `tickstream_redis_dropped_ticks_total`, bars in
 * `tickstream_redis_dropped_bars_total{reason}`, each with a log line (rate-limited).
 *
 * Why not ioredis here: a command object, a promise and a reply conversion per tick capped the
 * sink far below the tick rate (it dropped ~60% at 126k ticks/s), and ioredis has no way to
 * write pre-encoded bytes (its reply handler expects one queued command per reply). So the sink
 * owns one plain TCP (or TLS) connection: all commands queued in one event-loop turn are
 * encoded into one reused Buffer (codecs/resp.ts) and written at once; replies are only counted,
 * with error texts read to tell refused duplicates from failures.
 *
 * A live view never holds up the journal: `write` only queues. Ticks queued or awaiting their
 * reply are bounded by `maxQueuedTicks`; past it new ticks are dropped and counted. Encoded bytes
 * awaiting replies are bounded by `maxInFlightBytes` (the pipeline window): batches beyond it
 * wait in the queue, unencoded. The window is small on purpose: measured against the local Redis,
 * 4 MiB in flight sustained ~450k ticks/s, 32 MiB only ~360k (Redis works through a huge query
 * buffer more slowly), and a few MiB already cover several milliseconds of Redis work. While Redis is down `write` drops at once
 * (no offline queue), ticks whose replies were lost with the connection are counted as dropped
 * too, the outage is logged once, and the connection comes back with backoff. Every drop is
 * counted in `tickstream_redis_dropped_ticks_total` and reported to `onDropped` as a seq range:
 * the healer (pipeline/redis-heal.ts) writes those ticks back from the journal later.
 */
import { isIP, connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Bar } from '../../codecs/bar.js';
import { ErrorCode, TickstreamError } from '../../codecs/errors.js';
import { redactUrl } from '../../codecs/redact.js';
import { encodeCommand, RespReplyCounter, RespWriter } from '../../codecs/resp.js';
import { allocTickBatch, type TickBatch } from '../../codecs/tick-batch.js';
import { RedisLiveEncoding } from './encoding.js';
import { type Endpoint, parseUrl } from './endpoint.js';

export interface RedisSinkOptions {
  /** `redis://[user:password@]host[:port][/db]` or `rediss://` for TLS. */
  url: string;
  keyPrefix: string;
  streamMaxLen: number;
  /** Ticks queued or awaiting their reply at most; more are dropped and counted. */
  maxQueuedTicks: number;
  /** Ticks per socket write at most (one write may carry several batches). */
  maxPipelineCommands: number;
  /** Encoded bytes written and not yet answered at most (the pipeline window). Default 4 MiB. */
  maxInFlightBytes?: number;
  /** A connection attempt that takes longer fails. Default 2000 ms. */
  connectTimeoutMs?: number;
  registry: Registry;
  logger: Logger;
  /**
   * Told of every tick dropped (Redis down, queue full, connection lost, command failed) as a
   * seq range of one source, with when the ticks reached the sink: the healer's input.
   */
  onDropped?: (source: string, firstSeq: number, lastSeq: number, atMs: number) => void;
}

const State = { IDLE: 0, CONNECTING: 1, READY: 2, CLOSED: 3 } as const;
type State = (typeof State)[keyof typeof State];

const Kind = { HELLO: 0, TICKS: 1, BARS: 2 } as const;
type Kind = (typeof Kind)[keyof typeof Kind];

const MAX_PENDING_BARS = 10_000;
/** Bytes per socket write at most (besides maxPipelineCommands ticks). */
const WRITE_BYTES = 1 << 20;
/** Drops of one kind are logged at most this often. */
const DROP_LOG_INTERVAL_MS = 10_000;
const EMPTY_BATCH = allocTickBatch('', [], 0);

/** Commands of one batch (or of the handshake, or of some bars) whose replies are awaited. */
class Segment {
  kind: Kind;
  /** Tick XADDs first, then quote HSETs (TICKS). */
  ticks: number;
  replies: number;
  bytes: number;
  receivedAtMs: number;
  startedAt: number;
  /** The last segment of one socket write: its reply ends the flush. */
  endsWrite = false;
  /** TICKS: the batch's source and seq span, reported if its ticks are dropped. */
  source = '';
  firstSeq = 0;
  lastSeq = 0;
  replied = 0;
  written = 0;
  refused = 0;
  failed = 0;
  lastError: string | null = null;

  constructor(kind: Kind, ticks: number, replies: number, bytes: number, receivedAtMs: number, at: number) {
    this.kind = kind;
    this.ticks = ticks;
    this.replies = replies;
    this.bytes = bytes;
    this.receivedAtMs = receivedAtMs;
    this.startedAt = at;
  }
}

export class RedisSink {
  readonly #o: RedisSinkOptions;
  readonly #endpoint: Endpoint;
  readonly #maxInFlightBytes: number;
  readonly #m;
  readonly #w = new RespWriter(1 << 20);
  /** Buffers whose bytes the socket has taken, to encode the next write into. */
  readonly #free: Buffer[] = [];
  readonly #parser = new RespReplyCounter((err) => this.#onReply(err));
  readonly #encoding: RedisLiveEncoding;
  /** Per kind of drop: when it was last logged. */
  readonly #dropLoggedAt = new Map<string, number>();

  #state: State = State.IDLE;
  #socket: Socket | null = null;
  #attempt = 0;
  #reconnectTimer: NodeJS.Timeout | null = null;
  #startWaiter: { resolve: () => void; reject: (e: Error) => void } | null = null;
  #lastConnectError = '';
  #down = false;
  #lastFailureLogAt = 0;

  #queue: TickBatch[] = [];
  #queueHead = 0;
  #bars: Bar[] = [];
  #flushScheduled = false;
  /** Ticks queued or written and not yet answered. */
  #queuedTicks = 0;
  #inFlightBytes = 0;
  #segs: Segment[] = [];
  #segHead = 0;
  #dataSegments = 0;
  #drainWaiters: (() => void)[] = [];

  constructor(options: RedisSinkOptions) {
    this.#o = options;
    this.#endpoint = parseUrl(options.url);
    this.#maxInFlightBytes = options.maxInFlightBytes ?? 4 << 20;
    this.#encoding = new RedisLiveEncoding(options.keyPrefix, options.streamMaxLen);
    const registers = [options.registry];
    this.#m = {
      written: new Counter({
        name: 'tickstream_redis_ticks_written_total',
        help: 'Ticks XADDed to Redis streams',
        registers,
      }),
      dropped: new Counter({
        name: 'tickstream_redis_dropped_ticks_total',
        help: 'Ticks the Redis live view dropped (queue full, Redis down or a command failed)',
        registers,
      }),
      droppedBars: new Counter({
        name: 'tickstream_redis_dropped_bars_total',
        help: 'Bars the Redis live view dropped, by reason (not_connected, queue_full, connection_lost, refused, failed)',
        labelNames: ['reason'],
        registers,
      }),
      refused: new Counter({
        name: 'tickstream_redis_duplicates_refused_total',
        help: 'Resent ticks Redis refused by their entry ID',
        registers,
      }),
      queued: new Gauge({
        name: 'tickstream_redis_queued_ticks',
        help: 'Ticks waiting for Redis (queued or awaiting their reply)',
        registers,
      }),
      limit: new Gauge({
        name: 'tickstream_redis_queued_ticks_limit',
        help: 'Configured redisMaxQueuedTicks',
        registers,
      }),
      inFlightBytes: new Gauge({
        name: 'tickstream_redis_in_flight_bytes',
        help: 'Encoded command bytes written to Redis and not yet answered',
        registers,
      }),
      connected: new Gauge({
        name: 'tickstream_redis_connected',
        help: '1 while the connection to Redis is ready, else 0',
        registers,
      }),
      flush: new Histogram({
        name: 'tickstream_redis_flush_seconds',
        help: 'One pipelined write: encoding to its last reply',
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

  /** Connects; rejects when the first attempt fails (and keeps retrying in the background). */
  async start(): Promise<void> {
    if (this.#state !== State.IDLE) return;
    const ready = new Promise<void>((resolve, reject) => {
      this.#startWaiter = { resolve, reject };
    });
    this.#connect();
    await ready;
  }

  /** Ticks queued or written and not yet answered. */
  get queuedTicks(): number {
    return this.#queuedTicks;
  }

  get inFlightBytes(): number {
    return this.#inFlightBytes;
  }

  /** True while the connection is up and answered its handshake. */
  get connected(): boolean {
    return this.#state === State.READY;
  }

  write(batch: TickBatch): void {
    const n = batch.length;
    if (n === 0) return;
    if (this.#state !== State.READY) {
      this.#dropped(batch);
      this.#outage(n, this.#state === State.CLOSED ? 'closed' : 'not connected');
      return;
    }
    if (this.#queuedTicks + n > this.#o.maxQueuedTicks) {
      this.#dropped(batch);
      this.#m.dropped.inc(n);
      this.#logDrop(
        'queue_full',
        { ticks: n, limit: this.#o.maxQueuedTicks },
        'redis queue full: ticks dropped from the live view (counted in tickstream_redis_dropped_ticks_total; logged at most every 10 s). Redis is slower than the feed: check its latency, or raise --redis-max-queued-ticks',
      );
      return;
    }
    this.#queue.push(batch);
    this.#queuedTicks += n;
    this.#m.queued.set(this.#queuedTicks);
    this.#schedule();
  }

  writeBars(bars: Bar[]): void {
    if (this.#state !== State.READY) {
      this.#barsDropped('not_connected', bars.length, 'redis is not connected');
      return;
    }
    if (this.#bars.length + bars.length > MAX_PENDING_BARS) {
      this.#barsDropped('queue_full', bars.length, `${MAX_PENDING_BARS} bars wait for Redis already`);
      return;
    }
    for (const b of bars) this.#bars.push(b);
    this.#schedule();
  }

  #dropped(batch: TickBatch): void {
    this.#o.onDropped?.(
      batch.source,
      batch.seq[0] as number,
      batch.seq[batch.length - 1] as number,
      batch.receivedAtMs || Date.now(),
    );
  }

  /** Forgets what the sink caches for a source (idle past sourceForgetAfterMs). */
  forgetSource(source: string): void {
    this.#encoding.forgetSource(source);
  }

  #barsDropped(reason: string, n: number, why: string): void {
    if (n === 0) return;
    this.#m.droppedBars.inc({ reason }, n);
    this.#logDrop(
      `bars:${reason}`,
      { bars: n, reason },
      `bars not written to Redis: ${why} (counted in tickstream_redis_dropped_bars_total; logged at most every 10 s). Kafka and Postgres have them.`,
    );
  }

  #logDrop(kind: string, fields: Record<string, unknown>, message: string): void {
    const now = Date.now();
    if (now - (this.#dropLoggedAt.get(kind) ?? 0) < DROP_LOG_INTERVAL_MS) return;
    this.#dropLoggedAt.set(kind, now);
    this.#o.logger.warn(fields, message);
  }

  /** Resolves true once nothing is queued or awaiting a reply, false at the deadline. */
  drain(deadlineMs = 5000): Promise<boolean> {
    if (this.#idle()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#drainWaiters = this.#drainWaiters.filter((w) => w !== done);
        resolve(false);
      }, deadlineMs);
      const done = () => {
        clearTimeout(timer);
        resolve(true);
      };
      this.#drainWaiters.push(done);
    });
  }

  async close(deadlineMs = 5000): Promise<void> {
    if (this.#state === State.CLOSED) return;
    if (this.#state === State.READY) await this.drain(deadlineMs);
    this.#state = State.CLOSED;
    if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    const socket = this.#socket;
    this.#socket = null;
    this.#failPending('closed before Redis answered');
    this.#m.connected.set(0);
    socket?.destroy();
    const w = this.#startWaiter;
    this.#startWaiter = null;
    w?.reject(new TickstreamError(ErrorCode.REDIS, 'the Redis sink was closed before it connected'));
  }

  // --- connection ---

  #connect(): void {
    this.#state = State.CONNECTING;
    const { host, port, tls } = this.#endpoint;
    const socket = tls
      ? tlsConnect({ host, port, ...(isIP(host) ? {} : { servername: host }) })
      : netConnect({ host, port });
    this.#socket = socket;
    // Retries in the background must not keep a process alive that has nothing else to do.
    if (!this.#startWaiter) socket.unref();
    socket.setNoDelay(true);
    socket.setTimeout(this.#o.connectTimeoutMs ?? 2000);
    socket.once(tls ? 'secureConnect' : 'connect', () => this.#hello(socket));
    socket.on('timeout', () => socket.destroy(new Error('connect timeout')));
    socket.on('error', (err) => {
      this.#lastConnectError = err.message;
    });
    socket.on('data', (chunk: Buffer) => {
      if (socket !== this.#socket) return;
      const bad = this.#parser.push(chunk);
      if (bad) socket.destroy(new Error(`Redis protocol error: ${bad}`));
    });
    socket.on('close', () => this.#onClose(socket));
  }

  #hello(socket: Socket): void {
    const { username, password, db } = this.#endpoint;
    const cmds: Buffer[] = [];
    if (password) cmds.push(encodeCommand(username ? ['AUTH', username, password] : ['AUTH', password]));
    if (db) cmds.push(encodeCommand(['SELECT', db]));
    cmds.push(encodeCommand(['PING']));
    this.#segs.push(new Segment(Kind.HELLO, 0, cmds.length, 0, 0, performance.now()));
    socket.write(Buffer.concat(cmds));
  }

  #ready(socket: Socket): void {
    socket.setTimeout(0);
    socket.setKeepAlive(true, 10_000);
    socket.ref();
    this.#state = State.READY;
    this.#attempt = 0;
    this.#m.connected.set(1);
    if (this.#down) this.#o.logger.info({ url: this.#safeUrl() }, 'redis is back: live view resumes');
    this.#down = false;
    const w = this.#startWaiter;
    this.#startWaiter = null;
    w?.resolve();
  }

  #onClose(socket: Socket): void {
    if (socket !== this.#socket) return; // closed by close(), already accounted for
    this.#socket = null;
    const wasReady = this.#state === State.READY;
    this.#state = State.CONNECTING;
    this.#m.connected.set(0);
    const why = this.#lastConnectError || 'connection closed';
    this.#lastConnectError = '';
    if (wasReady) this.#outage(0, why);
    this.#failPending('connection lost before Redis answered');
    const w = this.#startWaiter;
    this.#startWaiter = null;
    if (w) {
      this.#down = true; // start() reports this outage; the recovery is logged
      w.reject(
        new TickstreamError(
          ErrorCode.REDIS,
          `cannot reach Redis at ${this.#safeUrl()} (${why}). Start Redis, fix --redis-url, or run with --redis-enabled false.`,
        ),
      );
    }
    const delay = Math.min(2000, 50 * 2 ** this.#attempt++);
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = null;
      if (this.#state === State.CONNECTING) this.#connect();
    }, delay);
    this.#reconnectTimer.unref();
  }

  /** Counts everything queued or awaiting a reply as dropped (the connection is gone). */
  #failPending(why: string): void {
    this.#parser.reset();
    let lost = 0;
    let lostBars = 0;
    for (let i = this.#segHead; i < this.#segs.length; i++) {
      const s = this.#segs[i] as Segment;
      if (s.kind === Kind.BARS) lostBars += s.replies - s.replied;
      if (s.kind !== Kind.TICKS) continue;
      this.#count(s);
      const unanswered = s.ticks - s.written - s.refused - s.failed;
      lost += unanswered;
      if (unanswered && !s.failed) this.#segmentDropped(s);
    }
    this.#segs = [];
    this.#segHead = 0;
    this.#dataSegments = 0;
    for (let i = this.#queueHead; i < this.#queue.length; i++) {
      const b = this.#queue[i] as TickBatch;
      lost += b.length;
      this.#dropped(b);
    }
    this.#queue = [];
    this.#queueHead = 0;
    this.#barsDropped('connection_lost', this.#bars.length + lostBars, why);
    this.#bars = [];
    this.#queuedTicks = 0;
    this.#inFlightBytes = 0;
    this.#m.queued.set(0);
    this.#m.inFlightBytes.set(0);
    if (lost) this.#outage(lost, why);
    this.#wakeDrainers();
  }

  // --- writing ---

  #schedule(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => this.#flush());
  }

  /**
   * Encodes what is queued, as far as the pipeline window allows, in socket writes of at most
   * maxPipelineCommands ticks or WRITE_BYTES bytes. Replies that open the window call it again.
   */
  #flush(): void {
    this.#flushScheduled = false;
    const socket = this.#socket;
    if (this.#state !== State.READY || !socket) return; // #failPending already counted the queue
    const queue = this.#queue;
    const w = this.#w;
    const started = performance.now();
    let ticks = 0;
    let last: Segment | null = null;
    while (this.#queueHead < queue.length && this.#inFlightBytes < this.#maxInFlightBytes) {
      const b = queue[this.#queueHead] as TickBatch;
      queue[this.#queueHead++] = EMPTY_BATCH; // let the batch go once encoded
      if (last && (ticks + b.length > this.#o.maxPipelineCommands || w.off >= WRITE_BYTES)) {
        this.#send(socket, last);
        last = null;
        ticks = 0;
      }
      last = this.#encodeTicks(b, started) ?? last;
      ticks += b.length;
    }
    if (this.#queueHead === queue.length) {
      queue.length = 0;
      this.#queueHead = 0;
    }
    if (this.#bars.length) {
      last = this.#encodeBars(this.#bars, started);
      this.#bars = [];
    }
    if (last) this.#send(socket, last);
  }

  #send(socket: Socket, last: Segment): void {
    last.endsWrite = true;
    const w = this.#w;
    const whole = w.buf;
    const bytes = w.detach(this.#free.pop());
    this.#m.inFlightBytes.set(this.#inFlightBytes);
    socket.write(bytes, () => {
      // The socket is done with these bytes: the next write may encode into the buffer.
      if (this.#free.length < 2 && whole.length <= 64 << 20) this.#free.push(whole);
    });
  }

  #encodeTicks(b: TickBatch, started: number): Segment | null {
    const w = this.#w;
    const from = w.off;
    const { ticks, quotes, bad } = this.#encoding.ticks(w, b);
    if (bad) {
      this.#queuedTicks -= bad;
      this.#m.dropped.inc(bad);
      this.#logDrop(
        'symbol_index',
        { ticks: bad, source: b.source },
        'ticks with a symbol index outside their batch: dropped from Redis (counted in tickstream_redis_dropped_ticks_total). This is a decoder bug: please report it',
      );
      if (ticks === 0) return null;
    }
    const seg = new Segment(Kind.TICKS, ticks, ticks + quotes, w.off - from, b.receivedAtMs, started);
    seg.source = b.source;
    seg.firstSeq = b.seq[0] as number;
    seg.lastSeq = b.seq[b.length - 1] as number;
    this.#push(seg);
    return seg;
  }

  #encodeBars(bars: Bar[], started: number): Segment {
    const w = this.#w;
    const from = w.off;
    this.#encoding.bars(w, bars);
    const seg = new Segment(Kind.BARS, 0, bars.length, w.off - from, 0, started);
    this.#push(seg);
    return seg;
  }

  #push(seg: Segment): void {
    this.#segs.push(seg);
    this.#dataSegments++;
    this.#inFlightBytes += seg.bytes;
  }

  // --- replies ---

  #onReply(err: string | null): void {
    const seg = this.#segs[this.#segHead];
    if (!seg) {
      this.#socket?.destroy(new Error('Redis sent a reply nobody asked for'));
      return;
    }
    const i = seg.replied++;
    if (err !== null) {
      if (seg.kind === Kind.TICKS && i < seg.ticks) {
        if (err.includes('equal or smaller')) seg.refused++;
        else {
          seg.failed++;
          seg.lastError = err;
        }
      } else if (seg.kind === Kind.BARS) {
        if (err.includes('equal or smaller')) seg.refused++;
        else {
          seg.failed++;
          seg.lastError = err;
        }
      } else seg.lastError = err;
    } else if (seg.kind === Kind.TICKS && i < seg.ticks) seg.written++;
    if (seg.replied === seg.replies) this.#complete(seg);
  }

  #complete(seg: Segment): void {
    this.#segHead++;
    if (this.#segHead === this.#segs.length) {
      this.#segs.length = 0;
      this.#segHead = 0;
    } else if (this.#segHead >= 1024) {
      this.#segs.splice(0, this.#segHead);
      this.#segHead = 0;
    }
    if (seg.kind === Kind.HELLO) {
      const socket = this.#socket;
      if (!socket) return;
      if (seg.lastError) socket.destroy(new Error(`Redis refused the handshake: ${seg.lastError}`));
      else this.#ready(socket);
      return;
    }
    this.#dataSegments--;
    this.#inFlightBytes -= seg.bytes;
    if (this.#queueHead < this.#queue.length && this.#inFlightBytes < this.#maxInFlightBytes)
      this.#schedule();
    const now = performance.now();
    if (seg.endsWrite) {
      this.#m.flush.observe((now - seg.startedAt) / 1000);
      this.#m.inFlightBytes.set(this.#inFlightBytes);
    }
    if (seg.kind === Kind.BARS) {
      // A bar at or below the stream's last ID: the same minute again (a restart republished it).
      this.#barsDropped('refused', seg.refused, 'Redis refused bars at or below the last ID of their stream');
      if (seg.failed) this.#m.droppedBars.inc({ reason: 'failed' }, seg.failed);
    }
    if (seg.kind === Kind.TICKS) {
      this.#count(seg);
      this.#queuedTicks -= seg.ticks;
      this.#m.queued.set(this.#queuedTicks);
      if (seg.receivedAtMs) this.#m.latency.observe((performance.timeOrigin + now - seg.receivedAtMs) / 1000);
    }
    if (seg.lastError) this.#commandFailed(seg);
    if (this.#drainWaiters.length && this.#idle()) this.#wakeDrainers();
  }

  /** Moves a ticks segment's reply counts into the metrics (once). */
  #count(seg: Segment): void {
    if (seg.written) this.#m.written.inc(seg.written);
    if (seg.refused) this.#m.refused.inc(seg.refused);
    if (seg.failed) {
      this.#m.dropped.inc(seg.failed);
      this.#segmentDropped(seg);
    }
  }

  /** Reports a ticks segment's whole seq span (healing skips what Redis has). */
  #segmentDropped(seg: Segment): void {
    this.#o.onDropped?.(seg.source, seg.firstSeq, seg.lastSeq, seg.receivedAtMs || Date.now());
  }

  #commandFailed(seg: Segment): void {
    const now = Date.now();
    if (now - this.#lastFailureLogAt < 10_000) return;
    this.#lastFailureLogAt = now;
    this.#o.logger.warn(
      { error: seg.lastError, failedTicks: seg.failed, kind: seg.kind === Kind.BARS ? 'bars' : 'ticks' },
      'redis refused commands: their ticks are dropped (counted in tickstream_redis_dropped_ticks_total); logged at most every 10 s',
    );
  }

  #idle(): boolean {
    return this.#queuedTicks === 0 && this.#dataSegments === 0 && this.#bars.length === 0;
  }

  #wakeDrainers(): void {
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const w of waiters) w();
  }

  #outage(ticks: number, why: string): void {
    if (ticks) this.#m.dropped.inc(ticks);
    if (!this.#down)
      this.#o.logger.warn(
        { why, url: this.#safeUrl() },
        'redis unavailable: the live view drops ticks until it returns (counted in tickstream_redis_dropped_ticks_total)',
      );
    this.#down = true;
  }

  /** The URL without its password, for logs and errors. */
  #safeUrl(): string {
    return redactUrl(this.#o.url);
  }
}
