/**
 * History reads for the HTTP API (pipeline/history-api.ts) and `tickstream export`: the ticks or
 * 1-minute bars of one symbol in a UTC range `[from, to)`, all sources or one, in key order
 * (ticks: time, source, seq; bars: start, source). A page is read from a server-side cursor in a
 * read-only repeatable-read transaction, `fetchRows` rows at a time, and the caller asks for the
 * next batch only once it has written the last: the range is never held in memory, and a reader
 * that stops reading stops Postgres. The page's next key is computed first in the same snapshot
 * (so the rows and the key agree even while the loader inserts).
 *
 * Rows come as arrays in the order of `HISTORY_COLUMNS[kind]`: times as epoch milliseconds,
 * bigint columns as numbers (exact below 2^53: seqs, volumes and flags are far below).
 */
import pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import { ErrorCode, TickstreamError } from '../../codecs/errors.js';
import { quoteIdent } from './migrate.js';

export type HistoryKind = 'ticks' | 'bars';

/** Column names and types of each kind, in row order (the names of the Postgres columns). */
export const HISTORY_COLUMNS = {
  ticks: [
    ['source', 'text'],
    ['seq', 'int64'],
    ['symbol', 'text'],
    ['time', 'time'],
    ['server_time_msc', 'int64'],
    ['bid', 'float64'],
    ['ask', 'float64'],
    ['last', 'float64'],
    ['volume', 'int64'],
    ['volume_real', 'float64'],
    ['flags', 'int32'],
  ],
  bars: [
    ['source', 'text'],
    ['symbol', 'text'],
    ['start', 'time'],
    ['open', 'float64'],
    ['high', 'float64'],
    ['low', 'float64'],
    ['close', 'float64'],
    ['tick_count', 'int32'],
    ['spread_min', 'float64'],
    ['spread_max', 'float64'],
    ['spread_avg', 'float64'],
    ['last_open', 'float64?'],
    ['last_high', 'float64?'],
    ['last_low', 'float64?'],
    ['last_close', 'float64?'],
    ['volume', 'float64'],
    ['last_seq', 'int64'],
  ],
} as const satisfies Record<HistoryKind, readonly (readonly [string, ColumnType])[]>;

/** `time`: epoch ms UTC; `?`: may be null. */
export type ColumnType = 'text' | 'int64' | 'int32' | 'float64' | 'float64?' | 'time';
export type HistoryValue = string | number | null;
export type HistoryRow = HistoryValue[];

/** A row's place in key order; `seq` is 0 for bars (a bar's key is its start and source). */
export interface HistoryKey {
  timeMs: number;
  source: string;
  seq: number;
}

export interface HistoryRange {
  kind: HistoryKind;
  symbol: string;
  /** One source only; all sources when left out. */
  source?: string;
  fromMs: number;
  /** Exclusive. */
  toMs: number;
  /** Rows strictly after this key (the `next` of the page before). */
  after?: HistoryKey;
  /** Rows at most, with `next` computed; left out: the whole range (an export), `next` null. */
  limit?: number;
}

export interface HistoryPage {
  /** The key of the page's last row when more rows follow it in the range, else null. */
  readonly next: HistoryKey | null;
  /** The page's rows, a batch at a time; ends (and frees the connection) when read to the end or returned early. */
  batches(): AsyncGenerator<HistoryRow[]>;
  /**
   * The page as text made by Postgres (`COPY … TO STDOUT`), in chunks of about 64 KiB: CSV with a
   * header line, or JSON lines (one object per row, keys in column order, `null` for a missing
   * value); the same rows and columns as `batches`, times ISO-8601 UTC with milliseconds. Use it
   * or `batches`, not both.
   */
  text(format: 'csv' | 'jsonl'): AsyncGenerator<Uint8Array>;
  /** Frees the connection without reading (a HEAD request, an error before streaming). */
  close(): Promise<void>;
}

export interface HistoryStoreOptions {
  postgresUrl: string;
  schema: string;
  /** Pages read at once at most (Postgres connections); `open` refuses more with ERR_LIMIT. */
  maxQueries: number;
  /** Rows per FETCH from the cursor. */
  fetchRows: number;
}

/** int8 (oid 20) as a number rather than pg's default string. */
const INT8 = 20;
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8 ? Number : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

/** ISO-8601 UTC with milliseconds, as the API's other formats write times. */
const isoText = (column: string) => `to_char(${column} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

/** The CSV select list of a kind: the columns, times as ISO text. */
function csvSelect(kind: HistoryKind): string {
  return HISTORY_COLUMNS[kind]
    .map(([name, type]) => (type === 'time' ? `${isoText(name)} as ${name}` : name))
    .join(', ');
}

/**
 * One JSON object per row, built as text in Postgres: strings through to_json (escaped), numbers
 * in their shortest exact text form, a missing value `null`.
 */
function jsonSelect(kind: HistoryKind): string {
  const parts = HISTORY_COLUMNS[kind].map(([name, type], i) => {
    const key = `'${i ? ',' : '{'}"${name}":'`;
    const value =
      type === 'text'
        ? `to_json(${name})::text`
        : type === 'time'
          ? `'"' || ${isoText(name)} || '"'`
          : type === 'float64?'
            ? `coalesce(${name}::text, 'null')`
            : `${name}::text`;
    return `${key} || ${value}`;
  });
  return `${parts.join(' || ')} || '}'`;
}

/**
 * COPY options per text format. JSON lines go out as one CSV column whose quote and delimiter
 * are control characters JSON text never holds raw (to_json escapes them), so nothing is quoted.
 */
const COPY_OPTIONS = {
  csv: 'format csv, header',
  jsonl: "format csv, delimiter e'\\x02', quote e'\\x01'",
};

const SQL: Record<HistoryKind, { select: string; table: string; time: string; order: string }> = {
  ticks: {
    select:
      'source, seq, symbol, (extract(epoch from time) * 1000)::int8, server_time_msc, bid, ask, last, volume, volume_real, flags::int4',
    table: 'ticks',
    time: 'time',
    order: 'time, source, seq',
  },
  bars: {
    select:
      'source, symbol, (extract(epoch from start) * 1000)::int8, open, high, low, close, tick_count, spread_min, spread_max, spread_avg, last_open, last_high, last_low, last_close, volume, last_seq',
    table: 'bars_1m',
    time: 'start',
    order: 'start, source',
  },
};

const iso = (ms: number) => new Date(ms).toISOString();

/** The source name of the merged feeds (issue 14): their ticks are in `ticks_merged`, their bars in `bars_1m`. */
export const MERGED_SOURCE = 'merged';

/** Ticks of `source=merged` come from `ticks_merged`, where `source` names each tick's origin. */
function readsMerged(range: HistoryRange): boolean {
  return range.kind === 'ticks' && range.source === MERGED_SOURCE;
}

function tableOf(range: HistoryRange): string {
  return readsMerged(range) ? 'ticks_merged' : SQL[range.kind].table;
}

/**
 * The WHERE clause of a range (the index on (symbol, time) bounds it). `bind` turns a value into
 * SQL: a `$n` parameter, or an escaped literal where Postgres takes no parameters (COPY).
 */
function where(range: HistoryRange, bind: (value: string | number) => string): string {
  const t = SQL[range.kind].time;
  let text = `symbol = ${bind(range.symbol)} and ${t} >= ${bind(iso(range.fromMs))}::timestamptz and ${t} < ${bind(iso(range.toMs))}::timestamptz`;
  if (range.source !== undefined && !readsMerged(range)) text += ` and source = ${bind(range.source)}`;
  const a = range.after;
  if (a) {
    const at = `${bind(iso(a.timeMs))}::timestamptz`;
    const source = bind(a.source);
    // The plain bound lets the index start at the key's time; the row comparison breaks ties.
    text += ` and ${t} >= ${at}`;
    text +=
      range.kind === 'ticks'
        ? ` and (time, source, seq) > (${at}, ${source}, ${bind(a.seq)}::int8)`
        : ` and (start, source) > (${at}, ${source})`;
  }
  return text;
}

/** `where` with parameters: the text and its values. */
function whereParams(range: HistoryRange): { text: string; values: unknown[] } {
  const values: unknown[] = [];
  const text = where(range, (v) => {
    values.push(v);
    return `$${values.length}`;
  });
  return { text, values };
}

/** Bytes a text chunk gathers before it is passed on (COPY sends a message per row). */
const TEXT_CHUNK_BYTES = 64 * 1024;

export class HistoryStore {
  readonly #o: HistoryStoreOptions;
  readonly #pool: pg.Pool;
  #open = 0;
  /** Ends of the pages being read: `close` cuts them. */
  readonly #ends = new Set<(err?: Error) => Promise<void>>();

  constructor(options: HistoryStoreOptions) {
    this.#o = options;
    this.#pool = new pg.Pool({ connectionString: options.postgresUrl, max: options.maxQueries });
    // An idle pooled connection that Postgres dropped must not end the process.
    this.#pool.on('error', () => undefined);
  }

  /** Pages being read now. */
  get openPages(): number {
    return this.#open;
  }

  async open(range: HistoryRange): Promise<HistoryPage> {
    if (this.#open >= this.#o.maxQueries)
      throw new TickstreamError(
        ErrorCode.LIMIT,
        `${this.#o.maxQueries} history reads are running already (historyMaxQueries): retry in a moment`,
      );
    this.#open++;
    let client: pg.PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (err) {
      this.#open--;
      throw new TickstreamError(
        ErrorCode.POSTGRES,
        `history: cannot reach Postgres (${(err as Error).message}): check --postgres-url and that Postgres runs`,
      );
    }
    const sql = SQL[range.kind];
    const w = whereParams(range);
    let done = false;
    // A checked-out connection that breaks (Postgres restarted, the session killed) emits
    // 'error' outside any query: without a listener that would end the process.
    const broken = (err: Error) => void finish(err);
    client.on('error', broken);
    const finish = async (err?: Error) => {
      if (done) return;
      done = true;
      this.#open--;
      this.#ends.delete(finish);
      client.removeListener('error', broken);
      if (err) {
        client.release(err);
        return;
      }
      try {
        await client.query('commit');
        client.release();
      } catch (e) {
        client.release(e as Error);
      }
    };
    this.#ends.add(finish);
    let next: HistoryKey | null = null;
    try {
      await client.query('begin isolation level repeatable read read only');
      await client.query(`set local search_path to ${quoteIdent(this.#o.schema)}`);
      // Floats in COPY's CSV: shortest exact form whatever the server's default (1: exact since Postgres 12).
      await client.query('set local extra_float_digits = 1');
      // The page's last row, if one more follows it: that row's key is the next page's start.
      const last =
        range.limit === undefined
          ? { rows: [] }
          : await client.query({
              text: `select source, ${range.kind === 'ticks' ? 'seq' : '0::int8'}, (extract(epoch from ${sql.time}) * 1000)::int8 from ${tableOf(range)} where ${w.text} order by ${sql.order} offset ${range.limit - 1} limit 2`,
              values: w.values,
              rowMode: 'array',
              types,
            });
      if (last.rows.length === 2) {
        const [source, seq, timeMs] = last.rows[0] as [string, number, number];
        next = { timeMs, source, seq };
      }
      await client.query({
        text: `declare history_page no scroll cursor for select ${sql.select} from ${tableOf(range)} where ${w.text} order by ${sql.order}${range.limit === undefined ? '' : ` limit ${range.limit}`}`,
        values: w.values,
      });
    } catch (err) {
      await finish(err as Error);
      throw new TickstreamError(
        ErrorCode.POSTGRES,
        `history: Postgres refused the read (${(err as Error).message}): are the tables there yet (the loader creates them at its start) and --postgres-schema right?`,
        { cause: err },
      );
    }
    const fetchRows = this.#o.fetchRows;
    return {
      next,
      close: () => finish(),
      async *text(format) {
        // COPY takes no parameters: the values go in as escaped literals.
        const lit = (v: string | number) => (typeof v === 'number' ? String(v) : client.escapeLiteral(v));
        const limit = range.limit === undefined ? '' : ` limit ${range.limit}`;
        const copy = client.query(
          copyTo(
            `copy (select ${format === 'csv' ? csvSelect(range.kind) : jsonSelect(range.kind)} from ${tableOf(range)} where ${where(range, lit)} order by ${sql.order}${limit}) to stdout (${COPY_OPTIONS[format]})`,
          ),
        );
        let failed: Error | undefined;
        try {
          let parts: Buffer[] = [];
          let size = 0;
          for await (const chunk of copy as AsyncIterable<Buffer>) {
            parts.push(chunk);
            size += chunk.length;
            if (size < TEXT_CHUNK_BYTES) continue;
            yield Buffer.concat(parts, size);
            parts = [];
            size = 0;
          }
          if (size) yield Buffer.concat(parts, size);
        } catch (err) {
          failed = err as Error;
          throw err;
        } finally {
          // Returned early: the COPY is still running; only dropping the connection stops it.
          if (!failed && !copy.readableEnded) failed = new Error('the reader went away mid-COPY');
          copy.destroy();
          await finish(failed);
        }
      },
      async *batches() {
        // finally: also when the reader returns early (a client that went away).
        let failed: Error | undefined;
        try {
          const fetch = () => {
            const q = client.query({ text: `fetch ${fetchRows} from history_page`, rowMode: 'array', types });
            // Awaited below; this only keeps a prefetch abandoned by an early return from being unhandled.
            q.catch(() => undefined);
            return q;
          };
          // One batch ahead: Postgres reads the next rows while the reader sends these (two in memory at most).
          let pending = fetch();
          for (;;) {
            const r = await pending;
            const more = r.rows.length === fetchRows;
            if (more) pending = fetch();
            if (r.rows.length) yield r.rows as HistoryRow[];
            if (!more) break;
          }
        } catch (err) {
          failed = err as Error;
          throw err;
        } finally {
          await finish(failed);
        }
      },
    };
  }

  /** Cuts the pages still being read (their readers get an error) and closes the connections. */
  async close(): Promise<void> {
    for (const end of [...this.#ends]) await end(new Error('serve is stopping'));
    await this.#pool.end();
  }
}
