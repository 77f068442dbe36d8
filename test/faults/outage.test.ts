// Outages of the services, each on a private instance stopped and started by the test while a
// simulated terminal streams in real time: Kafka (20 s), Redis (20 s), Postgres (30 s).
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { readJournalTicks } from '../helpers/independent.js';
import { type Instance, ownKafka, ownPostgres, ownRedis } from '../helpers/instances.js';
import {
  captured,
  freePorts,
  isolatedNames,
  type Names,
  POSTGRES_DB,
  REDIS_URL,
  removeNames,
  runCli,
  runSim,
  serveArgs,
  startServe,
  verifyArgs,
  waitFor,
} from '../helpers/procs.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const instances: Instance[] = [];
const schemas: { url: string; schema: string }[] = [];
const redisPrefixes: string[] = [];
/** Names whose Kafka topics live on the shared broker. */
const onShared: Names[] = [];

afterAll(async () => {
  for (const i of instances) await i.destroy();
  for (const { url, schema } of schemas) {
    const db = new pg.Client({ connectionString: url });
    await db.connect().catch(() => undefined);
    await db.query(`drop schema if exists "${schema}" cascade`).catch(() => undefined);
    await db.end().catch(() => undefined);
  }
  const redis = new Redis(REDIS_URL);
  for (const p of redisPrefixes) {
    const keys = await redis.keys(`${p}:*`);
    if (keys.length) await redis.del(...keys);
  }
  await redis.quit();
  await removeNames(onShared);
}, 60_000);

async function metric(httpPort: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n'))
    if (line.startsWith(name) && (line[name.length] === ' ' || line[name.length] === '{'))
      sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  return sum;
}

/** A terminal streaming `rate` ticks/s in real time for `seconds`. */
function pacedSim(source: string, port: number, rate: number, seconds: number) {
  return runSim(
    [
      '--synthetic',
      '--symbols',
      '3',
      '--rate',
      String(rate),
      '--duration',
      String(seconds),
      '--speed',
      '1',
      '--source',
      source,
      '--port',
      String(port),
    ],
    (seconds + 90) * 1000,
  );
}

describe('Kafka broker stopped for 20 s mid-stream', () => {
  it('no loss: ACKs stop, the bridge applies backpressure within its queue limit, /readyz says not ready, it recovers by itself', async () => {
    const [kPort, cPort] = (await freePorts(2)) as [number, number];
    const kafka = ownKafka(kPort, cPort);
    instances.push(kafka);
    await kafka.start();
    const names = isolatedNames('kafkadown');
    schemas.push({ url: POSTGRES_DB, schema: names.schema });
    redisPrefixes.push(names.redisPrefix);
    const limit = 20_000;
    const serve = await startServe(
      serveArgs(names, ['--kafka-brokers', kafka.url, '--max-queued-ticks', String(limit)]),
    );
    const brokerArgs = ['--kafka-brokers', kafka.url];
    try {
      const sim = pacedSim('kd1', serve.ingressPort, 4000, 35);
      await sleep(5000);
      await kafka.stop();
      const downAt = Date.now();
      let maxQueued = 0;
      let sawNotReady = false;
      let ackedDuring = Number.NaN;
      while (Date.now() - downAt < 20_000) {
        maxQueued = Math.max(maxQueued, await metric(serve.httpPort, 'tickstream_queued_ticks'));
        const ready = await fetch(`http://127.0.0.1:${serve.httpPort}/readyz`);
        if (ready.status === 503) sawNotReady = true;
        // Committed stops moving once the broker is gone (what was in flight may land first).
        if (Date.now() - downAt > 8000 && Number.isNaN(ackedDuring))
          ackedDuring = await metric(serve.httpPort, 'tickstream_ticks_committed_total');
        await sleep(500);
      }
      const ackedAtEnd = await metric(serve.httpPort, 'tickstream_ticks_committed_total');
      await kafka.start();
      expect(sawNotReady).toBe(true);
      expect(ackedAtEnd).toBe(ackedDuring);
      // Paused at the limit; at most one read chunk more gets through before the pause.
      expect(maxQueued).toBeGreaterThanOrEqual(limit);
      expect(maxQueued).toBeLessThan(limit + 5000);
      const r = await sim;
      expect(r.code, r.output).toBe(0);
      expect(
        await waitFor(async () => (await fetch(`http://127.0.0.1:${serve.httpPort}/readyz`)).status === 200),
      ).toBe(true);
      const n = captured(r.output);
      const journal = await readJournalTicks(names.ticksTopic, { expected: n, brokers: kafka.url });
      expect(journal.map((t) => t.seq)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
      const v = await runCli([...verifyArgs(names, 90), ...brokerArgs]);
      expect(v.code, v.output).toBe(0);
    } finally {
      const stopCode = await serve.stop();
      expect(stopCode, `serve said:\n${serve.output().slice(-3000)}`).toBe(0);
    }
  }, 240_000);
});

describe('Redis down for 20 s mid-stream', () => {
  it('Kafka, websockets and Postgres go on; what Redis missed is dropped, counted, then healed from the journal: every tick once, in order', async () => {
    const [rPort] = (await freePorts(1)) as [number];
    const redisOwn = ownRedis(rPort);
    instances.push(redisOwn);
    await redisOwn.start();
    const names = isolatedNames('redisdown');
    onShared.push(names);
    schemas.push({ url: POSTGRES_DB, schema: names.schema });
    const serve = await startServe(serveArgs(names, ['--redis-url', redisOwn.url]));
    const ws = new WebSocket(`ws://127.0.0.1:${serve.httpPort}/ws`);
    let wsTicks = 0;
    ws.on('message', (d) => {
      const m = JSON.parse(d.toString()) as { type: string; ticks?: unknown[] };
      if (m.type === 'ticks') wsTicks += m.ticks?.length ?? 0;
    });
    await new Promise<void>((resolve) =>
      ws.once('open', () => {
        ws.send(JSON.stringify({ op: 'subscribe', channels: ['*'] }));
        resolve();
      }),
    );
    try {
      const sim = pacedSim('rd1', serve.ingressPort, 4000, 30);
      await sleep(5000);
      await redisOwn.stop();
      const committedAtStop = await metric(serve.httpPort, 'tickstream_ticks_committed_total');
      await sleep(20_000);
      // The journal went on while Redis was down.
      expect(await metric(serve.httpPort, 'tickstream_ticks_committed_total')).toBeGreaterThan(
        committedAtStop + 40_000,
      );
      await redisOwn.start();
      const r = await sim;
      expect(r.code, r.output).toBe(0);
      const n = captured(r.output);
      expect(await waitFor(() => wsTicks >= n)).toBe(true);
      expect(wsTicks).toBe(n);
      const v = await runCli(verifyArgs(names, 90));
      expect(v.code, v.output).toBe(0);
      // Redis heals from the journal: every stream ends up holding each of its ticks once, in seq
      // order, with the journal's values; the entry IDs are the live ones (`<ms>-<seq>`).
      const redis = new Redis(redisOwn.url);
      const streams = async () => {
        const out = new Map<string, [string, string[]][]>();
        for (const k of await redis.keys(`${names.redisPrefix}:ticks:rd1:*`))
          out.set(k, await redis.xrange(k, '-', '+'));
        return out;
      };
      let entries = new Map<string, [string, string[]][]>();
      const whole = await waitFor(async () => {
        entries = await streams();
        return [...entries.values()].reduce((a, e) => a + e.length, 0) >= n;
      }, 120_000);
      const dropped = await metric(serve.httpPort, 'tickstream_redis_dropped_ticks_total');
      const healed = await metric(serve.httpPort, 'tickstream_redis_healed_ticks_total');
      expect(whole, `dropped ${dropped}, healed ${healed}`).toBe(true);
      await redis.quit();
      expect(dropped).toBeGreaterThan(0);
      expect(healed).toBeGreaterThan(0);
      // The pass that wrote the last of them settles its ranges once its read ends.
      expect(
        await waitFor(
          async () => (await metric(serve.httpPort, 'tickstream_redis_heal_pending_ticks')) === 0,
        ),
      ).toBe(true);
      const journal = new Map(
        (await readJournalTicks(names.ticksTopic, { expected: n })).map((t) => [t.seq, t]),
      );
      const all: number[] = [];
      for (const [key, list] of entries) {
        const symbol = key.slice(key.lastIndexOf(':') + 1);
        const seqs = list.map(([id]) => Number(id.split('-')[1]));
        expect(
          seqs.every((q, i) => i === 0 || q > (seqs[i - 1] as number)),
          `${key}: in seq order`,
        ).toBe(true);
        for (const [id, fields] of list) {
          const seq = Number(id.split('-')[1]);
          const t = journal.get(seq);
          expect(t?.symbol).toBe(symbol);
          expect(Number(fields[fields.indexOf('b') + 1])).toBe(t?.bid);
          expect(Number(fields[fields.indexOf('s') + 1])).toBe(seq);
          expect(Number(id.split('-')[0])).toBeGreaterThanOrEqual(t?.utcMsc ?? 0);
        }
        all.push(...seqs);
      }
      expect(all.sort((a, b) => a - b)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    } finally {
      ws.close();
      const stopCode = await serve.stop();
      expect(stopCode, `serve said:\n${serve.output().slice(-3000)}`).toBe(0);
    }
  }, 180_000);
});

describe('Postgres down for 30 s', () => {
  it('the loader retries with backoff and resumes from its stored offsets: exactly once; the live path never waits', async () => {
    const [pPort] = (await freePorts(1)) as [number];
    const pgOwn = ownPostgres(pPort);
    instances.push(pgOwn);
    await pgOwn.init();
    await pgOwn.start();
    const names = isolatedNames('pgdown');
    onShared.push(names);
    redisPrefixes.push(names.redisPrefix);
    const serve = await startServe(serveArgs(names, ['--postgres-url', pgOwn.url]));
    try {
      const sim = pacedSim('pd1', serve.ingressPort, 4000, 40);
      await sleep(5000);
      await pgOwn.stop();
      const committedAtStop = await metric(serve.httpPort, 'tickstream_ticks_committed_total');
      await sleep(30_000);
      expect(await metric(serve.httpPort, 'tickstream_ticks_committed_total')).toBeGreaterThan(
        committedAtStop + 60_000,
      );
      expect(await metric(serve.httpPort, 'tickstream_loader_errors_total')).toBeGreaterThan(0);
      await pgOwn.start();
      const r = await sim;
      expect(r.code, r.output).toBe(0);
      const v = await runCli([...verifyArgs(names, 90), '--postgres-url', pgOwn.url]);
      expect(v.code, `${v.output}\nserve said:\n${serve.output().slice(-4000)}`).toBe(0);
      expect(v.output).toContain(`| pd1 | ${captured(r.output)} |`);
    } finally {
      const stopCode = await serve.stop();
      expect(stopCode, `serve said:\n${serve.output().slice(-3000)}`).toBe(0);
    }
  }, 180_000);
});
