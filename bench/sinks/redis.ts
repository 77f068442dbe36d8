/**
 * The Redis sink against `redis-benchmark` (Debian redis-tools, C, the native ceiling), in the
 * same run, on the same server, with the same XADD: one stream, `MAXLEN ~ 100000`, the 8 tick
 * fields (b a l v vr f t s) with values of the same size.
 *
 * - native: `redis-benchmark -c 1 -P 1000 -n N XADD <key> MAXLEN ~ 100000 <id> b 1.10012 ...`,
 *   once with `*` (server-made IDs) and once with `<ms>-*` (explicit ms, server-made seq: the
 *   closest redis-benchmark gets to our explicit IDs, as it cannot vary them per request);
 *   the better of the two counts.
 * - ours: a RedisSink fed N ticks in 1000-tick batches as fast as it accepts them without
 *   dropping (the benchmark waits while its queue is full), timed until every reply is in. Its
 *   IDs are explicit `<utc ms>-<seq>` and it also writes one quote HSET per batch and symbol.
 * - peers: ioredis, the client the sink used before: one awaited XADD at a time (fewer ticks),
 *   and `pipeline()` of the same commands, 20 000 per exec as the old sink did.
 *
 * Rounds alternate native and ours and the best of each counts: the machine is shared, so a
 * single pass mostly measures who else was busy. Every key lives under a random
 * `tsbench:<hex>:` prefix and is deleted at the end.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { encodeCommand } from '../../codecs/resp.js';
import { allocTickBatch, type TickBatch } from '../../codecs/tick-batch.js';
import { RedisSink } from '../../sinks/redis/sink.js';
import type { Comparison } from '../report.js';

const run = promisify(execFile);
const URL_ = process.env['TICKSTREAM_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const MAXLEN = 100_000;
const BATCH_TICKS = 1000;
const NATIVE_CLIENTS = 1;
const NATIVE_PIPELINE = 1000;
const MAX_QUEUED_TICKS = 200_000;
const IOREDIS_PIPELINE_COMMANDS = 20_000;
const SOURCE = 'BENCH';
const SYMBOL = 'EURUSD';
/** A tick as the native command carries it: same fields, same value sizes as ours. */
const NATIVE_FIELDS = ['b', '1.10012', 'a', '1.10024', 'l', '0', 'v', '0', 'vr', '0', 'f', '6'];
const NATIVE_TAIL = ['t', '1711807200123', 's', '123456'];

/** A random walk of EURUSD-like ticks, 1000 per batch, explicit increasing IDs. */
function makeBatches(n: number, startMs: number): TickBatch[] {
  const out: TickBatch[] = [];
  let bid = 1.1;
  let ms = startMs;
  for (let from = 0; from < n; from += BATCH_TICKS) {
    const len = Math.min(BATCH_TICKS, n - from);
    const b = allocTickBatch(SOURCE, [SYMBOL], len, [5]); // EURUSD quotes 5 digits, as the EA says
    for (let i = 0; i < len; i++) {
      const k = from + i;
      bid = Math.max(0.5, bid + (((k * 7919) % 11) - 5) * 1e-5);
      ms += (k * 104729) % 7; // several ticks share a millisecond, as in busy markets
      b.seq[i] = k + 1;
      b.utcMsc[i] = ms;
      b.serverTimeMsc[i] = ms + 7_200_000;
      b.bid[i] = Number(bid.toFixed(5));
      b.ask[i] = Number((bid + 0.00012).toFixed(5));
      b.flags[i] = 6;
    }
    b.length = len;
    out.push(b);
  }
  return out;
}

/** The XADD arguments the sink sends for tick i of a batch (for ioredis and byte counts). */
function xaddArgs(key: string, b: TickBatch, i: number): string[] {
  return [
    key,
    'MAXLEN',
    '~',
    String(MAXLEN),
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
  ];
}

async function redisBenchmark(
  host: string,
  port: number,
  n: number,
  key: string,
  id: string,
): Promise<number> {
  const args = ['-h', host, '-p', String(port), '-c', String(NATIVE_CLIENTS), '-P', String(NATIVE_PIPELINE)];
  args.push('-n', String(n), '-q', '--csv', 'XADD', key, 'MAXLEN', '~', String(MAXLEN), id);
  args.push(...NATIVE_FIELDS, ...NATIVE_TAIL);
  const { stdout } = await run('redis-benchmark', args, { timeout: 120_000 });
  // "test","rps",... then one row: "XADD ...","432900.41",...
  const row = stdout.trim().split('\n').pop() ?? '';
  const rps = Number(row.split('","')[1]);
  if (!Number.isFinite(rps) || rps <= 0) throw new Error(`redis-benchmark printed no rate: ${stdout}`);
  return rps;
}

interface OursResult {
  ticksPerS: number;
  written: number;
  dropped: number;
  refused: number;
}

async function metric(registry: Registry, name: string): Promise<number> {
  const m = registry.getSingleMetric(name);
  return (await m?.get())?.values[0]?.value ?? 0;
}

async function runOurs(keyPrefix: string, batches: TickBatch[]): Promise<OursResult> {
  const registry = new Registry();
  const sink = new RedisSink({
    url: URL_,
    keyPrefix,
    streamMaxLen: MAXLEN,
    maxQueuedTicks: MAX_QUEUED_TICKS,
    maxPipelineCommands: 20_000, // as pipeline/serve.ts
    registry,
    logger: pino({ level: 'silent' }),
  });
  await sink.start();
  const n = batches.reduce((s, b) => s + b.length, 0);
  const t0 = performance.now();
  for (const b of batches) {
    while (sink.queuedTicks + b.length > MAX_QUEUED_TICKS) await new Promise((r) => setImmediate(r));
    sink.write(b);
  }
  const drained = await sink.drain(120_000);
  const seconds = (performance.now() - t0) / 1000;
  await sink.close(1000);
  if (!drained) throw new Error('the sink did not get all replies within 120 s');
  return {
    ticksPerS: n / seconds,
    written: await metric(registry, 'tickstream_redis_ticks_written_total'),
    dropped: await metric(registry, 'tickstream_redis_dropped_ticks_total'),
    refused: await metric(registry, 'tickstream_redis_duplicates_refused_total'),
  };
}

async function ioredisAwaitEach(redis: Redis, key: string, batches: TickBatch[], n: number): Promise<number> {
  const t0 = performance.now();
  let done = 0;
  for (const b of batches) {
    for (let i = 0; i < b.length && done < n; i++, done++) {
      await redis.call('XADD', ...xaddArgs(key, b, i));
    }
    if (done >= n) break;
  }
  return done / ((performance.now() - t0) / 1000);
}

async function ioredisPipeline(redis: Redis, key: string, batches: TickBatch[]): Promise<number> {
  const t0 = performance.now();
  let done = 0;
  let p = redis.pipeline();
  let inPipeline = 0;
  for (const b of batches) {
    for (let i = 0; i < b.length; i++) {
      p.call('XADD', ...xaddArgs(key, b, i));
      if (++inPipeline === IOREDIS_PIPELINE_COMMANDS) {
        await p.exec();
        done += inPipeline;
        p = redis.pipeline();
        inPipeline = 0;
      }
    }
  }
  if (inPipeline) await p.exec();
  done += inPipeline;
  return done / ((performance.now() - t0) / 1000);
}

async function deleteKeys(redis: Redis, prefix: string): Promise<number> {
  let deleted = 0;
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) deleted += await redis.del(...keys);
  } while (cursor !== '0');
  return deleted;
}

const best = (xs: number[]) => Math.max(...xs);
const kilo = (x: number) => `${(x / 1000).toFixed(0)}k`;

export async function compare({ quick }: { quick: boolean }): Promise<Comparison[]> {
  const n = quick ? 50_000 : 200_000;
  const rounds = quick ? 2 : 3;
  const awaitEachN = quick ? 2_000 : 5_000;
  const url = new URL(URL_);
  const host = url.hostname || '127.0.0.1';
  const port = Number(url.port || 6379);
  const prefix = `tsbench:${randomBytes(4).toString('hex')}:`;
  const redis = new Redis(URL_, { lazyConnect: true, maxRetriesPerRequest: 1, enableOfflineQueue: false });
  redis.on('error', () => undefined); // connect() below reports it
  await redis.connect();
  try {
    const version = /redis_version:(\S+)/.exec(await redis.info('server'))?.[1] ?? '?';
    const startMs = Date.UTC(2024, 2, 30, 12);
    // Keys as long as ours (`<prefix>o0:ticks:BENCH:EURUSD`), so both send the same bytes.
    const nativeKey = (tag: string) => `${prefix}${tag}:ticks:${SOURCE}:${SYMBOL}`;
    const batches = makeBatches(n, startMs);

    // Warm-up (JIT, connection, allocator): not timed.
    await runOurs(`${prefix}warm`, makeBatches(20_000, startMs));

    const native: { star: number[]; explicitMs: number[] } = { star: [], explicitMs: [] };
    const ours: OursResult[] = [];
    for (let r = 0; r < rounds; r++) {
      native.star.push(await redisBenchmark(host, port, n, nativeKey(`n${r}`), '*'));
      native.explicitMs.push(await redisBenchmark(host, port, n, nativeKey(`m${r}`), `${startMs}-*`));
      ours.push(await runOurs(`${prefix}o${r}`, batches));
    }
    const oursBest = best(ours.map((o) => o.ticksPerS));
    const nativeBest = Math.max(best(native.star), best(native.explicitMs));

    const awaitEach = await ioredisAwaitEach(redis, `${prefix}ioredis-await:ticks`, batches, awaitEachN);
    const pipelined = await ioredisPipeline(redis, `${prefix}ioredis-pipeline:ticks`, batches);

    const sample = batches[0] as TickBatch;
    const oursKey = `${prefix}o0:ticks:${SOURCE}:${SYMBOL}`;
    let oursBytes = 0;
    for (let i = 0; i < sample.length; i++)
      oursBytes += encodeCommand(['XADD', ...xaddArgs(oursKey, sample, i)]).length;
    const nativeBytes = encodeCommand([
      'XADD',
      nativeKey('m0'),
      'MAXLEN',
      '~',
      MAXLEN,
      `${startMs}-*`,
      ...NATIVE_FIELDS,
      ...NATIVE_TAIL,
    ]).length;
    const lost = ours.reduce((s, o) => s + o.dropped + o.refused, 0);
    const written = ours.reduce((s, o) => s + o.written, 0);

    return [
      {
        name: 'redis: XADD ticks (MAXLEN ~ 100000, 8 fields)',
        ours: { label: 'RedisSink (RESP encoder, 1 connection)', value: oursBest, unit: 'ticks/s' },
        native: { label: 'redis-benchmark', value: nativeBest, unit: 'XADD/s' },
        ratio_to_native: oursBest / nativeBest,
        settings: {
          redis: `${version} at ${host}:${port}`,
          ticks_per_round: n,
          rounds,
          best_of: 'rounds (shared machine)',
          stream_maxlen: `~ ${MAXLEN}`,
          fields: 'b a l v vr f t s',
          native_cmd: `-c ${NATIVE_CLIENTS} -P ${NATIVE_PIPELINE} -n ${n} XADD <key> MAXLEN ~ ${MAXLEN} <id> ${[...NATIVE_FIELDS, ...NATIVE_TAIL].join(' ')}`,
          native_ids_star: native.star.map(kilo).join('/'),
          native_ids_ms_star: native.explicitMs.map(kilo).join('/'),
          native_bytes_per_xadd: nativeBytes,
          ours_ids: 'explicit <utc ms>-<seq>',
          ours_rounds: ours.map((o) => kilo(o.ticksPerS)).join('/'),
          ours_batch_ticks: BATCH_TICKS,
          ours_extra: '1 quote HSET per batch',
          ours_window: '4 MiB in flight, ≤1 MiB per write',
          ours_max_queued_ticks: MAX_QUEUED_TICKS,
          ours_bytes_per_xadd: Math.round(oursBytes / sample.length),
          ours_written_dropped_or_refused: `${written}/${lost}`,
          ioredis_await_each_ticks: awaitEachN,
          ioredis_pipeline_commands: IOREDIS_PIPELINE_COMMANDS,
        },
        peers: [
          {
            label: 'ioredis await each XADD',
            value: awaitEach,
            unit: 'ticks/s',
            ratio_ours_to_peer: oursBest / awaitEach,
          },
          {
            label: `ioredis pipeline() ×${IOREDIS_PIPELINE_COMMANDS / 1000}k`,
            value: pipelined,
            unit: 'ticks/s',
            ratio_ours_to_peer: oursBest / pipelined,
          },
        ],
        note: 'native = the better of `*` and `<ms>-*` IDs. Both sides are bound by the Redis server thread: redis-benchmark -c 50 -P 100 gave the same rate as -c 1 -P 1000 when this bench was written',
      },
    ];
  } finally {
    await deleteKeys(redis, prefix).catch(() => undefined);
    redis.disconnect();
  }
}
