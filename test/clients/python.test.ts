// The Python package (clients/python, importable as `tickstream`) against a real `serve` fed by
// `sim`: its Kafka reader gets the same ticks as the TypeScript reader (sinks/kafka/reader.ts)
// and as the input file, its websocket client gets every tick of a run and, cut mid-stream,
// reconnects and resumes from the journal with no hole or repeat, its Redis helpers read the
// streams; plus the package's own unittest suite.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Bar } from '../../codecs/bar.js';
import { decodeBar, decodeTickRecord, encodeBar, TickRecordEncoder } from '../../codecs/flat-record.js';
import { allocTickBatch } from '../../codecs/tick-batch.js';
import { readJournal } from '../../sinks/kafka/reader.js';
import { type FileTick, parseDukascopyFile, parseMt5ExportFile } from '../helpers/independent.js';
import {
  captured,
  dataDir,
  isolatedNames,
  KAFKA_BROKERS,
  REDIS_URL,
  removeNames,
  runSim,
  type ServeProcess,
  serveArgs,
  startServe,
  waitFor,
} from '../helpers/procs.js';
import { PYTHON, runPython, startPythonLines } from '../helpers/python.js';

const mt5File = `${dataDir}EURUSD_mt5_export_derived_from_histdata.csv`;
const dukaFile = `${dataDir}dukascopy_BTCUSD_ticks_20230220T12_14_utc.csv`;

/** A tick as the Python package's `Tick` prints it (`json.dumps(tick.__dict__)`). */
interface PyTick {
  source: string;
  seq: number;
  symbol: string;
  utc_msc: number;
  server_time_msc: number;
  bid: number;
  ask: number;
  last: number;
  volume: number;
  volume_real: number;
  flags: number;
}

const bySourceSeq = (a: PyTick, b: PyTick) =>
  a.source < b.source ? -1 : a.source > b.source ? 1 : a.seq - b.seq;
const jsonLines = <T>(text: string): T[] =>
  text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as T);

/** Every tick of a topic through the project's TypeScript reader, in the Python field names. */
async function tsJournalTicks(topic: string): Promise<PyTick[]> {
  const out: PyTick[] = [];
  await readJournal({
    brokers: KAFKA_BROKERS,
    topic,
    onMessages: (messages) => {
      for (const m of messages) {
        const b = decodeTickRecord(m.value);
        for (let i = 0; i < b.length; i++)
          out.push({
            source: b.source,
            seq: b.seq[i] as number,
            symbol: b.symbols[b.symbolIndex[i] as number] as string,
            utc_msc: b.utcMsc[i] as number,
            server_time_msc: b.serverTimeMsc[i] as number,
            bid: b.bid[i] as number,
            ask: b.ask[i] as number,
            last: b.last[i] as number,
            volume: b.volume[i] as number,
            volume_real: b.volumeReal[i] as number,
            flags: b.flags[i] as number,
          });
      }
    },
  });
  return out.sort(bySourceSeq);
}

function expectEqualToFile(got: PyTick[], file: FileTick[], checkFlags: boolean) {
  expect(got.map((t) => t.seq)).toEqual(file.map((_, i) => i + 1));
  const bad = got.findIndex((t, i) => {
    const f = file[i] as FileTick;
    return (
      t.utc_msc !== f.utcMsc ||
      t.bid !== f.bid ||
      t.ask !== f.ask ||
      t.last !== f.last ||
      (checkFlags && t.flags !== f.flags)
    );
  });
  expect(bad === -1 ? null : { got: got[bad], file: file[bad] }).toBeNull();
}

/** A TCP proxy to serve's HTTP port whose connections the test can cut and refuse. */
async function cuttableProxy(targetPort: number) {
  const sockets = new Set<Socket>();
  let down = false;
  const server: Server = createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    const upstream = netConnect(targetPort, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    /** Cuts every open connection and refuses new ones until `up()`. */
    cut: () => {
      down = true;
      for (const s of sockets) s.destroy();
    },
    up: () => {
      down = false;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe('the Python package: unit tests (unittest: record decoders, websocket resume rules)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tickstream-py-fixtures-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('decodes records of the TypeScript encoder, and refuses foreign, newer and truncated ones', async () => {
    // Edge values: negative and 2^53-1 integers, a unicode symbol, every flag bit, 3 symbols
    // interleaved, a 1-tick record, an empty one.
    const symbols = ['EURUSD', 'DAX40.cash', 'Ölpreis'];
    const n = 5;
    const b = allocTickBatch('edge-src', symbols, n);
    b.length = n;
    const rows = [
      [1, 0, -1_000, -3_601_000, 1.1, 1.2, 0, 0, 0, 6],
      [2, 1, 0, 0, -5.5, 0, 17_000.25, 2 ** 53 - 1, 0.001, 0xffffffff],
      [2 ** 53 - 1, 2, 32503679999999, 32503672799999, 1e-9, 1e300, -0, 42, 1e15, 0],
      [2 ** 53 - 2, 0, 1577923200065, 1577916000065, 1.1212, 1.12172, 0, 0, 0, 2],
      [2 ** 53 - 3, 1, 1577923200066, 1577916000066, 15000, 15000.5, 15000.25, 3, 3, 24],
    ] as const;
    const rowsOut = rows.map((r, i) => {
      const [seq, sym, srv, utc, bid, ask, last, vol, volr, flags] = r;
      b.seq[i] = seq;
      b.symbolIndex[i] = sym;
      b.serverTimeMsc[i] = srv;
      b.utcMsc[i] = utc;
      b.bid[i] = bid;
      b.ask[i] = ask;
      b.last[i] = last;
      b.volume[i] = vol;
      b.volumeReal[i] = volr;
      b.flags[i] = flags;
      return {
        seq,
        symbol: symbols[sym],
        utc_msc: utc,
        server_time_msc: srv,
        bid,
        ask,
        last,
        volume: vol,
        volume_real: volr,
        flags,
      };
    });
    const encoder = new TickRecordEncoder();
    const cases = [
      { file: 'all.bin', value: encoder.encode(b), rows: rowsOut },
      { file: 'one.bin', value: encoder.encode(b, 2, 3), rows: rowsOut.slice(2, 3) },
      { file: 'empty.bin', value: encoder.encode(b, 0, 0), rows: [] },
    ];
    for (const c of cases) writeFileSync(join(dir, c.file), c.value);
    const bar: Bar = {
      source: 'edge-src',
      symbol: 'Ölpreis',
      startMs: 1577923200000,
      open: 1.5,
      high: 2.25,
      low: 0,
      close: -1,
      tickCount: 361,
      spreadMin: 0.0001,
      spreadMax: 0.0002,
      spreadSum: 0.054,
      lastOpen: Number.NaN,
      lastHigh: Number.NaN,
      lastLow: Number.NaN,
      lastClose: Number.NaN,
      volume: 0,
      lastSeq: 2 ** 53 - 1,
    };
    writeFileSync(join(dir, 'bar.bin'), encodeBar(bar));
    expect(decodeBar(encodeBar(bar)).lastSeq).toBe(bar.lastSeq);
    const snake = Object.fromEntries(
      Object.entries(bar).map(([k, v]) => [
        k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`),
        typeof v === 'number' && Number.isNaN(v) ? 'NaN' : v,
      ]),
    );
    writeFileSync(
      join(dir, 'expected.json'),
      JSON.stringify({
        ticks: cases.map((c) => ({ file: c.file, source: 'edge-src', rows: c.rows })),
        bars: [{ file: 'bar.bin', bar: snake }],
      }),
    );
    const r = await runPython(['-m', 'unittest', 'discover', '-v', '-s', 'clients/python/tests'], {
      env: { TICKSTREAM_FIXTURES: dir },
    });
    expect(r.code, `${PYTHON} unittest:\n${r.stderr}${r.stdout}`).toBe(0);
    expect(r.stderr).toMatch(/Ran 9 tests/);
    expect(r.stderr).not.toMatch(/skipped/);
  });
});

describe('the Python package against a real serve fed by sim', () => {
  const n = isolatedNames('py');
  let serve: ServeProcess;
  const mt5 = parseMt5ExportFile(mt5File, 2);
  const duka = parseDukascopyFile(dukaFile);
  const total = mt5.length + duka.length;
  let wsJson: ReturnType<typeof startPythonLines>;
  let wsFlat: ReturnType<typeof startPythonLines>;
  let tsTicks: PyTick[] = [];

  const wsTicks = (p: ReturnType<typeof startPythonLines>) =>
    p.lines.filter((l) => l['type'] === 'tick') as unknown as (PyTick & {
      kind: string;
      type: string;
      resumed: boolean;
    })[];
  const connects = (p: ReturnType<typeof startPythonLines>) =>
    p.lines.filter((l) => l['type'] === 'connected');
  const subscribed = (p: ReturnType<typeof startPythonLines>) =>
    p.lines.filter((l) => l['type'] === 'subscribed').length;

  beforeAll(async () => {
    const check = await runPython([
      '-c',
      'import confluent_kafka, flatbuffers, websockets, redis, tickstream',
    ]);
    expect(check.code, `${PYTHON} lacks the Debian packages: run \`npm run setup\`\n${check.stderr}`).toBe(0);
    // A client process on a loaded machine may read more slowly than sim sends at full speed: a
    // large backpressure limit keeps the server from conflating it, so "every tick" is testable.
    serve = await startServe(
      serveArgs(n, [
        '--source-time-zones',
        'pya=+2,pyb=Europe/Athens',
        '--ws-max-backpressure-bytes',
        String(256 << 20),
      ]),
    );
    const url = `ws://127.0.0.1:${serve.httpPort}/ws`;
    wsJson = startPythonLines(['test/clients/ws_collect.py', url, 'json', 'live']);
    wsFlat = startPythonLines(['test/clients/ws_collect.py', url, 'flatbuffers', 'live']);
    expect(
      await waitFor(() => subscribed(wsJson) > 0 && subscribed(wsFlat) > 0, 30_000),
      `${wsJson.stderr()}${wsFlat.stderr()}`,
    ).toBe(true);
    const results = await Promise.all([
      runSim([
        '--file',
        mt5File,
        '--source',
        'pya',
        '--server-utc-offset',
        '2',
        '--port',
        String(serve.ingressPort),
      ]),
      runSim([
        '--file',
        dukaFile,
        '--source',
        'pyb',
        '--server-tz',
        'Europe/Athens',
        '--port',
        String(serve.ingressPort),
      ]),
    ]);
    for (const r of results) expect(r.code, r.output).toBe(0);
    tsTicks = await tsJournalTicks(n.ticksTopic);
  }, 180_000);

  afterAll(async () => {
    await wsJson?.stop();
    await wsFlat?.stop();
    expect(await serve?.stop()).toBe(0);
    await removeNames([n]);
  }, 60_000);

  it('reads every tick from Kafka (read_committed): the same ticks as the TypeScript reader and as the input files', async () => {
    const r = await runPython(
      [
        '-c',
        `import json, sys
from tickstream.journal import read_ticks
for t in read_ticks(sys.argv[1], sys.argv[2]):
    print(json.dumps(t.__dict__))`,
        n.ticksTopic,
        KAFKA_BROKERS,
      ],
      { timeoutMs: 120_000 },
    );
    expect(r.code, r.stderr).toBe(0);
    const py = jsonLines<PyTick>(r.stdout).sort(bySourceSeq);
    expect(tsTicks.length).toBe(total);
    expect(py.length).toBe(total);
    expect(py).toEqual(tsTicks);
    expectEqualToFile(
      py.filter((t) => t.source === 'pya'),
      mt5,
      true,
    );
    expectEqualToFile(
      py.filter((t) => t.source === 'pyb'),
      duka,
      false,
    );
    expect(new Set(py.filter((t) => t.source === 'pya').map((t) => t.symbol))).toEqual(new Set(['EURUSD']));
  });

  it('reads a range by source and seq, and the journal into a plain list with the example script', async () => {
    const range = await runPython([
      '-c',
      `import json, sys
from tickstream.journal import read_ticks
print(json.dumps([t.seq for t in read_ticks(sys.argv[1], sys.argv[2], source="pyb", from_seq=1000, to_seq=1499)]))`,
      n.ticksTopic,
      KAFKA_BROKERS,
    ]);
    expect(range.code, range.stderr).toBe(0);
    expect(JSON.parse(range.stdout)).toEqual(Array.from({ length: 500 }, (_, i) => 1000 + i));

    const example = await runPython(['clients/python/examples/journal_to_list.py', n.ticksTopic], {
      env: { TICKSTREAM_KAFKA_BROKERS: KAFKA_BROKERS },
    });
    expect(example.code, example.stderr).toBe(0);
    expect(example.stdout).toContain(`${total} ticks`);
    expect(example.stdout).toContain(`pya: ${mt5.length} ticks, seq 1..${mt5.length}`);
    expect(example.stdout).toContain(`pyb: ${duka.length} ticks, seq 1..${duka.length}`);
  });

  it('reads the bars topic: the same bars as the TypeScript decoder', async () => {
    const ts: Record<string, unknown>[] = [];
    await readJournal({
      brokers: KAFKA_BROKERS,
      topic: n.barsTopic,
      onMessages: (ms) => {
        for (const m of ms) {
          const bar = decodeBar(m.value);
          ts.push({
            source: bar.source,
            symbol: bar.symbol,
            start_ms: bar.startMs,
            close: bar.close,
            tick_count: bar.tickCount,
            last_seq: bar.lastSeq,
          });
        }
      },
    });
    const r = await runPython([
      '-c',
      `import json, sys
from tickstream.journal import read_bars
for b in read_bars(sys.argv[1], sys.argv[2]):
    print(json.dumps({k: getattr(b, k) for k in ("source", "symbol", "start_ms", "close", "tick_count", "last_seq")}))`,
      n.barsTopic,
      KAFKA_BROKERS,
    ]);
    expect(r.code, r.stderr).toBe(0);
    const key = (b: Record<string, unknown>) => `${b['source']}|${b['symbol']}|${b['start_ms']}`;
    const sort = (a: Record<string, unknown>[]) => [...a].sort((x, y) => (key(x) < key(y) ? -1 : 1));
    expect(ts.length).toBeGreaterThan(100);
    expect(sort(jsonLines(r.stdout))).toEqual(sort(ts));
  });

  it('the websocket client (JSON and FlatBuffers) received every tick of the run, once, in seq order', async () => {
    for (const client of [wsJson, wsFlat]) {
      const done = () => wsTicks(client).filter((t) => t.kind === 'ticks').length >= total;
      expect(await waitFor(done, 120_000), `${wsTicks(client).length} of ${total}\n${client.stderr()}`).toBe(
        true,
      );
      const live = wsTicks(client)
        .filter((t) => t.kind === 'ticks')
        .map(({ kind: _k, type: _t, resumed: _r, ...t }) => t as PyTick);
      expect(live.length).toBe(total);
      for (const source of ['pya', 'pyb']) {
        const mine = live.filter((t) => t.source === source);
        expect(mine.map((t) => t.seq)).toEqual(mine.map((_, i) => i + 1));
      }
      expect([...live].sort(bySourceSeq)).toEqual(tsTicks);
      expect(connects(client).length).toBe(1);
    }
  });

  it('the Redis helpers read every tick of each stream, the latest quote and the bars', async () => {
    const expectedPairs = [
      ['pya', 'EURUSD', mt5.length],
      ['pyb', 'BTCUSD', duka.length],
    ] as const;
    const { Redis } = await import('ioredis');
    const redis = new Redis(REDIS_URL);
    try {
      for (const [source, symbol, count] of expectedPairs) {
        const key = `${n.redisPrefix}:ticks:${source}:${symbol}`;
        expect(await waitFor(async () => (await redis.xlen(key)) >= count, 30_000)).toBe(true);
      }
    } finally {
      await redis.quit();
    }
    const r = await runPython(
      [
        '-c',
        `import json, sys
import redis
from tickstream import redis_streams as rs
r = redis.Redis.from_url(sys.argv[1])
prefix = sys.argv[2]
pairs = rs.list_tick_streams(r, prefix)
out = {"pairs": pairs, "ticks": [], "quotes": [], "bars": {}, "followed": 0}
for source, symbol in pairs:
    out["ticks"] += [t.__dict__ for t in rs.read_ticks(r, source, symbol, prefix)]
    out["quotes"].append(rs.read_quote(r, source, symbol, prefix).__dict__)
    out["bars"][source] = [b.__dict__ for b in rs.read_bars(r, source, symbol, prefix)]
want = len(out["ticks"])
for t in rs.follow_ticks(r, pairs, prefix, after={p: "0" for p in pairs}, block_ms=1000):
    out["followed"] += 1
    if out["followed"] == want:
        break
print(json.dumps(out))`,
        REDIS_URL,
        n.redisPrefix,
      ],
      { timeoutMs: 120_000 },
    );
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as {
      pairs: [string, string][];
      ticks: PyTick[];
      quotes: Omit<PyTick, 'volume' | 'volume_real'>[];
      bars: Record<string, { start_ms: number; close: number; tick_count: number; last_seq: number }[]>;
      followed: number;
    };
    expect(out.pairs).toEqual(expectedPairs.map(([s, y]) => [s, y]));
    expect(out.ticks.sort(bySourceSeq)).toEqual(tsTicks);
    expect(out.followed).toBe(total);
    expect(out.quotes.length).toBe(2);
    for (const q of out.quotes) {
      const {
        volume: _v,
        volume_real: _vr,
        ...last
      } = tsTicks.filter((t) => t.source === q.source).at(-1) as PyTick;
      expect(q).toEqual(last);
    }
    // Bars: the closed ones of the journal, the same minutes, closes and last seqs.
    const kafkaBars = await runPython([
      '-c',
      `import json, sys
from tickstream.journal import read_bars
print(json.dumps([[b.source, b.start_ms, b.close, b.tick_count, b.last_seq] for b in read_bars(sys.argv[1], sys.argv[2])]))`,
      n.barsTopic,
      KAFKA_BROKERS,
    ]);
    const fromKafka = JSON.parse(kafkaBars.stdout) as [string, number, number, number, number][];
    for (const source of ['pya', 'pyb']) {
      const redisBars = (out.bars[source] ?? []).map((b) => [
        source,
        b.start_ms,
        b.close,
        b.tick_count,
        b.last_seq,
      ]);
      expect(redisBars.length).toBeGreaterThan(10);
      expect(redisBars).toEqual(fromKafka.filter((b) => b[0] === source).sort((x, y) => x[1] - y[1]));
    }
  });

  it('the websocket client (JSON and FlatBuffers), cut while two sources stream, reconnects with backoff and resumes: every tick of every source exactly once', async () => {
    const proxy = await cuttableProxy(serve.httpPort);
    const clients = (['json', 'flatbuffers'] as const).map((format) => ({
      format,
      p: startPythonLines([
        'test/clients/ws_collect.py',
        `ws://127.0.0.1:${proxy.port}/ws`,
        format,
        'resume',
      ]),
    }));
    type Client = (typeof clients)[number]['p'];
    // Two sources, 3 symbols each (so batches interleave symbols), paced over 15 s: the cut falls
    // while both stream.
    const sources = ['pyr1', 'pyr2'];
    const of = (c: Client, source: string) => wsTicks(c).filter((t) => t.source === source);
    const ofType = (c: Client, type: string) => c.lines.filter((l) => l['type'] === type);
    const stderr = () => clients.map((c) => c.p.stderr()).join('');
    try {
      expect(await waitFor(() => clients.every((c) => subscribed(c.p) === 1), 30_000), stderr()).toBe(true);
      let simsDone = 0;
      const sims = sources.map((source, i) =>
        runSim([
          '--synthetic',
          '--symbols',
          '3',
          '--rate',
          '1000',
          '--duration',
          '15',
          '--seed',
          String(21 + i),
          '--source',
          source,
          '--port',
          String(serve.ingressPort),
        ]).then((r) => {
          simsDone++;
          return r;
        }),
      );
      const streaming = () => clients.every((c) => sources.every((s) => of(c.p, s).length >= 300));
      expect(await waitFor(streaming, 60_000), stderr()).toBe(true);
      proxy.cut(); // the connections are cut, and reconnects are refused for a while
      expect(simsDone, 'the cut must fall while the sources stream').toBe(0);
      // At least one reconnect refused by the proxy: each client backs off again.
      const refusedOnce = () => clients.every((c) => ofType(c.p, 'disconnected').length >= 2);
      expect(await waitFor(refusedOnce, 30_000), stderr()).toBe(true);
      proxy.up();
      expect(await waitFor(() => clients.every((c) => connects(c.p).length >= 2), 30_000), stderr()).toBe(
        true,
      );

      const results = await Promise.all(sims);
      const counts = results.map((r) => {
        expect(r.code, r.output).toBe(0);
        return captured(r.output);
      });
      const complete = () =>
        clients.every((c) => sources.every((s, i) => of(c.p, s).length >= (counts[i] as number)));
      const progress = () =>
        clients.map((c) => `${c.format}: ${sources.map((s) => of(c.p, s).length)} of ${counts}`).join('; ');
      expect(await waitFor(complete, 120_000), `${progress()}\n${stderr()}`).toBe(true);

      const journal = (await tsJournalTicks(n.ticksTopic)).filter((t) => sources.includes(t.source));
      for (const { format, p: c } of clients) {
        expect(connects(c).at(-1)?.['resumed'], format).toBe(true); // it asked to resume
        // The server answered the resume (no refusal), caught up from the journal, said `resumed`.
        expect(ofType(c, 'resume_refused'), format).toEqual([]);
        expect(ofType(c, 'resumed').length, format).toBeGreaterThanOrEqual(1);
        expect(
          wsTicks(c).some((t) => t.resumed),
          format,
        ).toBe(true);
        // Every delay waited was within the configured backoff (0.2 s doubling to 1 s, jittered).
        const delays = ofType(c, 'disconnected').map((l) => l['retry_in_s'] as number);
        expect(
          delays.filter((d) => !(d >= 0.1 && d <= 1)),
          format,
        ).toEqual([]);
        // Every tick of every source once, as the journal holds it: no hole, no repeat.
        const got = sources
          .flatMap((s) => of(c, s))
          .map(({ kind: _k, type: _t, resumed: _r, ...t }) => t as PyTick)
          .sort(bySourceSeq);
        for (const [i, source] of sources.entries()) {
          const seqs = got.filter((t) => t.source === source).map((t) => t.seq);
          expect(seqs, `${format} ${source}`).toEqual(seqs.map((_, k) => k + 1));
          expect(seqs.length, `${format} ${source}`).toBe(counts[i]);
        }
        expect(got, format).toEqual(journal);
      }
    } finally {
      for (const c of clients) await c.p.stop();
      await proxy.close();
    }
  }, 180_000);
});

describe('the Python websocket client: tokens, and a slow consumer conflated', () => {
  const n = isolatedNames('pytok');
  let serve: ServeProcess;

  beforeAll(async () => {
    // A 64 KiB backpressure limit: a client that stops reading is conflated soon.
    serve = await startServe(
      serveArgs(n, [
        '--ws-tokens',
        'tok-a',
        '--redis-enabled',
        'false',
        '--ws-max-backpressure-bytes',
        '65536',
      ]),
    );
  });

  afterAll(async () => {
    expect(await serve?.stop()).toBe(0);
    await removeNames([n]);
  }, 60_000);

  it('a wrong token raises AuthError at once (no retry loop); the right one subscribes', async () => {
    const r = await runPython(
      [
        '-c',
        `import asyncio, sys
from tickstream.ws import AuthError, TickClient

async def main(url):
    try:
        async for m in TickClient(url, ["*"], token="wrong").messages():
            print("unexpected", m["type"])
            return
    except AuthError as err:
        print("refused:", err)
    good = TickClient(url, ["*"], token="tok-a")
    async for m in good.messages():
        if m["type"] == "subscribed":
            print("subscribed", m["channels"])
            await good.close()

asyncio.run(main(sys.argv[1]))`,
        `ws://127.0.0.1:${serve.httpPort}/ws`,
      ],
      { timeoutMs: 60_000 },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(
      "refused: the server refused the token (401): pass a token from serve's --ws-tokens\nsubscribed ['*']\n",
    );
  });

  it('a consumer too slow to keep up gets conflated ticks messages: every tick is delivered or counted in one skipped, in seq order per symbol', async () => {
    const consumer = startPythonLines([
      '-c',
      `import asyncio, json, sys
from tickstream.ws import TickClient

async def main(url):
    loop = asyncio.get_running_loop()
    total = loop.run_in_executor(None, sys.stdin.readline)  # the run's tick count, once it ended
    client = TickClient(url, ["*"], token="tok-a", max_queue=1)
    delivered = skipped = conflated = 0
    last = {}
    ordered = True
    async for m in client.messages():
        if m["type"] == "subscribed":
            print(json.dumps({"type": "subscribed"}), flush=True)
        if m["type"] != "ticks":
            continue
        for t in m["ticks"]:
            ordered = ordered and t.seq > last.get(t.symbol, 0)
            last[t.symbol] = t.seq
        delivered += len(m["ticks"])
        skipped += m.get("skipped", 0)
        conflated += bool(m.get("conflated"))
        if not total.done():
            await asyncio.sleep(0.5)  # slow while the run goes
            continue
        print(json.dumps({"type": "state", "delivered": delivered, "skipped": skipped,
                          "conflated": conflated, "ordered": ordered}), flush=True)
        if delivered + skipped >= int(total.result()):
            await client.close()

asyncio.run(main(sys.argv[1]))`,
      `ws://127.0.0.1:${serve.httpPort}/ws`,
    ]);
    try {
      expect(
        await waitFor(() => consumer.lines.some((l) => l['type'] === 'subscribed'), 30_000),
        consumer.stderr(),
      ).toBe(true);
      // 600k ticks (about 70 MB of JSON): more than loopback's socket buffers can hold between
      // the server and the slow reader (tcp_rmem grows to 32 MB here), so the server's own
      // buffer for it must pass the 64 KiB limit.
      const sim = await runSim([
        '--synthetic',
        '--symbols',
        '2',
        '--rate',
        '100000',
        '--duration',
        '6',
        '--speed',
        'max',
        '--source',
        'slowpy',
        '--port',
        String(serve.ingressPort),
      ]);
      expect(sim.code, sim.output).toBe(0);
      const total = captured(sim.output);
      consumer.child.stdin?.write(`${total}\n`);
      const state = () => consumer.lines.filter((l) => l['type'] === 'state').at(-1) ?? {};
      const sum = () => Number(state()['delivered'] ?? 0) + Number(state()['skipped'] ?? 0);
      expect(
        await waitFor(() => sum() >= total, 90_000),
        `${JSON.stringify(state())} of ${total}\n${consumer.stderr()}`,
      ).toBe(true);
      expect(sum()).toBe(total);
      expect(state()['ordered']).toBe(true);
      expect(Number(state()['conflated']), JSON.stringify(state())).toBeGreaterThan(0);
      expect(Number(state()['skipped'])).toBeGreaterThan(0);
    } finally {
      await consumer.stop();
    }
  }, 180_000);
});
