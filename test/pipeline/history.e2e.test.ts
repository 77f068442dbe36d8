// The history API (GET /api/v1/ticks, /api/v1/bars) and `tickstream export` against a real
// serve fed by sim from the shared tick files, compared with the rows of `ticks` and `bars_1m`
// read straight from Postgres. Two sources stream the same BTCUSD file (every time comes twice:
// the order's tie-break by source and seq is exercised), a third one EURUSD across two UTC days.
import { once } from 'node:events';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { tableFromIPC } from 'apache-arrow';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gauge, scrape } from '../helpers/http-probes.js';
import {
  captured,
  dataDir,
  isolatedNames,
  POSTGRES_DB,
  removeNames,
  runCli,
  runSim,
  type ServeProcess,
  serveArgs,
  startServe,
  waitFor,
} from '../helpers/procs.js';

const TOKEN = 'history-test-token';
const STALL_MS = 2000;
const BTC = `${dataDir}dukascopy_BTCUSD_ticks_20230220T12_14_utc.csv`;
const EUR = `${dataDir}histdata_EURUSD_T_20200101_nautilus.csv`;

type Row = Record<string, string | number | null>;

const TICK_COLS =
  'source, seq, symbol, (extract(epoch from time) * 1000)::int8 as time, server_time_msc, bid, ask, last, volume, volume_real, flags';
const BAR_COLS =
  'source, symbol, (extract(epoch from start) * 1000)::int8 as start, open, high, low, close, tick_count, spread_min, spread_max, spread_avg, last_open, last_high, last_low, last_close, volume, last_seq';
const NUMERIC = new Set([
  'seq',
  'server_time_msc',
  'bid',
  'ask',
  'last',
  'volume',
  'volume_real',
  'flags',
  'open',
  'high',
  'low',
  'close',
  'tick_count',
  'spread_min',
  'spread_max',
  'spread_avg',
  'last_open',
  'last_high',
  'last_low',
  'last_close',
  'last_seq',
]);

/** A CSV or JSON lines row with times as epoch ms and numbers as numbers, like the Postgres rows. */
function normal(raw: Record<string, unknown>): Row {
  const out: Row = {};
  for (const [k, v] of Object.entries(raw)) {
    if (k === 'time' || k === 'start') out[k] = typeof v === 'string' ? Date.parse(v) : Number(v);
    else if (NUMERIC.has(k)) out[k] = v === null || v === '' ? null : Number(v);
    else out[k] = v as string;
  }
  return out;
}

function parseCsv(text: string): Row[] {
  const [head, ...lines] = text.split('\n').filter(Boolean);
  const names = (head as string).split(',');
  return lines.map((line) => normal(Object.fromEntries(line.split(',').map((v, i) => [names[i], v]))));
}

const parseJsonl = (text: string): Row[] =>
  text
    .split('\n')
    .filter(Boolean)
    .map((l) => normal(JSON.parse(l) as Record<string, unknown>));

describe('history API and Parquet export (real serve, sim, Postgres)', () => {
  const n = isolatedNames('history');
  const dir = mkdtempSync(join(tmpdir(), 'history-'));
  let serve: ServeProcess;
  let db: pg.Client;
  const url = (path: string, params: Record<string, string>, token: string | null = TOKEN) =>
    `http://127.0.0.1:${serve.httpPort}${path}?${new URLSearchParams({ ...params, ...(token ? { token } : {}) })}`;
  const get = (path: string, params: Record<string, string>, token: string | null = TOKEN) =>
    fetch(url(path, params, token), { signal: AbortSignal.timeout(30_000) });

  /** Rows of Postgres itself, in the API's order. */
  async function pgRows(kind: 'ticks' | 'bars', where: string, values: unknown[]): Promise<Row[]> {
    const sql =
      kind === 'ticks'
        ? `select ${TICK_COLS} from ticks where ${where} order by time, source, seq`
        : `select ${BAR_COLS} from bars_1m where ${where} order by start, source`;
    return (await db.query<Row>({ text: sql, values })).rows;
  }

  beforeAll(async () => {
    serve = await startServe(
      serveArgs(n, [
        '--ws-tokens',
        TOKEN,
        '--history-fetch-rows',
        '700',
        '--history-max-queries',
        '2',
        '--history-stall-timeout-ms',
        String(STALL_MS),
      ]),
    );
    const sim = (file: string, source: string) =>
      runSim(['--file', file, '--source', source, '--port', String(serve.ingressPort)]);
    const results = await Promise.all([sim(BTC, 'ha'), sim(BTC, 'hb'), sim(EUR, 'hc')]);
    for (const r of results) expect(r.code, r.output).toBe(0);
    const total = results.reduce((s, r) => s + captured(r.output), 0);
    db = new pg.Client({ connectionString: POSTGRES_DB });
    await db.connect();
    // bigint as numbers (seqs and volumes are far below 2^53), as the API writes them.
    pg.types.setTypeParser(20, Number);
    await db.query(`set search_path to "${n.schema}"`);
    const count = async (sql: string) => {
      try {
        return Number((await db.query<{ n: string }>(sql)).rows[0]?.n);
      } catch {
        return 0; // the loader has not created the tables yet
      }
    };
    expect(
      await waitFor(async () => (await count('select count(*) as n from ticks')) === total, 90_000),
    ).toBe(true);
    // Bars come through their own topic: wait until both BTCUSD sources have all their closed minutes.
    let bars = -1;
    expect(
      await waitFor(async () => {
        const now = await count("select count(*) as n from bars_1m where symbol = 'BTCUSD'");
        const settled = now === bars && now >= 2 * 119;
        bars = now;
        return settled;
      }, 90_000),
    ).toBe(true);
  }, 240_000);

  afterAll(async () => {
    expect(await serve?.stop()).toBe(0);
    await db?.end();
    await removeNames([n]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('csv of every source equals the rows of ticks, in (time, source, seq) order, ties between sources included', async () => {
    const res = await get('/api/v1/ticks', {
      symbol: 'BTCUSD',
      from: '2023-02-20T12:30:00Z',
      to: '2023-02-20T13:30:00.000+00:00',
      limit: '1000000',
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/csv; charset=utf-8');
    expect(res.headers.get('x-next-cursor')).toBeNull();
    const rows = parseCsv(await res.text());
    const want = await pgRows('ticks', "symbol = 'BTCUSD' and time >= $1 and time < $2", [
      '2023-02-20T12:30:00Z',
      '2023-02-20T13:30:00Z',
    ]);
    expect(want.length).toBeGreaterThan(10_000);
    expect(new Set(want.map((r) => r['source']))).toEqual(new Set(['ha', 'hb']));
    expect(rows).toEqual(want);
  });

  it('jsonl of one source across two UTC days (epoch ms bounds) equals the rows of ticks', async () => {
    const from = Date.parse('2020-01-01T00:00:00Z');
    const to = Date.parse('2020-01-03T00:00:00Z');
    const res = await get('/api/v1/ticks', {
      symbol: 'EURUSD',
      source: 'hc',
      from: String(from),
      to: String(to),
      format: 'jsonl',
      limit: '100000',
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/x-ndjson');
    const rows = parseJsonl(await res.text());
    const want = await pgRows('ticks', "symbol = 'EURUSD' and source = 'hc' and time >= $1 and time < $2", [
      new Date(from),
      new Date(to),
    ]);
    expect(new Set(want.map((r) => new Date(r['time'] as number).toISOString().slice(0, 10)))).toEqual(
      new Set(['2020-01-01', '2020-01-02']),
    );
    expect(rows).toEqual(want);
  });

  it('arrow decodes to typed columns equal to the rows of ticks', async () => {
    const res = await get('/api/v1/ticks', {
      symbol: 'BTCUSD',
      from: '2023-02-20',
      to: '2023-02-21',
      format: 'arrow',
      limit: '100000',
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/vnd.apache.arrow.stream');
    const table = tableFromIPC(new Uint8Array(await res.arrayBuffer()));
    expect(table.schema.fields.map((f) => `${f.name}:${f.type}`)).toEqual([
      'source:Utf8',
      'seq:Int64',
      'symbol:Utf8',
      'time:Timestamp<MILLISECOND, UTC>',
      'server_time_msc:Int64',
      'bid:Float64',
      'ask:Float64',
      'last:Float64',
      'volume:Int64',
      'volume_real:Float64',
      'flags:Int32',
    ]);
    const rows = table.toArray().map((r) => normal(r.toJSON() as Record<string, unknown>));
    const want = await pgRows('ticks', "symbol = 'BTCUSD' and time >= $1 and time < $2", [
      '2023-02-20Z',
      '2023-02-21Z',
    ]);
    expect(want.length).toBe(2 * 14_716);
    expect(rows).toEqual(want);
  });

  it('paging by cursor walks the whole range with no row repeated or missed (ticks and bars)', async () => {
    for (const [path, kind, limit] of [
      ['/api/v1/ticks', 'ticks', 997],
      ['/api/v1/bars', 'bars', 50],
    ] as const) {
      const params = { symbol: 'BTCUSD', from: '2023-02-20', to: '2023-02-21', limit: String(limit) };
      let next: string | null = url(path, params);
      const all: Row[] = [];
      let pages = 0;
      while (next && pages < 100) {
        const res: Response = await fetch(next, {
          headers: { authorization: `Bearer ${TOKEN}` },
          signal: AbortSignal.timeout(30_000),
        });
        expect(res.status).toBe(200);
        const rows = parseCsv(await res.text());
        expect(rows.length).toBeLessThanOrEqual(limit);
        all.push(...rows);
        pages++;
        const link = res.headers.get('link');
        const cursor = res.headers.get('x-next-cursor');
        // The Link URL carries the query without the token: the header authorises the next page.
        next = link ? `http://127.0.0.1:${serve.httpPort}${/^<([^>]+)>; rel="next"$/.exec(link)?.[1]}` : null;
        if (cursor) expect(link).toContain(`cursor=${cursor}`);
        else expect(link).toBeNull();
        if (next) expect(next).not.toContain(TOKEN);
      }
      const want =
        kind === 'ticks'
          ? await pgRows('ticks', "symbol = 'BTCUSD' and time >= $1 and time < $2", [
              '2023-02-20Z',
              '2023-02-21Z',
            ])
          : await pgRows('bars', "symbol = 'BTCUSD' and start >= $1 and start < $2", [
              '2023-02-20Z',
              '2023-02-21Z',
            ]);
      expect(pages).toBe(Math.ceil(want.length / limit));
      expect(all).toEqual(want);
    }
  });

  it('bars as csv and jsonl equal the rows of bars_1m (last_* null without trades)', async () => {
    const csv = await get('/api/v1/bars', {
      symbol: 'BTCUSD',
      from: '2023-02-20T12:00Z',
      to: '2023-02-20T14:00Z',
    });
    expect(csv.status).toBe(200);
    const all = await pgRows('bars', "symbol = 'BTCUSD' and start >= $1 and start < $2", [
      '2023-02-20T12:00Z',
      '2023-02-20T14:00Z',
    ]);
    expect(all.length).toBeGreaterThanOrEqual(2 * 119);
    expect(parseCsv(await csv.text())).toEqual(all);
    const jsonl = await get('/api/v1/bars', {
      symbol: 'BTCUSD',
      source: 'hb',
      from: '2023-02-20T12:00Z',
      to: '2023-02-20T14:00Z',
      format: 'jsonl',
    });
    const rows = parseJsonl(await jsonl.text());
    expect(rows).toEqual(all.filter((r) => r['source'] === 'hb'));
    expect(rows[0]?.['last_open']).toBeNull();
  });

  it('400 with a JSON error that says what to change for a reversed range and other bad requests', async () => {
    const base = { symbol: 'BTCUSD', from: '2023-02-20T13:00Z', to: '2023-02-20T14:00Z' };
    const cases: [Record<string, string>, RegExp][] = [
      [{ ...base, from: '2023-02-20T14:00Z', to: '2023-02-20T13:00Z' }, /empty or reversed/],
      [{ ...base, to: base.from }, /empty or reversed/],
      [{ ...base, from: '2023-02-20T13:00' }, /not a time: give ISO-8601 with a zone/],
      [{ ...base, format: 'xml' }, /format=xml is not one of csv, jsonl, arrow/],
      [{ ...base, limit: '0' }, /limit=0 must be a whole number from 1 to 1000000/],
      [{ ...base, limit: '1000001' }, /historyMaxLimit/],
      [{ ...base, cursor: 'bm9wZQ' }, /not a cursor of \/api\/v1\/ticks/],
      [{ from: base.from, to: base.to }, /symbol is required/],
      [{ symbol: 'BTCUSD' }, /from and to are required/],
      [{ ...base, sorce: 'ha' }, /unknown parameter sorce/],
    ];
    for (const [params, message] of cases) {
      const res = await get('/api/v1/ticks', params);
      expect(res.status, JSON.stringify(params)).toBe(400);
      expect(res.headers.get('content-type')).toBe('application/json');
      const body = (await res.json()) as { error: { code: string; message: string } };
      expect(body.error.code).toBe('ERR_USAGE');
      expect(body.error.message).toMatch(message);
    }
  });

  it('401 without a token or with a wrong one, on both paths; a Bearer header is taken', async () => {
    const params = { symbol: 'BTCUSD', from: '2023-02-20T13:00Z', to: '2023-02-20T13:01Z' };
    for (const path of ['/api/v1/ticks', '/api/v1/bars']) {
      expect((await get(path, params, null)).status).toBe(401);
      expect((await get(path, params, 'wrong-token')).status).toBe(401);
      const ok = await fetch(url(path, params, null), {
        headers: { authorization: `Bearer ${TOKEN}` },
        signal: AbortSignal.timeout(30_000),
      });
      expect(ok.status).toBe(200);
      await ok.text();
    }
  });

  it('an unknown symbol is an empty range in every format, not an error', async () => {
    const params = { symbol: 'NOSUCH', from: '2023-02-20', to: '2023-02-21' };
    const csv = await get('/api/v1/ticks', params);
    expect(csv.status).toBe(200);
    expect(await csv.text()).toBe(
      'source,seq,symbol,time,server_time_msc,bid,ask,last,volume,volume_real,flags\n',
    );
    expect(await (await get('/api/v1/bars', { ...params, format: 'jsonl' })).text()).toBe('');
    const arrow = tableFromIPC(
      new Uint8Array(await (await get('/api/v1/ticks', { ...params, format: 'arrow' })).arrayBuffer()),
    );
    expect(arrow.numRows).toBe(0);
    expect(arrow.schema.fields).toHaveLength(11);
  });

  it('HEAD answers the headers without a body and frees its Postgres read', async () => {
    const res = await fetch(
      url('/api/v1/ticks', { symbol: 'BTCUSD', from: '2023-02-20', to: '2023-02-21' }),
      {
        method: 'HEAD',
        signal: AbortSignal.timeout(30_000),
      },
    );
    expect(res.status).toBe(200);
    expect(res.headers.get('x-next-cursor')).not.toBeNull();
    expect(await res.text()).toBe('');
    expect(
      await waitFor(async () => gauge(await scrape(serve.httpPort), 'tickstream_history_open_reads') === 0),
    ).toBe(true);
  });

  it('clients that go away after the first chunk free their Postgres reads; the next request is answered whole', async () => {
    const params = { symbol: 'BTCUSD', from: '2023-02-20', to: '2023-02-21', limit: '100000' };
    for (const format of ['csv', 'jsonl', 'arrow']) {
      const ac = new AbortController();
      const res = await fetch(url('/api/v1/ticks', { ...params, format }), { signal: ac.signal });
      expect(res.status).toBe(200);
      const first = await res.body?.getReader().read();
      expect(first?.value?.length).toBeGreaterThan(0);
      ac.abort();
      // Two reads at most (--history-max-queries 2): each is freed before the next request.
      expect(
        await waitFor(async () => gauge(await scrape(serve.httpPort), 'tickstream_history_open_reads') === 0),
      ).toBe(true);
    }
    expect(
      await waitFor(async () => gauge(await scrape(serve.httpPort), 'tickstream_history_open_reads') === 0),
    ).toBe(true);
    const whole = await get('/api/v1/ticks', { ...params, format: 'jsonl' });
    expect(parseJsonl(await whole.text())).toHaveLength(2 * 14_716);
  });

  it('clients that stop reading hold their reads until the stall timeout cuts them; meanwhile a third read gets 503', async () => {
    // More bytes than loopback's socket buffers hold (about 6 MB of JSON lines), so the server
    // meets backpressure from clients that never read.
    const path = `/api/v1/ticks?${new URLSearchParams({ symbol: 'BTCUSD', from: '2023-02-20', to: '2023-02-21', limit: '100000', format: 'jsonl', token: TOKEN })}`;
    const stalled = [0, 1].map(() => {
      const socket = connect(serve.httpPort, '127.0.0.1');
      socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
      socket.pause();
      return { socket, closed: once(socket, 'close') };
    });
    const reads = async () => gauge(await scrape(serve.httpPort), 'tickstream_history_open_reads');
    expect(await waitFor(async () => (await reads()) === 2)).toBe(true);
    const busy = await get('/api/v1/ticks', {
      symbol: 'BTCUSD',
      from: '2023-02-20T13:00Z',
      to: '2023-02-20T13:01Z',
    });
    expect(busy.status).toBe(503);
    expect(((await busy.json()) as { error: { code: string } }).error.code).toBe('ERR_LIMIT');
    // Cut by the server, not by the test: the reads are freed, and the sockets, once read
    // again, find their connections closed.
    expect(await waitFor(async () => (await reads()) === 0)).toBe(true);
    expect(serve.output()).toContain('HTTP client took no data for its stall timeout: response cut');
    for (const s of stalled) {
      s.socket.on('error', () => undefined); // a reset, after the cut
      s.socket.resume();
    }
    await Promise.all(stalled.map((s) => s.closed));
    const after = await get('/api/v1/ticks', {
      symbol: 'BTCUSD',
      from: '2023-02-20T13:00Z',
      to: '2023-02-20T13:01Z',
    });
    expect(after.status).toBe(200);
    await after.text();
  }, 30_000);

  it('export writes one Parquet file per symbol and UTC day that DuckDB reads back equal to the rows', async () => {
    const out = join(dir, 'parquet');
    const cli = (args: string[]) =>
      runCli(
        ['export', '--postgres-schema', n.schema, '--out', out, '--row-group-rows', '4000', ...args],
        {},
        60_000,
      );
    const ticks = await cli(['--symbol', 'EURUSD,BTCUSD', '--from', '2020-01-01', '--to', '2020-01-03']);
    expect(ticks.code, ticks.output).toBe(0);
    const bars = await cli([
      '--what',
      'bars',
      '--symbol',
      'BTCUSD',
      '--source',
      'ha',
      '--from',
      '2023-02-20',
      '--to',
      '2023-02-21',
    ]);
    expect(bars.code, bars.output).toBe(0);
    const btc = await cli(['--symbol', 'BTCUSD', '--from', '2023-02-20T12:00Z', '--to', '2023-02-21T00:00Z']);
    expect(btc.code, btc.output).toBe(0);
    expect(readdirSync(out).sort()).toEqual([
      'bars_ha_BTCUSD_2023-02-20.parquet',
      'ticks_BTCUSD_2023-02-20.parquet',
      'ticks_EURUSD_2020-01-01.parquet',
      'ticks_EURUSD_2020-01-02.parquet',
    ]);
    const duck = await (await DuckDBInstance.create(':memory:')).connect();
    const read = async (file: string, order: string) => {
      const path = join(out, file).replaceAll("'", "''");
      const types = (await duck.runAndReadAll(`describe select * from read_parquet('${path}')`))
        .getRows()
        .map((r) => `${r[0]}:${r[1]}`);
      const result = await duck.runAndReadAll(
        `select * replace (epoch_ms(${order.split(',')[0]}) as ${order.split(',')[0]}) from read_parquet('${path}') order by ${order}`,
      );
      const names = result.columnNames();
      const rows = result
        .getRows()
        .map((r) =>
          Object.fromEntries(
            r.map((v, i) => [names[i], typeof v === 'bigint' ? Number(v) : (v as string | number | null)]),
          ),
        );
      const meta = await duck.runAndReadAll(`select distinct compression from parquet_metadata('${path}')`);
      return { types, rows, compression: meta.getRows().map((r) => r[0]) };
    };
    const TICK_TYPES = [
      'source:VARCHAR',
      'seq:BIGINT',
      'symbol:VARCHAR',
      'time:TIMESTAMP WITH TIME ZONE',
      'server_time_msc:BIGINT',
      'bid:DOUBLE',
      'ask:DOUBLE',
      'last:DOUBLE',
      'volume:BIGINT',
      'volume_real:DOUBLE',
      'flags:INTEGER',
    ];
    for (const [file, day, next] of [
      ['ticks_EURUSD_2020-01-01.parquet', '2020-01-01Z', '2020-01-02Z'],
      ['ticks_EURUSD_2020-01-02.parquet', '2020-01-02Z', '2020-01-03Z'],
    ] as const) {
      const got = await read(file, 'time, source, seq');
      expect(got.types).toEqual(TICK_TYPES);
      expect(got.compression).toEqual(['SNAPPY']);
      const want = await pgRows('ticks', "symbol = 'EURUSD' and time >= $1 and time < $2", [day, next]);
      expect(want.length).toBeGreaterThan(0);
      expect(got.rows).toEqual(want);
    }
    const btcFile = await read('ticks_BTCUSD_2023-02-20.parquet', 'time, source, seq');
    expect(btcFile.rows).toEqual(
      await pgRows('ticks', "symbol = 'BTCUSD' and time >= $1 and time < $2", [
        '2023-02-20T12:00Z',
        '2023-02-21Z',
      ]),
    );
    const barFile = await read('bars_ha_BTCUSD_2023-02-20.parquet', 'start, source');
    expect(barFile.types).toContain('start:TIMESTAMP WITH TIME ZONE');
    expect(barFile.types).toContain('tick_count:INTEGER');
    expect(barFile.rows).toEqual(
      await pgRows('bars', "symbol = 'BTCUSD' and source = 'ha' and start >= $1 and start < $2", [
        '2023-02-20Z',
        '2023-02-21Z',
      ]),
    );
    expect(ticks.output).toMatch(/export: \d+ ticks in 2 file\(s\), \d+ bytes, in [\d.]+ s to /);
    duck.closeSync();
  });
});
