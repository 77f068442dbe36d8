/**
 * Rebuilds `ticks` and `bars_1m` for a range from ticks and bars read back from the journal
 * (`tickstream replay --target postgres`), in ONE transaction: while the journal is read, every
 * `chunkTicks` ticks the rows they replace are deleted and the ticks COPYed (binary, the
 * loader's encoder) straight into `ticks`; at `commit` the bars replace theirs. Running it twice
 * gives the same tables; a failure leaves them as they were.
 *
 * Safe while the loader runs: `loaderOffsets` says where the loader group stands in each tick
 * partition (its `sink_offsets` rows); the caller reads the journal only up to there, so every
 * tick written here is one the loader has already loaded (it never COPYs it again: a second
 * COPY of a key would fail its transaction). Ticks deleted are those of a replayed source whose
 * seq lies between the first and last seq replayed for it, inside the time (and symbol) range:
 * exactly the rows the new ones replace, never a row the loader writes later (deleted per chunk:
 * a source's seq span of the chunk, inside the range). Bars are
 * upserted like the loader does; the loader writing the same bar again later writes the same
 * values (bars are deterministic).
 *
 * A range spanning more UTC days than `maxDays` is refused (each daily partition is locked to
 * the end of the transaction, like a loader transaction).
 */
import { once } from 'node:events';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import type { Bar } from '../../codecs/bar.js';
import { ErrorCode, TickstreamError } from '../../codecs/errors.js';
import { CopyEncoder } from '../../codecs/pg-copy.js';
import type { TickBatch } from '../../codecs/tick-batch.js';
import { migrate, quoteIdent } from './migrate.js';

export interface RebuildOptions {
  postgresUrl: string;
  schema: string;
  ticksTopic: string;
  loaderGroupId: string;
  maxDays: number;
  /** Ticks per delete + COPY round (loaderMaxBatchTicks). */
  chunkTicks: number;
}

export interface RebuildRange {
  /** Inclusive; -Infinity: no bound. */
  fromMs: number;
  /** Exclusive; Infinity: no bound. */
  toMs: number;
  /** Only these symbols (null: all). */
  symbols: readonly string[] | null;
  /** Bars starting at or after this replace the stored ones (-Infinity: no bound). */
  barsFromMs: number;
}

export interface RebuildResult {
  ticksDeleted: number;
  ticksInserted: number;
  barsDeleted: number;
  barsWritten: number;
}

const DAY_MS = 86_400_000;
const at = (ms: number) => (Number.isFinite(ms) ? new Date(ms).toISOString() : null);

export class PostgresRebuild {
  readonly #client: pg.Client;
  readonly #o: RebuildOptions;
  readonly #range: RebuildRange;
  readonly #encoder = new CopyEncoder();
  readonly #loaderOffsets: Map<number, number>;
  readonly #bars: Bar[] = [];
  readonly #days = new Set<number>();
  #pending: TickBatch[] = [];
  #pendingTicks = 0;
  #deleted = 0;
  #inserted = 0;

  private constructor(
    client: pg.Client,
    o: RebuildOptions,
    range: RebuildRange,
    offsets: Map<number, number>,
  ) {
    this.#client = client;
    this.#o = o;
    this.#range = range;
    this.#loaderOffsets = offsets;
  }

  /** Connects, migrates the schema, opens the transaction and reads the loader's offsets. */
  static async open(o: RebuildOptions, range: RebuildRange): Promise<PostgresRebuild> {
    const client = new pg.Client({ connectionString: o.postgresUrl });
    // Without a listener a server that dies mid-rebuild is an uncaught exception; the next
    // query fails with the reason instead.
    client.on('error', () => undefined);
    try {
      await client.connect();
    } catch (err) {
      throw new TickstreamError(
        ErrorCode.POSTGRES,
        `cannot reach Postgres (${(err as Error).message}): is it up? Check --postgres-url`,
      );
    }
    try {
      await migrate(client, o.schema);
      await client.query(`set search_path to ${quoteIdent(o.schema)}`);
      await client.query('begin');
      const { rows } = await client.query<{ partition: number; next_offset: string }>(
        'select partition, next_offset from sink_offsets where consumer_group = $1 and topic = $2',
        [o.loaderGroupId, o.ticksTopic],
      );
      return new PostgresRebuild(
        client,
        o,
        range,
        new Map(rows.map((r) => [r.partition, Number(r.next_offset)])),
      );
    } catch (err) {
      await client.end().catch(() => undefined);
      throw PostgresRebuild.#failed(o.schema, err);
    }
  }

  /** Per tick partition: the loader group's next offset in this schema (none: no loader row). */
  get loaderOffsets(): ReadonlyMap<number, number> {
    return this.#loaderOffsets;
  }

  /** Takes ticks (in seq order per source); every chunkTicks they go to Postgres. */
  async ticks(batch: TickBatch): Promise<void> {
    if (batch.length === 0) return;
    this.#pending.push(batch);
    this.#pendingTicks += batch.length;
    if (this.#pendingTicks >= this.#o.chunkTicks) await this.#flush();
  }

  /** Takes closed bars (written at commit). */
  bars(bars: readonly Bar[]): void {
    for (const b of bars) this.#bars.push(b);
  }

  /** Writes what is left, replaces the bars and commits; closes the connection. */
  async commit(): Promise<RebuildResult> {
    const c = this.#client;
    try {
      await this.#flush();
      let barsDeleted = 0;
      if (this.#bars.length) {
        await c.query('create temp table bars_in (like bars_1m) on commit drop');
        const copy = c.query(copyFrom('copy bars_in from stdin (format binary)'));
        const done = once(copy, 'finish');
        copy.write(this.#encoder.header());
        copy.write(Buffer.from(this.#encoder.bars(this.#bars)));
        copy.end(this.#encoder.trailer());
        await done;
        const gone = await c.query(
          `delete from bars_1m b using (select source, symbol, max(start) hi from bars_in group by source, symbol) s
            where b.source = s.source and b.symbol = s.symbol and b.start <= s.hi
              and ($1::timestamptz is null or b.start >= $1)`,
          [at(this.#range.barsFromMs)],
        );
        barsDeleted = gone.rowCount ?? 0;
        // The loader may write one of these bars meanwhile: the same values, the newest wins.
        await c.query(`insert into bars_1m select * from bars_in
          on conflict (source, symbol, start) do update set open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
            tick_count = excluded.tick_count, spread_min = excluded.spread_min, spread_max = excluded.spread_max, spread_avg = excluded.spread_avg,
            last_open = excluded.last_open, last_high = excluded.last_high, last_low = excluded.last_low, last_close = excluded.last_close,
            volume = excluded.volume, last_seq = excluded.last_seq`);
      }
      await c.query('commit');
      return {
        ticksDeleted: this.#deleted,
        ticksInserted: this.#inserted,
        barsDeleted,
        barsWritten: this.#bars.length,
      };
    } catch (err) {
      throw PostgresRebuild.#failed(this.#o.schema, err);
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  /** Gives up: the transaction is rolled back by closing the connection. */
  async abort(): Promise<void> {
    await this.#client.end().catch(() => undefined);
  }

  /** Deletes the rows the pending ticks replace, then COPYs them into `ticks`. */
  async #flush(): Promise<void> {
    if (this.#pendingTicks === 0) return;
    const batches = this.#pending;
    this.#pending = [];
    this.#pendingTicks = 0;
    const c = this.#client;
    const spans = new Map<string, { lo: number; hi: number }>();
    const days: number[] = [];
    for (const b of batches) {
      const span = spans.get(b.source) ?? { lo: Number.POSITIVE_INFINITY, hi: Number.NEGATIVE_INFINITY };
      span.lo = Math.min(span.lo, b.seq[0] as number);
      span.hi = Math.max(span.hi, b.seq[b.length - 1] as number);
      spans.set(b.source, span);
      for (let i = 0; i < b.length; i++) {
        const day = Math.floor((b.utcMsc[i] as number) / DAY_MS);
        if (this.#days.has(day)) continue;
        this.#days.add(day);
        days.push(day);
      }
    }
    if (this.#days.size > this.#o.maxDays)
      throw new TickstreamError(
        ErrorCode.USAGE,
        `the range holds ticks of more than ${this.#o.maxDays} UTC days, more than loaderMaxDaysPerTransaction one transaction may lock: split it with --from/--to, or raise --loader-max-days-per-transaction`,
      );
    for (const day of days)
      await c.query('select tickstream_ensure_partitions($1::date, $1::date)', [
        new Date(day * DAY_MS).toISOString(),
      ]);
    const { fromMs, toMs, symbols } = this.#range;
    for (const [source, { lo, hi }] of spans) {
      const gone = await c.query(
        `delete from ticks where source = $1 and seq between $2 and $3
          and ($4::timestamptz is null or time >= $4) and ($5::timestamptz is null or time < $5)
          and ($6::text[] is null or symbol = any($6))`,
        [source, lo, hi, at(fromMs), at(toMs), symbols ? [...symbols] : null],
      );
      this.#deleted += gone.rowCount ?? 0;
    }
    // Encoded before the COPY opens, so an encoding error cannot leave a COPY half written.
    const chunks = batches.map((b) => Buffer.from(this.#encoder.ticks(b)));
    const copy = c.query(
      copyFrom(
        'copy ticks (source, seq, symbol, time, server_time_msc, bid, ask, last, volume, volume_real, flags) from stdin (format binary)',
      ),
    );
    const done = once(copy, 'finish');
    copy.write(this.#encoder.header());
    for (const chunk of chunks) copy.write(chunk);
    copy.end(this.#encoder.trailer());
    await done;
    for (const b of batches) this.#inserted += b.length;
  }

  static #failed(schema: string, err: unknown): Error {
    if (err instanceof TickstreamError) return err;
    return new TickstreamError(
      ErrorCode.POSTGRES,
      `rebuilding schema ${schema} failed, nothing was changed (${(err as Error).message}): check that Postgres is up and the schema is tickstream's`,
    );
  }
}
