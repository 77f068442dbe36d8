/**
 * The Kafka journal against Kafka's own `ProducerPerformance` (the Java client from the broker's
 * jars, the native ceiling), in the same run, on the same broker, with the same producer
 * settings and the same record size.
 *
 * - ours: a KafkaJournal (librdkafka, transactional, idempotent, acks=all) fed N FlatBuffers
 *   TickRecords of 1000 ticks, 8 records and one source state per append as the ingest appends
 *   a decoded batch, as fast as `hasRoom()` lets it, timed until every append's transaction has
 *   committed. Compression is off for the comparison (the journal's own lz4 is run too and
 *   printed): lz4 shrinks tick records several-fold but barely touches other payloads, so with
 *   it the two sides would not send the same bytes.
 * - native: `java -cp .infra/kafka/libs/* org.apache.kafka.tools.ProducerPerformance`, N records
 *   of our record's size from `--payload-file` (16 lines: our records in base64, cut to size;
 *   `--record-size` would have the tool draw random letters for every record, which costs it a
 *   third of its rate here), acks=all, idempotence, the journal's linger.ms / batch.size /
 *   request size, in-flight bytes as our queue limit, and a transaction committed every
 *   20 ms (its least `--transaction-duration-ms` that keeps up; ours commits as soon as the last one did). Its own summary line counts (from its first send, JIT warm-up
 *   included, JVM launch not). Once more with ours' measured transaction length, to show how
 *   much of any gap is transaction size.
 * - peers: kafkajs (transactional, idempotent, acks -1) with the journal's records per
 *   transaction, ≤ 1 MB per produce request; and a plain @confluentinc/kafka-javascript
 *   Producer (no transactions, else the journal's settings), timed until every delivery report.
 *
 * Rounds alternate native and ours, best of each counts (shared machine). Every topic is named
 * `bench.<hex>.*`, has one partition (one source is one partition in the journal anyway), and is
 * deleted at the end with the AdminClient.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import RdKafka from '@confluentinc/kafka-javascript';
import { CompressionTypes, Kafka, logLevel, Partitioners } from 'kafkajs';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import {
  RecordHeader,
  SCHEMA_VERSION,
  TICK_RECORD_CONTENT_TYPE,
  TickRecordEncoder,
} from '../../codecs/flat-record.js';
import { type JournalEntry, type JournalRecord, KafkaJournal } from '../../sinks/kafka/journal.js';
import type { Comparison } from '../report.js';
import { best, feed, randomTag, short, sleep } from './common.js';

const run = promisify(execFile);
const BROKERS = process.env['TICKSTREAM_KAFKA_BROKERS'] ?? '127.0.0.1:9092';
const here = import.meta.url;
const LIBS = fileURLToPath(
  new URL(here.includes('/dist/') ? '../../../.infra/kafka/libs/' : '../../.infra/kafka/libs/', here),
);
const RECORD_TICKS = 1000; // recordTicks
const RECORDS_PER_APPEND = 8; // a decode batch of 8192 ticks is 8-9 records
const DISTINCT_RECORDS = 64; // encoded once and cycled
const TRANSACTION_INTERVAL_MS = 0; // transactionIntervalMs default: the next transaction as soon as one commits
/** The Java tool needs a positive transaction duration: it commits every this many ms. */
const NATIVE_TRANSACTION_MS = 20;
const MAX_TRANSACTION_RECORDS = 10_000; // as pipeline/serve.ts
const MAX_QUEUED_BYTES = 128 << 20; // maxJournalQueuedBytes default
const KAFKAJS_REQUEST_BYTES = 1_000_000;
/** Compression of every compared side: none, so all send the same bytes (see the note). */
const COMPARED_COMPRESSION = 'none';
const SOURCE = 'bench';
const TOPIC_CONFIG = { 'max.message.bytes': '8000000', 'retention.ms': '3600000' };
/**
 * The journal's producer settings that shape throughput, read from its source
 * (sinks/kafka/journal.ts: the producer is private), with these values as the fallback when the
 * source tree is not at hand. `journalConfigFrom` says which.
 */
const JOURNAL: Record<string, string | number | boolean> = {
  acks: 'all',
  'enable.idempotence': true,
  'linger.ms': 2,
  'batch.size': 1_000_000,
  'compression.type': 'lz4',
  'message.max.bytes': 8_000_000,
  'queue.buffering.max.kbytes': 1_048_576,
};
let journalConfigFrom = 'mirrored in bench/sinks/kafka.ts';
try {
  const file = fileURLToPath(
    new URL(
      here.includes('/dist/') ? '../../../sinks/kafka/journal.ts' : '../../sinks/kafka/journal.ts',
      here,
    ),
  );
  const text = readFileSync(file, 'utf8');
  for (const key of Object.keys(JOURNAL)) {
    const k = key.includes('.') ? `'${key.replaceAll('.', '\\.')}'` : key;
    const m = new RegExp(`\\n\\s*${k}: ('[^']*'|true|false|[\\d_]+),`).exec(text);
    if (!m) throw new Error(`${key} not found`);
    const v = m[1] as string;
    JOURNAL[key] = v.startsWith("'")
      ? v.slice(1, -1)
      : v === 'true'
        ? true
        : v === 'false'
          ? false
          : Number(v.replaceAll('_', ''));
  }
  journalConfigFrom = 'read from sinks/kafka/journal.ts';
} catch {
  // the mirror above stands
}

function admin(): RdKafka.IAdminClient {
  return RdKafka.AdminClient.create({ 'metadata.broker.list': BROKERS });
}

function createTopic(a: RdKafka.IAdminClient, topic: string): Promise<void> {
  return new Promise((resolve, reject) =>
    a.createTopic({ topic, num_partitions: 1, replication_factor: 1, config: TOPIC_CONFIG }, 10_000, (err) =>
      err && err.code !== RdKafka.CODES.ERRORS.ERR_TOPIC_ALREADY_EXISTS ? reject(err) : resolve(),
    ),
  );
}

function deleteTopic(a: RdKafka.IAdminClient, topic: string): Promise<boolean> {
  return new Promise((resolve) =>
    a.deleteTopic(topic, 10_000, (err) =>
      resolve(!err || err.code === RdKafka.CODES.ERRORS.ERR_UNKNOWN_TOPIC_OR_PART),
    ),
  );
}

/** The ingest's records for N ticks: FlatBuffers values, the source as key, its headers. */
function makeRecords(): JournalRecord[] {
  const encoder = new TickRecordEncoder();
  return feed(DISTINCT_RECORDS * RECORD_TICKS, RECORD_TICKS, ['EURUSD', 'GBPUSD', 'USDJPY']).map((b) => ({
    key: SOURCE,
    value: encoder.encode(b),
    headers: {
      [RecordHeader.SOURCE]: SOURCE,
      [RecordHeader.SEQ_FIRST]: String(b.seq[0]),
      [RecordHeader.SEQ_LAST]: String(b.seq[b.length - 1]),
      [RecordHeader.SCHEMA_VERSION]: String(SCHEMA_VERSION),
      [RecordHeader.CONTENT]: TICK_RECORD_CONTENT_TYPE,
    },
  }));
}

function entries(records: JournalRecord[], n: number): JournalEntry[] {
  const out: JournalEntry[] = [];
  for (let i = 0; i < n; i += RECORDS_PER_APPEND) {
    const ticks: JournalRecord[] = [];
    for (let k = i; k < Math.min(n, i + RECORDS_PER_APPEND); k++)
      ticks.push(records[k % records.length] as JournalRecord);
    const nextSeq = (i + ticks.length) * RECORD_TICKS + 1;
    out.push({
      ticks,
      bars: [],
      states: [{ source: SOURCE, nextSeq, cursors: {}, updatedAtMs: Date.now() }],
    });
  }
  return out;
}

async function metric(registry: Registry, name: string, label?: string): Promise<number> {
  const values = (await registry.getSingleMetric(name)?.get())?.values ?? [];
  return values
    .filter((v) => !label || Object.values(v.labels).includes(label))
    .reduce((s, v) => s + v.value, 0);
}

interface OursResult {
  recordsPerS: number;
  seconds: number;
  transactions: number;
  aborted: number;
}

async function runOurs(
  tag: string,
  round: string,
  topics: string[],
  work: JournalEntry[],
  compression: string,
): Promise<OursResult> {
  const registry = new Registry();
  const [ticksTopic, barsTopic, sourcesTopic] = topics as [string, string, string];
  const journal = new KafkaJournal({
    brokers: BROKERS,
    transactionalId: `tsbench-${tag}-ours-${round}`,
    ticksTopic,
    barsTopic,
    sourcesTopic,
    partitions: 1,
    retentionMs: 3_600_000,
    transactionIntervalMs: TRANSACTION_INTERVAL_MS,
    maxTransactionRecords: MAX_TRANSACTION_RECORDS,
    maxQueuedBytes: MAX_QUEUED_BYTES,
    registry,
    logger: pino({ level: 'silent' }),
    librdkafka: { 'compression.type': compression },
  });
  await journal.start();
  try {
    const n = work.reduce((s, e) => s + e.ticks.length, 0);
    const t0 = performance.now();
    const pending: Promise<unknown>[] = [];
    for (const e of work) {
      while (!journal.hasRoom()) await sleep(1);
      pending.push(journal.append(e));
    }
    await Promise.all(pending);
    const seconds = (performance.now() - t0) / 1000;
    return {
      recordsPerS: n / seconds,
      seconds,
      transactions: await metric(registry, 'tickstream_journal_transactions_total', 'committed'),
      aborted: await metric(registry, 'tickstream_journal_transactions_total', 'aborted'),
    };
  } finally {
    await journal.close(10_000);
  }
}

const SUMMARY = /(\d+) records sent, ([\d.]+) records\/sec \(([\d.]+) MB\/sec\)/;

interface NativeRun {
  topic: string;
  n: number;
  payloadFile: string;
  transactionalId: string;
  transactionMs: number;
  compression: string;
}

function nativeArgs(o: NativeRun): string[] {
  return [
    '-cp',
    `${LIBS}*`,
    'org.apache.kafka.tools.ProducerPerformance',
    '--topic',
    o.topic,
    '--num-records',
    String(o.n),
    '--payload-file',
    o.payloadFile,
    '--throughput',
    '-1',
    '--producer-props',
    `bootstrap.servers=${BROKERS}`,
    'acks=all',
    'enable.idempotence=true',
    `linger.ms=${JOURNAL['linger.ms']}`,
    `batch.size=${JOURNAL['batch.size']}`,
    `compression.type=${o.compression}`,
    `max.request.size=${JOURNAL['message.max.bytes']}`,
    `buffer.memory=${MAX_QUEUED_BYTES}`,
    '--transactional-id',
    o.transactionalId,
    '--transaction-duration-ms',
    String(o.transactionMs),
  ];
}

async function runNative(o: NativeRun): Promise<number> {
  const n = o.n;
  const { stdout } = await run('java', nativeArgs(o), { timeout: 180_000, maxBuffer: 16 << 20 });
  const m = stdout
    .trim()
    .split('\n')
    .map((l) => SUMMARY.exec(l))
    .filter((x) => x !== null)
    .pop();
  if (!m || Number(m[1]) !== n)
    throw new Error(`ProducerPerformance printed no summary of ${n} records: ${stdout.slice(-500)}`);
  return Number(m[2]);
}

/** kafkajs, transactional: `perTxn` records per transaction, ≤ 1 MB per produce request. */
async function runKafkajs(tag: string, topic: string, records: JournalRecord[], n: number, perTxn: number) {
  const kafka = new Kafka({
    brokers: BROKERS.split(','),
    clientId: `tsbench-${tag}`,
    logLevel: logLevel.NOTHING,
  });
  const producer = kafka.producer({
    transactionalId: `tsbench-${tag}-kafkajs`,
    idempotent: true,
    maxInFlightRequests: 1,
    createPartitioner: Partitioners.DefaultPartitioner,
  });
  await producer.connect();
  try {
    const toMessage = (r: JournalRecord) => ({
      key: r.key,
      value: Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength),
      headers: r.headers ?? {},
    });
    const t0 = performance.now();
    let sent = 0;
    while (sent < n) {
      const txn = await producer.transaction();
      const end = Math.min(n, sent + perTxn);
      while (sent < end) {
        const messages = [];
        let bytes = 0;
        while (sent < end && (messages.length === 0 || bytes < KAFKAJS_REQUEST_BYTES - 80_000)) {
          const r = records[sent % records.length] as JournalRecord;
          messages.push(toMessage(r));
          bytes += r.value.length;
          sent++;
        }
        await txn.send({ topic, messages, acks: -1, compression: CompressionTypes.None });
      }
      await txn.commit();
    }
    return n / ((performance.now() - t0) / 1000);
  } finally {
    await producer.disconnect();
  }
}

/** A plain librdkafka producer with the journal's settings minus transactions. */
async function runPlain(
  topic: string,
  records: JournalRecord[],
  n: number,
  compression: string,
): Promise<number> {
  const producer = new RdKafka.Producer({
    'metadata.broker.list': BROKERS,
    ...JOURNAL,
    'compression.type': compression,
    partitioner: 'murmur2_random',
    'queue.buffering.max.messages': 1_000_000,
    dr_cb: true,
  } as RdKafka.ProducerGlobalConfig);
  await new Promise<void>((resolve, reject) => {
    producer.once('ready', () => resolve());
    producer.once('connection.failure', (err) => reject(err));
    producer.connect({ timeout: 10_000 });
  });
  let delivered = 0;
  let failed: string | null = null;
  producer.on('delivery-report', (err) => {
    if (err) failed = err.message;
    delivered++;
  });
  producer.setPollInterval(20);
  try {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const r = records[i % records.length] as JournalRecord;
      const value = Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
      const headers = Object.entries(r.headers ?? {}).map(([k, v]) => ({ [k]: v }));
      for (;;) {
        try {
          producer.produce(topic, null, value, r.key, null, undefined, headers);
          break;
        } catch (err) {
          if ((err as RdKafka.LibrdKafkaError).code !== RdKafka.CODES.ERRORS.ERR__QUEUE_FULL) throw err;
          await sleep(2);
        }
      }
    }
    while (delivered < n && !failed) await sleep(2);
    if (failed) throw new Error(`delivery failed: ${failed}`);
    return n / ((performance.now() - t0) / 1000);
  } finally {
    producer.setPollInterval(0);
    await new Promise((resolve) => producer.disconnect(5000, resolve));
  }
}

export async function compare({ quick }: { quick: boolean }): Promise<Comparison[]> {
  const n = quick ? 3_000 : 6_000;
  const rounds = quick ? 3 : 4;
  const peerN = quick ? 1_500 : 3_000;
  const tag = randomTag();
  const base = `bench.${tag}`;
  const ourTopics = [`${base}.ticks`, `${base}.bars`, `${base}.sources`];
  const nativeTopic = `${base}.native`;
  const kafkajsTopic = `${base}.kafkajs`;
  const plainTopic = `${base}.plain`;
  const all = [...ourTopics, nativeTopic, kafkajsTopic, plainTopic];
  const dir = mkdtempSync(join(tmpdir(), 'tsbench-kafka-'));
  const payloadFile = join(dir, 'payloads.txt');
  const a = admin();
  try {
    for (const t of [nativeTopic, kafkajsTopic, plainTopic]) await createTopic(a, t);
    const records = makeRecords();
    const recordSize = (records[0] as JournalRecord).value.length;
    if (records.some((r) => r.value.length !== recordSize)) throw new Error('records differ in size');
    const headerBytes = Object.entries((records[0] as JournalRecord).headers ?? {}).reduce(
      (s, [k, v]) => s + k.length + v.length,
      0,
    );
    // Native payloads: our records in base64, cut to the same size (ASCII, as --payload-file
    // wants UTF-8 lines). Read once; the tool picks one per record, so it does not spend its CPU
    // on the random letters --record-size would generate per record.
    writeFileSync(
      payloadFile,
      records
        .slice(0, 16)
        .map((r) => Buffer.from(r.value).toString('base64').padEnd(recordSize, 'A').slice(0, recordSize))
        .join('\n'),
    );
    const work = entries(records, n);
    const native = (r: string, count: number, transactionMs = NATIVE_TRANSACTION_MS) =>
      runNative({
        topic: nativeTopic,
        n: count,
        payloadFile,
        transactionalId: `tsbench-${tag}-native-${r}`,
        transactionMs,
        compression: COMPARED_COMPRESSION,
      });

    // Warm-up (connections, topic creation, log segments, the JVM's class cache): not timed.
    await runOurs(tag, 'warm', ourTopics, entries(records, 200), COMPARED_COMPRESSION);
    await native('warm', 200);

    const nativeRounds: number[] = [];
    const ours: OursResult[] = [];
    const oursLz4: OursResult[] = [];
    for (let r = 0; r < rounds; r++) {
      nativeRounds.push(await native(String(r), n));
      ours.push(await runOurs(tag, String(r), ourTopics, work, COMPARED_COMPRESSION));
      oursLz4.push(await runOurs(tag, `lz4-${r}`, ourTopics, work, String(JOURNAL['compression.type'])));
    }
    const oursBest = best(ours.map((o) => o.recordsPerS));
    const nativeBest = best(nativeRounds);
    const lz4Best = best(oursLz4.map((o) => o.recordsPerS));
    const txns = ours.reduce((s, o) => s + o.transactions, 0);
    const aborted = [...ours, ...oursLz4].reduce((s, o) => s + o.aborted, 0);
    const recordsPerTxn = Math.max(1, Math.round((n * rounds) / Math.max(1, txns)));
    const txnMs = Math.max(
      1,
      Math.round((ours.reduce((s, o) => s + o.seconds, 0) * 1000) / Math.max(1, txns)),
    );
    // The same tool committing as seldom as the journal did under this load: the part of the
    // gap that is only transaction size.
    const nativeLongTxn = await native('long', n, txnMs);

    let kafkajs: number | null = null;
    let kafkajsError = '';
    try {
      kafkajs = await runKafkajs(tag, kafkajsTopic, records, peerN, recordsPerTxn);
    } catch (err) {
      kafkajsError = (err as Error).message;
    }
    const plainRounds: number[] = [];
    for (let r = 0; r < 2; r++)
      plainRounds.push(await runPlain(plainTopic, records, peerN, COMPARED_COMPRESSION));
    const plain = best(plainRounds);

    const mb = (x: number) => ((x * recordSize) / 1e6).toFixed(0);
    const peers: NonNullable<Comparison['peers']> = [];
    if (kafkajs !== null)
      peers.push({
        label: 'kafkajs transactional',
        value: kafkajs,
        unit: 'records/s',
        ratio_ours_to_peer: oursBest / kafkajs,
      });
    peers.push({
      label: 'kafka-javascript Producer, no transactions',
      value: plain,
      unit: 'records/s',
      ratio_ours_to_peer: oursBest / plain,
    });
    return [
      {
        name: 'kafka: transactional journal of 1000-tick FlatBuffers records',
        ours: { label: 'KafkaJournal (librdkafka, transactions)', value: oursBest, unit: 'records/s' },
        native: { label: 'Java ProducerPerformance (transactions)', value: nativeBest, unit: 'records/s' },
        ratio_to_native: oursBest / nativeBest,
        settings: {
          kafka: `${BROKERS}, topics ${base}.* (1 partition each)`,
          records_per_round: n,
          rounds,
          best_of: 'rounds (shared machine)',
          record_bytes: recordSize,
          record_ticks: RECORD_TICKS,
          ours_ticks_per_s: Math.round(oursBest * RECORD_TICKS),
          ours_mb_per_s: mb(oursBest),
          native_mb_per_s: mb(nativeBest),
          compared_compression: `${COMPARED_COMPRESSION} on every side (same bytes on the wire)`,
          journal_config: journalConfigFrom,
          producer: `acks=${JOURNAL['acks']}, enable.idempotence=${JOURNAL['enable.idempotence']}, linger.ms=${JOURNAL['linger.ms']}, batch.size=${JOURNAL['batch.size']}, max request ${JOURNAL['message.max.bytes']} B`,
          transactions: `ours: one in flight, the next with what gathered meanwhile (at most ${MAX_TRANSACTION_RECORDS} records); native --transaction-duration-ms ${NATIVE_TRANSACTION_MS}`,
          ours_appends: `${RECORDS_PER_APPEND} records + 1 source state each, key "${SOURCE}", ${Object.keys((records[0] as JournalRecord).headers ?? {}).length} headers (${headerBytes} B)`,
          ours_max_queued_bytes: MAX_QUEUED_BYTES,
          ours_records_per_transaction: recordsPerTxn,
          ours_ms_per_transaction: txnMs,
          ours_transactions_committed_aborted: `${txns}/${aborted}`,
          ours_rounds: ours.map((o) => short(o.recordsPerS)).join('/'),
          ours_lz4_records_per_s: Math.round(lz4Best),
          ours_lz4_rounds: oursLz4.map((o) => short(o.recordsPerS)).join('/'),
          native_cmd: `java -cp '.infra/kafka/libs/*' org.apache.kafka.tools.ProducerPerformance --num-records ${n} --payload-file <16 lines of ${recordSize} B> --throughput -1 --producer-props acks=all enable.idempotence=true linger.ms=${JOURNAL['linger.ms']} batch.size=${JOURNAL['batch.size']} compression.type=${COMPARED_COMPRESSION} max.request.size=${JOURNAL['message.max.bytes']} buffer.memory=${MAX_QUEUED_BYTES} --transactional-id <id> --transaction-duration-ms ${NATIVE_TRANSACTION_MS}`,
          native_payload: 'our records as base64 text cut to the same size, no key, no headers',
          native_rounds: nativeRounds.map(short).join('/'),
          native_txn_ms_as_ours: `${Math.round(nativeLongTxn)} records/s with --transaction-duration-ms ${txnMs}`,
          peer_records: peerN,
          kafkajs: `transactions of ${recordsPerTxn} records, ≤ ${KAFKAJS_REQUEST_BYTES / 1e6} MB per request, acks -1, idempotent, no compression`,
          plain_producer: `journal settings, compression ${COMPARED_COMPRESSION}, no transactional.id, until every delivery report, best of ${plainRounds.map(short).join('/')}`,
        },
        peers,
        note: `${kafkajsError ? `kafkajs could not run against this broker: ${kafkajsError}. ` : ''}All sides send the same record size uncompressed; the journal as configured (lz4, which shrinks tick records) made ${Math.round(lz4Best)} records/s. Under this unthrottled load the journal gathers ${recordsPerTxn} records per transaction, the Java tool commits every ${NATIVE_TRANSACTION_MS} ms (native_txn_ms_as_ours: the tool with ours' transaction length). Ticks/s = records/s × ${RECORD_TICKS}`,
      },
    ];
  } finally {
    const left = [];
    for (const t of all) if (!(await deleteTopic(a, t))) left.push(t);
    a.disconnect();
    rmSync(dir, { recursive: true, force: true });
    if (left.length) process.stderr.write(`kafka bench: could not delete topics ${left.join(', ')}\n`);
  }
}
