// Issue 12: loader offsets are bound to the log they count in. A broker wiped and started
// fresh on the same port, a topic deleted and re-created under a running loader, and retention
// deleting records the loader has not reached: the loader refuses to load the partition, says
// why (log line, /readyz, metric), and loads again after `tickstream loader --reset-offsets`;
// `tickstream verify` reports what retention removed apart from holes.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ownKafka } from '../helpers/instances.js';
import {
  freePorts,
  isolatedNames,
  KAFKA_BROKERS,
  type Names,
  POSTGRES_DB,
  removeNames,
  runCli,
  verifyArgs,
  waitFor,
} from '../helpers/procs.js';
import {
  createTopic,
  deleteRecordsBefore,
  deleteTopic,
  httpGet,
  type LoaderProcess,
  loaderArgs,
  metric,
  produceTicks,
  recentTimes,
  startLoader,
} from './loader-helpers.js';

const SHARED = KAFKA_BROKERS;
const db = new pg.Client({ connectionString: POSTGRES_DB });
const all: Names[] = [];
const loaders: LoaderProcess[] = [];

beforeAll(async () => {
  await db.connect();
});

afterAll(async () => {
  for (const l of loaders)
    if (l.child.exitCode === null && l.child.signalCode === null) l.child.kill('SIGKILL');
  await db.end();
  await removeNames(all);
}, 60_000);

async function rows(n: Names, source: string): Promise<number> {
  try {
    const r = await db.query(`select count(*)::int as n from "${n.schema}".ticks where source = $1`, [
      source,
    ]);
    return (r.rows[0] as { n: number }).n;
  } catch {
    return 0;
  }
}

async function loader(n: Names, brokers: string): Promise<LoaderProcess> {
  const l = await startLoader(loaderArgs(n, brokers));
  loaders.push(l);
  return l;
}

async function stop(l: LoaderProcess): Promise<void> {
  l.child.kill('SIGTERM');
  expect(await l.exited).toBe(0);
}

type Report = {
  source: string;
  ok: boolean;
  removedByRetention: number;
  holes: number;
  missingFromPostgres: number;
  olderThanJournalInPostgres: number;
};

async function verify(
  n: Names,
  brokers: string,
  source: string,
  waitS = 60,
): Promise<{ code: number | null; report: Report; output: string }> {
  const v = await runCli([...verifyArgs(n, waitS), '--kafka-brokers', brokers, '--source', source, '--json']);
  const report = (JSON.parse(v.output.slice(0, v.output.lastIndexOf(']') + 1)) as Report[])[0] as Report;
  return { code: v.code, report, output: v.output };
}

describe('loader offsets bound to their log', () => {
  it('retention deleting records the stopped loader had not reached: counted, refused, reported by verify, loaded after a reset', async () => {
    const n = isolatedNames('loaderret');
    all.push(n);
    await createTopic(SHARED, n.ticksTopic, 1, { 'segment.bytes': '1048576', 'retention.bytes': '1048576' });
    await createTopic(SHARED, n.barsTopic, 1);
    await produceTicks({
      brokers: SHARED,
      topic: n.ticksTopic,
      source: 'r1',
      firstSeq: 1,
      times: recentTimes(3000),
      perRecord: 1000,
    });
    let l = await loader(n, SHARED);
    expect(await waitFor(async () => (await rows(n, 'r1')) === 3000, 60_000)).toBe(true);
    await stop(l);

    // Offsets 3, 4, 5 hold seqs 3001..6000; retention takes 3 and 4 before the loader returns.
    await produceTicks({
      brokers: SHARED,
      topic: n.ticksTopic,
      source: 'r1',
      firstSeq: 3001,
      times: recentTimes(3000),
      perRecord: 1000,
    });
    await deleteRecordsBefore(SHARED, n.ticksTopic, 0, 5);

    l = await loader(n, SHARED);
    const partition = `${n.ticksTopic}:0`;
    expect(await waitFor(async () => (await httpGet(l.port, '/readyz')).status === 503, 60_000)).toBe(true);
    const ready = await httpGet(l.port, '/readyz');
    expect(ready.body).toContain(`partition ${partition}: the stored offset 3 is before the log start 5`);
    expect(ready.body).toContain('--reset-offsets');
    expect(await metric(l.port, 'tickstream_loader_retention_lost_offsets_total', partition)).toBe(2);
    expect(await metric(l.port, 'tickstream_loader_partition_blocked', 'reason="before-start"')).toBe(1);
    expect(l.output()).toContain('retention deleted 2 offset(s)');
    expect(await rows(n, 'r1')).toBe(3000);

    // verify audits from the first retained record: seqs 1..5000 went with the log's start.
    // Postgres cannot catch up while the partition is blocked: no waiting.
    let v = await verify(n, SHARED, 'r1', 0);
    expect(v.report, v.output).toMatchObject({
      removedByRetention: 5000,
      holes: 0,
      olderThanJournalInPostgres: 3000,
    });

    const reset = await runCli([...loaderArgs(n, SHARED, 'reset'), '--reset-offsets', 'earliest']);
    expect(reset.code, reset.output).toBe(0);
    expect(reset.output).toContain(`${partition}: was 3`);
    expect(reset.output).toContain('cannot recover: offsets 3..4 (2) deleted by retention');
    // The running loader takes the partition back by itself.
    expect(await waitFor(async () => (await rows(n, 'r1')) === 4000, 60_000)).toBe(true);
    expect((await httpGet(l.port, '/readyz')).status).toBe(200);
    v = await verify(n, SHARED, 'r1');
    expect(v.report, v.output).toMatchObject({ ok: true, removedByRetention: 5000, missingFromPostgres: 0 });
    await stop(l);
  }, 240_000);

  it('a topic deleted and re-created under a running loader: the new log is refused until re-bound', async () => {
    const n = isolatedNames('loaderrecreate');
    all.push(n);
    await createTopic(SHARED, n.ticksTopic, 1);
    await createTopic(SHARED, n.barsTopic, 1);
    await produceTicks({
      brokers: SHARED,
      topic: n.ticksTopic,
      source: 'b1',
      firstSeq: 1,
      times: recentTimes(3000),
      perRecord: 1000,
    });
    const l = await loader(n, SHARED);
    expect(await waitFor(async () => (await rows(n, 'b1')) === 3000, 60_000)).toBe(true);

    await deleteTopic(SHARED, n.ticksTopic);
    // Deletion is asynchronous on the broker: re-create as soon as the name is free again.
    expect(
      await waitFor(async () => {
        try {
          await createTopic(SHARED, n.ticksTopic, 1);
          return true;
        } catch {
          return false;
        }
      }, 60_000),
    ).toBe(true);
    await produceTicks({
      brokers: SHARED,
      topic: n.ticksTopic,
      source: 'b2',
      firstSeq: 1,
      times: recentTimes(2000),
      perRecord: 1000,
    });

    expect(await waitFor(async () => (await httpGet(l.port, '/readyz')).status === 503, 90_000)).toBe(true);
    expect((await httpGet(l.port, '/readyz')).body).toContain('counts in another log');
    expect(await metric(l.port, 'tickstream_loader_partition_blocked', 'reason="other-log"')).toBe(1);
    expect(await rows(n, 'b2')).toBe(0);

    const reset = await runCli([...loaderArgs(n, SHARED, 'reset'), '--reset-offsets', 'earliest']);
    expect(reset.code, reset.output).toBe(0);
    expect(reset.output).toContain('loads offsets 0..1 (2)');
    expect(await waitFor(async () => (await rows(n, 'b2')) === 2000, 60_000)).toBe(true);
    const v = await verify(n, SHARED, 'b2');
    expect(v.report, v.output).toMatchObject({ ok: true });
    await stop(l);
  }, 240_000);

  it('a broker wiped and started fresh on the same port: the loader refuses, says why, and loads everything after the reset', async () => {
    const n = isolatedNames('loaderwipe');
    const [port, controller] = await freePorts(2);
    const brokers = `127.0.0.1:${port}`;
    let kafka = ownKafka(port as number, controller as number);
    try {
      await kafka.start();
      await createTopic(brokers, n.ticksTopic, 1);
      await createTopic(brokers, n.barsTopic, 1);
      await produceTicks({
        brokers,
        topic: n.ticksTopic,
        source: 'w1',
        firstSeq: 1,
        times: recentTimes(3000),
        perRecord: 1000,
      });
      let l = await loader(n, brokers);
      expect(await waitFor(async () => (await rows(n, 'w1')) === 3000, 60_000)).toBe(true);
      await stop(l);

      await kafka.destroy();
      kafka = ownKafka(port as number, controller as number);
      await kafka.start();
      await createTopic(brokers, n.ticksTopic, 1);
      await createTopic(brokers, n.barsTopic, 1);
      await produceTicks({
        brokers,
        topic: n.ticksTopic,
        source: 'w2',
        firstSeq: 1,
        times: recentTimes(2000),
        perRecord: 1000,
      });

      l = await loader(n, brokers);
      expect(await waitFor(async () => (await httpGet(l.port, '/readyz')).status === 503, 60_000)).toBe(true);
      const why = (await httpGet(l.port, '/readyz')).body;
      expect(why).toContain(`partition ${n.ticksTopic}:0: the stored offset 3 counts in another log`);
      expect(l.output()).toContain("the broker's state was wiped or the topic re-created");
      expect(await rows(n, 'w2')).toBe(0);

      const reset = await runCli([...loaderArgs(n, brokers, 'reset'), '--reset-offsets', 'earliest']);
      expect(reset.code, reset.output).toBe(0);
      expect(reset.output).toContain(`${n.ticksTopic}:0: was 3`);
      expect(reset.output).toContain('now 0');
      expect(await waitFor(async () => (await rows(n, 'w2')) === 2000, 60_000)).toBe(true);
      const v = await verify(n, brokers, 'w2');
      expect(v.code, v.output).toBe(0);
      expect(v.report).toMatchObject({ ok: true, holes: 0, missingFromPostgres: 0 });
      await stop(l);
    } finally {
      await kafka.destroy();
      await db.query(`drop schema if exists "${n.schema}" cascade`);
    }
  }, 300_000);
});
