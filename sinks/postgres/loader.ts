/**
 * The Postgres loader: a `read_committed` Kafka consumer group over the journal that COPYs
 * (binary) tick records into `ticks` and upserts bar records into `bars_1m`, storing the
 * consumed offsets in `sink_offsets` in the SAME transaction — exactly once, across crashes.
 *
 * Fencing: on every partition assignment the loader bumps that partition's `generation` and
 * seeks to the stored `next_offset`. Every transaction first locks the partition's offset row
 * (`FOR UPDATE`) and checks the generation: a loader that lost the partition in a rebalance
 * finds another generation, rolls back and drops the partition. Messages below the stored
 * offset are skipped (already loaded). Kafka's own group offsets are never used. A transaction
 * loads a run of rising offsets that starts at or past the stored offset (checked under the
 * lock): records a consume call returns twice, because it spanned a re-assignment and the seek
 * that follows it, are loaded once (`ticks` has no unique key to catch a repeat). Partitions
 * load side by side, one transaction each at a time, as many at once as the pool has connections.
 *
 * Log binding (log-binding.ts): each offset row holds the topic id of the log it counts in; an
 * assignment whose stored offset belongs to another log, or lies past the log end or before its
 * start (retention), blocks that partition (metric, /readyz, log line) until an operator
 * re-binds it. Retention can also overtake a running loader: librdkafka then jumps to the first
 * retained record, and the loader, seeing an offset gap that reaches below the log start, re-checks
 * the binding instead of loading past the gap.
 *
 * Isolation (issue 20): partitions fail apart. A batch that fails is kept, its partition paused
 * and retried with its own backoff while the others load. Outages (connection lost, Postgres
 * restarting) retry forever; data errors count against `maxBatchAttempts`, after which the
 * records are retried one by one and a record that still fails is parked in `ticks_parked`.
 */
import { once } from 'node:events';
import RdKafka from '@confluentinc/kafka-javascript';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Bar } from '../../codecs/bar.js';
import { TickstreamError } from '../../codecs/errors.js';
import { decodeBar, TickRecordEncoder } from '../../codecs/flat-record.js';
import {
  connectKafka,
  forwardKafkaLogs,
  type KafkaSecurity,
  kafkaClientProps,
  SERVE_CONSUMER_PREFETCH,
} from '../../codecs/kafka-client.js';
import { CopyEncoder } from '../../codecs/pg-copy.js';
import { allocTickBatch } from '../../codecs/tick-batch.js';
import { DAY_MS, type LoadPlan, type Parked, planTicks, risingRun } from './load-plan.js';
import { type Binding, checkBinding, readLogStates } from './log-binding.js';
import { migrate, quoteIdent } from './migrate.js';

export interface LoaderOptions {
  brokers: string;
  /** TLS/SASL of the consumer (codecs/kafka-client.ts); undefined: plaintext. */
  security?: KafkaSecurity;
  groupId: string;
  /**
   * Static group membership (`group.instance.id`): a loader restarted under the same id takes
   * its partitions back at once instead of waiting out the dead member's session.
   */
  instanceId: string;
  ticksTopic: string;
  barsTopic: string;
  /** The merged feeds' topic (pipeline/merged-feed.ts): its tick records go to `ticks_merged`. */
  mergedTopic?: string;
  postgresUrl: string;
  schema: string;
  maxBatchTicks: number;
  maxDaysPerTransaction: number;
  maxBatchAttempts: number;
  maxTickAgeDays: number;
  maxTickFutureDays: number;
  retentionDays: number;
  registry: Registry;
  logger: Logger;
  crashPoint?: (name: string) => void;
}

interface Owned {
  generation: number;
  state: 'claiming' | 'ready' | 'blocked';
  blocked: Extract<Binding, { ok: false }> | null;
  /** Consumed, not yet loaded: a failed batch waits here while its partition is paused. */
  pending: Message[];
  /** Stored next_offset as last committed by this loader. */
  nextOffset: number;
  loadedTimestampMs: number;
  attempts: number;
  /** Records still to be tried one at a time after the retry budget ran out on a batch. */
  singly: number;
  retryAt: number;
  backoffMs: number;
  paused: boolean;
  lastError: string;
}

export interface PartitionStatus {
  partition: string;
  state: Owned['state'];
  nextOffset: number;
  lagRecords: number;
  lagSeconds: number;
  problem: string | null;
}

type Message = RdKafka.Message;
type Outcome =
  | { kind: 'done'; taken: number }
  | { kind: 'fenced' }
  | { kind: 'recheck' }
  | { kind: 'outage' | 'data'; error: Error };

const RECHECK_BLOCKED_MS = 10_000;
/** Postgres connections of a loader: at most this many partitions load at once. */
const POOL_CONNECTIONS = 2;

/** `topic:partition` keys back to their parts (topic names may hold ':'; partitions never). */
function partitionOf(key: string): { topic: string; partition: number } {
  const at = key.lastIndexOf(':');
  return { topic: key.slice(0, at), partition: Number(key.slice(at + 1)) };
}
const RETENTION_INTERVAL_MS = 3_600_000;

/**
 * Errors that say nothing about the records: Postgres unreachable, restarting, out of
 * connections, or a transaction that lost a race. Those retry forever; anything else is a data
 * error and counts against the retry budget (an `out of shared memory`, a duplicate key, …).
 */
function isOutage(err: unknown): boolean {
  if (err instanceof TickstreamError) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code !== 'string' || !/^[0-9A-Z]{5}$/.test(code)) return true;
  return (
    code.startsWith('08') ||
    code.startsWith('57P') ||
    code === '53300' ||
    code === '40001' ||
    code === '40P01'
  );
}

/** An empty TickRecord: what the loader plans for merged-topic records without ticks. */
const NO_TICKS = new TickRecordEncoder().encode(allocTickBatch('', [], 0));

export class PostgresLoader {
  readonly #o: LoaderOptions;
  readonly #pool: pg.Pool;
  readonly #consumer: RdKafka.KafkaConsumer;
  #admin: RdKafka.IAdminClient | null = null;
  readonly #owned = new Map<string, Owned>();
  readonly #encoder = new CopyEncoder();
  /** UTC days whose partition exists (created by us or found): no call for them again. */
  readonly #knownDays = new Set<number>();
  /** Days whose ticks_merged partition exists. */
  readonly #knownMergedDays = new Set<number>();
  #running = false;
  #closing = false;
  #rechecking = false;
  #loop: Promise<void> | null = null;
  #timers: NodeJS.Timeout[] = [];
  #lastRecheck = 0;
  readonly #consumeErrorLoggedAt = new Map<number, number>();
  /** Offsets lost to retention already counted, per blocked partition. */
  readonly #lostCounted = new Map<string, number>();
  readonly #m;

  constructor(options: LoaderOptions) {
    this.#o = options;
    this.#pool = new pg.Pool({
      connectionString: options.postgresUrl,
      max: POOL_CONNECTIONS,
      options: `-c search_path=${quoteIdent(options.schema)}`,
    });
    // Idle clients die with the server: the next query reconnects, but it is counted and said.
    this.#pool.on('error', (err) => this.#clientError(err));
    this.#consumer = new RdKafka.KafkaConsumer(
      {
        ...kafkaClientProps(options.brokers, options.security),
        'group.id': options.groupId,
        'group.instance.id': `${options.groupId}-${options.instanceId}`,
        'session.timeout.ms': 10_000,
        'heartbeat.interval.ms': 1000,
        'enable.auto.commit': false,
        'enable.auto.offset.store': false,
        'isolation.level': 'read_committed',
        'partition.assignment.strategy': 'range',
        ...SERVE_CONSUMER_PREFETCH,
        // A topic deleted and re-created is seen at the next refresh (default 5 min).
        'topic.metadata.refresh.interval.ms': 10_000,
        rebalance_cb: (err: RdKafka.LibrdKafkaError, assignment: RdKafka.Assignment[]) =>
          this.#rebalance(err, assignment),
      } as RdKafka.ConsumerGlobalConfig,
      // Only reached when retention overtook the position: #transaction sees the gap and blocks.
      // (`error` would also fire for every fresh assignment, before the seek to the stored offset.)
      { 'auto.offset.reset': 'earliest' },
    );
    forwardKafkaLogs(this.#consumer, options.security, (at, message) => options.logger.warn(at, message));
    const registers = [options.registry];
    this.#m = {
      rows: new Counter({
        name: 'tickstream_loader_rows_total',
        help: 'Rows written to Postgres',
        labelNames: ['table'],
        registers,
      }),
      batches: new Counter({
        name: 'tickstream_loader_transactions_total',
        help: 'Loader transactions by outcome',
        labelNames: ['outcome'],
        registers,
      }),
      errors: new Counter({
        name: 'tickstream_loader_errors_total',
        help: 'Errors met by the loader, by kind: outage and claim retry forever, data counts against the retry budget',
        labelNames: ['kind'],
        registers,
      }),
      copy: new Histogram({
        name: 'tickstream_loader_copy_seconds',
        help: 'One COPY + offset transaction',
        buckets: [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 5],
        registers,
      }),
      lagSeconds: new Gauge({
        name: 'tickstream_loader_lag_seconds',
        help: 'Per partition: age (Kafka timestamp) of the oldest record not loaded yet; 0 when caught up',
        labelNames: ['partition'],
        registers,
      }),
      lagRecords: new Gauge({
        name: 'tickstream_loader_lag_records',
        help: 'Per partition: journal offsets not loaded yet (records and transaction markers)',
        labelNames: ['partition'],
        registers,
      }),
      blocked: new Gauge({
        name: 'tickstream_loader_partition_blocked',
        help: '1 while a partition does not load because its stored offset does not fit the log (reason); see --reset-offsets',
        labelNames: ['partition', 'reason'],
        registers,
      }),
      lost: new Counter({
        name: 'tickstream_loader_retention_lost_offsets_total',
        help: 'Journal offsets Kafka retention deleted before the loader loaded them',
        labelNames: ['partition'],
        registers,
      }),
      parkedRecords: new Counter({
        name: 'tickstream_loader_parked_records_total',
        help: 'Journal records (or their out-of-window ticks) set aside in ticks_parked, by kind',
        labelNames: ['kind'],
        registers,
      }),
      parkedTicks: new Counter({
        name: 'tickstream_loader_parked_ticks_total',
        help: 'Ticks set aside in ticks_parked instead of ticks, by kind',
        labelNames: ['kind'],
        registers,
      }),
      repeated: new Counter({
        name: 'tickstream_loader_repeated_runs_total',
        help: 'Times a consume call returned records again from before a seek (a re-assignment): each is loaded once, then the partition seeks to its stored offset again',
        registers,
      }),
      partitionsDropped: new Counter({
        name: 'tickstream_loader_retention_partitions_dropped_total',
        help: 'Daily tick partitions dropped by the Postgres retention',
        registers,
      }),
      retentionErrors: new Counter({
        name: 'tickstream_loader_retention_errors_total',
        help: 'Postgres retention runs that failed (retried at the next run)',
        registers,
      }),
    };
  }

  async start(): Promise<void> {
    const client = await this.#pool.connect();
    const onError = (err: Error) => this.#clientError(err);
    client.on('error', onError);
    try {
      await migrate(client, this.#o.schema);
    } finally {
      client.off('error', onError);
      client.release();
    }
    await connectKafka(this.#consumer, this.#o.brokers, this.#o.security, 10_000, (err) => err);
    this.#admin = RdKafka.AdminClient.createFrom(this.#consumer);
    this.#consumer.subscribe([
      this.#o.ticksTopic,
      this.#o.barsTopic,
      ...(this.#o.mergedTopic ? [this.#o.mergedTopic] : []),
    ]);
    this.#running = true;
    this.#loop = this.#run();
    this.#timers = [
      setInterval(() => this.#updateLag(), 1000),
      setInterval(() => void this.#retention(), RETENTION_INTERVAL_MS),
    ];
    for (const t of this.#timers) t.unref();
    void this.#retention();
  }

  async close(): Promise<void> {
    this.#running = false;
    this.#closing = true;
    for (const t of this.#timers) clearInterval(t);
    await this.#loop;
    this.#admin?.disconnect();
    await new Promise((resolve) => this.#consumer.disconnect(resolve));
    await this.#pool.end();
  }

  /** False while any owned partition is blocked (what /readyz reports). */
  get healthy(): boolean {
    for (const o of this.#owned.values()) if (o.state === 'blocked') return false;
    return true;
  }

  /** Why the loader is not healthy: one line per blocked partition. */
  problems(): string[] {
    return [...this.#owned.values()].flatMap((o) => (o.blocked ? [o.blocked.message] : []));
  }

  status(): PartitionStatus[] {
    const now = Date.now();
    return [...this.#owned.entries()]
      .map(([key, o]) => {
        const lag = this.#lagOf(key, o, now);
        return {
          partition: key,
          state: o.state,
          nextOffset: o.nextOffset,
          lagRecords: lag.records,
          lagSeconds: lag.seconds,
          problem: o.blocked?.message ?? (o.attempts > 0 ? o.lastError : null),
        };
      })
      .sort((a, b) => a.partition.localeCompare(b.partition));
  }

  #clientError(err: Error): void {
    this.#m.errors.inc({ kind: 'connection' });
    this.#o.logger.warn(
      { err: err.message },
      'a Postgres connection of the loader failed; the next query reconnects',
    );
  }

  #rebalance(err: RdKafka.LibrdKafkaError, assignment: RdKafka.Assignment[]): void {
    if (err.code === RdKafka.CODES.ERRORS.ERR__ASSIGN_PARTITIONS) {
      for (const a of assignment) this.#owned.set(`${a.topic}:${a.partition}`, this.#fresh());
      // Paused until the offsets come from Postgres: nothing is loaded from Kafka's positions.
      this.#consumer.assign(assignment);
      this.#consumer.pause(assignment);
      void this.#claim(assignment.map((a) => `${a.topic}:${a.partition}`));
    } else {
      for (const a of assignment) {
        const key = `${a.topic}:${a.partition}`;
        this.#forget(key);
      }
      this.#consumer.unassign();
    }
  }

  #fresh(): Owned {
    return {
      generation: -1,
      state: 'claiming',
      blocked: null,
      pending: [],
      nextOffset: 0,
      loadedTimestampMs: 0,
      attempts: 0,
      singly: 0,
      retryAt: 0,
      backoffMs: 200,
      paused: true,
      lastError: '',
    };
  }

  #forget(key: string): void {
    const o = this.#owned.get(key);
    if (o?.blocked) this.#m.blocked.remove({ partition: key, reason: o.blocked.reason });
    this.#m.lagRecords.remove({ partition: key });
    this.#m.lagSeconds.remove({ partition: key });
    this.#owned.delete(key);
  }

  /**
   * Checks each partition's stored offset against the log the broker holds now, then bumps its
   * generation and seeks to it — or blocks the partition, saying why. Retried while Kafka or
   * Postgres does not answer. Two claims of one partition can overlap (rebalances in quick
   * succession, a re-check): the one that bound the newer generation wins, so the partition is
   * never left holding an older generation, fenced by its own claim.
   */
  async #claim(keys: string[]): Promise<void> {
    if (keys.length === 0) return;
    let backoffMs = 200;
    // Called from the rebalance callback: librdkafka calls made inside it can deadlock.
    await new Promise((r) => setImmediate(r));
    while (!this.#closing) {
      try {
        const topics = [...new Set(keys.map((k) => partitionOf(k).topic))];
        if (!this.#admin) throw new Error('the loader is not connected to Kafka yet');
        const logs = await readLogStates(this.#consumer, this.#admin, topics);
        for (const key of keys) {
          const owned = this.#owned.get(key);
          if (!owned) continue;
          const log = logs.get(key);
          if (!log) throw new Error(`partition ${key} is not in the topic's metadata`);
          const binding = await this.#bind(key, log.topic, log.partition, log);
          if (!binding.ok) {
            this.#block(key, owned, binding);
            continue;
          }
          if (owned.blocked) {
            this.#m.blocked.remove({ partition: key, reason: owned.blocked.reason });
            this.#o.logger.info(
              { partition: key, offset: binding.offset },
              'partition re-bound: loading again',
            );
          }
          owned.blocked = null;
          this.#lostCounted.delete(key);
          if (binding.lostToRetention > 0) {
            this.#m.lost.inc({ partition: key }, binding.lostToRetention);
            this.#o.logger.warn(
              { partition: key, lostOffsets: binding.lostToRetention, from: binding.offset },
              'first load of this partition: retention already deleted its start; loading from the first retained record',
            );
          }
          if (binding.generation < owned.generation) continue;
          owned.generation = binding.generation;
          owned.nextOffset = binding.offset;
          owned.pending = [];
          await this.#seek(log.topic, log.partition, binding.offset);
          // Revoked meanwhile (and perhaps assigned again, with a claim of its own), or claimed
          // again by a newer claim: that one finishes the job.
          if (this.#owned.get(key) !== owned || owned.generation !== binding.generation) continue;
          owned.state = 'ready';
          owned.paused = false;
          this.#consumer.resume([{ topic: log.topic, partition: log.partition }]);
        }
        const ready = keys.filter((k) => this.#owned.get(k)?.state === 'ready');
        if (ready.length) this.#o.logger.info({ partitions: ready }, 'loader owns partitions');
        return;
      } catch (err) {
        this.#m.errors.inc({ kind: 'claim' });
        this.#o.logger.warn({ err: (err as Error).message }, 'loader could not claim partitions; retrying');
        await new Promise((r) => setTimeout(r, backoffMs));
        backoffMs = Math.min(backoffMs * 2, 10_000);
      }
    }
  }

  /** In one transaction: read the stored offset row, check it against `log`, bind it. */
  async #bind(
    key: string,
    topic: string,
    partition: number,
    log: { topicId: string; low: number; high: number },
  ): Promise<
    (Binding & { ok: false }) | { ok: true; offset: number; lostToRetention: number; generation: number }
  > {
    const client = await this.#pool.connect();
    const onError = (err: Error) => this.#clientError(err);
    client.on('error', onError);
    let broken = false;
    try {
      await client.query('begin');
      const { rows } = await client.query<{ next_offset: string; topic_id: string | null }>(
        'select next_offset, topic_id from sink_offsets where consumer_group = $1 and topic = $2 and partition = $3 for update',
        [this.#o.groupId, topic, partition],
      );
      const row = rows[0];
      const binding = checkBinding(
        key,
        row ? { nextOffset: Number(row.next_offset), topicId: row.topic_id } : null,
        log,
      );
      if (!binding.ok) {
        await client.query('rollback');
        return binding;
      }
      const { rows: bound } = await client.query<{ generation: string }>(
        `insert into sink_offsets (consumer_group, topic, partition, next_offset, generation, topic_id) values ($1, $2, $3, $4, 1, $5)
         on conflict (consumer_group, topic, partition) do update set generation = sink_offsets.generation + 1, topic_id = excluded.topic_id
         returning generation`,
        [this.#o.groupId, topic, partition, binding.offset, log.topicId],
      );
      await client.query('commit');
      return { ...binding, generation: Number((bound[0] as { generation: string }).generation) };
    } catch (err) {
      // Closing the connection aborts the transaction.
      broken = true;
      throw err;
    } finally {
      client.off('error', onError);
      client.release(broken);
    }
  }

  #block(key: string, owned: Owned, binding: Extract<Binding, { ok: false }>): void {
    const first = owned.blocked === null || owned.blocked.message !== binding.message;
    // Re-checks and re-assignments see the same loss again, or a larger one: count what is new.
    const counted = this.#lostCounted.get(key) ?? 0;
    if (binding.lostToRetention > counted) {
      this.#m.lost.inc({ partition: key }, binding.lostToRetention - counted);
      this.#lostCounted.set(key, binding.lostToRetention);
    }
    owned.state = 'blocked';
    owned.blocked = binding;
    owned.pending = [];
    this.#m.blocked.set({ partition: key, reason: binding.reason }, 1);
    if (!owned.paused) {
      const { topic, partition } = partitionOf(key);
      this.#consumer.pause([{ topic, partition }]);
      owned.paused = true;
    }
    if (first) this.#o.logger.error({ partition: key, reason: binding.reason }, binding.message);
  }

  /**
   * Seeks a partition to the offset Postgres holds. Right after an assignment librdkafka refuses
   * a seek ("Erroneous state") until its fetcher has started: that is retried quietly.
   */
  async #seek(topic: string, partition: number, offset: number): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await new Promise<void>((resolve, reject) =>
          this.#consumer.seek({ topic, partition, offset }, 10_000, (e) => (e ? reject(e) : resolve())),
        );
        return;
      } catch (err) {
        if ((err as RdKafka.LibrdKafkaError).code !== RdKafka.CODES.ERRORS.ERR__STATE || attempt >= 100)
          throw err;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  /** Records per transaction: records hold about a thousand ticks each (recordTicks). */
  get #perCall(): number {
    return Math.max(1, Math.round(this.#o.maxBatchTicks / 1000));
  }

  async #run(): Promise<void> {
    while (this.#running) {
      const messages = await new Promise<Message[]>((resolve) =>
        this.#consumer.consume(this.#perCall, (err, m) => {
          if (err) this.#consumeError(err);
          resolve(err ? [] : m);
        }),
      );
      for (const m of messages) {
        const key = `${m.topic}:${m.partition}`;
        const owned = this.#owned.get(key);
        if (owned?.state !== 'ready') continue;
        const prev = owned.pending.at(-1);
        if (prev && m.offset <= prev.offset) this.#repeated(key, prev, m);
        owned.pending.push(m);
      }
      const now = Date.now();
      const due = [...this.#owned].filter(
        ([, o]) => o.state === 'ready' && o.pending.length > 0 && o.retryAt <= now,
      );
      // Partitions load side by side, as many at once as the pool has connections: each COPY
      // keeps a Postgres backend (a core) busy, and one partition's decode and encode overlap
      // another's COPY. Within a partition transactions stay one after the other.
      await Promise.all(due.map(([key, owned]) => this.#load(key, owned)));
      const loaded = due.length > 0;
      if (now - this.#lastRecheck > RECHECK_BLOCKED_MS) {
        this.#lastRecheck = now;
        const blocked = [...this.#owned].filter(([, o]) => o.state === 'blocked').map(([k]) => k);
        // A reset by an operator (or the broker coming back) unblocks without a restart.
        if (blocked.length && !this.#rechecking) {
          this.#rechecking = true;
          void this.#claim(blocked).finally(() => {
            this.#rechecking = false;
          });
        }
      }
      if (messages.length === 0 && !loaded) await new Promise((r) => setTimeout(r, 20));
    }
  }

  /**
   * A consume call that spanned a re-assignment returns what it fetched before the seek to the
   * stored offset, then the same records again. They stay queued: a transaction takes only the
   * rising run (risingRun), and the next one, starting below the stored offset, re-seeks.
   */
  #repeated(key: string, prev: Message, m: Message): void {
    this.#m.repeated.inc();
    this.#o.logger.info(
      { partition: key, offset: m.offset, after: prev.offset },
      'records came again from before a seek (a consume call spanned a re-assignment): each is loaded once, then the partition seeks to its stored offset again',
    );
  }

  #consumeError(err: RdKafka.LibrdKafkaError): void {
    this.#m.errors.inc({ kind: 'consume' });
    // The same error comes back on every poll while it lasts: said once per code and 10 s.
    const now = Date.now();
    if ((this.#consumeErrorLoggedAt.get(err.code) ?? 0) > now - 10_000) return;
    this.#consumeErrorLoggedAt.set(err.code, now);
    this.#o.logger.warn(
      { err: err.message, code: err.code },
      'loader could not consume from Kafka; retrying (counted in tickstream_loader_errors_total{kind="consume"})',
    );
  }

  /** One transaction over the partition's pending records, and what follows from its outcome. */
  async #load(key: string, owned: Owned): Promise<void> {
    const take = owned.singly > 0 ? 1 : this.#perCall;
    const head = owned.pending.slice(0, take);
    const batch = head.slice(0, risingRun(head.map((m) => m.offset)));
    const outcome = await this.#transaction(key, owned, batch, null);
    // A rebalance during the transaction replaced `owned`: the new one is claimed on its own.
    const current = this.#owned.get(key) === owned;
    if (outcome.kind === 'fenced') {
      this.#m.batches.inc({ outcome: 'fenced' });
      this.#o.logger.warn({ partition: key }, 'loader fenced: another loader owns this partition now');
      if (current) this.#forget(key);
      return;
    }
    if (outcome.kind === 'recheck') {
      if (!current) return;
      owned.state = 'claiming';
      owned.pending = [];
      await this.#claim([key]);
      return;
    }
    if (outcome.kind === 'done') {
      owned.pending.splice(0, outcome.taken);
      owned.singly = Math.max(0, owned.singly - outcome.taken);
      this.#succeeded(key, owned);
      return;
    }
    const { error } = outcome;
    owned.lastError = error.message;
    this.#pauseFor(owned);
    if (outcome.kind === 'outage') {
      this.#m.errors.inc({ kind: 'outage' });
      this.#o.logger.warn(
        { err: error.message, partition: key },
        'loader transaction failed (Postgres unreachable or restarting); retrying the same records',
      );
      return;
    }
    this.#m.errors.inc({ kind: 'data' });
    owned.attempts++;
    this.#o.logger.warn(
      {
        err: error.message,
        partition: key,
        attempt: owned.attempts,
        of: this.#o.maxBatchAttempts,
        records: batch.length,
      },
      'loader transaction failed on these records; retrying them, other partitions go on',
    );
    if (owned.attempts < this.#o.maxBatchAttempts) return;
    if (batch.length > 1) {
      // Find the culprit: the same records again, one per transaction, each with a new budget.
      owned.singly = batch.length;
      owned.attempts = 0;
      owned.retryAt = 0;
      owned.backoffMs = 200;
      return;
    }
    const parked = await this.#transaction(key, owned, batch, error);
    if (parked.kind === 'done') {
      owned.pending.splice(0, 1);
      if (owned.singly > 0) owned.singly--;
      this.#succeeded(key, owned);
    } else if (parked.kind === 'fenced' && this.#owned.get(key) === owned) this.#forget(key);
  }

  #pauseFor(owned: Owned): void {
    owned.retryAt = Date.now() + owned.backoffMs;
    owned.backoffMs = Math.min(owned.backoffMs * 2, 10_000);
    if (!owned.paused) {
      const m = owned.pending[0] as Message;
      this.#consumer.pause([{ topic: m.topic, partition: m.partition }]);
      owned.paused = true;
    }
  }

  #succeeded(key: string, owned: Owned): void {
    owned.attempts = 0;
    owned.backoffMs = 200;
    owned.retryAt = 0;
    owned.lastError = '';
    if (owned.paused && owned.state === 'ready') {
      const { topic, partition } = partitionOf(key);
      this.#consumer.resume([{ topic, partition }]);
      owned.paused = false;
    }
  }

  /**
   * One transaction: lock the partition's offset row, check the generation (fencing), skip
   * messages below the stored offset (already loaded), COPY the rest (or, with `parkFor`, park
   * them with that error), store the new offset.
   */
  async #transaction(
    key: string,
    owned: Owned,
    messages: Message[],
    parkFor: Error | null,
  ): Promise<Outcome> {
    const first = messages[0] as Message;
    const isBars = first.topic === this.#o.barsTopic;
    const table = first.topic === this.#o.mergedTopic ? 'ticks_merged' : 'ticks';
    const started = performance.now();
    let client: pg.PoolClient | null = null;
    const onError = (err: Error) => this.#clientError(err);
    try {
      const fresh = messages.filter((m) => m.offset >= owned.nextOffset);
      // Offsets going back past the stored one: the log may have been replaced under us.
      if ((messages[0] as Message).offset < owned.nextOffset) return { kind: 'recheck' };
      // Gaps of one offset are transaction markers; a longer one may be retention overtaking us.
      const head = fresh[0];
      if (head && head.offset > owned.nextOffset + 1) {
        const low = await new Promise<number>((resolve, reject) =>
          this.#consumer.queryWatermarkOffsets(head.topic, head.partition, 10_000, (err, w) =>
            err ? reject(err) : resolve(w.lowOffset),
          ),
        );
        if (low > owned.nextOffset) return { kind: 'recheck' };
      }
      let plan: LoadPlan | null = null;
      let taken = messages.length;
      if (!isBars && parkFor === null && fresh.length > 0) {
        const now = Date.now();
        plan = planTicks(
          fresh.map((m) =>
            // The merged topic's other records (start, down, decision) carry no ticks.
            table === 'ticks_merged' && !(m.headers ?? []).some((h) => String(h['kind']) === 'ticks')
              ? NO_TICKS
              : (m.value ?? Buffer.alloc(0)),
          ),
          {
            minUtcMs: now - this.#o.maxTickAgeDays * DAY_MS,
            maxUtcMs: now + this.#o.maxTickFutureDays * DAY_MS,
            maxDays: this.#o.maxDaysPerTransaction,
          },
        );
        taken = messages.length - fresh.length + plan.taken;
        await this.#ensurePartitions(plan.days, table);
      }
      const mine = fresh.slice(0, taken - (messages.length - fresh.length));
      client = await this.#pool.connect();
      // A checked-out client whose server dies between two queries emits 'error': without a
      // listener that is an uncaught exception. The next query fails and the retry follows.
      client.on('error', onError);
      await client.query('begin');
      const { rows: stored } = await client.query<{ next_offset: string; generation: string }>(
        'select next_offset, generation from sink_offsets where consumer_group = $1 and topic = $2 and partition = $3 for update',
        [this.#o.groupId, first.topic, first.partition],
      );
      const row = stored[0];
      if (!row || Number(row.generation) !== owned.generation) {
        await client.query('rollback');
        return { kind: 'fenced' };
      }
      const last = mine[mine.length - 1];
      if (!last || last.offset < Number(row.next_offset)) {
        await client.query('rollback');
        return { kind: 'done', taken };
      }
      // The stored offset is the only word on what is loaded: a run that starts below it would
      // load some records twice. Seek to it again instead.
      if ((mine[0] as Message).offset < Number(row.next_offset)) {
        await client.query('rollback');
        return { kind: 'recheck' };
      }
      let rows = 0;
      let parked: Parked[] = [];
      if (parkFor) {
        parked = mine.map((m, index) => this.#parkedWhole(m, index, parkFor));
      } else if (isBars) {
        rows = await this.#copyBars(client, mine);
      } else if (plan) {
        rows = await this.#copyTicks(client, plan, table);
        parked = plan.parked;
      }
      if (parked.length) await this.#park(client, mine, parked);
      await client.query(
        'update sink_offsets set next_offset = $1 where consumer_group = $2 and topic = $3 and partition = $4',
        [last.offset + 1, this.#o.groupId, first.topic, first.partition],
      );
      await client.query('commit');
      owned.nextOffset = last.offset + 1;
      if (last.timestamp) owned.loadedTimestampMs = last.timestamp;
      this.#m.batches.inc({ outcome: parkFor ? 'parked' : 'committed' });
      if (rows) this.#m.rows.inc({ table: isBars ? 'bars_1m' : table }, rows);
      for (const p of parked) {
        this.#m.parkedRecords.inc({ kind: p.kind });
        this.#m.parkedTicks.inc({ kind: p.kind }, p.seqs.length);
        const m = mine[p.index] as Message;
        this.#o.logger.error(
          {
            partition: key,
            offset: m.offset,
            source: p.source,
            kind: p.kind,
            ticks: p.seqs.length,
            err: p.error,
          },
          'loader parked a journal record in ticks_parked instead of loading it: inspect it there, fix the cause, re-insert by hand if the ticks are wanted',
        );
      }
      this.#m.copy.observe((performance.now() - started) / 1000);
      return { kind: 'done', taken };
    } catch (err) {
      // Closing the connection aborts the transaction, also mid-COPY (a ROLLBACK would queue
      // behind the unfinished COPY and hang).
      client?.off('error', onError);
      client?.release(true);
      client = null;
      return { kind: isOutage(err) ? 'outage' : 'data', error: err as Error };
    } finally {
      client?.off('error', onError);
      client?.release();
    }
  }

  #parkedWhole(m: Message, index: number, error: Error): Parked {
    const seqFirst = (m.headers ?? []).find((h) => 'seq-first' in h)?.['seq-first'];
    const seqLast = (m.headers ?? []).find((h) => 'seq-last' in h)?.['seq-last'];
    const seqs: number[] = [];
    if (seqFirst !== undefined && seqLast !== undefined)
      for (let s = Number(String(seqFirst)); s <= Number(String(seqLast)); s++) seqs.push(s);
    return {
      index,
      kind: 'retries',
      source: m.key ? String(m.key) : '',
      seqs,
      error: `failed ${this.#o.maxBatchAttempts} times: ${error.message}`,
    };
  }

  async #park(client: pg.PoolClient, messages: Message[], parked: Parked[]): Promise<void> {
    for (const p of parked) {
      const m = messages[p.index] as Message;
      await client.query(
        `insert into ticks_parked (topic, partition, kafka_offset, kind, source, seqs, error, record)
         values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict do nothing`,
        [
          m.topic,
          m.partition,
          m.offset,
          p.kind,
          p.source || (m.key ? String(m.key) : ''),
          p.seqs,
          p.error,
          m.value ?? Buffer.alloc(0),
        ],
      );
    }
  }

  /**
   * Creates the daily partitions of `days` not known to exist, at most maxDaysPerTransaction
   * per transaction and outside the load transaction: thousands of CREATE TABLEs in one
   * transaction exhaust Postgres' lock table (`out of shared memory`). Idempotent.
   */
  async #ensurePartitions(days: number[], table: 'ticks' | 'ticks_merged'): Promise<void> {
    const known = table === 'ticks' ? this.#knownDays : this.#knownMergedDays;
    const fn = table === 'ticks' ? 'tickstream_ensure_partitions' : 'tickstream_ensure_merged_partitions';
    const missing = days.filter((d) => !known.has(d));
    const step = this.#o.maxDaysPerTransaction;
    for (let i = 0; i < missing.length; i += step) {
      const chunk = missing.slice(i, i + step);
      const client = await this.#pool.connect();
      const onError = (err: Error) => this.#clientError(err);
      client.on('error', onError);
      let broken = false;
      try {
        await client.query('begin');
        for (const day of chunk) {
          await client.query(`select ${fn}($1::date, $1::date)`, [new Date(day * DAY_MS).toISOString()]);
        }
        await client.query('commit');
        for (const day of chunk) known.add(day);
      } catch (err) {
        broken = true;
        throw err;
      } finally {
        client.off('error', onError);
        client.release(broken);
      }
    }
  }

  async #copyTicks(client: pg.PoolClient, plan: LoadPlan, table: 'ticks' | 'ticks_merged'): Promise<number> {
    if (plan.ticks === 0) return 0;
    // Encoded before the COPY opens, so an encoding error cannot leave a COPY half written.
    // The encoder's output is a view of a reused buffer: keep copies.
    const chunks = plan.batches.map((b) => Buffer.from(this.#encoder.ticks(b)));
    const stream = client.query(
      copyFrom(
        `copy ${table} (source, seq, symbol, time, server_time_msc, bid, ask, last, volume, volume_real, flags) from stdin (format binary)`,
      ),
    );
    const done = once(stream, 'finish');
    stream.write(this.#encoder.header());
    chunks.forEach((chunk, i) => {
      stream.write(chunk);
      if (i === chunks.length >> 1) this.#o.crashPoint?.('loader-mid-copy');
    });
    stream.end(this.#encoder.trailer());
    await done;
    return plan.ticks;
  }

  async #copyBars(client: pg.PoolClient, messages: Message[]): Promise<number> {
    const bars: Bar[] = messages.filter((m) => m.value).map((m) => decodeBar(m.value as Buffer));
    if (bars.length === 0) return 0;
    await client.query('create temp table if not exists bars_in (like bars_1m) on commit delete rows');
    const stream = client.query(copyFrom('copy bars_in from stdin (format binary)'));
    const done = once(stream, 'finish');
    stream.write(this.#encoder.header());
    stream.write(Buffer.from(this.#encoder.bars(bars)));
    stream.end(this.#encoder.trailer());
    await done;
    // A bar can come again (a bridge restarted mid-minute re-closes it): the newest wins.
    await client.query(`insert into bars_1m select distinct on (source, symbol, start) * from bars_in order by source, symbol, start, last_seq desc
      on conflict (source, symbol, start) do update set open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
        tick_count = excluded.tick_count, spread_min = excluded.spread_min, spread_max = excluded.spread_max, spread_avg = excluded.spread_avg,
        last_open = excluded.last_open, last_high = excluded.last_high, last_low = excluded.last_low, last_close = excluded.last_close,
        volume = excluded.volume, last_seq = excluded.last_seq`);
    return bars.length;
  }

  #lagOf(key: string, o: Owned, now: number): { records: number; seconds: number } {
    if (o.state !== 'ready') return { records: 0, seconds: 0 };
    const { topic, partition } = partitionOf(key);
    let high: number;
    let position: number | undefined;
    try {
      high = this.#consumer.getWatermarkOffsets(topic, partition).highOffset;
      position = this.#consumer.position([{ topic, partition }])[0]?.offset;
    } catch (err) {
      // No fetch has reported the watermarks yet: nothing to show until one does.
      this.#o.logger.debug({ err: (err as Error).message, partition: key }, 'loader lag unknown yet');
      return { records: 0, seconds: 0 };
    }
    const head = o.pending[0];
    const from = head ? head.offset : Math.max(o.nextOffset, position ?? o.nextOffset);
    const records = Math.max(0, high - from);
    const oldest = head?.timestamp ?? (records > 0 ? o.loadedTimestampMs : 0);
    return { records, seconds: records > 0 && oldest > 0 ? Math.max(0, (now - oldest) / 1000) : 0 };
  }

  #updateLag(): void {
    const now = Date.now();
    for (const [key, o] of this.#owned) {
      if (o.state !== 'ready') continue;
      const lag = this.#lagOf(key, o, now);
      this.#m.lagRecords.set({ partition: key }, lag.records);
      this.#m.lagSeconds.set({ partition: key }, lag.seconds);
    }
  }

  async #retention(): Promise<void> {
    try {
      const dropped = await this.applyRetention();
      if (dropped > 0) {
        this.#m.partitionsDropped.inc(dropped);
        this.#o.logger.info(
          { dropped, retentionDays: this.#o.retentionDays },
          'retention dropped daily tick partitions',
        );
      }
    } catch (err) {
      this.#m.retentionErrors.inc();
      this.#o.logger.warn(
        { err: (err as Error).message },
        'Postgres retention failed; it runs again in an hour (check that Postgres is up)',
      );
    }
  }

  /** Drops tick partitions past the retention (runs hourly while started). */
  async applyRetention(): Promise<number> {
    const before = new Date(Date.now() - this.#o.retentionDays * DAY_MS).toISOString().slice(0, 10);
    const { rows } = await this.#pool.query<{ n: number }>(
      'select tickstream_drop_partitions_before($1::date) as n',
      [before],
    );
    for (const known of [this.#knownDays, this.#knownMergedDays])
      for (const day of known) if (day * DAY_MS < Date.parse(before)) known.delete(day);
    return rows[0]?.n ?? 0;
  }
}
