/**
 * `tickstream export`: ticks or 1-minute bars of symbols in a UTC range, read from Postgres
 * (sinks/postgres/history.ts: a cursor, `historyFetchRows` rows at a time) and written as
 * Parquet, one file per symbol and UTC day (`ticks_EURUSD_2024-03-05.parquet`), snappy
 * compressed, typed columns named as in Postgres: `time`/`start` TIMESTAMP(MILLIS, UTC), prices
 * DOUBLE, seq, volume, server_time_msc and last_seq INT64, flags and tick_count INT32, source and
 * symbol UTF8 strings. Memory is bounded by `--row-group-rows`. A file is written under a
 * temporary name and renamed when complete; days without rows get no file.
 */
import { mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileWriter, ParquetWriter } from 'hyparquet-writer';
import { type CommandSpec, parseCommand } from '../bridge/args.js';
import { ErrorCode, TickstreamError } from '../codecs/errors.js';
import {
  type ColumnType,
  HISTORY_COLUMNS,
  type HistoryKind,
  type HistoryRow,
  HistoryStore,
} from '../sinks/postgres/history.js';
import { configKeys, loadConfig } from './config.js';
import { parseInstant } from './history-api.js';

type SchemaElement = ConstructorParameters<typeof ParquetWriter>[0]['schema'][number];

const out = (line: string) => process.stdout.write(`${line}\n`);
const DAY_MS = 86_400_000;

export const EXPORT_COMMAND = {
  name: 'export',
  summary:
    'Write ticks or 1-minute bars from Postgres as Parquet files, one per symbol and UTC day (snappy, typed columns), for pandas, polars and DuckDB.',
  flags: {
    symbol: { type: 'string', value: 'NAME[,NAME…]', description: 'symbol(s) to export (required)' },
    from: {
      type: 'string',
      value: 'TIME',
      description: 'range start: ISO-8601 with a zone, a UTC date (2024-03-05) or epoch ms (required)',
    },
    to: { type: 'string', value: 'TIME', description: 'range end, exclusive, as --from (required)' },
    source: { type: 'string', value: 'ID', description: 'one source only (default: every source)' },
    out: {
      type: 'string',
      value: 'DIR',
      description: 'directory for the files, created if missing (required)',
    },
    what: { type: 'string', choices: ['ticks', 'bars'], default: 'ticks', description: 'rows to export' },
    'row-group-rows': {
      type: 'number',
      integer: true,
      min: 1,
      default: 100_000,
      description: 'rows per Parquet row group (what the export holds in memory at most)',
    },
  },
  configFlags: configKeys(),
  examples: [
    'tickstream export --symbol EURUSD,GBPUSD --from 2024-03-01 --to 2024-03-08 --out ./parquet',
    'tickstream export --symbol BTCUSD --source broker-a --what bars --from 2024-03-05T00:00Z --to 2024-03-06T00:00Z --out ./bars',
  ],
  notes: [
    'Files are named WHAT[_SOURCE]_SYMBOL_YYYY-MM-DD.parquet (characters other than letters, digits, . _ - become _); an existing file of the same name is replaced.',
  ],
} as const satisfies CommandSpec;

/** A Parquet schema element per column type. */
function element(name: string, type: ColumnType): SchemaElement {
  const repetition_type = type === 'float64?' ? 'OPTIONAL' : 'REQUIRED';
  switch (type) {
    case 'text':
      return {
        name,
        type: 'BYTE_ARRAY',
        converted_type: 'UTF8',
        logical_type: { type: 'STRING' },
        repetition_type,
      };
    case 'int64':
      return { name, type: 'INT64', repetition_type };
    case 'int32':
      return { name, type: 'INT32', repetition_type };
    case 'time':
      return {
        name,
        type: 'INT64',
        converted_type: 'TIMESTAMP_MILLIS',
        logical_type: { type: 'TIMESTAMP', isAdjustedToUTC: true, unit: 'MILLIS' },
        repetition_type,
      };
    default:
      return { name, type: 'DOUBLE', repetition_type };
  }
}

/** Column arrays of a row group, typed as the writer takes them. */
function columnData(kind: HistoryKind, rows: readonly HistoryRow[]) {
  return HISTORY_COLUMNS[kind].map(([name, type], c) => {
    const values = rows.map((r) => r[c]);
    const data =
      type === 'int64' || type === 'time'
        ? BigInt64Array.from(values as number[], BigInt)
        : type === 'int32'
          ? Int32Array.from(values as number[])
          : type === 'float64'
            ? Float64Array.from(values as number[])
            : values;
    return { name, data };
  });
}

const safe = (s: string) => s.replace(/[^A-Za-z0-9._-]/g, '_');
const day = (ms: number) => new Date(ms).toISOString().slice(0, 10);

export interface ExportResult {
  files: { path: string; rows: number; bytes: number }[];
}

export interface ExportOptions {
  store: HistoryStore;
  kind: HistoryKind;
  symbols: readonly string[];
  source?: string;
  fromMs: number;
  toMs: number;
  dir: string;
  rowGroupRows: number;
}

/** Writes the files; returns each one written with its rows and bytes. */
export async function exportParquet(o: ExportOptions): Promise<ExportResult> {
  mkdirSync(o.dir, { recursive: true });
  const schema: SchemaElement[] = [
    { name: 'root', num_children: HISTORY_COLUMNS[o.kind].length },
    ...HISTORY_COLUMNS[o.kind].map(([name, type]) => element(name, type)),
  ];
  const files: ExportResult['files'] = [];
  for (const symbol of o.symbols) {
    for (let start = Math.floor(o.fromMs / DAY_MS) * DAY_MS; start < o.toMs; start += DAY_MS) {
      const name = [o.kind, ...(o.source !== undefined ? [o.source] : []), symbol, day(start)]
        .map(safe)
        .join('_');
      const path = join(o.dir, `${name}.parquet`);
      const partial = `${path}.partial`;
      const page = await o.store.open({
        kind: o.kind,
        symbol,
        ...(o.source !== undefined ? { source: o.source } : {}),
        fromMs: Math.max(start, o.fromMs),
        toMs: Math.min(start + DAY_MS, o.toMs),
      });
      // Created with the first row group: a day without rows gets no file.
      const file: { writer?: ParquetWriter } = {};
      let rows = 0;
      let group: HistoryRow[] = [];
      const flush = async () => {
        file.writer ??= new ParquetWriter({
          writer: fileWriter(partial),
          schema,
          codec: 'SNAPPY',
          createdBy: 'tickstream',
        });
        await file.writer.write({ columnData: columnData(o.kind, group), rowGroupSize: o.rowGroupRows });
        group = [];
      };
      try {
        for await (const batch of page.batches()) {
          rows += batch.length;
          for (const row of batch) {
            group.push(row);
            if (group.length === o.rowGroupRows) await flush();
          }
        }
        if (group.length) await flush();
        if (!file.writer) continue;
        await file.writer.finish();
        renameSync(partial, path);
        files.push({ path, rows, bytes: statSync(path).size });
      } catch (err) {
        rmSync(partial, { force: true });
        throw err;
      }
    }
  }
  return { files };
}

export async function exportMain(argv: string[]): Promise<number> {
  const parsed = parseCommand(EXPORT_COMMAND, argv);
  if (!parsed) return 0;
  const f = parsed.flags;
  const required = (name: 'symbol' | 'from' | 'to' | 'out'): string => {
    const v = f[name];
    if (!v)
      throw new TickstreamError(
        ErrorCode.USAGE,
        `--${name} is required. Run 'tickstream export --help' for the flags it takes.`,
      );
    return v;
  };
  const symbols = required('symbol').split(',').filter(Boolean);
  const fromMs = parseInstant('--from', required('from'));
  const toMs = parseInstant('--to', required('to'));
  const dir = required('out');
  if (toMs <= fromMs)
    throw new TickstreamError(
      ErrorCode.USAGE,
      `--to must come after --from (the range [from, to) is empty or reversed)`,
    );
  const config = loadConfig({
    ...(parsed.configFile ? { file: parsed.configFile } : {}),
    flags: parsed.config,
  });
  const store = new HistoryStore({
    postgresUrl: config.postgresUrl,
    schema: config.postgresSchema,
    maxQueries: 1,
    fetchRows: config.historyFetchRows,
  });
  const started = performance.now();
  try {
    const { files } = await exportParquet({
      store,
      kind: f.what as HistoryKind,
      symbols,
      ...(f.source ? { source: f.source } : {}),
      fromMs,
      toMs,
      dir,
      rowGroupRows: f['row-group-rows'],
    });
    for (const file of files) out(`${file.path}\t${file.rows} rows\t${file.bytes} bytes`);
    const rows = files.reduce((s, x) => s + x.rows, 0);
    const bytes = files.reduce((s, x) => s + x.bytes, 0);
    out(
      `export: ${rows} ${f.what} in ${files.length} file(s), ${bytes} bytes, in ${((performance.now() - started) / 1000).toFixed(2)} s to ${dir}`,
    );
    return 0;
  } finally {
    await store.close();
  }
}
