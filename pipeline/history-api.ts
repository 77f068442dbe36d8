/**
 * The history API on serve's HTTP port (docs/history.md): `GET /api/v1/ticks` and
 * `GET /api/v1/bars` with `symbol`, optional `source`, `from` and `to` (ISO-8601 with a zone, a
 * date, or epoch ms; `to` exclusive), `format=csv|jsonl|arrow`, `limit` and `cursor`. A response
 * is one page of at most `limit` rows in key order, streamed from a Postgres cursor
 * (sinks/postgres/history.ts) with the HTTP connection's backpressure; when more rows follow, the
 * `X-Next-Cursor` header holds the cursor of the next page and `Link` its URL. Same tokens as the
 * websockets. A request it cannot take gets 400 with a JSON error saying what to change.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import { ErrorCode, TickstreamError } from '../codecs/errors.js';
import type { HistoryKey, HistoryKind, HistoryPage, HistoryStore } from '../sinks/postgres/history.js';
import type { HttpHandler, HttpResponse } from '../sinks/ws/server.js';
import { arrowEncoder, CONTENT_TYPES, HISTORY_FORMATS, type HistoryFormat } from './history-formats.js';

export interface HistoryApiOptions {
  store: HistoryStore;
  defaultLimit: number;
  maxLimit: number;
  registry: Registry;
}

export const HISTORY_PATHS: Record<HistoryKind, string> = { ticks: '/api/v1/ticks', bars: '/api/v1/bars' };

const PARAMS = new Set(['symbol', 'source', 'from', 'to', 'format', 'limit', 'cursor', 'token']);
/** Longest symbol or source name taken (the websocket channel limit). */
const MAX_NAME = 199;

class BadRequest extends TickstreamError {
  constructor(message: string) {
    super(ErrorCode.USAGE, message);
  }
}

/** ISO-8601 with a zone (`Z`, `+02:00`), a UTC date (`2024-03-05`), or epoch milliseconds. */
export function parseInstant(name: string, raw: string): number {
  if (/^-?\d{1,16}$/.test(raw)) return Number(raw);
  const dateOnly = /^\d{4}-\d{2}-\d{2}$/.test(raw);
  const zoned = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}(:?\d{2})?)$/i.test(raw);
  const ms = dateOnly || zoned ? Date.parse(raw.replace(' ', 'T')) : Number.NaN;
  if (!Number.isFinite(ms))
    throw new BadRequest(
      `${name}=${raw} is not a time: give ISO-8601 with a zone (2024-03-05T10:00:00Z, 2024-03-05T12:00+02:00), a UTC date (2024-03-05) or epoch milliseconds`,
    );
  return ms;
}

/** The `X-Next-Cursor` token: the kind and the key of the page's last row, base64url. */
export function encodeCursor(kind: HistoryKind, key: HistoryKey): string {
  return Buffer.from(JSON.stringify([kind, key.timeMs, key.seq, key.source])).toString('base64url');
}

function decodeCursor(kind: HistoryKind, token: string): HistoryKey {
  try {
    const v: unknown = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
    if (
      Array.isArray(v) &&
      v.length === 4 &&
      v[0] === kind &&
      Number.isSafeInteger(v[1]) &&
      Number.isSafeInteger(v[2]) &&
      typeof v[3] === 'string'
    )
      return { timeMs: v[1], seq: v[2], source: v[3] };
  } catch {
    // the message below says it
  }
  throw new BadRequest(
    `cursor=${token.slice(0, 80)} is not a cursor of /api/v1/${kind}: pass the X-Next-Cursor value of the page before unchanged`,
  );
}

interface Request {
  kind: HistoryKind;
  symbol: string;
  source?: string;
  fromMs: number;
  toMs: number;
  format: HistoryFormat;
  limit: number;
  after?: HistoryKey;
}

function name(q: URLSearchParams, key: string, required: boolean): string | undefined {
  const v = q.get(key);
  if (v === null || v === '') {
    if (required) throw new BadRequest(`${key} is required (for example ?${key}=EURUSD)`);
    return undefined;
  }
  if (v.length > MAX_NAME || /\p{Cc}/u.test(v))
    throw new BadRequest(`${key} must be 1 to ${MAX_NAME} characters without control characters`);
  return v;
}

function parseRequest(kind: HistoryKind, query: string, o: HistoryApiOptions): Request {
  const q = new URLSearchParams(query);
  for (const key of q.keys())
    if (!PARAMS.has(key))
      throw new BadRequest(`unknown parameter ${key}: the parameters are ${[...PARAMS].join(', ')}`);
  const symbol = name(q, 'symbol', true) as string;
  const source = name(q, 'source', false);
  const from = q.get('from');
  const to = q.get('to');
  if (!from || !to)
    throw new BadRequest('from and to are required: the range is [from, to) in UTC (ISO-8601 or epoch ms)');
  const fromMs = parseInstant('from', from);
  const toMs = parseInstant('to', to);
  if (toMs <= fromMs)
    throw new BadRequest(
      `the range is empty or reversed (from=${from} is not before to=${to}): to is exclusive and must come after from`,
    );
  const format = (q.get('format') ?? 'csv') as HistoryFormat;
  if (!HISTORY_FORMATS.includes(format))
    throw new BadRequest(`format=${format} is not one of ${HISTORY_FORMATS.join(', ')}`);
  const rawLimit = q.get('limit');
  const limit = rawLimit === null ? o.defaultLimit : Number(rawLimit);
  if (!Number.isInteger(limit) || limit < 1 || limit > o.maxLimit)
    throw new BadRequest(
      `limit=${rawLimit} must be a whole number from 1 to ${o.maxLimit} (historyMaxLimit); page with the X-Next-Cursor header for more`,
    );
  const cursor = q.get('cursor');
  return {
    kind,
    symbol,
    ...(source !== undefined ? { source } : {}),
    fromMs,
    toMs,
    format,
    limit,
    ...(cursor ? { after: decodeCursor(kind, cursor) } : {}),
  };
}

const errorBody = (status: number, code: string, message: string): HttpResponse => ({
  status,
  contentType: 'application/json',
  body: `${JSON.stringify({ error: { code, message } })}\n`,
});

/** The URL of the next page: this request's query with `cursor` replaced (the token dropped). */
function nextLink(kind: HistoryKind, query: string, cursor: string): string {
  const q = new URLSearchParams(query);
  q.delete('token');
  q.set('cursor', cursor);
  return `<${HISTORY_PATHS[kind]}?${q.toString()}>; rel="next"`;
}

/** The route handlers of both paths, with their metrics. */
export function historyRoutes(o: HistoryApiOptions): Record<HistoryKind, HttpHandler> {
  const registers = [o.registry];
  const m = {
    requests: new Counter({
      name: 'tickstream_history_requests_total',
      help: 'History API requests, by kind (ticks, bars) and HTTP status',
      labelNames: ['kind', 'status'],
      registers,
    }),
    rows: new Counter({
      name: 'tickstream_history_rows_total',
      help: 'Rows the history API streamed, by kind',
      labelNames: ['kind'],
      registers,
    }),
    open: new Gauge({
      name: 'tickstream_history_open_reads',
      help: 'History API pages being streamed now (each holds a Postgres connection)',
      registers,
      collect() {
        this.set(o.store.openPages);
      },
    }),
  };
  const handler =
    (kind: HistoryKind): HttpHandler =>
    async (req) => {
      let r: Request;
      try {
        r = parseRequest(kind, req.query, o);
      } catch (err) {
        if (!(err instanceof BadRequest)) throw err;
        m.requests.inc({ kind, status: 400 });
        return errorBody(400, err.code, err.message);
      }
      let page: HistoryPage;
      try {
        page = await o.store.open(r);
      } catch (err) {
        if (!(err instanceof TickstreamError)) throw err;
        m.requests.inc({ kind, status: 503 });
        return errorBody(503, err.code, err.message);
      }
      m.requests.inc({ kind, status: 200 });
      const headers: Record<string, string> = {};
      if (page.next) {
        const cursor = encodeCursor(kind, page.next);
        headers['x-next-cursor'] = cursor;
        headers.link = nextLink(kind, req.query, cursor);
      }
      return {
        status: 200,
        contentType: CONTENT_TYPES[r.format],
        headers,
        body: encoded(page, r, (n) => m.rows.inc({ kind }, n)),
      };
    };
  return { ticks: handler('ticks'), bars: handler('bars') };
}

const NEWLINE = 0x0a;

/** The page's bytes; returning early (client gone, HEAD) frees its connection even before the first chunk. */
function encoded(page: HistoryPage, r: Request, counted: (rows: number) => void): AsyncIterable<Uint8Array> {
  async function* chunks(): AsyncGenerator<Uint8Array> {
    if (r.format !== 'arrow') {
      // Postgres writes CSV and JSON lines itself (COPY): rows are counted by their line ends, less CSV's header.
      let lines = r.format === 'csv' ? -1 : 0;
      for await (const chunk of page.text(r.format)) {
        for (let at = chunk.indexOf(NEWLINE); at >= 0; at = chunk.indexOf(NEWLINE, at + 1)) lines++;
        yield chunk;
      }
      counted(Math.max(lines, 0));
      return;
    }
    const enc = arrowEncoder(r.kind);
    const head = enc.head();
    if (head.length) yield head;
    for await (const rows of page.batches()) {
      counted(rows.length);
      yield enc.rows(rows);
    }
    const tail = enc.tail();
    if (tail.length) yield tail;
  }
  return {
    [Symbol.asyncIterator]: () => {
      const it = chunks();
      return {
        next: () => it.next(),
        return: async () => {
          await it.return(undefined);
          await page.close();
          return { done: true, value: undefined };
        },
      };
    },
  };
}
