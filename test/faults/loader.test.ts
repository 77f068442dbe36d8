// The Postgres loader killed mid-COPY, and two loaders racing through a rebalance while one is
// killed: Postgres still holds every journaled tick exactly once. And `tickstream verify`
// itself must see damage when there is some.
import RdKafka from '@confluentinc/kafka-javascript';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
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

const names = isolatedNames('loader');
const db = new pg.Client({ connectionString: POSTGRES_DB });
const sources = ['la1', 'la2', 'la3'];
let serve: ServeProcess;
const started: ReturnType<typeof startCli>[] = [];

const loaderArgs = (instance: string) => [
  'loader',
  ...serveArgs(names),
  '--instance-id',
  instance,
  '--loader-max-batch-ticks',
  '3000',
  '--loader-http-port',
  '0',
];

async function rows(): Promise<number> {
  try {
    const r = await db.query(`select count(*)::int as n from "${names.schema}".ticks`);
    return (r.rows[0] as { n: number }).n;
  } catch {
    return 0;
  }
}

beforeAll(async () => {
  await db.connect();
  // The journal is filled first, with the loader of `serve` off.
  serve = await startServe(serveArgs(names, ['--loader-enabled', 'false', '--redis-enabled', 'false']));
  const sims = await Promise.all(
    sources.map((s, i) =>
      runSim([
        '--synthetic',
        '--speed',
        'max',
        '--symbols',
        '3',
        '--rate',
        '8000',
        '--duration',
        '10',
        '--seed',
        String(i + 1),
        '--source',
        s,
        '--port',
        String(serve.ingressPort),
      ]),
    ),
  );
  for (const r of sims) expect(r.code, r.output).toBe(0);
}, 120_000);

afterAll(async () => {
  for (const p of started)
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
  await serve?.stop();
  await db.end();
  await removeNames([names]);
}, 60_000);

describe('Postgres loader faults', () => {
  it('kill -9 mid-COPY, then two loaders race and one of them is killed: every tick exactly once', async () => {
    const crashing = startCli(loaderArgs('l-a'), {
      TICKSTREAM_CRASH_AT: 'loader-mid-copy',
      TICKSTREAM_CRASH_AFTER: '4',
    });
    started.push(crashing);
    expect(await crashing.exited).toBeNull();
    expect(crashing.output()).toContain('crash point loader-mid-copy hit');
    const before = await rows();
    expect(before).toBeGreaterThan(0); // three transactions got in before the kill
    expect(before).toBeLessThan(240_000);

    const b = startCli(loaderArgs('l-b'));
    const c = startCli(loaderArgs('l-c'));
    started.push(b, c);
    // Kill one of the racing loaders once it has loaded something: the other one takes over.
    expect(await waitFor(async () => (await rows()) > before + 10_000, 60_000)).toBe(true);
    b.child.kill('SIGKILL');
    expect(await b.exited).toBeNull();

    const verify = await runCli(verifyArgs(names, 120));
    expect(verify.code, `verify said:\n${verify.output}\nloader c said:\n${c.output()}`).toBe(0);
    expect(verify.output).toContain(`all ${sources.length} source(s) whole`);
    const { rows: dup } = await db.query(
      `select count(*)::int as n from (select source, seq from "${names.schema}".ticks group by 1, 2 having count(*) > 1) d`,
    );
    expect(dup[0].n).toBe(0);
    c.child.kill('SIGTERM');
    expect(await c.exited).toBe(0);
  }, 240_000);

  it('verify reports a row missing from Postgres, a duplicate in Postgres, and a duplicate in the journal', async () => {
    const schema = `"${names.schema}"`;
    const victim = (
      await db.query(
        `select source, seq, time from ${schema}.ticks where source = 'la2' order by seq limit 1 offset 100`,
      )
    ).rows[0];
    await db.query(`delete from ${schema}.ticks where source = $1 and seq = $2`, [victim.source, victim.seq]);
    let v = await runCli([...verifyArgs(names, 0), '--json']);
    expect(v.code).toBe(1);
    let report = JSON.parse(v.output.slice(0, v.output.lastIndexOf(']') + 1)) as {
      source: string;
      missingFromPostgres: number;
      postgresDuplicates: number;
      duplicates: number;
      ok: boolean;
    }[];
    expect(report.find((r) => r.source === 'la2')).toMatchObject({ missingFromPostgres: 1, ok: false });
    expect(report.filter((r) => r.ok).map((r) => r.source)).toEqual(['la1', 'la3']);

    // The same (source, seq) again at another time: a duplicate the primary key allows.
    await db.query(
      `insert into ${schema}.ticks select source, seq, symbol, time + interval '1 ms', server_time_msc, bid, ask, last, volume, volume_real, flags from ${schema}.ticks where source = 'la3' and seq = 7`,
    );
    v = await runCli([...verifyArgs(names, 0), '--json']);
    report = JSON.parse(v.output.slice(0, v.output.lastIndexOf(']') + 1));
    expect(report.find((r) => r.source === 'la3')).toMatchObject({ postgresDuplicates: 1, ok: false });

    // A journal record produced twice (outside any bridge): verify counts the duplicate ticks.
    const consumer = new RdKafka.KafkaConsumer(
      { 'metadata.broker.list': KAFKA_BROKERS, 'group.id': `dup-${names.id}` },
      {},
    );
    await new Promise<void>((resolve, reject) =>
      consumer.connect({}, (err) => (err ? reject(err) : resolve())),
    );
    const meta = await new Promise<RdKafka.Metadata>((resolve, reject) =>
      consumer.getMetadata({ topic: names.ticksTopic, timeout: 10_000 }, (err, m) =>
        err ? reject(err) : resolve(m),
      ),
    );
    const parts = meta.topics.find((t) => t.name === names.ticksTopic)?.partitions ?? [];
    consumer.assign(parts.map((p) => ({ topic: names.ticksTopic, partition: p.id, offset: 0 })));
    let record: RdKafka.Message | undefined;
    while (!record) {
      const got = await new Promise<RdKafka.Message[]>((resolve) =>
        consumer.consume(10, (err, m) => resolve(err ? [] : m)),
      );
      record = got.find((m) => m.key?.toString() === 'la1');
    }
    await new Promise((resolve) => consumer.disconnect(resolve));
    const header = (k: string) => Number(String(record?.headers?.find((h) => k in h)?.[k]));
    const ticksInRecord = header('seq-last') - header('seq-first') + 1;
    expect(ticksInRecord).toBeGreaterThan(0);
    const producer = new RdKafka.HighLevelProducer({ 'metadata.broker.list': KAFKA_BROKERS });
    await new Promise<void>((resolve, reject) =>
      producer.connect({}, (err) => (err ? reject(err) : resolve())),
    );
    await new Promise<void>((resolve, reject) =>
      producer.produce(
        names.ticksTopic,
        record?.partition ?? 0,
        record?.value ?? null,
        'la1',
        Date.now(),
        (err) => (err ? reject(err) : resolve()),
      ),
    );
    await new Promise((resolve) => producer.disconnect(resolve));
    v = await runCli([...verifyArgs(names, 0), '--json', '--no-postgres']);
    expect(v.code).toBe(1);
    report = JSON.parse(v.output.slice(0, v.output.lastIndexOf(']') + 1));
    expect(report.find((r) => r.source === 'la1')).toMatchObject({ duplicates: ticksInRecord, ok: false });
  }, 120_000);
});
