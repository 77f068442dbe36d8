/**
 * The Postgres loader: a `read_committed` Kafka consumer group over the journal that COPYs
 * (binary) tick records into `ticks` and upserts bar records into `bars_1m`, storing the
 * consumed offsets in `sink_offsets` in the SAME transaction — exactly once, across crashes.
 *
 * Fencing: on every partition assignment the loader bumps that partition's `generation` and
 * seeks to the stored `next_offset`. Every transaction first locks the partition's offset row
 * (`FOR UPDATE`) and checks the generation: a loader that lost the partition in a rebalance
 * finds another generation, rolls back and drops the partition. Messages below the stored
 * offset are skipped (already loaded). Kafka's own group offsets are never used.
 *
 * A slow or down Postgres only delays this consumer: the live path never waits for it. On any
 * Postgres error the loader backs off (capped exponential) and retries the same messages.
 */
import { once } from 'node:events';
import RdKafka from '@confluentinc/kafka-javascript';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Bar } from '../../codecs/bar.js';
import { decodeBar, decodeTickRecord } from '../../codecs/flat-record.js';
import { CopyEncoder } from '../../codecs/pg-copy.js';
import type { TickBatch } from '../../codecs/tick-batch.js';
import { migrate, quoteIdent } from './migrate.js';

export interface LoaderOptions {
  brokers: string;
  groupId: string;
  /**
   * Static group membership (`group.instance.id`): a loader restarted under the same id takes
   * its partitions back at once instead of waiting out the dead member's session.
   */
  instanceId: string;
  ticksTopic: string;
  barsTopic: string;
  postgresUrl: string;
  schema: string;
  maxBatchTicks: number;
  retentionDays: number;
  registry: Registry;
  logger: Logger;
  crashPoint?: (name: string) => void;
}

interface Owned {
  generation: number;
  /** Sought to the stored offset: messages from it can be loaded. */
  ready: boolean;
}

type Message = RdKafka.Message;
const DAY = 86_400_000;
const ignoreError = (): void => undefined;

export class PostgresLoader {
  readonly #o: LoaderOptions;
  readonly #pool: pg.Pool;
  readonly #consumer: RdKafka.KafkaConsumer;
  readonly #owned = new Map<string, Owned>();
  readonly #encoder = new CopyEncoder();
  #running = false;
  #loop: Promise<void> | null = null;
  #backoffMs = 200;
  readonly #m;

  constructor(options: LoaderOptions) {
    this.#o = options;
    this.#pool = new pg.Pool({
      connectionString: options.postgresUrl,
      max: 2,
      options: `-c search_path=${quoteIdent(options.schema)}`,
    });
    this.#pool.on('error', () => undefined); // idle clients dying with the server: the loop reconnects
    this.#consumer = new RdKafka.KafkaConsumer(
      {
        'metadata.broker.list': options.brokers,
        'group.id': options.groupId,
        'group.instance.id': `${options.groupId}-${options.instanceId}`,
        'session.timeout.ms': 10_000,
        'heartbeat.interval.ms': 1000,
        'enable.auto.commit': false,
        'enable.auto.offset.store': false,
        'isolation.level': 'read_committed',
        'partition.assignment.strategy': 'range',
        'fetch.max.bytes': 32 << 20,
        rebalance_cb: (err: RdKafka.LibrdKafkaError, assignment: RdKafka.Assignment[]) =>
          this.#rebalance(err, assignment),
      } as RdKafka.ConsumerGlobalConfig,
      { 'auto.offset.reset': 'earliest' },
    );
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
        help: 'Postgres errors met by the loader (it retries)',
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
        help: 'Age of the newest record loaded, by its Kafka timestamp',
        registers,
      }),
    };
  }

  async start(): Promise<void> {
    const client = await this.#pool.connect();
    client.on('error', ignoreError);
    try {
      await migrate(client, this.#o.schema);
    } finally {
      client.off('error', ignoreError);
      client.release();
    }
    await new Promise<void>((resolve, reject) =>
      this.#consumer.connect({ timeout: 10_000 }, (err) => (err ? reject(err) : resolve())),
    );
    this.#consumer.subscribe([this.#o.ticksTopic, this.#o.barsTopic]);
    this.#running = true;
    this.#loop = this.#run();
  }

  async close(): Promise<void> {
    this.#running = false;
    await this.#loop;
    await new Promise((resolve) => this.#consumer.disconnect(resolve));
    await this.#pool.end();
  }

  #rebalance(err: RdKafka.LibrdKafkaError, assignment: RdKafka.Assignment[]): void {
    if (err.code === RdKafka.CODES.ERRORS.ERR__ASSIGN_PARTITIONS) {
      for (const a of assignment)
        this.#owned.set(`${a.topic}:${a.partition}`, { generation: -1, ready: false });
      // Paused until the offsets come from Postgres: nothing is loaded from Kafka's positions.
      this.#consumer.assign(assignment);
      this.#consumer.pause(assignment);
      void this.#claim(assignment);
    } else {
      for (const a of assignment) this.#owned.delete(`${a.topic}:${a.partition}`);
      this.#consumer.unassign();
    }
  }

  /** Bumps the generation of newly assigned partitions and seeks them to the stored offsets. */
  async #claim(assignment: RdKafka.Assignment[]): Promise<void> {
    for (;;) {
      try {
        for (const a of assignment) {
          const owned = this.#owned.get(`${a.topic}:${a.partition}`);
          if (!owned) continue;
          const { rows } = await this.#pool.query<{ next_offset: string; generation: string }>(
            `insert into sink_offsets (consumer_group, topic, partition, next_offset, generation) values ($1, $2, $3, 0, 1)
             on conflict (consumer_group, topic, partition) do update set generation = sink_offsets.generation + 1
             returning next_offset, generation`,
            [this.#o.groupId, a.topic, a.partition],
          );
          const row = rows[0] as { next_offset: string; generation: string };
          owned.generation = Number(row.generation);
          await this.#seek(a.topic, a.partition, Number(row.next_offset));
          owned.ready = true;
          this.#consumer.resume([{ topic: a.topic, partition: a.partition }]);
        }
        this.#o.logger.info(
          { partitions: assignment.map((a) => `${a.topic}:${a.partition}`) },
          'loader owns partitions',
        );
        return;
      } catch (err) {
        this.#m.errors.inc();
        this.#o.logger.warn({ err: (err as Error).message }, 'loader could not claim partitions; retrying');
        await new Promise((r) => setTimeout(r, this.#nextBackoff()));
      }
    }
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

  #nextBackoff(): number {
    const b = this.#backoffMs;
    this.#backoffMs = Math.min(b * 2, 10_000);
    return b;
  }

  async #run(): Promise<void> {
    // Records hold about a thousand ticks each (recordTicks).
    const perCall = Math.max(1, Math.round(this.#o.maxBatchTicks / 1000));
    while (this.#running) {
      const messages = await new Promise<Message[]>((resolve) =>
        this.#consumer.consume(perCall, (err, m) => resolve(err ? [] : m)),
      );
      if (messages.length === 0) {
        await new Promise((r) => setTimeout(r, 20));
        continue;
      }
      const byPartition = new Map<string, Message[]>();
      for (const m of messages) {
        const key = `${m.topic}:${m.partition}`;
        if (!this.#owned.get(key)?.ready) continue;
        let list = byPartition.get(key);
        if (!list) {
          list = [];
          byPartition.set(key, list);
        }
        list.push(m);
      }
      for (const [key, list] of byPartition) await this.#load(key, list);
    }
  }

  /**
   * Loads `messages` (one partition), retrying the same messages with backoff until they are in
   * or the partition is no longer ours. Nothing is re-fetched after a failure (no seek races).
   */
  async #load(key: string, messages: Message[]): Promise<void> {
    for (;;) {
      const owned = this.#owned.get(key);
      if (!owned?.ready || !this.#running) return;
      if ((await this.#transaction(key, owned, messages)) !== 'retry') return;
      await new Promise((r) => setTimeout(r, this.#nextBackoff()));
    }
  }

  /**
   * One transaction: lock the partition's offset row, check the generation (fencing), skip
   * messages below the stored offset (already loaded), COPY the rest, store the new offset.
   */
  async #transaction(key: string, owned: Owned, messages: Message[]): Promise<'done' | 'fenced' | 'retry'> {
    const first = messages[0] as Message;
    const started = performance.now();
    let client: pg.PoolClient | null = null;
    try {
      client = await this.#pool.connect();
      // A checked-out client whose server dies between two queries emits 'error': without a
      // listener that is an uncaught exception. The next query fails and the retry follows.
      client.on('error', ignoreError);
      await client.query('begin');
      const { rows: stored } = await client.query<{ next_offset: string; generation: string }>(
        'select next_offset, generation from sink_offsets where consumer_group = $1 and topic = $2 and partition = $3 for update',
        [this.#o.groupId, first.topic, first.partition],
      );
      const row = stored[0];
      if (!row || Number(row.generation) !== owned.generation) {
        await client.query('rollback');
        this.#m.batches.inc({ outcome: 'fenced' });
        this.#o.logger.warn({ partition: key }, 'loader fenced: another loader owns this partition now');
        this.#owned.delete(key);
        return 'fenced';
      }
      const fresh = messages.filter((m) => m.offset >= Number(row.next_offset));
      const last = fresh[fresh.length - 1];
      if (!last) {
        await client.query('rollback');
        return 'done';
      }
      const isBars = first.topic === this.#o.barsTopic;
      const rows = isBars ? await this.#copyBars(client, fresh) : await this.#copyTicks(client, fresh);
      await client.query(
        'update sink_offsets set next_offset = $1 where consumer_group = $2 and topic = $3 and partition = $4',
        [last.offset + 1, this.#o.groupId, first.topic, first.partition],
      );
      await client.query('commit');
      this.#backoffMs = 200;
      this.#m.batches.inc({ outcome: 'committed' });
      this.#m.rows.inc({ table: isBars ? 'bars_1m' : 'ticks' }, rows);
      this.#m.copy.observe((performance.now() - started) / 1000);
      if (last.timestamp) this.#m.lagSeconds.set((Date.now() - last.timestamp) / 1000);
      return 'done';
    } catch (err) {
      this.#m.errors.inc();
      this.#o.logger.warn(
        { err: (err as Error).message, partition: key },
        'loader transaction failed; retrying the same records',
      );
      // Closing the connection aborts the transaction, also mid-COPY (a ROLLBACK would queue
      // behind the unfinished COPY and hang).
      client?.off('error', ignoreError);
      client?.release(true);
      client = null;
      return 'retry';
    } finally {
      client?.off('error', ignoreError);
      client?.release();
    }
  }

  async #copyTicks(client: pg.PoolClient, messages: Message[]): Promise<number> {
    const batches: TickBatch[] = messages
      .filter((m) => m.value)
      .map((m) => decodeTickRecord(m.value as Buffer));
    // The daily partitions of the days present (not of the whole span: one stray old tick
    // must not create thousands of empty partitions).
    const days = new Set<number>();
    let rows = 0;
    for (const b of batches) {
      for (let i = 0; i < b.length; i++) days.add(Math.floor((b.utcMsc[i] as number) / DAY));
      rows += b.length;
    }
    if (rows === 0) return 0;
    for (const day of [...days].sort((x, y) => x - y)) {
      const d = new Date(day * DAY).toISOString();
      await client.query('select tickstream_ensure_partitions($1::date, $1::date)', [d]);
    }
    // Encoded before the COPY opens, so an encoding error cannot leave a COPY half written.
    // The encoder's output is a view of a reused buffer: keep copies.
    const chunks = batches.map((b) => Buffer.from(this.#encoder.ticks(b)));
    const stream = client.query(
      copyFrom(
        `copy ticks (source, seq, symbol, time, server_time_msc, bid, ask, last, volume, volume_real, flags) from stdin (format binary)`,
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
    return rows;
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

  /** Drops tick partitions past the retention (call daily). */
  async applyRetention(): Promise<number> {
    const before = new Date(Date.now() - this.#o.retentionDays * DAY).toISOString().slice(0, 10);
    const { rows } = await this.#pool.query<{ n: number }>(
      'select tickstream_drop_partitions_before($1::date) as n',
      [before],
    );
    return rows[0]?.n ?? 0;
  }
}
