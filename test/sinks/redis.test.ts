// The Redis live view against the machine's Redis (own key prefix, deleted afterwards), read back
// with ioredis, which shares no code with the sink; outages against a closed port and against a
// redis-server this test starts and kills itself. Also the RESP codec under it.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Bar } from '../../codecs/bar.js';
import { TickstreamError } from '../../codecs/errors.js';
import { RespReplyCounter, RespWriter } from '../../codecs/resp.js';
import { allocTickBatch, DIGITS_UNKNOWN, type TickBatch } from '../../codecs/tick-batch.js';
import { RedisSink, type RedisSinkOptions } from '../../sinks/redis/sink.js';
import { REDIS_URL } from '../helpers/procs.js';

const url = REDIS_URL;
const prefix = `tstest:${randomBytes(4).toString('hex')}`;
const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
const sinks: RedisSink[] = [];

function sink(over: Partial<RedisSinkOptions> = {}) {
  const registry = new Registry();
  const s = new RedisSink({
    url,
    keyPrefix: prefix,
    streamMaxLen: 1_000_000,
    maxQueuedTicks: 50_000,
    maxPipelineCommands: 2_000,
    registry,
    logger: pino({ level: 'silent' }),
    ...over,
  });
  sinks.push(s);
  const metric = async (name: string) =>
    (await registry.getSingleMetric(`tickstream_redis_${name}`)?.get())?.values[0]?.value ?? 0;
  return { s, metric };
}

beforeAll(async () => {
  await redis.connect();
});

afterAll(async () => {
  for (const s of sinks) await s.close(1000).catch(() => undefined);
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await redis.del(...keys);
  } while (cursor !== '0');
  redis.disconnect();
});

/** `n` ticks over `symbols`, seq from `firstSeq`, awkward values included. */
function ticks(
  source: string,
  symbols: string[],
  n: number,
  firstSeq: number,
  batchTicks: number,
): TickBatch[] {
  const out: TickBatch[] = [];
  let ms = Date.UTC(2024, 2, 31, 0, 59, 59, 990);
  for (let from = 0; from < n; from += batchTicks) {
    const len = Math.min(batchTicks, n - from);
    // Half the symbols with MT5 digits (prices written as scaled integers), half without.
    const digits = symbols.map((_, k) => (k % 2 ? DIGITS_UNKNOWN : 5));
    const b = allocTickBatch(source, symbols, len, digits);
    b.receivedAtMs = Date.now();
    for (let i = 0; i < len; i++) {
      const k = from + i;
      ms += k % 3 === 0 ? 1 : 0; // some ticks share a millisecond
      b.seq[i] = firstSeq + k;
      b.symbolIndex[i] = (k * 7) % symbols.length;
      b.utcMsc[i] = ms;
      b.serverTimeMsc[i] = ms + 10_800_000;
      b.bid[i] = Number((1.08 + (k % 97) * 1e-5).toFixed(5));
      b.ask[i] = k % 50 === 0 ? 0.1 + 0.2 : b.bid[i]! + 0.00012; // 0.30000000000000004, 1.08012000000001
      b.last[i] = k % 11 === 0 ? 1.0801 : 0;
      b.volume[i] = k % 13 === 0 ? 2 ** 40 + k : 0;
      b.volumeReal[i] = k % 17 === 0 ? 0.35 : k % 19 === 0 ? 1e-7 : 0;
      b.flags[i] = k % 23 === 0 ? 0x80000006 : 6;
    }
    b.length = len;
    out.push(b);
  }
  return out;
}

/** What XRANGE must return for each stream, and the last tick per stream. */
function expected(batches: TickBatch[]) {
  const streams = new Map<string, [string, string[]][]>();
  const last = new Map<string, Record<string, string>>();
  for (const b of batches) {
    for (let i = 0; i < b.length; i++) {
      const sym = b.symbols[b.symbolIndex[i]!]!;
      const key = `${prefix}:ticks:${b.source}:${sym}`;
      const fields = [
        ['b', b.bid[i]],
        ['a', b.ask[i]],
        ['l', b.last[i]],
        ['v', b.volume[i]],
        ['vr', b.volumeReal[i]],
        ['f', b.flags[i]],
        ['t', b.serverTimeMsc[i]],
        ['s', b.seq[i]],
      ].flatMap(([k, v]) => [String(k), String(v)]);
      const entries = streams.get(key) ?? [];
      entries.push([`${b.utcMsc[i]}-${b.seq[i]}`, fields]);
      streams.set(key, entries);
      last.set(`${prefix}:quote:${b.source}:${sym}`, {
        bid: String(b.bid[i]),
        ask: String(b.ask[i]),
        last: String(b.last[i]),
        time: String(b.utcMsc[i]),
        server_time_msc: String(b.serverTimeMsc[i]),
        seq: String(b.seq[i]),
        flags: String(b.flags[i]),
      });
    }
  }
  return { streams, last };
}

describe('RedisSink against Redis', () => {
  const a = ticks('srcA', ['EURUSD', 'GBPUSD'], 6_000, 1, 700);
  const b = ticks('srcB', ['EURUSD', 'USDJPY', 'XAUUSD'], 4_000, 1001, 333);
  const all = [...a, ...b];
  const total = 10_000;
  const want = expected(all);

  it('writes every tick of two sources and several symbols exactly once, with the last quote', async () => {
    const { s, metric } = sink();
    await s.start();
    expect(s.connected).toBe(true);
    // Interleave the sources as the pipeline would.
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      if (a[i]) s.write(a[i]!);
      if (b[i]) s.write(b[i]!);
    }
    expect(await s.drain(30_000)).toBe(true);
    expect(s.queuedTicks).toBe(0);
    expect(s.inFlightBytes).toBe(0);
    expect(await metric('ticks_written_total')).toBe(total);
    expect(await metric('dropped_ticks_total')).toBe(0);
    expect(await metric('duplicates_refused_total')).toBe(0);

    expect(want.streams.size).toBe(5);
    for (const [key, entries] of want.streams) {
      expect(await redis.xlen(key)).toBe(entries.length);
      expect(await redis.xrange(key, '-', '+')).toEqual(entries);
    }
    for (const [key, fields] of want.last) expect(await redis.hgetall(key)).toEqual(fields);
  });

  it('refuses a resent batch by its entry IDs: nothing added, counted as duplicates', async () => {
    const { s, metric } = sink();
    await s.start();
    for (const batch of all) s.write(batch);
    expect(await s.drain(30_000)).toBe(true);
    expect(await metric('duplicates_refused_total')).toBe(total);
    expect(await metric('ticks_written_total')).toBe(0);
    expect(await metric('dropped_ticks_total')).toBe(0);
    for (const [key, entries] of want.streams) expect(await redis.xlen(key)).toBe(entries.length);
  });

  it("stores ticks going backwards in time under the stream's last ms; a resend of them is still refused (issue 20.5)", async () => {
    const { s, metric } = sink({ keyPrefix: `${prefix}:back` });
    await s.start();
    const t0 = Date.UTC(2026, 0, 2, 10, 0, 0);
    const times = [t0, t0 + 500, t0 + 200, t0 + 100, t0 + 600];
    const batch = () => {
      const b = allocTickBatch('srcB', ['EURUSD'], times.length);
      times.forEach((t, i) => {
        b.seq[i] = 10 + i;
        b.utcMsc[i] = t;
        b.serverTimeMsc[i] = t;
        b.bid[i] = 1.1;
        b.ask[i] = 1.2;
        b.flags[i] = 6;
      });
      b.length = times.length;
      return b;
    };
    s.write(batch());
    expect(await s.drain(10_000)).toBe(true);
    const key = `${prefix}:back:ticks:srcB:EURUSD`;
    expect((await redis.xrange(key, '-', '+')).map(([id]) => id)).toEqual([
      `${t0}-10`,
      `${t0 + 500}-11`,
      `${t0 + 500}-12`,
      `${t0 + 500}-13`,
      `${t0 + 600}-14`,
    ]);
    expect(await metric('duplicates_refused_total')).toBe(0);
    // A resend (a restarted bridge publishes un-ACKed ticks again), by this sink and by a fresh
    // one that does not know the stream's last ms: every tick refused, none stored twice.
    s.write(batch());
    expect(await s.drain(10_000)).toBe(true);
    expect(await metric('duplicates_refused_total')).toBe(times.length);
    const fresh = sink({ keyPrefix: `${prefix}:back` });
    await fresh.s.start();
    fresh.s.write(batch());
    expect(await fresh.s.drain(10_000)).toBe(true);
    expect(await fresh.metric('duplicates_refused_total')).toBe(times.length);
    expect(await redis.xlen(key)).toBe(times.length);
  });

  it('writes closed bars to their stream', async () => {
    const { s, metric } = sink();
    await s.start();
    const bar: Bar = {
      source: 'srcA',
      symbol: 'EURUSD',
      startMs: Date.UTC(2024, 2, 31, 1, 0),
      open: 1.08,
      high: 1.081,
      low: 1.0795,
      close: 1.0805,
      tickCount: 4,
      spreadMin: 0.0001,
      spreadMax: 0.0002,
      spreadSum: 0.0006,
      lastOpen: Number.NaN,
      lastHigh: Number.NaN,
      lastLow: Number.NaN,
      lastClose: Number.NaN,
      volume: 0,
      lastSeq: 42,
    };
    s.writeBars([bar, bar]); // the second one is a resend: refused, counted
    expect(await s.drain(10_000)).toBe(true);
    expect(await metric('dropped_bars_total')).toBe(1);
    expect(await redis.xrange(`${prefix}:bars:1m:srcA:EURUSD`, '-', '+')).toEqual([
      [
        `${bar.startMs}-42`,
        [
          'o',
          '1.08',
          'h',
          '1.081',
          'l',
          '1.0795',
          'c',
          '1.0805',
          'n',
          '4',
          'sa',
          String(0.0006 / 4),
          'v',
          '0',
        ],
      ],
    ]);
  });

  it('drops the ticks over maxQueuedTicks and counts them, without blocking the caller', async () => {
    const reported: [string, number, number][] = [];
    const { s, metric } = sink({
      keyPrefix: `${prefix}:full`,
      maxQueuedTicks: 1_000,
      onDropped: (source, lo, hi) => reported.push([source, lo, hi]),
    });
    await s.start();
    const batches = ticks('srcC', ['EURUSD'], 5_000, 1, 500);
    for (const batch of batches) s.write(batch); // all in one turn: only the first 1 000 fit
    expect(s.queuedTicks).toBe(1_000);
    expect(await s.drain(10_000)).toBe(true);
    expect(await metric('ticks_written_total')).toBe(1_000);
    expect(await metric('dropped_ticks_total')).toBe(4_000);
    // Every dropped tick is reported to the healer as seq ranges of its source.
    expect(reported.reduce((n, [, lo, hi]) => n + hi - lo + 1, 0)).toBe(4_000);
    expect(reported[0]).toEqual(['srcC', 1_001, 1_500]);
    expect(await redis.xlen(`${prefix}:full:ticks:srcC:EURUSD`)).toBe(1_000);
  });

  it('on a closed port: start() fails with ERR_REDIS, writes drop and count, memory stays flat', async () => {
    const { s, metric } = sink({ url: 'redis://127.0.0.1:1', maxQueuedTicks: 200_000 });
    const err = await s.start().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TickstreamError);
    expect((err as TickstreamError).code).toBe('ERR_REDIS');
    expect((err as Error).message).toMatch(/127\.0\.0\.1:1/);
    expect(s.connected).toBe(false);
    const batch = ticks('srcD', ['EURUSD'], 1_000, 1, 1_000)[0]!;
    const heapBefore = process.memoryUsage().heapUsed;
    for (let i = 0; i < 2_000; i++) {
      s.write(batch);
      s.writeBars([]);
      if (i % 200 === 0) await new Promise((r) => setTimeout(r, 1)); // let reconnects run meanwhile
    }
    const grown = process.memoryUsage().heapUsed - heapBefore;
    expect(await metric('dropped_ticks_total')).toBe(2_000_000);
    expect(await metric('ticks_written_total')).toBe(0);
    expect(s.queuedTicks).toBe(0);
    expect(s.inFlightBytes).toBe(0);
    expect(grown).toBeLessThan(16 << 20); // 2 M ticks dropped, nothing kept
    await s.close(100);
  });
});

describe('RedisSink through an outage of its own redis-server', () => {
  let server: ChildProcess | null = null;
  let port = 0;

  const startServer = async () => {
    server = spawn('redis-server', ['--port', String(port), '--save', '', '--appendonly', 'no'], {
      stdio: 'ignore',
    });
    const probe = new Redis(port, '127.0.0.1', { lazyConnect: true, retryStrategy: () => null });
    probe.on('error', () => undefined);
    for (let i = 0; i < 100; i++) {
      if (
        await probe.connect().then(
          () => true,
          () => false,
        )
      )
        break;
      await new Promise((r) => setTimeout(r, 50));
    }
    probe.disconnect();
  };
  const stopServer = async () => {
    const s = server;
    server = null;
    if (!s || s.exitCode !== null) return;
    await new Promise((r) => {
      s.once('exit', r);
      s.kill('SIGKILL');
    });
  };

  beforeAll(async () => {
    port = await new Promise<number>((resolve) => {
      const srv = createServer().listen(0, '127.0.0.1', () => {
        const p = (srv.address() as { port: number }).port;
        srv.close(() => resolve(p));
      });
    });
    await startServer();
  });
  afterAll(stopServer);

  it('drops while Redis is gone, reconnects by itself, then writes again', async () => {
    const { s, metric } = sink({ url: `redis://127.0.0.1:${port}`, keyPrefix: 'outage' });
    await s.start();
    const [one, two, three] = ticks('srcE', ['EURUSD'], 3_000, 1, 1_000);
    s.write(one!);
    expect(await s.drain(10_000)).toBe(true);
    expect(await metric('ticks_written_total')).toBe(1_000);

    await stopServer();
    for (let i = 0; i < 100 && s.connected; i++) await new Promise((r) => setTimeout(r, 20));
    expect(s.connected).toBe(false);
    s.write(two!); // Redis is down: dropped at once, not queued
    expect(s.queuedTicks).toBe(0);
    expect(await metric('dropped_ticks_total')).toBe(1_000);

    await startServer(); // empty: --save ""
    for (let i = 0; i < 200 && !s.connected; i++) await new Promise((r) => setTimeout(r, 25));
    expect(s.connected).toBe(true);
    s.write(three!);
    expect(await s.drain(10_000)).toBe(true);
    expect(await metric('ticks_written_total')).toBe(2_000);
    const check = new Redis(port, '127.0.0.1');
    expect(await check.xlen('outage:ticks:srcE:EURUSD')).toBe(1_000);
    check.disconnect();
    await s.close(1000);
  });
});

describe('RESP codec', () => {
  const text = (x: number) => {
    const w = new RespWriter(64);
    w.ensure(64);
    w.num(x);
    return w.buf.toString('latin1', 0, w.off);
  };

  it('formats every number as String() does', () => {
    fc.assert(
      fc.property(fc.oneof(fc.double(), fc.integer(), fc.maxSafeInteger()), (x) => {
        const s = String(x);
        expect(text(x)).toBe(`$${s.length}\r\n${s}\r\n`);
      }),
      { numRuns: 20_000 },
    );
    for (const x of [0, -0, 1e21, 2 ** 53, 2 ** 53 + 2, -(2 ** 31), 2 ** 31, 1711800000123])
      expect(text(x)).toBe(`$${String(x).length}\r\n${String(x)}\r\n`);
  });

  it('writes prices at their digits as String() does', () => {
    const price = (x: number, digits: number) => {
      const w = new RespWriter(64);
      w.ensure(64);
      w.price(x, digits);
      return w.buf.toString('latin1', 0, w.off);
    };
    const onGrid = fc
      .tuple(fc.integer({ min: 0, max: 8 }), fc.integer({ min: -1e12, max: 1e12 }))
      .map(([digits, points]) => [points / 10 ** digits, digits] as const);
    const any = fc.tuple(fc.double(), fc.integer({ min: DIGITS_UNKNOWN, max: 8 }));
    fc.assert(
      fc.property(fc.oneof(onGrid, any), ([x, digits]) => {
        const s = String(x);
        expect(price(x, digits)).toBe(`$${s.length}\r\n${s}\r\n`);
      }),
      { numRuns: 20_000 },
    );
  });

  it('writes entry IDs as <ms>-<seq>', () => {
    const w = new RespWriter(8); // grows
    w.ensure(64);
    w.id(1711800000123, 4294967296);
    expect(w.buf.toString('latin1', 0, w.off)).toBe('$24\r\n1711800000123-4294967296\r\n');
  });

  it('counts replies however the stream is cut, and hands over error texts', () => {
    const dup = 'ERR The ID specified in XADD is equal or smaller than the target stream top item';
    const stream = Buffer.from(
      `+OK\r\n:12\r\n$15\r\n1711800000123-7\r\n-${dup}\r\n$-1\r\n*2\r\n$1\r\na\r\n*1\r\n:1\r\n*0\r\n$0\r\n\r\n*-1\r\n`,
    );
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: stream.length }), { maxLength: 6 }), (cuts) => {
        const got: (string | null)[] = [];
        const p = new RespReplyCounter((e) => got.push(e));
        const at = [0, ...cuts.sort((x, y) => x - y), stream.length];
        for (let i = 1; i < at.length; i++) expect(p.push(stream.subarray(at[i - 1], at[i]))).toBeNull();
        expect(got).toEqual([null, null, null, dup, null, null, null, null, null]);
      }),
      { numRuns: 2_000 },
    );
  });

  it('reports bytes that are not RESP', () => {
    const p = new RespReplyCounter(() => undefined);
    expect(p.push(Buffer.from('HTTP/1.1 400 Bad Request\r\n'))).toMatch(/unexpected reply type/);
  });
});
