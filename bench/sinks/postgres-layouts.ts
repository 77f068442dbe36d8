/**
 * What each index of `ticks` costs the load, and what each layout gives the users' queries
 * (issue 18). Not part of `npm run bench`: run it on its own, on a quiet machine if you can,
 *
 *   node dist/bench/sinks/postgres-layouts.js [--rows 500000] [--rounds 3] [--query-rows 1000000]
 *
 * In a private `tslayout_<hex>` schema (the real migrations applied, then removed): one table per
 * layout, each partitioned by day like `ticks`, with the same columns and only that layout's
 * indexes. Load: `psql \copy (format binary)` of the same bytes the Postgres bench sends
 * (bench/sinks/postgres.ts: CopyEncoder rows of the synthetic feed) into each layout, rounds
 * alternating over the layouts, the table truncated before each pass, best of the rounds.
 * Queries: one 1M-row UTC day (20 symbols, 2 sources, in time order) generated into each layout,
 * VACUUM ANALYZEd (BRIN ranges summarised, as autovacuum leaves them), then EXPLAIN ANALYZE of one symbol's ticks over one hour and over the whole day (the
 * history API's query), of the newest tick of a symbol, and of 1000 seqs of one source; best
 * execution time of three runs each. Server CPU: the same bytes COPYed by pg-copy-streams on a
 * connection whose backend's utime+stime (/proc) is read before and after: µs per row, which
 * the load of a shared machine disturbs far less than rows/s.
 */
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { CopyEncoder, TICK_COLUMNS } from '../../codecs/pg-copy.js';
import { migrate, quoteIdent } from '../../sinks/postgres/migrate.js';
import { feed, randomTag, short } from './common.js';
import { runPsql } from './postgres.js';

const URL_ = process.env['TICKSTREAM_POSTGRES_URL'] ?? 'postgres://postgres@127.0.0.1:5432/tickstream';
const COLUMNS = TICK_COLUMNS.join(', ');
const DAY = 86_400_000;

interface Layout {
  name: string;
  /** Column collation of `source` and `symbol`: '' for the database default. */
  collate?: string;
  /** Statements run on the partitioned table `T` after it is created. */
  ddl: string[];
}

const BRIN_SEQ = 'create index on T using brin (seq int8_minmax_multi_ops) with (pages_per_range = 32)';

const LAYOUTS: Layout[] = [
  { name: 'none (the unindexed limit)', ddl: [] },
  {
    name: 'v1 (001): pk (source, seq, time) + btree (symbol, time)',
    ddl: ['alter table T add primary key (source, seq, time)', 'create index on T (symbol, time)'],
  },
  { name: 'pk (source, seq, time) alone', ddl: ['alter table T add primary key (source, seq, time)'] },
  { name: 'btree (source, seq) alone, not unique', ddl: ['create index on T (source, seq)'] },
  { name: 'btree (symbol, time) alone', ddl: ['create index on T (symbol, time)'] },
  {
    name: 'btree (symbol collate "C", time) alone',
    collate: 'C',
    ddl: ['create index on T (symbol, time)'],
  },
  { name: 'btree (time) alone', ddl: ['create index on T (time)'] },
  { name: 'brin (time) alone', ddl: ['create index on T using brin (time) with (pages_per_range = 32)'] },
  { name: 'brin (seq) alone', ddl: [BRIN_SEQ] },
  {
    name: 'v2 (005): btree (symbol, time) + brin (seq)',
    ddl: ['create index on T (symbol, time)', BRIN_SEQ],
  },
  { name: 'btree (time) + brin (seq)', ddl: ['create index on T (time)', BRIN_SEQ] },
];

function arg(name: string, fallback: number): number {
  const at = process.argv.indexOf(name);
  return at > 0 ? Number(process.argv[at + 1]) : fallback;
}

function tableDdl(table: string, collate: string | undefined): string {
  const c = collate ? ` collate ${quoteIdent(collate)}` : '';
  return `create table ${table} (source text${c} not null, seq bigint not null, symbol text${c} not null,
    time timestamptz not null, server_time_msc bigint not null, bid double precision not null,
    ask double precision not null, last double precision not null, volume bigint not null,
    volume_real double precision not null, flags bigint not null) partition by range (time)`;
}

async function createLayout(db: pg.Client, table: string, layout: Layout, days: number[]): Promise<void> {
  await db.query(tableDdl(table, layout.collate));
  for (const day of days)
    await db.query(
      `create table ${table}_${day} partition of ${table} for values from ('${new Date(day * DAY).toISOString()}') to ('${new Date((day + 1) * DAY).toISOString()}')`,
    );
  for (const s of layout.ddl) await db.query(s.replace(/\bT\b/, table));
}

/** Server CPU seconds (user + system) of a backend so far, from /proc (Postgres on this machine). */
function backendCpu(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

/** The same bytes through pg-copy-streams on `db`: the backend's CPU per row (µs), load-proof. */
async function cpuCopy(db: pg.Client, pid: number, table: string, bytes: Buffer, n: number): Promise<number> {
  const before = backendCpu(pid);
  const stream = db.query(copyFrom(`copy ${table} (${COLUMNS}) from stdin (format binary)`));
  const done = once(stream, 'finish');
  for (let at = 0; at < bytes.length; at += 1 << 20) stream.write(bytes.subarray(at, at + (1 << 20)));
  stream.end();
  await done;
  return ((backendCpu(pid) - before) / n) * 1e6;
}

/** Best execution time (ms) of three EXPLAIN ANALYZE runs, and the plan's scans. */
async function explain(db: pg.Client, sql: string): Promise<{ ms: number; rows: number; plan: string }> {
  let ms = Number.POSITIVE_INFINITY;
  let rows = 0;
  let plan = '';
  for (let i = 0; i < 3; i++) {
    const { rows: out } = await db.query(`explain (analyze, buffers, format json) ${sql}`);
    const top = (out[0]['QUERY PLAN'] as { Plan: PlanNode; 'Execution Time': number }[])[0];
    if (!top) throw new Error('no plan');
    ms = Math.min(ms, top['Execution Time']);
    rows = top.Plan['Actual Rows'];
    plan = scans(top.Plan).join(' + ');
  }
  return { ms, rows, plan };
}

interface PlanNode {
  'Node Type': string;
  'Index Name'?: string;
  'Actual Rows': number;
  'Shared Hit Blocks'?: number;
  'Shared Read Blocks'?: number;
  Plans?: PlanNode[];
}

function scans(node: PlanNode, out: string[] = []): string[] {
  if (/Scan/.test(node['Node Type'])) {
    out.push(
      `${node['Node Type']}${node['Index Name'] ? ` ${node['Index Name'].replace(/^.*?_\d+_/, '')}` : ''}`,
    );
    return out;
  }
  for (const c of node.Plans ?? []) scans(c, out);
  return out;
}

async function main(): Promise<void> {
  const n = arg('--rows', 500_000);
  const rounds = arg('--rounds', 3);
  const queryRows = arg('--query-rows', 1_000_000);
  const schema = `tslayout_${randomTag()}`;
  const dir = mkdtempSync(join(tmpdir(), 'tslayout-'));
  const file = join(dir, 'ticks.bin');
  const db = new pg.Client({ connectionString: URL_ });
  await db.connect();
  try {
    await migrate(db, schema);
    await db.query(`set search_path to ${quoteIdent(schema)}`);
    const batches = feed(n, 1000, ['EURUSD', 'GBPUSD', 'USDJPY']);
    const encoder = new CopyEncoder();
    const parts = [encoder.header()];
    for (const b of batches) parts.push(Buffer.from(encoder.ticks(b)));
    parts.push(encoder.trailer());
    const bytes = Buffer.concat(parts);
    writeFileSync(file, bytes);
    const pid = (await db.query<{ p: number }>('select pg_backend_pid() as p')).rows[0]?.p as number;
    const first = Math.floor((batches[0]?.utcMsc[0] as number) / DAY);
    const last = Math.floor((batches.at(-1)?.utcMsc.at(-1) as number) / DAY);
    const loadDays: number[] = [];
    for (let d = first; d <= last; d++) loadDays.push(d);
    // The query day: the day after the load's days, so both fit the same tables.
    const qday = last + 1;
    const tables = LAYOUTS.map((_, i) => `l${i}`);
    for (const [i, layout] of LAYOUTS.entries())
      await createLayout(db, tables[i] as string, layout, [...loadDays, qday]);

    const load = LAYOUTS.map(() => [] as number[]);
    const cpu = LAYOUTS.map(() => [] as number[]);
    for (let r = 0; r < rounds; r++)
      for (const [i, table] of tables.entries()) {
        await db.query(`truncate ${table}`);
        await db.query('checkpoint');
        load[i]?.push(await runPsql(schema, table, file, n));
        await db.query(`truncate ${table}`);
        await db.query('checkpoint');
        cpu[i]?.push(await cpuCopy(db, pid, table, bytes, n));
      }
    const limit = Math.max(...(load[0] as number[]));
    const sizes: string[] = [];
    for (const table of tables) {
      const { rows } = await db.query<{ t: string; i: string }>(
        `select pg_size_pretty(sum(pg_table_size(c.oid))) as t, pg_size_pretty(sum(pg_indexes_size(c.oid))) as i
         from pg_inherits x join pg_class c on c.oid = x.inhrelid where x.inhparent = $1::regclass`,
        [table],
      );
      sizes.push(`${rows[0]?.t} + ${rows[0]?.i} idx`);
      await db.query(`truncate ${table}`);
    }

    // One UTC day of queryRows ticks: 20 symbols, 2 sources, time order, each source's seqs rising.
    const day0 = new Date(qday * DAY).toISOString();
    const queries = {
      'symbol, 1 hour': `select source, seq, time, bid, ask, last, volume_real, flags from T where symbol = 'SYM07' and time >= '${day0}'::timestamptz + interval '10 h' and time < '${day0}'::timestamptz + interval '11 h' order by time, source, seq`,
      'symbol, 1 day': `select source, seq, time, bid, ask, last, volume_real, flags from T where symbol = 'SYM07' and time >= '${day0}' and time < '${day0}'::timestamptz + interval '1 day' order by time, source, seq`,
      'latest tick': `select source, seq, time, bid, ask from T where symbol = 'SYM07' order by time desc limit 1`,
      '1000 seqs of a source': `select * from T where source = 'src1' and seq between 200000 and 200999`,
    };
    const report: string[] = [];
    report.push(
      `load: ${n} rows (${loadDays.length} days, 3 symbols, 1 source) by psql \\copy binary, best of ${rounds} rounds; query day: ${queryRows} rows`,
    );
    report.push(
      '| layout | psql rows/s (rounds) | vs unindexed | server CPU µs/row (rounds) | size | 1 hour | 1 day | latest | 1000 seqs |',
    );
    report.push('|---|---|---|---|---|---|---|---|---|');
    for (const [i, table] of tables.entries()) {
      await db.query(`
        insert into ${table} (${COLUMNS})
        select 'src' || (g % 2), g / 2 + 1, 'SYM' || lpad((g % 20)::text, 2, '0'),
               '${day0}'::timestamptz + (g * (86400000.0 / ${queryRows})) * interval '1 ms', 0, 1.1, 1.1001, 0, 0, 0, 6
        from generate_series(0, ${queryRows - 1}) g`);
      // Summarised as (auto)vacuum leaves a partition: BRIN ranges are read whole until then.
      await db.query(`vacuum analyze ${table}`);
      await db.query('set plan_cache_mode = force_custom_plan');
      const cells: string[] = [];
      for (const sql of Object.values(queries)) {
        const q = await explain(db, sql.replace(/\bT\b/, table));
        cells.push(`${q.ms.toFixed(2)} ms, ${q.rows} rows, ${q.plan}`);
      }
      const rates = load[i] as number[];
      const bestRate = Math.max(...rates);
      report.push(
        `| ${LAYOUTS[i]?.name} | ${short(bestRate)} (${rates.map(short).join('/')}) | ${(bestRate / limit).toFixed(2)} | ${Math.min(...(cpu[i] as number[])).toFixed(2)} (${(cpu[i] as number[]).map((x) => x.toFixed(2)).join('/')}) | ${sizes[i]} | ${cells.join(' | ')} |`,
      );
      await db.query(`truncate ${table}`);
    }
    process.stdout.write(`${report.join('\n')}\n`);
  } finally {
    await db.query(`drop schema if exists ${quoteIdent(schema)} cascade`).catch(() => undefined);
    await db.end();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
