/**
 * A cursor over the tick journal for websocket replay and resume sessions: every partition from
 * its log start, `read_committed`, without a consumer group, pulled a batch at a time by its
 * caller (so a slow websocket client pauses the reading, never the other way round). Unlike
 * `readJournal` it does not stop at the end: `next()` keeps returning what is committed later
 * (an empty list when nothing came within a short poll), and `reachedOpeningEnd` says when every
 * partition has been read up to its high watermark as of the opening. The caller decides when
 * to stop and must `close()`.
 *
 * librdkafka fetches on its own threads; `next()` only hands over what is already fetched, so a
 * session reading in serve's process does not block its event loop.
 */
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import RdKafka from '@confluentinc/kafka-javascript';
import { ErrorCode, TickstreamError } from '../../codecs/errors.js';
import { RecordHeader } from '../../codecs/flat-record.js';
import {
  connectKafka,
  describeKafka,
  type KafkaSecurity,
  kafkaClientProps,
} from '../../codecs/kafka-client.js';

export interface RangeRecord {
  /** The record key: the source. */
  key: string;
  value: Uint8Array;
  /** From the seq-first/seq-last headers; NaN when a record lacks them. */
  seqFirst: number;
  seqLast: number;
}

export interface RangeCursor {
  next(): Promise<RangeRecord[]>;
  readonly reachedOpeningEnd: boolean;
  close(): Promise<void>;
}

type Consumer = InstanceType<typeof RdKafka.KafkaConsumer>;

const header = (m: RdKafka.Message, name: string): number => {
  for (const h of m.headers ?? []) {
    const v = h[name];
    if (v !== undefined) return Number(String(v));
  }
  return Number.NaN;
};

export async function openRangeCursor(options: {
  brokers: string;
  security?: KafkaSecurity;
  topic: string;
  /** Records per `next()` at most. */
  maxRecords?: number;
}): Promise<RangeCursor> {
  const consumer: Consumer = new RdKafka.KafkaConsumer(
    {
      ...kafkaClientProps(options.brokers, options.security),
      'group.id': `tickstream-ws-session-${randomUUID()}`,
      'enable.auto.commit': false,
      'isolation.level': 'read_committed',
      // Prefetched bytes per session stay small: serve may run wsMaxJournalSessions of them.
      'fetch.max.bytes': 4 << 20,
      'queued.max.messages.kbytes': 4096,
    },
    { 'auto.offset.reset': 'earliest' },
  );
  consumer.setDefaultConsumeTimeout(200);
  await connectKafka(
    consumer,
    options.brokers,
    options.security,
    10_000,
    (err) =>
      new TickstreamError(
        ErrorCode.KAFKA,
        `cannot reach Kafka at ${describeKafka(options.brokers, options.security)} to read the journal (${err.message}): is the broker up?`,
      ),
  );
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await new Promise((resolve) => consumer.disconnect(resolve));
  };
  try {
    const metadata = await promisify<object, RdKafka.Metadata>(consumer.getMetadata.bind(consumer))({
      topic: options.topic,
      timeout: 10_000,
    });
    const topic = metadata.topics.find((t) => t.name === options.topic);
    if (!topic || topic.partitions.length === 0)
      throw new TickstreamError(ErrorCode.KAFKA, `journal topic ${options.topic} does not exist`);
    const high = new Map<number, number>();
    const assignments: { topic: string; partition: number; offset: number }[] = [];
    for (const { id } of topic.partitions) {
      const w = await new Promise<RdKafka.WatermarkOffsets>((resolve, reject) =>
        consumer.queryWatermarkOffsets(options.topic, id, 10_000, (err, o) =>
          err ? reject(err) : resolve(o),
        ),
      );
      // An empty partition (or one retention emptied) has nothing to reach.
      if (w.highOffset > w.lowOffset) high.set(id, w.highOffset);
      assignments.push({ topic: options.topic, partition: id, offset: w.lowOffset });
    }
    consumer.assign(assignments);
    const positions = [...high.keys()].map((partition) => ({ topic: options.topic, partition }));
    const max = options.maxRecords ?? 200;
    let reached = positions.length === 0;
    return {
      get reachedOpeningEnd() {
        return reached;
      },
      next: async () => {
        if (closed) return [];
        const batch = await new Promise<RdKafka.Message[]>((resolve, reject) =>
          consumer.consume(max, (err, m) => (err ? reject(err) : resolve(m))),
        );
        // Positions move past transaction markers and aborted records too.
        reached ||= consumer
          .position(positions)
          .every((p) => (p.offset ?? -1) >= (high.get(p.partition) ?? 0));
        return batch.map((m) => ({
          key: m.key ? String(m.key) : '',
          value: m.value ?? new Uint8Array(0),
          seqFirst: header(m, RecordHeader.SEQ_FIRST),
          seqLast: header(m, RecordHeader.SEQ_LAST),
        }));
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
