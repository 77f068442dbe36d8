// The transactional journal against the real broker, read back by a plain consumer that
// shares no code with it.
import { randomUUID } from 'node:crypto';
import { KafkaJS } from '@confluentinc/kafka-javascript';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { type JournalOptions, KafkaJournal } from '../../sinks/kafka/journal.js';
import { SourceLog } from '../../sinks/kafka/source-log.js';
import { KAFKA_BROKERS } from '../helpers/procs.js';

const brokers = KAFKA_BROKERS;
const run = randomUUID().slice(0, 8);
const topics = { ticksTopic: `t.${run}.ticks`, barsTopic: `t.${run}.bars`, sourcesTopic: `t.${run}.sources` };
const kafka = new KafkaJS.Kafka({ kafkaJS: { brokers: [brokers], logLevel: KafkaJS.logLevel.NOTHING } });
const journals: KafkaJournal[] = [];

function journal(over: Partial<JournalOptions> = {}) {
  const j = new KafkaJournal({
    brokers,
    transactionalId: `t-${run}`,
    ...topics,
    partitions: 3,
    retentionMs: 3_600_000,
    transactionIntervalMs: 5,
    maxTransactionRecords: 100,
    maxQueuedBytes: 1 << 20,
    registry: new Registry(),
    logger: pino({ level: 'silent' }),
    ...over,
  });
  journals.push(j);
  return j;
}

afterAll(async () => {
  for (const j of journals) await j.close(2000).catch(() => undefined);
  const admin = kafka.admin();
  await admin.connect();
  await admin.deleteTopics({ topics: Object.values(topics) }).catch(() => undefined);
  await admin.disconnect();
});

async function readAll(topic: string, n: number) {
  const consumer = kafka.consumer({
    kafkaJS: { groupId: `t-${randomUUID()}`, fromBeginning: true },
    'isolation.level': 'read_committed',
  });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic] });
  const got: { key: string; value: string; partition: number }[] = [];
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`read ${got.length}/${n}`)), 30_000);
    consumer
      .run({
        eachMessage: async ({ message, partition }) => {
          got.push({ key: String(message.key), value: String(message.value), partition });
          if (got.length >= n) {
            clearTimeout(timer);
            resolve();
          }
        },
      })
      .catch(reject);
  });
  await new Promise((r) => setTimeout(r, 500)); // anything past n would be a duplicate
  await consumer.disconnect();
  return got;
}

describe('KafkaJournal', () => {
  it('commits every appended record once, per-source order kept in one partition, states readable', async () => {
    const j = journal();
    await j.start();
    const appends: Promise<unknown>[] = [];
    for (let i = 0; i < 60; i++) {
      const source = `src${i % 3}`;
      appends.push(
        j.append({
          ticks: [{ key: source, value: Buffer.from(`${source}:${i}`), headers: { source } }],
          bars: [],
          states: [
            { source, nextSeq: i + 1, cursors: { EURUSD: { lastMsc: i, countAtMsc: 1 } }, updatedAtMs: i },
          ],
        }),
      );
    }
    await Promise.all(appends);
    const got = await readAll(topics.ticksTopic, 60);
    expect(got).toHaveLength(60);
    for (const s of ['src0', 'src1', 'src2']) {
      const mine = got.filter((g) => g.key === s);
      expect(new Set(mine.map((m) => m.partition)).size).toBe(1);
      expect(mine.map((m) => Number(m.value.split(':')[1]))).toEqual(
        Array.from({ length: 20 }, (_, k) => k * 3 + Number(s.slice(3))),
      );
    }
    const log = new SourceLog({ brokers, sourcesTopic: topics.sourcesTopic, stallTimeoutMs: 10_000 });
    await log.start();
    const states = log.states();
    await log.close();
    expect(states.get('src2')?.nextSeq).toBe(60);
    expect(states.get('src0')?.cursors['EURUSD']).toEqual({ lastMsc: 57, countAtMsc: 1 });
  });

  it('with none in flight an append goes out alone; appends made while one is in flight go out together once it commits', async () => {
    let release = () => {};
    let held = false;
    const registry = new Registry();
    const j = journal({
      transactionalId: `t-${run}-gather`,
      transactionIntervalMs: 0,
      registry,
      // Holds the first transaction open just before its commit.
      slowPoint: async () => {
        if (held) return;
        held = true;
        await new Promise<void>((r) => {
          release = r;
        });
      },
    });
    await j.start();
    const committed = async () =>
      (await registry.getSingleMetric('tickstream_journal_transactions_total')?.get())?.values.find(
        (v) => v.labels['outcome'] === 'committed',
      )?.value ?? 0;
    const record = (i: number) => ({
      ticks: [{ key: 'g', value: Buffer.from(`g${i}`) }],
      bars: [],
      states: [],
    });
    const first = j.append(record(0));
    for (let t = Date.now(); !held; ) {
      if (Date.now() - t > 10_000) throw new Error('the first transaction did not begin');
      await new Promise((r) => setTimeout(r, 5));
    }
    const later = Promise.all([1, 2, 3, 4, 5].map((i) => j.append(record(i))));
    release();
    await first;
    await later;
    expect(await committed()).toBe(2);
    await j.append(record(6));
    expect(await committed()).toBe(3);
  });

  it('hasRoom() turns false once the queued bytes reach the limit', async () => {
    const j = journal({
      transactionalId: `t-${run}-room`,
      maxQueuedBytes: 100,
      transactionIntervalMs: 10_000,
    });
    await j.start();
    expect(j.hasRoom()).toBe(true);
    const done = j.append({ ticks: [{ key: 'a', value: Buffer.alloc(150) }], bars: [], states: [] });
    expect(j.hasRoom()).toBe(false);
    await j.close(5000);
    await done;
  });

  it('a second journal with the same transactional.id fences the first', async () => {
    const first = journal({ transactionalId: `t-${run}-fence` });
    await first.start();
    await first.append({ ticks: [{ key: 'a', value: Buffer.from('one') }], bars: [], states: [] });
    const second = journal({ transactionalId: `t-${run}-fence` });
    await second.start();
    await expect(
      first.append({ ticks: [{ key: 'a', value: Buffer.from('stale') }], bars: [], states: [] }),
    ).rejects.toThrow(/took over|fatal|fenced/i);
    expect(first.ready).toBe(false);
    await second.append({ ticks: [{ key: 'a', value: Buffer.from('two') }], bars: [], states: [] });
  });
});
