// The whole data path on the real services: `sim` → `serve` → Kafka, Redis, websockets and
// Postgres, checked with clients that share no code with the sinks (test/helpers/independent).
import { existsSync } from 'node:fs';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import {
  type FileTick,
  type JournalTick,
  minuteBars,
  parseDukascopyFile,
  parseMt5ExportFile,
  readJournalTicks,
} from '../helpers/independent.js';
import {
  dataDir,
  isolatedNames,
  POSTGRES_DB,
  REDIS_URL,
  removeNames,
  runSim,
  type ServeProcess,
  serveArgs,
  startServe,
  waitFor,
} from '../helpers/procs.js';

const mt5File = `${dataDir}EURUSD_mt5_export_derived_from_histdata.csv`;
const dukaFile = `${dataDir}dukascopy_BTCUSD_ticks_20230220T12_14_utc.csv`;
const haveData = existsSync(mt5File) && existsSync(dukaFile);
if (!haveData) console.warn(`SKIPPED: ../shared/data tick files not found under ${dataDir}`);

interface WsMessage {
  type: string;
  source?: string;
  symbol?: string;
  ticks?: { seq: number; time: number; bid: number; ask: number; flags: number }[];
}

function wsClient(port: number, channels: string[]) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
  const messages: WsMessage[] = [];
  ws.on('message', (data) => messages.push(JSON.parse(data.toString()) as WsMessage));
  const ready = new Promise<void>((resolve, reject) => {
    ws.once('error', reject);
    ws.once('open', () => {
      ws.send(JSON.stringify({ op: 'subscribe', channels }));
      resolve();
    });
  });
  const ticks = (source: string) =>
    messages
      .filter((m) => (m.type === 'ticks' || m.type === 'snapshot') && m.source === source)
      .flatMap((m) => (m.ticks ?? []).map((t) => ({ ...t, type: m.type, symbol: m.symbol })));
  return { ws, messages, ready, ticks };
}

function expectSameTicks(got: JournalTick[], file: FileTick[], checkFlags: boolean) {
  expect(got.map((t) => t.seq)).toEqual(file.map((_, i) => i + 1));
  const bad = got.findIndex((t, i) => {
    const f = file[i] as FileTick;
    return (
      t.utcMsc !== f.utcMsc ||
      t.bid !== f.bid ||
      t.ask !== f.ask ||
      t.last !== f.last ||
      (checkFlags && t.flags !== f.flags)
    );
  });
  expect(bad === -1 ? null : { got: got[bad], file: file[bad] }).toBeNull();
}

describe.skipIf(!haveData)('sim → serve → Kafka, Redis, websockets, Postgres (independent clients)', () => {
  const n = isolatedNames('e2e');
  const redis = new Redis(REDIS_URL, { lazyConnect: true });
  const db = new pg.Client({ connectionString: POSTGRES_DB });
  let serve: ServeProcess;
  const mt5 = haveData ? parseMt5ExportFile(mt5File, 2) : [];
  const duka = haveData ? parseDukascopyFile(dukaFile) : [];
  let everything: ReturnType<typeof wsClient>;
  let eurusd: ReturnType<typeof wsClient>;
  let journal: JournalTick[] = [];

  beforeAll(async () => {
    await redis.connect();
    await db.connect();
    serve = await startServe(serveArgs(n, ['--source-time-zones', 'mt5a=+2,mt5b=+2,duka=Europe/Athens']));
    everything = wsClient(serve.httpPort, ['*']);
    eurusd = wsClient(serve.httpPort, ['EURUSD']);
    await Promise.all([everything.ready, eurusd.ready]);
    const sim = (file: string, source: string, tz: string[]) =>
      runSim(['--file', file, '--source', source, '--port', String(serve.ingressPort), ...tz]);
    // Three terminals at once; two of them feed the same symbol.
    const results = await Promise.all([
      sim(mt5File, 'mt5a', ['--server-utc-offset', '2']),
      sim(mt5File, 'mt5b', ['--server-utc-offset', '2']),
      sim(dukaFile, 'duka', ['--server-tz', 'Europe/Athens']),
    ]);
    for (const r of results) expect(r.code, r.output).toBe(0);
    journal = await readJournalTicks(n.ticksTopic, { expected: 2 * mt5.length + duka.length });
  }, 180_000);

  afterAll(async () => {
    everything?.ws.close();
    eurusd?.ws.close();
    expect(await serve?.stop()).toBe(0);
    await removeNames([n]);
    await redis.quit();
    await db.end();
  }, 60_000);

  it('Kafka holds every tick exactly once, in seq order per source, in one partition per source, equal to the files', () => {
    for (const [source, file, flags] of [
      ['mt5a', mt5, true],
      ['mt5b', mt5, true],
      ['duka', duka, false],
    ] as const) {
      const mine = journal.filter((t) => t.source === source);
      expect(new Set(mine.map((t) => t.partition)).size).toBe(1);
      expectSameTicks(mine, file, flags);
    }
    // Dukascopy rows carry no flags: the simulator marks which side changed (first tick: both).
    const dukaTicks = journal.filter((t) => t.source === 'duka');
    expect(dukaTicks[0]?.flags).toBe(6);
    expect(
      dukaTicks.every(
        (t, i) =>
          i === 0 ||
          t.flags === ((t.bid !== dukaTicks[i - 1]?.bid ? 2 : 0) | (t.ask !== dukaTicks[i - 1]?.ask ? 4 : 0)),
      ),
    ).toBe(true);
    expect(journal.length).toBe(2 * mt5.length + duka.length);
  });

  it('/status shows every source, disconnected now, with its committed seq equal to what was sent', async () => {
    const status = (await (await fetch(`http://127.0.0.1:${serve.httpPort}/status`)).json()) as {
      sources: { source: string; connected: boolean; committedSeq: number; ticks: number }[];
    };
    const bySource = new Map(status.sources.map((s) => [s.source, s]));
    for (const [source, count] of [
      ['mt5a', mt5.length],
      ['mt5b', mt5.length],
      ['duka', duka.length],
    ] as const) {
      expect(bySource.get(source)).toMatchObject({ connected: false, committedSeq: count, ticks: count });
    }
  });

  it('Postgres holds every tick exactly once with the same values', async () => {
    const total = 2 * mt5.length + duka.length;
    const count = async () =>
      Number((await db.query(`select count(*) as n from "${n.schema}".ticks`)).rows[0].n);
    expect(await waitFor(async () => (await count()) >= total, 60_000)).toBe(true);
    const { rows } = await db.query(
      `select source, seq::float8 as seq, symbol, (extract(epoch from time) * 1000)::float8 as t, bid, ask, last, flags::float8 as flags
       from "${n.schema}".ticks order by source, seq`,
    );
    expect(rows.length).toBe(total);
    for (const [source, file, symbol] of [
      ['mt5a', mt5, 'EURUSD'],
      ['mt5b', mt5, 'EURUSD'],
      ['duka', duka, 'BTCUSD'],
    ] as const) {
      const mine = rows.filter((r) => r.source === source);
      const asJournal = mine.map((r) => ({ ...r, utcMsc: Math.round(r.t) }));
      expect(mine.every((r) => r.symbol === symbol)).toBe(true);
      expectSameTicks(asJournal as unknown as JournalTick[], file, source !== 'duka');
    }
  });

  it('Redis streams hold every tick once, with tick-derived ids, and the latest quote', async () => {
    for (const [source, symbol, file] of [
      ['mt5a', 'EURUSD', mt5],
      ['duka', 'BTCUSD', duka],
    ] as const) {
      const key = `${n.redisPrefix}:ticks:${source}:${symbol}`;
      expect(await waitFor(async () => (await redis.xlen(key)) >= file.length, 20_000)).toBe(true);
      const entries = await redis.xrange(key, '-', '+');
      expect(entries.length).toBe(file.length);
      expect(entries.map(([id]) => id)).toEqual(file.map((t, i) => `${t.utcMsc}-${i + 1}`));
      const lastFields = (entries.at(-1) as [string, string[]])[1];
      const f = Object.fromEntries(
        lastFields.flatMap((v, i, a) => (i % 2 === 0 ? [[v, a[i + 1] as string]] : [])),
      );
      const lastTick = file.at(-1) as FileTick;
      expect([Number(f['b']), Number(f['a'])]).toEqual([lastTick.bid, lastTick.ask]);
      const quote = await redis.hgetall(`${n.redisPrefix}:quote:${source}:${symbol}`);
      expect([Number(quote['bid']), Number(quote['ask']), Number(quote['seq'])]).toEqual([
        lastTick.bid,
        lastTick.ask,
        file.length,
      ]);
    }
  });

  it('a websocket client subscribed to * got every tick of every source in order; one subscribed to EURUSD got both EURUSD sources', async () => {
    expect(
      await waitFor(
        () => everything.ticks('duka').length >= duka.length && eurusd.ticks('mt5b').length >= mt5.length,
      ),
    ).toBe(true);
    for (const [source, file] of [
      ['mt5a', mt5],
      ['mt5b', mt5],
      ['duka', duka],
    ] as const) {
      const got = everything.ticks(source);
      expect(got.map((t) => t.seq)).toEqual(file.map((_, i) => i + 1));
      expect(got.every((t, i) => t.time === file[i]?.utcMsc && t.bid === file[i]?.bid)).toBe(true);
    }
    expect(eurusd.ticks('mt5a').length).toBe(mt5.length);
    expect(eurusd.ticks('mt5b').length).toBe(mt5.length);
    expect(eurusd.ticks('duka').length).toBe(0);
  });

  it('closed 1-minute bars in Postgres and Redis equal bars computed from the file; the open bar may still be open', async () => {
    const expected = minuteBars(mt5);
    const query = () =>
      db.query(
        `select (extract(epoch from start) * 1000)::float8 as start, open, high, low, close, tick_count
         from "${n.schema}".bars_1m where source = 'mt5a' and symbol = 'EURUSD' order by start`,
      );
    expect(await waitFor(async () => (await query()).rows.length >= expected.length - 1, 30_000)).toBe(true);
    const { rows } = await query();
    expect(rows.length).toBeGreaterThanOrEqual(expected.length - 1);
    expect(rows.map((r) => ({ ...r, count: r.tick_count, tick_count: undefined }))).toEqual(
      expected.slice(0, rows.length).map((b) => ({ ...b, tick_count: undefined })),
    );
    const redisBars = await redis.xlen(`${n.redisPrefix}:bars:1m:mt5a:EURUSD`);
    expect(redisBars).toBeGreaterThanOrEqual(expected.length - 1);
    expect(redisBars).toBeLessThanOrEqual(expected.length);
  });

  it('a subscriber that connects mid-stream gets, per symbol, the latest quote as a snapshot, then live ticks', async () => {
    const live = runSim([
      '--synthetic',
      '--symbols',
      '2',
      '--rate',
      '2000',
      '--duration',
      '4',
      '--seed',
      '7',
      '--speed',
      '1',
      '--source',
      'synth',
      '--port',
      String(serve.ingressPort),
    ]);
    expect(await waitFor(() => everything.ticks('synth').length > 1000, 20_000)).toBe(true);
    const late = wsClient(serve.httpPort, ['*']);
    await late.ready;
    const sim = await live;
    expect(sim.code, sim.output).toBe(0);
    expect(
      await waitFor(() => late.ticks('synth').some((t) => t.type === 'ticks')),
      `late client got ${JSON.stringify(late.messages.slice(0, 3)).slice(0, 600)}; sim: ${sim.output}; all: ${everything.ticks('synth').length}`,
    ).toBe(true);
    // Snapshots go out a few per event-loop turn, so another pair's live ticks may come before a
    // pair's snapshot; per pair the snapshot comes first, and live ticks follow it without holes.
    const got = late.ticks('synth');
    const symbols = [...new Set(got.map((t) => t.symbol))];
    const liveTicks: typeof got = [];
    for (const symbol of symbols) {
      const mine = got.filter((t) => t.symbol === symbol);
      const [snap, ...rest] = mine;
      expect(snap?.type, `${symbol}: first message`).toBe('snapshot');
      expect(rest.every((t) => t.type === 'ticks' && t.seq > (snap?.seq ?? 0))).toBe(true);
      liveTicks.push(...rest);
    }
    expect(liveTicks.length).toBeGreaterThan(0);
    const seqs = liveTicks.map((t) => t.seq).sort((a, b) => a - b);
    expect(new Set(seqs).size).toBe(seqs.length);
    expect(seqs.at(-1)).toBe((seqs[0] as number) + seqs.length - 1);
    late.ws.close();
  });
});
