// Issue 20: one source must not stall the loader for everyone. A poison source journals
// 16,384 valid ticks, each on a different UTC day (one partition per day in one transaction
// used to exhaust Postgres' lock table: `out of shared memory`, retried forever), and a tick
// dated 2999. Beside it an honest source loads whole; the poison is parked and counted, and
// Postgres stays healthy.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  isolatedNames,
  KAFKA_BROKERS,
  POSTGRES_DB,
  removeNames,
  runCli,
  verifyArgs,
  waitFor,
} from '../helpers/procs.js';
import {
  createTopic,
  DAY_MS,
  httpGet,
  type LoaderProcess,
  loaderArgs,
  metric,
  produceTicks,
  recentTimes,
  startLoader,
} from './loader-helpers.js';

const BROKERS = KAFKA_BROKERS;
const names = isolatedNames('loaderpoison');
const db = new pg.Client({ connectionString: POSTGRES_DB });
let loader: LoaderProcess | null = null;

beforeAll(async () => {
  await db.connect();
  await createTopic(BROKERS, names.ticksTopic, 2);
  await createTopic(BROKERS, names.barsTopic, 1);
}, 60_000);

afterAll(async () => {
  if (loader && loader.child.exitCode === null) loader.child.kill('SIGKILL');
  await db.end();
  await removeNames([names]);
}, 60_000);

describe('a poison source beside an honest one', () => {
  it('parks the poison with a metric and a log line, loads the honest source whole, Postgres stays healthy', async () => {
    const today = Math.floor(Date.now() / DAY_MS) * DAY_MS + 3_600_000;
    // Same partition as the honest source: the poison sits in front of honest records.
    await produceTicks({
      brokers: BROKERS,
      topic: names.ticksTopic,
      source: 'honest',
      firstSeq: 1,
      times: recentTimes(3000),
      perRecord: 1000,
    });
    await produceTicks({
      brokers: BROKERS,
      topic: names.ticksTopic,
      source: 'poison',
      firstSeq: 1,
      times: Array.from({ length: 16_384 }, (_, i) => today - i * DAY_MS),
      perRecord: 1024,
    });
    await produceTicks({
      brokers: BROKERS,
      topic: names.ticksTopic,
      source: 'honest',
      firstSeq: 3001,
      times: recentTimes(3000),
      perRecord: 1000,
    });
    // A source whose one tick is dated 2999 between two sane ones.
    await produceTicks({
      brokers: BROKERS,
      topic: names.ticksTopic,
      source: 'future',
      firstSeq: 1,
      times: [Date.now() - 1000, Date.UTC(2999, 0, 1), Date.now() - 999],
      perRecord: 3,
      partition: 1,
    });

    // A record Postgres refuses (a symbol with a NUL byte, which no text value may hold), in the
    // other partition: retried, then parked, while the honest source loads.
    const t = Date.now() - 5000;
    await produceTicks({
      brokers: BROKERS,
      topic: names.ticksTopic,
      source: 'nulsymbol',
      firstSeq: 1,
      symbol: 'EUR\u0000USD',
      times: [t, t + 1],
      perRecord: 2,
      partition: 1,
    });

    loader = await startLoader([...loaderArgs(names, BROKERS), '--loader-max-batch-attempts', '3']);
    const port = loader.port;
    expect(
      await waitFor(
        async () => (await metric(port, 'tickstream_loader_parked_ticks_total')) >= 16_385,
        90_000,
      ),
    ).toBe(true);
    // Records of ticks 0..10 years old span more days than a transaction may touch; older
    // ticks are outside the window (loaderMaxTickAgeDays): either way parked, never partitioned.
    expect(await metric(port, 'tickstream_loader_parked_ticks_total', 'kind="days"')).toBe(4096);
    expect(await metric(port, 'tickstream_loader_parked_ticks_total', 'kind="time-window"')).toBe(12_288 + 1);
    expect(loader.output()).toContain('loader parked a journal record in ticks_parked');
    expect(
      await waitFor(
        async () => (await metric(port, 'tickstream_loader_parked_records_total', 'kind="retries"')) === 1,
        90_000,
      ),
    ).toBe(true);
    expect(await metric(port, 'tickstream_loader_errors_total', 'kind="data"')).toBeGreaterThanOrEqual(3);

    const v = await runCli([...verifyArgs(names, 60), '--kafka-brokers', BROKERS, '--json']);
    const report = JSON.parse(v.output.slice(0, v.output.lastIndexOf(']') + 1)) as {
      source: string;
      ok: boolean;
      missingFromPostgres: number;
      parkedInPostgres: number;
      postgresRows: number;
    }[];
    expect(
      report.find((r) => r.source === 'honest'),
      v.output,
    ).toMatchObject({ ok: true, postgresRows: 6000 });
    expect(report.find((r) => r.source === 'poison')).toMatchObject({
      ok: false,
      parkedInPostgres: 16_384,
      missingFromPostgres: 0,
      postgresRows: 0,
    });
    expect(report.find((r) => r.source === 'future')).toMatchObject({
      ok: false,
      parkedInPostgres: 1,
      missingFromPostgres: 0,
      postgresRows: 2,
    });
    // Postgres healthy: it answers, and the poison created no partition.
    const { rows } = await db.query(
      `select count(*)::int as n from pg_inherits i join pg_class c on c.oid = i.inhrelid join pg_namespace s on s.oid = c.relnamespace where s.nspname = $1 and c.relkind = 'r'`,
      [names.schema],
    );
    expect(rows[0].n).toBeLessThanOrEqual(2);
    expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(200);
    // Caught up: no lag on any partition, in the metrics and on /status.
    expect(
      await waitFor(async () => (await metric(port, 'tickstream_loader_lag_records')) === 0, 30_000),
    ).toBe(true);
    const status = JSON.parse((await httpGet(port, '/status')).body) as {
      ready: boolean;
      partitions: { partition: string; state: string; lagRecords: number; lagSeconds: number }[];
    };
    expect(status.ready).toBe(true);
    expect(status.partitions.filter((p) => p.partition.startsWith(`${names.ticksTopic}:`))).toEqual([
      expect.objectContaining({ state: 'ready', lagRecords: 0, lagSeconds: 0 }),
      expect.objectContaining({ state: 'ready', lagRecords: 0, lagSeconds: 0 }),
    ]);
    loader.child.kill('SIGTERM');
    expect(await loader.exited).toBe(0);
  }, 180_000);
});
