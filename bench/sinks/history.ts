/**
 * The read side of Postgres against psql, in the same run, on the same rows: a private
 * `tsbench_<hex>` schema (the project's migrations) holding N ticks of one symbol from two
 * sources over one UTC day, made by SQL (`generate_series`), then ANALYZEd.
 *
 * - history API: `GET /api/v1/ticks?format=csv` of the whole day (one page, `limit` = N) through
 *   a real WsServer (uWS) with the history routes, read to the end by `fetch` in this process;
 *   against `psql -c "\copy (select … order by time, source, seq) to stdout (format csv)"` of
 *   the same rows, its output read to the end through a pipe. Peers: the same request as JSON
 *   lines and as Arrow.
 * - Parquet export: `exportParquet` of the day (one file, snappy, 100 000-row groups); against
 *   `psql -c "\copy (select …) to '<file>' (format csv)"`. Bytes per tick of both files are in
 *   the settings.
 *
 * Rounds alternate native and ours; the best of each counts (shared machine). The schema and the
 * files are removed at the end.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { Registry } from 'prom-client';
import { exportParquet } from '../../pipeline/export.js';
import { HISTORY_PATHS, historyRoutes } from '../../pipeline/history-api.js';
import { HistoryStore } from '../../sinks/postgres/history.js';
import { migrate, quoteIdent } from '../../sinks/postgres/migrate.js';
import { WsServer } from '../../sinks/ws/server.js';
import type { Comparison } from '../report.js';
import { best, randomTag, short } from './common.js';

const URL_ = process.env['TICKSTREAM_POSTGRES_URL'] ?? 'postgres://postgres@127.0.0.1:5432/tickstream';
const DAY = '2024-03-05';
const FETCH_ROWS = 5000; // historyFetchRows default
const ROW_GROUP = 100_000; // export --row-group-rows default
const SELECT =
  'select source, seq, symbol, time, server_time_msc, bid, ask, last, volume, volume_real, flags from ticks';

/** Runs psql with one command; resolves to the bytes it printed (read to the end) and the time it took. */
function psql(schema: string, command: string): Promise<{ seconds: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn('psql', [URL_, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-c', command], {
      env: { ...process.env, PGOPTIONS: `-c search_path=${quoteIdent(schema)}` },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let bytes = 0;
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      bytes += d.length;
    });
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0
        ? resolve({ seconds: (performance.now() - t0) / 1000, bytes })
        : reject(new Error(`psql exited with ${code}: ${err.trim()}`)),
    );
  });
}

async function readAll(url: string): Promise<{ seconds: number; bytes: number }> {
  const t0 = performance.now();
  const res = await fetch(url);
  if (res.status !== 200 || !res.body) throw new Error(`GET ${url}: ${res.status}`);
  let bytes = 0;
  for await (const chunk of res.body) bytes += (chunk as Uint8Array).length;
  return { seconds: (performance.now() - t0) / 1000, bytes };
}

export async function compare({ quick }: { quick: boolean }): Promise<Comparison[]> {
  const n = quick ? 200_000 : 1_000_000;
  const rounds = quick ? 2 : 3;
  const schema = `tsbench_${randomTag()}`;
  const dir = mkdtempSync(join(tmpdir(), 'tsbench-history-'));
  const client = new pg.Client({ connectionString: URL_ });
  client.on('error', () => undefined);
  const store = new HistoryStore({
    postgresUrl: URL_,
    schema,
    maxQueries: 2,
    fetchRows: FETCH_ROWS,
  });
  const registry = new Registry();
  const server = new WsServer({
    host: '127.0.0.1',
    port: 0,
    tokens: [],
    maxBackpressureBytes: 1 << 20,
    slowConsumerPolicy: 'conflate',
    maxClients: 10,
    maxChannelsPerClient: 10,
    snapshotsPerTurn: 10,
    registry,
    logger: pino({ level: 'warn' }),
  });
  try {
    await client.connect();
    await migrate(client, schema);
    await client.query(`set search_path to ${quoteIdent(schema)}`);
    await client.query('select tickstream_ensure_partitions($1::date, $1::date)', [DAY]);
    // Two sources, one tick each per 2 × 86.4 s / n, random-walk-ish prices, every column filled.
    await client.query(
      `insert into ticks
       select case when g % 2 = 0 then 'bench-a' else 'bench-b' end, g / 2 + 1, 'EURUSD',
              $1::timestamptz + make_interval(secs => (g / 2) * (86399.0 / ($2::int / 2))),
              (extract(epoch from $1::timestamptz) * 1000)::int8 + (g / 2) * (86399000 / ($2::int / 2)),
              1.08 + sin(g / 1000.0) / 100, 1.08012 + sin(g / 1000.0) / 100, 0, g % 7, (g % 7)::float8, 6
       from generate_series(0, $2::int - 1) g`,
      [`${DAY}T00:00:00Z`, n],
    );
    await client.query('analyze ticks');
    const routes = historyRoutes({ store, defaultLimit: n, maxLimit: n, registry });
    server.route(HISTORY_PATHS.ticks, routes.ticks, { auth: true });
    const port = await server.start();
    const next = new Date(Date.parse(DAY) + 86_400_000).toISOString().slice(0, 10);
    const range = `where symbol = 'EURUSD' and time >= '${DAY}Z' and time < '${next}Z' order by time, source, seq`;
    const url = (format: string) =>
      `http://127.0.0.1:${port}${HISTORY_PATHS.ticks}?symbol=EURUSD&from=${DAY}&to=${next}&limit=${n}&format=${format}`;
    const csvFile = join(dir, 'ticks.csv');
    const parquetDir = join(dir, 'parquet');

    // Warm-up (JIT, the table's pages in the cache): not timed.
    await readAll(url('csv'));
    const api: number[] = [];
    const apiPsql: number[] = [];
    const exp: number[] = [];
    const expPsql: number[] = [];
    let apiBytes = 0;
    let psqlBytes = 0;
    let parquetBytes = 0;
    for (let r = 0; r < rounds; r++) {
      const p = await psql(schema, `\\copy (${SELECT} ${range}) to stdout (format csv)`);
      apiPsql.push(n / p.seconds);
      psqlBytes = p.bytes;
      const a = await readAll(url('csv'));
      api.push(n / a.seconds);
      apiBytes = a.bytes;
      expPsql.push(
        n / (await psql(schema, `\\copy (${SELECT} ${range}) to '${csvFile}' (format csv)`)).seconds,
      );
      const t0 = performance.now();
      const { files } = await exportParquet({
        store,
        kind: 'ticks',
        symbols: ['EURUSD'],
        fromMs: Date.parse(DAY),
        toMs: Date.parse(next),
        dir: parquetDir,
        rowGroupRows: ROW_GROUP,
      });
      exp.push(n / ((performance.now() - t0) / 1000));
      if (files.length !== 1 || files[0]?.rows !== n)
        throw new Error(`export wrote ${JSON.stringify(files)}`);
      parquetBytes = files[0].bytes;
    }
    const jsonl = await readAll(url('jsonl'));
    const arrow = await readAll(url('arrow'));
    const csvBytes = statSync(csvFile).size;
    const common = {
      postgres: new URL(URL_).host,
      table: `${schema}.ticks (migrations applied), ${n} rows of one symbol, 2 sources, one UTC day`,
      rounds,
      best_of: 'rounds (shared machine), alternating native and ours',
    };
    const apiBest = best(api);
    const apiNative = best(apiPsql);
    const expBest = best(exp);
    const expNative = best(expPsql);
    return [
      {
        name: 'history API: a day of ticks as CSV over HTTP (one page)',
        ours: {
          label: 'GET /api/v1/ticks?format=csv (uWS, Postgres cursor)',
          value: apiBest,
          unit: 'rows/s',
        },
        native: { label: 'psql \\copy (select …) to stdout (csv)', value: apiNative, unit: 'rows/s' },
        ratio_to_native: apiBest / apiNative,
        settings: {
          ...common,
          fetch_rows: FETCH_ROWS,
          ours_bytes: apiBytes,
          native_bytes: psqlBytes,
          ours_rounds: api.map(short).join('/'),
          native_rounds: apiPsql.map(short).join('/'),
          client: 'fetch in the bench process, body read to the end',
        },
        peers: [
          {
            label: 'format=jsonl',
            value: n / jsonl.seconds,
            unit: 'rows/s',
            ratio_ours_to_peer: apiBest / (n / jsonl.seconds),
          },
          {
            label: 'format=arrow',
            value: n / arrow.seconds,
            unit: 'rows/s',
            ratio_ours_to_peer: apiBest / (n / arrow.seconds),
          },
        ],
        note: `bytes/row: csv ${(apiBytes / n).toFixed(1)}, jsonl ${(jsonl.bytes / n).toFixed(1)}, arrow ${(arrow.bytes / n).toFixed(1)}`,
      },
      {
        name: 'export: a day of ticks to one Parquet file (snappy)',
        ours: { label: 'tickstream export (hyparquet-writer)', value: expBest, unit: 'rows/s' },
        native: { label: "psql \\copy (select …) to 'file' (csv)", value: expNative, unit: 'rows/s' },
        ratio_to_native: expBest / expNative,
        settings: {
          ...common,
          fetch_rows: FETCH_ROWS,
          row_group_rows: ROW_GROUP,
          parquet_bytes: parquetBytes,
          parquet_bytes_per_tick: Number((parquetBytes / n).toFixed(2)),
          csv_bytes: csvBytes,
          csv_bytes_per_tick: Number((csvBytes / n).toFixed(2)),
          ours_rounds: exp.map(short).join('/'),
          native_rounds: expPsql.map(short).join('/'),
        },
        note: `bytes/tick: parquet ${(parquetBytes / n).toFixed(2)}, csv ${(csvBytes / n).toFixed(2)}`,
      },
    ];
  } finally {
    await server.close();
    await store.close();
    await client.query(`drop schema if exists ${quoteIdent(schema)} cascade`).catch(() => undefined);
    await client.end().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}
