// Loaders scale out: three `tickstream loader` processes in one consumer group share the
// journal's partitions while terminals stream; one of them is killed with SIGKILL in the middle
// of a COPY, a fourth joins. Through those rebalances every tick lands in `ticks` exactly once
// (no duplicate, no hole, per (source, seq)) and every closed bar in `bars_1m`, checked by
// `tickstream verify`, by SQL, and against the bars topic read by a plain consumer.
import { existsSync } from 'node:fs';
import RdKafka from '@confluentinc/kafka-javascript';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { decodeBar } from '../../codecs/flat-record.js';
import {
  captured,
  dataDir,
  isolatedNames,
  KAFKA_BROKERS,
  POSTGRES_DB,
  removeNames,
  runCli,
  runSim,
  type ServeProcess,
  serveArgs,
  startCli,
  startServe,
  verifyArgs,
  waitFor,
} from '../helpers/procs.js';
import { loaderArgs } from './loader-helpers.js';

const names = isolatedNames('lscale');
const db = new pg.Client({ connectionString: POSTGRES_DB });
const started: ReturnType<typeof startCli>[] = [];
let serve: ServeProcess;
const files = [
  `${dataDir}histdata_EURUSD_T_20200101_nautilus.csv`,
  `${dataDir}dukascopy_BTCUSD_ticks_20230220T12_14_utc.csv`,
].filter((f) => existsSync(f));

const loader = (instance: string, env: Record<string, string> = {}) => {
  const p = startCli(
    // The files are years old: a loader that joins runs the Postgres retention at its start and
    // would drop their days (older than --postgres-retention-days) under the others' feet.
    [
      ...loaderArgs(names, KAFKA_BROKERS, instance),
      '--loader-max-batch-ticks',
      '2000',
      '--postgres-retention-days',
      '36500',
    ],
    env,
  );
  started.push(p);
  return p;
};

async function count(sql: string): Promise<number> {
  try {
    return ((await db.query(sql)).rows[0] as { n: number }).n;
  } catch {
    return 0; // the schema is not there until a loader has migrated it
  }
}
const rows = () => count(`select count(*)::int as n from "${names.schema}".ticks`);

/** Closed bars in the bars topic (read_committed): `source|symbol|startMs` → tick count. */
async function barsInKafka(): Promise<Map<string, number>> {
  const consumer = new RdKafka.KafkaConsumer(
    {
      'metadata.broker.list': KAFKA_BROKERS,
      'group.id': `bars-${names.id}`,
      'enable.auto.commit': false,
      'isolation.level': 'read_committed',
    },
    {},
  );
  await new Promise<void>((resolve, reject) =>
    consumer.connect({ timeout: 10_000 }, (err) => (err ? reject(err) : resolve())),
  );
  const bars = new Map<string, number>();
  try {
    const meta = await new Promise<RdKafka.Metadata>((resolve, reject) =>
      consumer.getMetadata({ topic: names.barsTopic, timeout: 10_000 }, (err, m) =>
        err ? reject(err) : resolve(m),
      ),
    );
    const partitions = meta.topics.find((t) => t.name === names.barsTopic)?.partitions ?? [];
    const high = new Map<number, number>();
    for (const p of partitions) {
      const w = await new Promise<RdKafka.WatermarkOffsets>((resolve, reject) =>
        consumer.queryWatermarkOffsets(names.barsTopic, p.id, 10_000, (err, o) =>
          err ? reject(err) : resolve(o),
        ),
      );
      high.set(p.id, w.highOffset);
    }
    consumer.assign(partitions.map((p) => ({ topic: names.barsTopic, partition: p.id, offset: 0 })));
    const done = () =>
      consumer
        .position(partitions.map((p) => ({ topic: names.barsTopic, partition: p.id })))
        .every((p) => (p.offset ?? 0) >= (high.get(p.partition) ?? 0));
    const end = Date.now() + 60_000;
    while (!done() && Date.now() < end) {
      const batch = await new Promise<RdKafka.Message[]>((resolve) =>
        consumer.consume(500, (err, m) => resolve(err ? [] : m)),
      );
      for (const m of batch) {
        if (!m.value) continue;
        const b = decodeBar(m.value);
        bars.set(`${b.source}|${b.symbol}|${b.startMs}`, b.tickCount);
      }
    }
    expect(done(), 'the bars topic read to its end').toBe(true);
  } finally {
    await new Promise((resolve) => consumer.disconnect(resolve));
  }
  return bars;
}

beforeAll(async () => {
  await db.connect();
  serve = await startServe(serveArgs(names, ['--loader-enabled', 'false', '--redis-enabled', 'false']));
}, 60_000);

afterAll(async () => {
  for (const p of started)
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
  await serve?.stop();
  await db.end();
  await removeNames([names]);
}, 60_000);

it('three loaders, one killed mid-COPY, one added, while terminals stream: ticks and bars exactly once', async () => {
  const a = loader('la');
  const b = loader('lb');
  // The third dies by SIGKILL in the middle of its 3rd COPY.
  const c = loader('lc', { TICKSTREAM_CRASH_AT: 'loader-mid-copy', TICKSTREAM_CRASH_AFTER: '3' });

  const synthetic = ['ls1', 'ls2', 'ls3'].map((source, i) =>
    runSim([
      '--synthetic',
      '--speed',
      'max',
      '--symbols',
      '3',
      '--rate',
      '6000',
      '--duration',
      '10',
      '--seed',
      String(21 + i),
      '--source',
      source,
      '--port',
      String(serve.ingressPort),
    ]),
  );
  // Real files span hours of tick time: many closed 1-minute bars.
  const fromFiles = files.map((file, i) =>
    runSim(['--file', file, '--source', `lf${i + 1}`, '--port', String(serve.ingressPort)]),
  );

  expect(await c.exited, c.output()).toBeNull();
  expect(c.output()).toContain('crash point loader-mid-copy hit');
  const atKill = await rows();
  // A fourth loader joins while the others load.
  const d = loader('ld');
  expect(await waitFor(async () => (await rows()) > atKill + 20_000, 90_000), 'loading goes on').toBe(true);

  const sims = await Promise.all([...synthetic, ...fromFiles]);
  for (const r of sims) expect(r.code, r.output).toBe(0);
  const total = sims.reduce((n, r) => n + captured(r.output), 0);
  const sources = sims.length;

  const verify = await runCli(verifyArgs(names, 150), {}, 200_000);
  const said = [a, b, c, d].map((p, i) => `loader ${'abcd'[i]} said:\n${p.output()}`).join('\n');
  expect(verify.code, `verify said:\n${verify.output}\n${said}`).toBe(0);
  expect(verify.output).toContain(`all ${sources} source(s) whole`);
  const s = `"${names.schema}"`;
  expect(await rows()).toBe(total);
  expect(
    await count(
      `select count(*)::int as n from (select source, seq from ${s}.ticks group by 1, 2 having count(*) > 1) d`,
    ),
    'duplicate (source, seq) in ticks',
  ).toBe(0);
  expect(
    await count(
      `select count(*)::int as n from (select source, count(*) c, min(seq) lo, max(seq) hi from ${s}.ticks group by 1) g where lo <> 1 or hi <> c`,
    ),
    'sources with a hole in ticks',
  ).toBe(0);

  // Bars: the loaders upsert by (source, symbol, start): every bar of the topic, once, as closed.
  const expected = await barsInKafka();
  if (files.length > 0) expect(expected.size).toBeGreaterThan(10);
  const { rows: loaded } = await db.query<{ k: string; tick_count: number }>(
    `select source || '|' || symbol || '|' || (extract(epoch from start) * 1000)::bigint as k, tick_count from ${s}.bars_1m`,
  );
  expect(loaded.length).toBe(expected.size);
  for (const r of loaded) expect(r.tick_count, r.k).toBe(expected.get(r.k));

  for (const p of [a, b, d]) {
    p.child.kill('SIGTERM');
    expect(await p.exited, p.output()).toBe(0);
  }
}, 240_000);
