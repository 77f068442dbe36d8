/**
 * `tickstream replay` throughput per target, beside the same sink's live figure of this run.
 *
 * A private topic (`bench.<hex>.ticks`, one partition: one source) is filled with N synthetic
 * ticks as the ingest journals them (1000-tick FlatBuffers records, the source as key, the
 * seq headers), then the real CLI (`node bin/tickstream.js replay --speed max`) reads it all back
 * to each target: a JSON-lines file, a fresh Redis prefix (the live RedisSink: XADD + quote
 * HSET), a fresh Postgres schema (one rebuild transaction: binary COPY into staging, delete of
 * the range, insert, bars recomputed). The figure is replay's own summary ("N ticks ... in S s"):
 * from the broker connection to the target's last acknowledgement, process start-up excluded.
 * Rounds alternate targets; the best of each counts. Redis is replayed into the same prefix
 * each round after its keys are deleted; Postgres rebuilds the same schema (the second round
 * replaces the first's rows: the cost of a rebuild over existing rows). The topic, keys and
 * schema are removed at the end.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import RdKafka from '@confluentinc/kafka-javascript';
import { Redis } from 'ioredis';
import pg from 'pg';
import {
  RecordHeader,
  SCHEMA_VERSION,
  TICK_RECORD_CONTENT_TYPE,
  TickRecordEncoder,
} from '../../codecs/flat-record.js';
import type { Comparison, ReplayFigure } from '../report.js';
import { best, feed, randomTag } from '../sinks/common.js';

const run = promisify(execFile);
const BROKERS = process.env['TICKSTREAM_KAFKA_BROKERS'] ?? '127.0.0.1:9092';
const REDIS_URL = process.env['TICKSTREAM_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const POSTGRES_URL =
  process.env['TICKSTREAM_POSTGRES_URL'] ?? 'postgres://postgres@127.0.0.1:5432/tickstream';
const here = import.meta.url;
const BIN = fileURLToPath(
  new URL(here.includes('/dist/') ? '../../../bin/tickstream.js' : '../../bin/tickstream.js', here),
);
const RECORD_TICKS = 1000; // recordTicks default
const SYMBOLS = ['EURUSD', 'GBPUSD', 'USDJPY'];

async function fillTopic(topic: string, ticks: number): Promise<void> {
  const admin = RdKafka.AdminClient.create({ 'metadata.broker.list': BROKERS });
  await new Promise<void>((resolve, reject) =>
    admin.createTopic({ topic, num_partitions: 1, replication_factor: 1 }, 10_000, (err) =>
      err ? reject(err) : resolve(),
    ),
  );
  admin.disconnect();
  const producer = new RdKafka.Producer({
    'metadata.broker.list': BROKERS,
    'linger.ms': 5,
    'queue.buffering.max.kbytes': 1 << 20,
  });
  await new Promise<void>((resolve, reject) =>
    producer.connect({ timeout: 10_000 }, (err) => (err ? reject(err) : resolve())),
  );
  const encoder = new TickRecordEncoder();
  for (const b of feed(ticks, RECORD_TICKS, SYMBOLS)) {
    const headers: RdKafka.MessageHeader[] = [
      { [RecordHeader.SOURCE]: b.source },
      { [RecordHeader.SEQ_FIRST]: String(b.seq[0]) },
      { [RecordHeader.SEQ_LAST]: String(b.seq[b.length - 1]) },
      { [RecordHeader.SCHEMA_VERSION]: String(SCHEMA_VERSION) },
      { [RecordHeader.CONTENT]: TICK_RECORD_CONTENT_TYPE },
    ];
    for (;;) {
      try {
        producer.produce(topic, 0, Buffer.from(encoder.encode(b)), b.source, null, undefined, headers);
        break;
      } catch {
        producer.poll(); // the local queue is full: let delivery reports drain it
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  }
  await new Promise<void>((resolve, reject) =>
    producer.flush(30_000, (err) => (err ? reject(err) : resolve())),
  );
  await new Promise((resolve) => producer.disconnect(resolve));
}

/** One `tickstream replay` run; its own summary gives the ticks and seconds. */
async function replayOnce(args: string[]): Promise<{ ticks: number; seconds: number }> {
  const { stderr } = await run(process.execPath, [BIN, 'replay', '--speed', 'max', ...args], {
    maxBuffer: 16 << 20,
    env: { ...process.env, TICKSTREAM_LOG_LEVEL: 'warn' },
  });
  const m = /replay: (\d+) ticks written .* in ([\d.]+) s to /.exec(stderr);
  if (!m) throw new Error(`no replay summary in: ${stderr.slice(-500)}`);
  return { ticks: Number(m[1]), seconds: Number(m[2]) };
}

export async function runReplayBench(options: {
  quick: boolean;
  /** This run's sink comparisons, for the live figure beside each target. */
  sinks: readonly Comparison[];
}): Promise<{ figures: ReplayFigure[]; method: Record<string, string> }> {
  const ticks = options.quick ? 200_000 : 2_000_000;
  const rounds = options.quick ? 1 : 2;
  const tag = randomTag();
  const topic = `bench.${tag}.ticks`;
  const prefix = `bench:${tag}`;
  const schema = `tsbench_${tag}`;
  const dir = mkdtempSync(join(tmpdir(), 'bench-replay-'));
  const redis = new Redis(REDIS_URL);
  const db = new pg.Client({ connectionString: POSTGRES_URL });
  await db.connect();
  const live = (part: string) => options.sinks.find((c) => c.name.startsWith(part))?.ours;
  const common = ['--ticks-topic', topic, '--kafka-brokers', BROKERS];
  const targets: { target: string; args: string[]; live: string; before?: () => Promise<void> }[] = [
    { target: 'file (jsonl)', args: ['--out', join(dir, 'ticks.jsonl')], live: '' },
    {
      target: 'redis',
      args: ['--target', 'redis', '--redis-url', REDIS_URL, '--redis-key-prefix', prefix],
      live: 'redis:',
      before: async () => {
        const keys = await redis.keys(`${prefix}:*`);
        if (keys.length) await redis.del(...keys);
      },
    },
    {
      target: 'postgres',
      args: ['--target', 'postgres', '--postgres-url', POSTGRES_URL, '--postgres-schema', schema],
      live: 'postgres:',
    },
  ];
  try {
    await fillTopic(topic, ticks);
    const seen = new Map<string, number[]>();
    for (let r = 0; r < rounds; r++) {
      for (const t of targets) {
        await t.before?.();
        const got = await replayOnce([...common, ...t.args]);
        if (got.ticks !== ticks)
          throw new Error(`replay to ${t.target} wrote ${got.ticks} of ${ticks} ticks`);
        seen.set(t.target, [...(seen.get(t.target) ?? []), got.ticks / got.seconds]);
      }
    }
    const figures = targets.map((t): ReplayFigure => {
      const rates = seen.get(t.target) ?? [];
      const sink = t.live ? live(t.live) : undefined;
      return {
        target: t.target,
        ticks,
        ticks_per_s: best(rates),
        rounds: rates,
        ...(sink ? { live: { label: sink.label, ticks_per_s: sink.value } } : {}),
      };
    });
    return {
      figures,
      method: {
        input: `${ticks} synthetic ticks of ${SYMBOLS.length} symbols, one source, ${RECORD_TICKS}-tick FlatBuffers records in one partition`,
        measured:
          "`tickstream replay --speed max` (the CLI, a process per run); its summary's seconds: broker connection to the target's last acknowledgement",
        rounds: String(rounds),
        live: 'the same sink in this run (--only sinks): RedisSink XADD+HSET, the loader transaction COPY',
      },
    };
  } finally {
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
    await db.query(`drop schema if exists "${schema}" cascade`);
    await db.end();
    rmSync(dir, { recursive: true, force: true });
    const admin = RdKafka.AdminClient.create({ 'metadata.broker.list': BROKERS });
    await new Promise<void>((resolve) => admin.deleteTopic(topic, 10_000, () => resolve()));
    admin.disconnect();
  }
}
