/**
 * `tickstream smoke`: one round trip through each real part this project depends on, with
 * names of its own that it removes afterwards. It is the first thing to run on a new machine:
 * each step says what it did, or which part failed and what to do.
 */
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import RdKafka, { KafkaJS } from '@confluentinc/kafka-javascript';
import uws from '@trufflesuite/uws-js-unofficial';
import { Redis } from 'ioredis';
import pg from 'pg';
import WebSocket from 'ws';
import { ErrorCode, TickstreamError } from '../codecs/errors.js';
import { connectKafka, describeKafka, type KafkaSecurity, kafkaClientProps } from '../codecs/kafka-client.js';
import { redactUrl } from '../codecs/redact.js';
import { type Config, kafkaSecurityOf } from './config.js';

export interface SmokeStep {
  part: 'kafka' | 'redis' | 'postgres' | 'websocket';
  ok: boolean;
  detail: string;
  ms: number;
}

async function step(part: SmokeStep['part'], fn: () => Promise<string>): Promise<SmokeStep> {
  const started = performance.now();
  try {
    const detail = await fn();
    return { part, ok: true, detail, ms: performance.now() - started };
  } catch (err) {
    // A client library may quote the URL it was given, password and all.
    return { part, ok: false, detail: redactUrl((err as Error).message), ms: performance.now() - started };
  }
}

/**
 * The KafkaJS-style clients only time out on a refused password or an untrusted certificate:
 * one plain client connects first, and says which of them is wrong (connectKafka).
 */
async function checkCredentials(brokers: string, security: KafkaSecurity): Promise<void> {
  const probe = new RdKafka.Producer(kafkaClientProps(brokers, security) as RdKafka.ProducerGlobalConfig);
  await connectKafka(
    probe,
    brokers,
    security,
    10_000,
    (err) =>
      new TickstreamError(
        ErrorCode.KAFKA,
        `cannot reach Kafka at ${describeKafka(brokers, security)} (${err.message}). Start it with 'npm run infra:up'.`,
      ),
  );
  await new Promise((resolve) => probe.disconnect(resolve));
}

export async function kafkaRoundTrip(brokers: string, n: number, security?: KafkaSecurity): Promise<string> {
  const id = randomUUID().slice(0, 8);
  const topic = `tickstream.smoke.${id}`;
  if (security && security.protocol !== 'plaintext') await checkCredentials(brokers, security);
  // The KafkaJS-style API takes the brokers and its own logging; the TLS/SASL properties are
  // the same as every other client's.
  const secured = Object.fromEntries(
    Object.entries(kafkaClientProps(brokers, security)).filter(
      ([k]) => k !== 'metadata.broker.list' && k !== 'event_cb',
    ),
  );
  const kafka = new KafkaJS.Kafka({
    ...secured,
    kafkaJS: { brokers: brokers.split(','), logLevel: KafkaJS.logLevel.NOTHING },
  });
  const admin = kafka.admin();
  await admin.connect().catch((err: Error) => {
    throw new TickstreamError(
      ErrorCode.KAFKA,
      `cannot reach Kafka at ${describeKafka(brokers, security)} (${err.message}). Start it with 'npm run infra:up'.`,
    );
  });
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }] });
    const producer = kafka.producer({ kafkaJS: { idempotent: true, acks: -1 } });
    await producer.connect();
    const messages = Array.from({ length: n }, (_, i) => ({ key: 'smoke', value: String(i) }));
    await producer.send({ topic, messages });
    await producer.disconnect();

    const consumer = kafka.consumer({
      kafkaJS: { groupId: `tickstream-smoke-${id}`, fromBeginning: true, autoCommit: false },
    });
    await consumer.connect();
    await consumer.subscribe({ topics: [topic] });
    const seen: number[] = [];
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`read back ${seen.length}/${n} records in 30 s`)),
        30_000,
      );
      consumer
        .run({
          eachMessage: async ({ message, partition }) => {
            seen.push(Number(message.value?.toString()));
            if (seen.length === n) {
              await consumer.commitOffsets([
                { topic, partition, offset: String(Number(message.offset) + 1) },
              ]);
              clearTimeout(timer);
              resolve();
            }
          },
        })
        .catch(reject);
    });
    await consumer.disconnect();
    if (seen.some((v, i) => v !== i)) throw new Error('records came back out of order');
    return `produced ${n} records (acks=all, idempotent) to ${topic}, read them back in order, offsets committed`;
  } finally {
    await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
    await admin.disconnect();
  }
}

export async function redisRoundTrip(url: string, n: number): Promise<string> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, enableOfflineQueue: false });
  redis.on('error', () => undefined); // the failed connect() below reports it once, with the fix
  try {
    await redis.connect().catch((err: Error) => {
      throw new TickstreamError(
        ErrorCode.REDIS,
        `cannot reach Redis at ${redactUrl(url)} (${err.message}). Start it with 'npm run infra:up' or fix --redis-url.`,
      );
    });
    const key = `tickstream:smoke:${randomUUID()}`;
    const pipeline = redis.pipeline();
    for (let i = 1; i <= n; i++) pipeline.xadd(key, `${i}-0`, 'bid', String(1 + i / 1e5), 'ask', '1.5');
    await pipeline.exec();
    const back = await redis.xrange(key, '-', '+');
    await redis.del(key);
    if (back.length !== n || back[n - 1]?.[0] !== `${n}-0`)
      throw new Error(`XRANGE returned ${back.length}/${n}`);
    return `pipelined ${n} XADDs to ${key}, XRANGE returned all of them, key removed`;
  } finally {
    redis.disconnect();
  }
}

export async function postgresRoundTrip(url: string, n: number): Promise<string> {
  const client = new pg.Client({ connectionString: url });
  await client.connect().catch((err: Error) => {
    throw new TickstreamError(
      ErrorCode.POSTGRES,
      `cannot reach Postgres at ${redactUrl(url)} (${err.message}). Run 'npm run infra:up' (it creates the database).`,
    );
  });
  try {
    const table = `smoke_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
    await client.query(`create temp table ${table} (seq bigint, bid float8)`);
    const { from } = await import('pg-copy-streams');
    const stream = client.query(from(`copy ${table} from stdin (format binary)`));
    stream.write(binaryCopyRows(n));
    stream.end();
    await once(stream, 'finish');
    const { rows } = await client.query(`select count(*)::int as n, sum(seq)::bigint as s from ${table}`);
    const want = (n * (n + 1)) / 2;
    if (rows[0].n !== n || Number(rows[0].s) !== want) throw new Error(`SELECT found ${rows[0].n}/${n} rows`);
    return `COPY ${n} rows (binary) into temp table ${table}, SELECT found all of them`;
  } finally {
    await client.end();
  }
}

/** Minimal binary COPY for (bigint, float8) rows: signature, flags, extension, tuples, trailer. */
function binaryCopyRows(n: number): Buffer {
  const out = Buffer.alloc(19 + n * (2 + 12 + 12) + 2);
  out.write('PGCOPY\n\xff\r\n\0', 0, 'latin1');
  let o = 19;
  for (let i = 1; i <= n; i++) {
    o = out.writeInt16BE(2, o);
    o = out.writeInt32BE(8, o);
    o = out.writeBigInt64BE(BigInt(i), o);
    o = out.writeInt32BE(8, o);
    o = out.writeDoubleBE(1 + i / 1e5, o);
  }
  out.writeInt16BE(-1, o);
  return out;
}

export async function websocketRoundTrip(n: number): Promise<string> {
  const app = uws.App();
  app.ws('/ws', {
    open: (ws) => {
      ws.subscribe('smoke');
    },
  });
  const listen = await new Promise<uws.us_listen_socket>((resolve, reject) =>
    app.listen('127.0.0.1', 0, (s) =>
      s ? resolve(s) : reject(new Error('uWS could not listen on 127.0.0.1')),
    ),
  );
  const port = uws.us_socket_local_port(listen);
  try {
    const client = new WebSocket(`ws://127.0.0.1:${port}/ws`);
    await once(client, 'open');
    const got: string[] = [];
    const done = new Promise<void>((resolve) =>
      client.on('message', (data) => {
        got.push(String(data));
        if (got.length === n) resolve();
      }),
    );
    for (let i = 0; i < n; i++) app.publish('smoke', `tick ${i}`);
    await Promise.race([
      done,
      new Promise((_, reject) => setTimeout(() => reject(new Error(`got ${got.length}/${n}`)), 10_000)),
    ]);
    client.close();
    return `uWS on 127.0.0.1:${port}: a websocket client received ${n}/${n} published messages`;
  } finally {
    uws.us_listen_socket_close(listen);
  }
}

export async function runSmoke(config: Config, n = 1000): Promise<SmokeStep[]> {
  return [
    await step('kafka', () => kafkaRoundTrip(config.kafkaBrokers, n, kafkaSecurityOf(config))),
    await step('redis', () => redisRoundTrip(config.redisUrl, n)),
    await step('postgres', () => postgresRoundTrip(config.postgresUrl, n)),
    await step('websocket', () => websocketRoundTrip(n)),
  ];
}
