/**
 * The Postgres loader's write path against psql's `\copy` (the C client, the native ceiling),
 * in the same run, on the same server, into the same table: the real `ticks` schema (daily
 * partitions, primary key and symbol index) migrated into a private `tsbench_<hex>` schema.
 *
 * - ours: what PostgresLoader does per transaction, for N ticks in 1000-tick records, 50
 *   records (50 000 rows, loaderMaxBatchTicks) per transaction: `tickstream_ensure_partitions`
 *   for a day not seen before in the pass, begin, the partition's `sink_offsets` row
 *   `FOR UPDATE` (fencing), CopyEncoder rows (one copy per record, as the loader keeps them), pg-copy-streams
 *   `COPY ticks (...) FROM STDIN (FORMAT binary)`, the new offset, commit. Only the Kafka
 *   consume and the FlatBuffers decode are left out.
 * - native: `psql -c "\copy <schema>.ticks (...) from '<file>' (format binary)"` of the same
 *   rows, encoded beforehand into a temp file by the same encoder: both sides send the same
 *   bytes, so this compares the client side of the ingest (psql start-up and connection are
 *   included: 30-50 ms, 1-3% of a pass).
 * - the limit: the same `psql \copy` into `ticks_unindexed`, a table of the same columns and
 *   the same daily partitions without any index, in the same run: what the server loads when
 *   no index is maintained, the ceiling a layout of `ticks` can approach (settings
 *   `unindexed_rows_per_s`; the note gives the real table's share of it).
 * - peers, through `pg`: parameterised multi-row INSERT (1000 rows, 11 000 parameters per
 *   prepared statement, 50 000 rows per transaction), and one prepared INSERT per row (fewer
 *   rows, one transaction: round trips, not fsyncs).
 *
 * Rounds alternate native, the unindexed limit and ours, best of each counts (shared machine); the table is
 * truncated before every pass. The schema and the temp file are removed at the end.
 */
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { CopyEncoder, TICK_COLUMNS } from '../../codecs/pg-copy.js';
import type { TickBatch } from '../../codecs/tick-batch.js';
import { migrate, quoteIdent } from '../../sinks/postgres/migrate.js';
import type { Comparison } from '../report.js';
import { best, feed, randomTag, short, sleep } from './common.js';

const run = promisify(execFile);
const URL_ = process.env['TICKSTREAM_POSTGRES_URL'] ?? 'postgres://postgres@127.0.0.1:5432/tickstream';
const RECORD_TICKS = 1000; // recordTicks: ticks per Kafka record, the loader's unit
const TXN_ROWS = 50_000; // loaderMaxBatchTicks
const INSERT_ROWS = 1000;
const SYMBOLS = ['EURUSD', 'GBPUSD', 'USDJPY'];
const DAY = 86_400_000;
const COLUMNS = TICK_COLUMNS.join(', ');
const GROUP = 'tsbench';

/**
 * One loader transaction, as PostgresLoader#transaction + #copyTicks do it minus Kafka and the
 * FlatBuffers decode: the daily partitions of days not seen yet, lock and check the offset row
 * (fencing), the COPY, the new offset, commit.
 */
async function loaderTransaction(
  client: pg.Client,
  encoder: CopyEncoder,
  batches: TickBatch[],
  knownDays: Set<number>,
): Promise<void> {
  // The loader creates the partitions of days it has not seen yet, before its transaction.
  const days = new Set<number>();
  for (const b of batches)
    for (let i = 0; i < b.length; i++) days.add(Math.floor((b.utcMsc[i] as number) / DAY));
  for (const day of [...days].sort((x, y) => x - y)) {
    if (knownDays.has(day)) continue;
    const d = new Date(day * DAY).toISOString();
    await client.query('select tickstream_ensure_partitions($1::date, $1::date)', [d]);
    knownDays.add(day);
  }
  await client.query('begin');
  const { rows: stored } = await client.query<{ next_offset: string; generation: string }>(
    'select next_offset, generation from sink_offsets where consumer_group = $1 and topic = $2 and partition = $3 for update',
    [GROUP, 'bench', 0],
  );
  const row = stored[0];
  if (!row || Number(row.generation) !== 1) throw new Error('the sink_offsets row of the bench is missing');
  const chunks = batches.map((b) => Buffer.from(encoder.ticks(b)));
  const stream = client.query(copyFrom(`copy ticks (${COLUMNS}) from stdin (format binary)`));
  const done = once(stream, 'finish');
  stream.write(encoder.header());
  for (const c of chunks) stream.write(c);
  stream.end(encoder.trailer());
  await done;
  await client.query(
    'update sink_offsets set next_offset = $1 where consumer_group = $2 and topic = $3 and partition = $4',
    [Number(row.next_offset) + batches.length, GROUP, 'bench', 0],
  );
  await client.query('commit');
}

async function runOurs(client: pg.Client, batches: TickBatch[]): Promise<number> {
  const encoder = new CopyEncoder();
  const knownDays = new Set<number>();
  const perTxn = TXN_ROWS / RECORD_TICKS;
  const n = batches.reduce((s, b) => s + b.length, 0);
  const t0 = performance.now();
  for (let i = 0; i < batches.length; i += perTxn)
    await loaderTransaction(client, encoder, batches.slice(i, i + perTxn), knownDays);
  return n / ((performance.now() - t0) / 1000);
}

/** psql `\copy` of a binary COPY file into `schema.table`: rows per second (checks the count). */
export async function runPsql(schema: string, table: string, file: string, n: number): Promise<number> {
  const cmd = `\\copy ${quoteIdent(schema)}.${table} (${COLUMNS}) from '${file}' (format binary)`;
  const t0 = performance.now();
  const { stdout } = await run('psql', [URL_, '-X', '-v', 'ON_ERROR_STOP=1', '-c', cmd], {
    timeout: 300_000,
  });
  const seconds = (performance.now() - t0) / 1000;
  if (stdout.trim() !== `COPY ${n}`) throw new Error(`psql \\copy printed ${JSON.stringify(stdout)}`);
  return n / seconds;
}

/** The 11 column values of row i, as node-postgres sends them. */
function rowValues(b: TickBatch, i: number, out: unknown[]): void {
  out.push(
    b.source,
    b.seq[i],
    b.symbols[b.symbolIndex[i] as number],
    new Date(b.utcMsc[i] as number),
    b.serverTimeMsc[i],
    b.bid[i],
    b.ask[i],
    b.last[i],
    b.volume[i],
    b.volumeReal[i],
    b.flags[i],
  );
}

function placeholders(rows: number): string {
  const out: string[] = [];
  for (let r = 0; r < rows; r++) {
    const p: string[] = [];
    for (let c = 1; c <= TICK_COLUMNS.length; c++) p.push(`$${r * TICK_COLUMNS.length + c}`);
    out.push(`(${p.join(',')})`);
  }
  return out.join(',');
}

async function multiRowInsert(client: pg.Client, batches: TickBatch[], n: number): Promise<number> {
  const text = `insert into ticks (${COLUMNS}) values ${placeholders(INSERT_ROWS)}`;
  const t0 = performance.now();
  let done = 0;
  let inTxn = 0;
  await client.query('begin');
  for (const b of batches) {
    if (done >= n) break;
    if (b.length !== INSERT_ROWS) continue;
    const values: unknown[] = [];
    for (let i = 0; i < b.length; i++) rowValues(b, i, values);
    await client.query({ name: 'tsbench-insert-multi', text, values });
    done += b.length;
    inTxn += b.length;
    if (inTxn >= TXN_ROWS) {
      await client.query('commit');
      await client.query('begin');
      inTxn = 0;
    }
  }
  await client.query('commit');
  return done / ((performance.now() - t0) / 1000);
}

async function rowByRowInsert(client: pg.Client, batches: TickBatch[], n: number): Promise<number> {
  const text = `insert into ticks (${COLUMNS}) values ${placeholders(1)}`;
  const t0 = performance.now();
  let done = 0;
  await client.query('begin');
  for (const b of batches) {
    for (let i = 0; i < b.length && done < n; i++, done++) {
      const values: unknown[] = [];
      rowValues(b, i, values);
      await client.query({ name: 'tsbench-insert-one', text, values });
    }
    if (done >= n) break;
  }
  await client.query('commit');
  return done / ((performance.now() - t0) / 1000);
}

/**
 * One timed pass, retried once after a transient server-wide failure: the lock table is shared
 * with whatever else runs on this Postgres, and other tests' schemas can exhaust it for a while.
 */
async function pass<T>(client: pg.Client, retries: string[], what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const message = (err as Error).message;
    if (!/out of shared memory|deadlock detected|could not serialize/.test(message)) throw err;
    retries.push(`${what}: ${message.trim().split('\n').pop()}`);
    await client.query('rollback').catch(() => undefined);
    await client.query('truncate ticks, ticks_unindexed');
    await sleep(1000);
    return fn();
  }
}

async function count(client: pg.Client, table = 'ticks'): Promise<number> {
  const { rows } = await client.query<{ n: string }>(`select count(*) as n from ${table}`);
  return Number(rows[0]?.n ?? 0);
}

export async function compare({ quick }: { quick: boolean }): Promise<Comparison[]> {
  const n = quick ? 100_000 : 500_000;
  const rounds = quick ? 2 : 3;
  const multiN = quick ? 50_000 : 100_000;
  const oneN = quick ? 2_000 : 5_000;
  const schema = `tsbench_${randomTag()}`;
  const dir = mkdtempSync(join(tmpdir(), 'tsbench-pg-'));
  const file = join(dir, 'ticks.bin');
  const client = new pg.Client({ connectionString: URL_, options: `-c search_path=${quoteIdent(schema)}` });
  client.on('error', () => undefined); // the query in flight reports it
  try {
    await client.connect();
    const version =
      (await client.query<{ v: string }>("select current_setting('server_version') as v")).rows[0]?.v ?? '?';
    const syncCommit =
      (await client.query<{ v: string }>("select current_setting('synchronous_commit') as v")).rows[0]?.v ??
      '?';
    await migrate(client, schema);
    await client.query(`set search_path to ${quoteIdent(schema)}`);
    await client.query(
      'insert into sink_offsets (consumer_group, topic, partition, next_offset, generation) values ($1, $2, 0, 0, 1)',
      [GROUP, 'bench'],
    );

    const batches = feed(n, RECORD_TICKS, SYMBOLS);
    const days = new Set(batches.flatMap((b) => [...b.utcMsc].map((t) => Math.floor(t / DAY)))).size;
    // The native input: the same rows, one COPY stream, written by the same encoder.
    const encoder = new CopyEncoder();
    const parts = [encoder.header()];
    for (const b of batches) parts.push(Buffer.from(encoder.ticks(b)));
    parts.push(encoder.trailer());
    const bytes = Buffer.concat(parts);
    writeFileSync(file, bytes);
    // The partitions exist from the start and stay across truncates, as in a loader's steady
    // state: ours still calls tickstream_ensure_partitions once per pass and day, as a loader
    // does once per run and day.
    const first = batches[0]?.utcMsc[0] as number;
    const last = batches[batches.length - 1]?.utcMsc.at(-1) as number;
    await client.query('select tickstream_ensure_partitions($1::date, $2::date)', [
      new Date(Math.floor(first / DAY) * DAY).toISOString(),
      new Date(Math.floor(last / DAY) * DAY).toISOString(),
    ]);
    // The limit: the same columns and daily partitions, no index at all.
    await client.query('create table ticks_unindexed (like ticks) partition by range (time)');
    for (let day = Math.floor(first / DAY); day <= Math.floor(last / DAY); day++)
      await client.query(
        `create table ticks_unindexed_${day} partition of ticks_unindexed for values from ('${new Date(day * DAY).toISOString()}') to ('${new Date((day + 1) * DAY).toISOString()}')`,
      );

    // Warm-up (JIT, plan caches, the table's pages): not timed.
    await runOurs(client, batches.slice(0, 20));
    await client.query('truncate ticks');

    const native: number[] = [];
    const unindexed: number[] = [];
    const ours: number[] = [];
    const retries: string[] = [];
    for (let r = 0; r < rounds; r++) {
      native.push(await pass(client, retries, 'psql', () => runPsql(schema, 'ticks', file, n)));
      if ((await count(client)) !== n) throw new Error('psql did not load every row');
      await client.query('truncate ticks');
      unindexed.push(
        await pass(client, retries, 'psql unindexed', () => runPsql(schema, 'ticks_unindexed', file, n)),
      );
      if ((await count(client, 'ticks_unindexed')) !== n) throw new Error('psql did not load every row');
      await client.query('truncate ticks_unindexed');
      ours.push(await pass(client, retries, 'ours', () => runOurs(client, batches)));
      if ((await count(client)) !== n) throw new Error('the COPY path did not load every row');
      await client.query('truncate ticks');
    }
    const oursBest = best(ours);
    const nativeBest = best(native);
    const unindexedBest = best(unindexed);

    const multi = await pass(client, retries, 'multi-row', () => multiRowInsert(client, batches, multiN));
    await client.query('truncate ticks');
    const one = await pass(client, retries, 'row', () => rowByRowInsert(client, batches, oneN));
    await client.query('truncate ticks');

    const settings = {
      postgres: `${version} at ${new URL(URL_).host}, synchronous_commit=${syncCommit}`,
      table: `${schema}.ticks (migrations applied: daily partitions, btree symbol+time, brin seq)`,
      rows_per_round: n,
      days_spanned: days,
      rounds,
      best_of: 'rounds (shared machine), truncate before each pass',
      copy_bytes: bytes.length,
      bytes_per_row: Math.round((bytes.length - 21) / n),
      native_cmd: `psql -X -c "\\copy ${schema}.ticks (${COLUMNS}) from '<tmp>/ticks.bin' (format binary)"`,
      native_transactions: 1,
      native_rounds: native.map(short).join('/'),
      unindexed_rows_per_s: Math.round(unindexedBest),
      unindexed_table: 'ticks_unindexed: the columns and daily partitions of ticks, no index',
      unindexed_rounds: unindexed.map(short).join('/'),
      ours_path: 'CopyEncoder + pg-copy-streams COPY FROM STDIN (FORMAT binary), as PostgresLoader',
      ours_rows_per_transaction: TXN_ROWS,
      ours_rows_per_record: RECORD_TICKS,
      ours_per_transaction:
        'ensure_partitions for a day not seen yet, begin, sink_offsets row for update, COPY, sink_offsets update, commit',
      ours_rounds: ours.map(short).join('/'),
      multi_insert_rows: multiN,
      multi_insert_rows_per_statement: INSERT_ROWS,
      row_insert_rows: oneN,
      row_insert: 'prepared, one transaction',
      retried_passes: retries.length ? retries.join('; ') : 'none',
    };
    return [
      {
        name: 'postgres: binary COPY of ticks (real schema, 50k rows per transaction)',
        ours: { label: 'loader COPY path (pg-copy-streams)', value: oursBest, unit: 'rows/s' },
        native: { label: 'psql \\copy (binary file)', value: nativeBest, unit: 'rows/s' },
        ratio_to_native: oursBest / nativeBest,
        settings,
        peers: [
          {
            label: `pg multi-row INSERT ×${INSERT_ROWS}`,
            value: multi,
            unit: 'rows/s',
            ratio_ours_to_peer: oursBest / multi,
          },
          { label: 'pg INSERT per row', value: one, unit: 'rows/s', ratio_ours_to_peer: oursBest / one },
        ],
        note: `native loads all ${n} rows in one transaction from a pre-encoded file; ours encodes and commits every ${TXN_ROWS} rows. Both are bound by the server's index and WAL work: the same psql \\copy into an unindexed table of the same columns (the limit) took ${short(unindexedBest)} rows/s, the real table ${(nativeBest / unindexedBest).toFixed(2)}× of it`,
      },
    ];
  } finally {
    // A fresh connection: the bench's own may sit in a failed transaction or a broken COPY.
    await client.end().catch(() => undefined);
    const admin = new pg.Client({ connectionString: URL_ });
    admin.on('error', () => undefined);
    try {
      await admin.connect();
      await admin.query(`drop schema if exists ${quoteIdent(schema)} cascade`);
    } catch (err) {
      process.stderr.write(`postgres bench: could not drop schema ${schema}: ${(err as Error).message}\n`);
    } finally {
      await admin.end().catch(() => undefined);
    }
    rmSync(dir, { recursive: true, force: true });
  }
}
