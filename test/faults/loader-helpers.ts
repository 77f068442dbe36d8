// Helpers of the loader fault tests: journal records produced straight into Kafka (the loader
// reads any committed record, whoever wrote it), topics made to measure, and a standalone
// `tickstream loader` watched through its own HTTP port.
import RdKafka from '@confluentinc/kafka-javascript';
import { TickRecordEncoder } from '../../codecs/flat-record.js';
import { allocTickBatch } from '../../codecs/tick-batch.js';
import { type Names, startCli, waitFor } from '../helpers/procs.js';

export const DAY_MS = 86_400_000;

async function withAdmin<T>(brokers: string, fn: (admin: RdKafka.IAdminClient) => Promise<T>): Promise<T> {
  const admin = RdKafka.AdminClient.create({ 'metadata.broker.list': brokers });
  try {
    return await fn(admin);
  } finally {
    admin.disconnect();
  }
}

export function createTopic(
  brokers: string,
  topic: string,
  partitions: number,
  config: Record<string, string> = {},
): Promise<void> {
  return withAdmin(
    brokers,
    (admin) =>
      new Promise<void>((resolve, reject) =>
        admin.createTopic(
          { topic, num_partitions: partitions, replication_factor: 1, config },
          20_000,
          (err) => (err ? reject(err) : resolve()),
        ),
      ),
  );
}

export function deleteTopic(brokers: string, topic: string): Promise<void> {
  return withAdmin(
    brokers,
    (admin) =>
      new Promise<void>((resolve, reject) =>
        admin.deleteTopic(topic, 20_000, (err) => (err ? reject(err) : resolve())),
      ),
  );
}

/** What retention does to the start of a log: moves its start offset to `offset`. */
export function deleteRecordsBefore(brokers: string, topic: string, partition: number, offset: number) {
  return withAdmin(
    brokers,
    (admin) =>
      new Promise<void>((resolve, reject) =>
        admin.deleteRecords([{ topic, partition, offset }], { timeout: 20_000 }, (err) =>
          err ? reject(err) : resolve(),
        ),
      ),
  );
}

/** Produces `source`'s ticks with seqs from `firstSeq`, `perRecord` ticks a record, one partition. */
export async function produceTicks(o: {
  brokers: string;
  topic: string;
  source: string;
  firstSeq: number;
  times: number[];
  perRecord: number;
  partition?: number;
  /** The ticks' symbol (default EURUSD). */
  symbol?: string;
}): Promise<void> {
  const producer = new RdKafka.HighLevelProducer({ 'metadata.broker.list': o.brokers });
  await new Promise<void>((resolve, reject) =>
    producer.connect({}, (err) => (err ? reject(err) : resolve())),
  );
  const encoder = new TickRecordEncoder();
  try {
    for (let from = 0; from < o.times.length; from += o.perRecord) {
      const n = Math.min(o.perRecord, o.times.length - from);
      const b = allocTickBatch(o.source, [o.symbol ?? 'EURUSD'], n);
      b.length = n;
      for (let i = 0; i < n; i++) {
        const t = o.times[from + i] as number;
        b.seq[i] = o.firstSeq + from + i;
        b.utcMsc[i] = t;
        b.serverTimeMsc[i] = t;
        b.bid[i] = 1.1;
        b.ask[i] = 1.1001;
      }
      const headers: RdKafka.MessageHeader[] = [
        { source: o.source },
        { 'seq-first': String(b.seq[0]) },
        { 'seq-last': String(b.seq[n - 1]) },
      ];
      await new Promise<void>((resolve, reject) =>
        producer.produce(
          o.topic,
          o.partition ?? 0,
          Buffer.from(encoder.encode(b)),
          o.source,
          Date.now(),
          headers,
          (err) => (err ? reject(err) : resolve()),
        ),
      );
    }
  } finally {
    await new Promise((resolve) => producer.disconnect(resolve));
  }
}

/** `count` tick times a few ms apart, ending now. */
export function recentTimes(count: number): number[] {
  const now = Date.now() - 60_000;
  return Array.from({ length: count }, (_, i) => now + i);
}

export function loaderArgs(n: Names, brokers: string, instance = 'l1'): string[] {
  return [
    'loader',
    '--kafka-brokers',
    brokers,
    '--instance-id',
    instance,
    '--ticks-topic',
    n.ticksTopic,
    '--bars-topic',
    n.barsTopic,
    '--postgres-schema',
    n.schema,
    '--loader-group-id',
    n.group,
    '--loader-http-port',
    '0',
  ];
}

export type LoaderProcess = ReturnType<typeof startCli> & { port: number };

/** Starts a standalone loader and waits for its start-up line (its HTTP port). */
export async function startLoader(args: string[], env: Record<string, string> = {}): Promise<LoaderProcess> {
  const p = startCli(args, env);
  let port = 0;
  const up = await waitFor(() => {
    const m = /metrics :(\d+)/.exec(p.output());
    if (m) port = Number(m[1]);
    return port > 0 || p.child.exitCode !== null;
  }, 60_000);
  if (!up || port === 0) throw new Error(`loader did not start:\n${p.output()}`);
  return { ...p, port };
}

export async function httpGet(port: number, path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, body: await res.text() };
}

/** Sum of a metric's samples whose line contains every one of `parts` (label matches). */
export async function metric(port: number, name: string, ...parts: string[]): Promise<number> {
  const { body } = await httpGet(port, '/metrics');
  let sum = 0;
  for (const line of body.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (parts.every((p) => line.includes(p))) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}
