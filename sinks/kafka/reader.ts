/**
 * Reads a journal topic from its log start to its end as of the moment the read began,
 * `read_committed` (aborted transactions are skipped), without a consumer group: every
 * partition is assigned directly. Used to load the sources' resume state, by
 * `tickstream verify` and `tickstream replay`, by the Redis healer and `barsFromJournal`.
 *
 * Record timestamps are the produce time, not the tick's time, so a tick-time range cannot be
 * found with offsetsForTimes; readers filter by the record key (the source) and the
 * seq-first/seq-last headers before decoding instead. `fromTimestampMs` starts each partition at
 * the first record produced at or after that time: for readers that know when the records they
 * want were written (the Redis healer: after the drops it records).
 */
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import RdKafka from '@confluentinc/kafka-javascript';
import { ErrorCode, TickstreamError } from '../../codecs/errors.js';
import type { SourceState } from './journal.js';

export interface JournalMessage {
  partition: number;
  offset: number;
  key: string;
  value: Buffer;
  headers: Record<string, string>;
  timestampMs: number;
}

export interface ReadJournalOptions {
  brokers: string;
  topic: string;
  /** Start at the first record produced at or after this time (ms), not at the log start. */
  fromTimestampMs?: number;
  /** Give up when no progress is made for this long (an open transaction holds the LSO). */
  idleTimeoutMs?: number;
  /** Called once before reading with each partition's log start and end (retention moves the start). */
  onPartitions?: (partitions: { partition: number; low: number; high: number }[]) => void;
  onMessages: (messages: JournalMessage[]) => void | Promise<void>;
}

type Consumer = InstanceType<typeof RdKafka.KafkaConsumer>;

export async function readJournal(options: ReadJournalOptions): Promise<{ messages: number }> {
  const consumer: Consumer = new RdKafka.KafkaConsumer(
    {
      'metadata.broker.list': options.brokers,
      'group.id': `tickstream-reader-${randomUUID()}`,
      'enable.auto.commit': false,
      'isolation.level': 'read_committed',
      'fetch.max.bytes': 64 << 20,
      'queued.max.messages.kbytes': 65536,
    },
    { 'auto.offset.reset': 'earliest' },
  );
  const connect = promisify<object, unknown>(consumer.connect.bind(consumer));
  await connect({ timeout: 10_000 }).catch((err: Error) => {
    throw new TickstreamError(
      ErrorCode.KAFKA,
      `cannot reach Kafka at ${options.brokers} (${err.message}). Is the broker up? (npm run infra:up)`,
    );
  });
  try {
    const metadata = await promisify<object, RdKafka.Metadata>(consumer.getMetadata.bind(consumer))({
      topic: options.topic,
      timeout: 10_000,
    });
    const topic = metadata.topics.find((t) => t.name === options.topic);
    if (!topic || topic.partitions.length === 0) {
      throw new TickstreamError(
        ErrorCode.KAFKA,
        `topic ${options.topic} does not exist on ${options.brokers}`,
      );
    }
    const partitions = topic.partitions.map((p) => p.id);
    const high = new Map<number, number>();
    const bounds: { partition: number; low: number; high: number }[] = [];
    const assignments: { topic: string; partition: number; offset: number }[] = [];
    for (const partition of partitions) {
      const w = await new Promise<RdKafka.WatermarkOffsets>((resolve, reject) =>
        consumer.queryWatermarkOffsets(options.topic, partition, 10_000, (err, o) =>
          err ? reject(err) : resolve(o),
        ),
      );
      high.set(partition, w.highOffset);
      bounds.push({ partition, low: w.lowOffset, high: w.highOffset });
      let from = w.lowOffset;
      if (options.fromTimestampMs !== undefined && w.lowOffset < w.highOffset) {
        const at = options.fromTimestampMs;
        const [found] = await new Promise<RdKafka.TopicPartitionOffset[]>((resolve, reject) =>
          consumer.offsetsForTimes([{ topic: options.topic, partition, offset: at }], 10_000, (err, o) =>
            err ? reject(err) : resolve(o),
          ),
        );
        // No record at or after that time: nothing to read in this partition.
        from = found && found.offset >= 0 ? Math.max(found.offset, w.lowOffset) : w.highOffset;
      }
      if (from < w.highOffset) assignments.push({ topic: options.topic, partition, offset: from });
    }
    options.onPartitions?.(bounds);
    if (assignments.length === 0) return { messages: 0 };
    consumer.assign(assignments);
    const consume = (n: number) =>
      new Promise<RdKafka.Message[]>((resolve, reject) =>
        consumer.consume(n, (err, m) => (err ? reject(err) : resolve(m))),
      );
    let total = 0;
    let lastProgress = Date.now();
    const idle = options.idleTimeoutMs ?? 10_000;
    for (;;) {
      const batch = await consume(500);
      if (batch.length) {
        lastProgress = Date.now();
        total += batch.length;
        await options.onMessages(
          batch.map((m) => ({
            partition: m.partition,
            offset: m.offset,
            key: m.key ? String(m.key) : '',
            value: m.value ?? Buffer.alloc(0),
            headers: Object.fromEntries(
              (m.headers ?? []).flatMap((h) => Object.entries(h).map(([k, v]) => [k, String(v)])),
            ),
            timestampMs: m.timestamp ?? 0,
          })),
        );
        // A reader that takes its time with a batch (a rate limit) is not an idle broker.
        lastProgress = Date.now();
      }
      // Positions move past transaction markers and aborted records too, so reaching the
      // high watermark means every committed record before it has been seen.
      const done = consumer
        .position(assignments.map((a) => ({ topic: a.topic, partition: a.partition })))
        .every((p) => p.offset !== undefined && p.offset >= (high.get(p.partition) ?? 0));
      if (done) return { messages: total };
      if (Date.now() - lastProgress > idle) {
        throw new TickstreamError(
          ErrorCode.KAFKA,
          `reading ${options.topic} made no progress for ${idle} ms before its end: an open transaction may be holding it (is a bridge mid-transaction?)`,
        );
      }
    }
  } finally {
    await new Promise((resolve) => consumer.disconnect(resolve));
  }
}

/** The sources' resume state: the compacted topic read to its end, the last value per key. */
export async function readSourceStates(options: {
  brokers: string;
  sourcesTopic: string;
}): Promise<Map<string, SourceState>> {
  const states = new Map<string, SourceState>();
  try {
    await readJournal({
      brokers: options.brokers,
      topic: options.sourcesTopic,
      onMessages: (messages) => {
        for (const m of messages) states.set(m.key, JSON.parse(m.value.toString('utf8')) as SourceState);
      },
    });
  } catch (err) {
    // A journal that was never written to has no sources topic yet: every source starts fresh.
    if (!(err instanceof TickstreamError && /does not exist/.test(err.message))) throw err;
  }
  return states;
}
