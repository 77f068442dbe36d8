// Every committed tick of the Kafka journal, with @confluentinc/kafka-javascript and the
// FlatBuffers classes `flatc --ts` generates from codecs/schema/tick_batch.fbs. Reads each
// partition from its start to its end as of now, read_committed (aborted transactions skipped).
//   node dist/examples/ts/kafka.js [TOPIC]
// TICKSTREAM_KAFKA_BROKERS (default 127.0.0.1:9092); TOPIC defaults to mt5.ticks.
import RdKafka from '@confluentinc/kafka-javascript';
import { ByteBuffer } from 'flatbuffers';
import { TickRecord } from '../../codecs/generated/tick_batch_generated.js';

const topic = process.argv[2] ?? 'mt5.ticks';
const brokers = process.env['TICKSTREAM_KAFKA_BROKERS'] ?? '127.0.0.1:9092';

const consumer = new RdKafka.KafkaConsumer(
  {
    'metadata.broker.list': brokers,
    'group.id': `example-${process.pid}`,
    'enable.auto.commit': false,
    'isolation.level': 'read_committed',
  },
  { 'auto.offset.reset': 'earliest' },
);
await new Promise<void>((resolve, reject) => consumer.connect({}, (err) => (err ? reject(err) : resolve())));
const meta = await new Promise<RdKafka.Metadata>((resolve, reject) =>
  consumer.getMetadata({ topic, timeout: 10_000 }, (err, m) => (err ? reject(err) : resolve(m))),
);
const partitions = meta.topics.find((t) => t.name === topic)?.partitions.map((p) => p.id) ?? [];
const ends = new Map<number, number>();
for (const partition of partitions) {
  const w = await new Promise<RdKafka.WatermarkOffsets>((resolve, reject) =>
    consumer.queryWatermarkOffsets(topic, partition, 10_000, (err, o) => (err ? reject(err) : resolve(o))),
  );
  if (w.lowOffset < w.highOffset) ends.set(partition, w.highOffset);
}
consumer.assign([...ends.keys()].map((partition) => ({ topic, partition, offset: 0 })));
const done = () =>
  consumer
    .position([...ends.keys()].map((partition) => ({ topic, partition })))
    .every((p) => (p.offset ?? 0) >= (ends.get(p.partition) ?? 0));
while (ends.size > 0 && !done()) {
  const batch = await new Promise<RdKafka.Message[]>((resolve, reject) =>
    consumer.consume(500, (err, m) => (err ? reject(err) : resolve(m))),
  );
  for (const m of batch) {
    if (!m.value) continue;
    const r = TickRecord.getRootAsTickRecord(new ByteBuffer(new Uint8Array(m.value)));
    for (let i = 0; i < r.seqLength(); i++) {
      const time = new Date(Number(r.utcMsc(i))).toISOString();
      console.log(r.source(), Number(r.seq(i)), r.symbols(r.symbolIndex(i) ?? 0), time, r.bid(i), r.ask(i));
    }
  }
}
consumer.disconnect();
