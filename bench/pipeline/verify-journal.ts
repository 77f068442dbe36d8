/**
 * `tickstream verify` (journal side, --no-postgres) end to end on a real Kafka topic: produces N
 * ticks (default 2 M) of one source as 1000-tick FlatBuffers records straight into a fresh
 * topic, then times the audit and samples its peak RSS, then deletes the topic. A one-off
 * measure for issue 12, not part of `npm run bench`:
 *
 *   node dist/bench/pipeline/verify-journal.js [ticks] [brokers] [--produce-only]
 *
 * `--produce-only` keeps the topic and prints its name, to time `tickstream verify --no-postgres
 * --ticks-topic NAME` apart (e.g. under /usr/bin/time -v); delete the topic afterwards.
 */
import { randomUUID } from 'node:crypto';
import RdKafka from '@confluentinc/kafka-javascript';
import { TickRecordEncoder } from '../../codecs/flat-record.js';
import { allocTickBatch } from '../../codecs/tick-batch.js';
import { loadConfig } from '../../pipeline/config.js';
import { verify } from '../../pipeline/verify.js';

const ticks = Number(process.argv[2] ?? 2_000_000);
const brokers = process.argv[3] ?? '127.0.0.1:9092';
const topic = `tsbench.verify.${randomUUID().slice(0, 8)}`;
const PER_RECORD = 1000;
const produceOnly = process.argv.includes('--produce-only');

const admin = RdKafka.AdminClient.create({ 'metadata.broker.list': brokers });
await new Promise<void>((resolve, reject) =>
  admin.createTopic({ topic, num_partitions: 1, replication_factor: 1 }, 20_000, (err) =>
    err ? reject(err) : resolve(),
  ),
);
try {
  const producer = new RdKafka.Producer({
    'metadata.broker.list': brokers,
    'linger.ms': 20,
    'compression.type': 'lz4',
    'queue.buffering.max.kbytes': 262_144,
  });
  await new Promise<void>((resolve, reject) =>
    producer.connect({}, (err) => (err ? reject(err) : resolve())),
  );
  producer.setPollInterval(50);
  const encoder = new TickRecordEncoder();
  const batch = allocTickBatch('bench', ['EURUSD', 'GBPUSD'], PER_RECORD);
  batch.length = PER_RECORD;
  const t0 = Date.now() - 86_400_000;
  let produced = performance.now();
  for (let from = 0; from < ticks; from += PER_RECORD) {
    for (let i = 0; i < PER_RECORD; i++) {
      batch.seq[i] = from + i + 1;
      batch.utcMsc[i] = t0 + from + i;
      batch.serverTimeMsc[i] = t0 + from + i;
      batch.symbolIndex[i] = i & 1;
      batch.bid[i] = 1.1 + i * 1e-5;
      batch.ask[i] = 1.1002 + i * 1e-5;
    }
    for (;;) {
      try {
        producer.produce(topic, 0, Buffer.from(encoder.encode(batch)), 'bench');
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 10)); // local queue full: let it drain
      }
    }
  }
  await new Promise<void>((resolve, reject) =>
    producer.flush(60_000, (err) => (err ? reject(err) : resolve())),
  );
  produced = (performance.now() - produced) / 1000;
  await new Promise((resolve) => producer.disconnect(resolve));
  if (produceOnly) {
    process.stdout.write(
      `${JSON.stringify({ topic, ticks, produceSeconds: Number(produced.toFixed(1)) })}\n`,
    );
    admin.disconnect();
    process.exit(0);
  }

  let peakRss = process.memoryUsage().rss;
  const sampler = setInterval(() => {
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
  }, 50);
  const rssBefore = process.memoryUsage().rss;
  const started = performance.now();
  const [report] = await verify(
    loadConfig({ env: {}, flags: { 'kafka-brokers': brokers, 'ticks-topic': topic } }),
    {
      postgres: false,
      waitPostgresS: 0,
    },
  );
  const seconds = (performance.now() - started) / 1000;
  clearInterval(sampler);
  process.stdout.write(
    `${JSON.stringify({
      ticks,
      produceSeconds: Number(produced.toFixed(1)),
      verifySeconds: Number(seconds.toFixed(2)),
      ticksPerSecond: Math.round(ticks / seconds),
      rssBeforeVerifyMb: Math.round(rssBefore / 2 ** 20),
      peakRssMb: Math.round(peakRss / 2 ** 20),
      ok: report?.ok,
      journalTicks: report?.journalTicks,
    })}\n`,
  );
} finally {
  await new Promise<void>((resolve) => admin.deleteTopic(topic, 20_000, () => resolve()));
  admin.disconnect();
}
