/**
 * Reads a journal topic from its log start to its end as of the moment the read began (or to
 * `endOffsets`), `read_committed` (aborted transactions are skipped), without a consumer group:
 * every partition is assigned directly. Used by `tickstream verify` and `tickstream replay` (the
 * sources' resume state and claims are tailed by source-log.ts), the Redis healer and `barsFromJournal`; it is
 * also THE way to read ranges of the journal
 * in TypeScript (docs/operations.md, "Reading the journal from TypeScript"):
 *
 *   await readJournal({ brokers: '127.0.0.1:9092', topic: 'mt5.ticks', onMessages: (ms) => {
 *     for (const m of ms) if (m.key === 'broker-a') use(decodeTickRecord(m.value)); // codecs/flat-record.ts
 *   } });
 *
 * `onMessages` may be async: the next fetch waits for it, so a slow consumer bounds memory.
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
import {
  connectKafka,
  describeKafka,
  type KafkaSecurity,
  kafkaClientProps,
} from '../../codecs/kafka-client.js';

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
  /** TLS/SASL of the connection (client-config.ts); undefined: plaintext. */
  security?: KafkaSecurity;
  topic: string;
  /** Start at the first record produced at or after this time (ms), not at the log start. */
  fromTimestampMs?: number;
  /** Give up when no progress is made for this long (an open transaction holds the LSO). */
  idleTimeoutMs?: number;
  /**
   * Per partition: stop before this offset even when the log goes further (e.g. where a
   * consumer stands). Partitions not in the map are read to their end.
   */
  endOffsets?: ReadonlyMap<number, number>;
  /** Called once before reading with each partition's log start and end (retention moves the start). */
  onPartitions?: (partitions: { partition: number; low: number; high: number }[]) => void;
  onMessages: (messages: JournalMessage[]) => void | Promise<void>;
  /**
   * librdkafka prefetch bounds instead of 64 MiB a fetch and 64 MiB queued: a reader inside
   * `serve` passes SERVE_CONSUMER_PREFETCH (codecs/kafka-client.ts).
   */
  prefetch?: Record<string, number | string | boolean>;
  /**
   * Called once per partition when everything before its end has been passed to onMessages
   * (partitions empty from the start are not reported: onPartitions shows them with low = high).
   */
  onPartitionEnd?: (partition: number) => void | Promise<void>;
}

type Consumer = InstanceType<typeof RdKafka.KafkaConsumer>;

export async function readJournal(options: ReadJournalOptions): Promise<{ messages: number }> {
  const consumer: Consumer = new RdKafka.KafkaConsumer(
    {
      ...kafkaClientProps(options.brokers, options.security),
      'group.id': `tickstream-reader-${randomUUID()}`,
      'enable.auto.commit': false,
      'isolation.level': 'read_committed',
      'fetch.max.bytes': 64 << 20,
      'queued.max.messages.kbytes': 65536,
      ...options.prefetch,
    },
    { 'auto.offset.reset': 'earliest' },
  );
  await connectKafka(
    consumer,
    options.brokers,
    options.security,
    10_000,
    (err) =>
      new TickstreamError(
        ErrorCode.KAFKA,
        `cannot reach Kafka at ${describeKafka(options.brokers, options.security)} (${err.message}). Is the broker up? (npm run infra:up)`,
      ),
  );
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
      const end = Math.max(
        w.lowOffset,
        Math.min(w.highOffset, options.endOffsets?.get(partition) ?? w.highOffset),
      );
      high.set(partition, end);
      bounds.push({ partition, low: w.lowOffset, high: end });
      let from = w.lowOffset;
      if (options.fromTimestampMs !== undefined && w.lowOffset < end) {
        const at = options.fromTimestampMs;
        const [found] = await new Promise<RdKafka.TopicPartitionOffset[]>((resolve, reject) =>
          consumer.offsetsForTimes([{ topic: options.topic, partition, offset: at }], 10_000, (err, o) =>
            err ? reject(err) : resolve(o),
          ),
        );
        // No record at or after that time: nothing to read in this partition.
        from = found && found.offset >= 0 ? Math.max(found.offset, w.lowOffset) : end;
      }
      if (from < end) assignments.push({ topic: options.topic, partition, offset: from });
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
    const ended = new Set<number>();
    const idle = options.idleTimeoutMs ?? 10_000;
    for (;;) {
      // Records past a partition's end (an endOffsets bound) are fetched but not passed on.
      const batch = (await consume(500)).filter((m) => m.offset < (high.get(m.partition) ?? 0));
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
        // The time the caller took (a paced replay waits, the healer rate-limits) is not the
        // broker's silence.
        lastProgress = Date.now();
      }
      // Positions move past transaction markers and aborted records too, so reaching the
      // high watermark means every committed record before it has been seen.
      const positions = consumer.position(
        assignments.map((a) => ({ topic: a.topic, partition: a.partition })),
      );
      let done = true;
      for (const p of positions) {
        if (p.offset !== undefined && p.offset >= (high.get(p.partition) ?? 0)) {
          if (ended.has(p.partition)) continue;
          ended.add(p.partition);
          await options.onPartitionEnd?.(p.partition);
          lastProgress = Date.now();
        } else done = false;
      }
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
