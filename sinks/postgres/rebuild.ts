/**
 * Rebuilds `ticks` and `bars_1m` for a range from ticks and bars read back from the journal
 * (`tickstream replay --target postgres`), in ONE transaction: the ticks are COPYed (binary,
 * the loader's encoder) into a temporary table while the journal is read, then, at `commit`,
 * the range's rows are deleted and the staged ones inserted. Running it twice gives the same
 * tables; a failure leaves them as they were.
 *
 * Safe while the loader runs: `loaderOffsets` says where the loader group stands in each tick
 * partition (its `sink_offsets` rows); the caller reads the journal only up to there, so every
 * tick written here is one the loader has already loaded (it never COPYs it again: a second
 * COPY of a key would fail its transaction). Ticks deleted are those of a replayed source whose
 * seq lies between the first and last seq replayed for it, inside the time (and symbol) range:
 * exactly the rows the staged ones replace, never a row the loader writes later. Bars are
 * upserted like the loader does; the loader writing the same bar again later writes the same
 * values (bars are deterministic).
 *
 * A range spanning more UTC days than `maxDays` is refused (each daily partition is locked to
 * the end of the transaction, like a loader transaction).
 */
import { once } from 'node:events';
import pg from 'pg';
import { type CopyStreamQuery, from as copyFrom } from 'pg-copy-streams';
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
  readonly #encoder = new CopyEncoder();
  readonly #loaderOffsets: Map<number, number>;
  readonly #copy: CopyStreamQuery;
  readonly #copied: Promise<unknown>;
  readonly #bars: Bar[] = [];
  #error: Error | null = null;
  #ticks = 0;

  private constructor(
    client: pg.Client,
    o: RebuildOptions,
    loaderOffsets: Map<number, number>,
    copy: CopyStreamQuery,
  ) {
    this.#client = client;
    this.#o = o;
    this.#loaderOffsets = loaderOffsets;
    this.#copy = copy;
    this.#copied = once(copy, 'finish');
    this.#copied.catch((err: Error) => {
      this.#error ??= err;
    });
    copy.on('error', (err: Error) => {
      this.#error ??= err;
    });
  }

  /** Connects, migrates the schema, opens the transaction and the COPY into the staging table. */
  static async open(o: RebuildOptions): Promise<PostgresRebuild> {
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
      const offsets = new Map(rows.map((r) => [r.partition, Number(r.next_offset)]));
      await client.query('create temp table ticks_in (like ticks) on commit drop');
      await client.query('create temp table bars_in (like bars_1m) on commit drop');
      const copy = client.query(copyFrom('copy ticks_in from stdin (format binary)'));
      const rebuild = new PostgresRebuild(client, o, offsets, copy);
      copy.write(rebuild.#encoder.header());
      return rebuild;
    } catch (err) {
      await client.end().catch(() => undefined);
      throw err;
    }
  }

  /** Per tick partition: the loader group's next offset in this schema (none: no loader row). */
  get loaderOffsets(): ReadonlyMap<number, number> {
    return this.#loaderOffsets;
  }

  /** Stages ticks (in seq order per source); waits when Postgres is slower than the journal. */
  async ticks(batch: TickBatch): Promise<void> {
    this.#check();
    if (batch.length === 0) return;
    this.#ticks += batch.length;
    if (!this.#copy.write(Buffer.from(this.#encoder.ticks(batch))))
      await Promise.race([once(this.#copy, 'drain'), this.#copied]);
    this.#check();
  }

  /** Stages closed bars (written at commit). */
  bars(bars: readonly Bar[]): void {
    for (const b of bars) this.#bars.push(b);
  }

  get stagedTicks(): number {
    return this.#ticks;
  }

  /** Replaces the range's rows with the staged ones and commits; closes the connection. */
  async commit(range: RebuildRange): Promise<RebuildResult> {
    const c = this.#client;
    try {
      this.#copy.end(this.#encoder.trailer());
      await this.#copied;
      this.#check();
      const { rows: days } = await c.query<{ day: string }>(
        'select distinct floor(extract(epoch from time) * 1000 / $1)::bigint as day from ticks_in order by 1',
        [DAY_MS],
      );
      if (days.length > this.#o.maxDays)
        throw new TickstreamError(
          ErrorCode.USAGE,
          `the range holds ticks of ${days.length} UTC days, more than loaderMaxDaysPerTransaction (${this.#o.maxDays}) one transaction may lock: split it with --from/--to, or raise --loader-max-days-per-transaction`,
        );
      for (const { day } of days)
        await c.query('select tickstream_ensure_partitions($1::date, $1::date)', [
          new Date(Number(day) * DAY_MS).toISOString(),
        ]);
      const from = at(range.fromMs);
      const to = at(range.toMs);
      const symbols = range.symbols ? [...range.symbols] : null;
      const deleted = await c.query(
        `delete from ticks t using (select source, min(seq) lo, max(seq) hi from ticks_in group by source) s
          where t.source = s.source and t.seq between s.lo and s.hi
            and ($1::timestamptz is null or t.time >= $1) and ($2::timestamptz is null or t.time < $2)
            and ($3::text[] is null or t.symbol = any($3))`,
        [from, to, symbols],
      );
      const inserted = await c.query('insert into ticks select * from ticks_in');
      let barsDeleted = 0;
      if (this.#bars.length) {
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
          [at(range.barsFromMs)],
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
        ticksDeleted: deleted.rowCount ?? 0,
        ticksInserted: inserted.rowCount ?? 0,
        barsDeleted,
        barsWritten: this.#bars.length,
      };
    } catch (err) {
      if (err instanceof TickstreamError) throw err;
      throw new TickstreamError(
        ErrorCode.POSTGRES,
        `rebuilding schema ${this.#o.schema} failed, nothing was changed (${(err as Error).message}): check that Postgres is up and the schema is tickstream's`,
      );
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  /** Gives up: the transaction is rolled back by closing the connection. */
  async abort(): Promise<void> {
    this.#copy.destroy();
    await this.#client.end().catch(() => undefined);
  }

  #check(): void {
    if (this.#error)
      throw new TickstreamError(
        ErrorCode.POSTGRES,
        `staging ticks in Postgres failed, nothing was changed (${this.#error.message}): check that Postgres is up`,
      );
  }
}
