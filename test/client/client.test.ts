// @tickstream/client against a real `serve` fed by `sim`: every tick of a file run equal to the
// file, a socket cut mid-stream (a loopback TCP proxy drops the connection) resumed with no hole
// or repeat, in JSON and FlatBuffers, and a replay request; the journal read by a consumer that
// shares no code with serve or the client (test/helpers/independent.ts).
import { existsSync } from 'node:fs';
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Tick, type TicksEvent, TickstreamClient } from '../../client/src/index.js';
import { type JournalTick, parseMt5ExportFile, readJournalTicks } from '../helpers/independent.js';
import {
  captured,
  dataDir,
  isolatedNames,
  removeNames,
  runSim,
  type ServeProcess,
  serveArgs,
  startServe,
  waitFor,
} from '../helpers/procs.js';

const mt5File = `${dataDir}EURUSD_mt5_export_derived_from_histdata.csv`;

/** A loopback TCP proxy to `port` whose open connections `cut()` destroys (an RST-like drop). */
async function proxy(port: number): Promise<{ port: number; cut(): number; close(): Promise<void> }> {
  const pairs = new Set<[Socket, Socket]>();
  const server: Server = createServer((down) => {
    const up = tcpConnect(port, '127.0.0.1');
    const pair: [Socket, Socket] = [down, up];
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      down.destroy();
      up.destroy();
    };
    down.on('error', end).on('close', end);
    up.on('error', end).on('close', end);
    down.pipe(up);
    up.pipe(down);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    cut: () => {
      const n = pairs.size;
      for (const [down, up] of [...pairs]) {
        down.resetAndDestroy();
        up.destroy();
      }
      return n;
    },
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        for (const [down, up] of [...pairs]) {
          down.destroy();
          up.destroy();
        }
      }),
  };
}

/** A client that records every tick event it emits, and its resumed markers. */
function recorder(client: TickstreamClient) {
  const ticks: (Tick & { source: string; symbol: string; resumed: boolean })[] = [];
  let resumes = 0;
  let closes = 0;
  client.on('ticks', (e: TicksEvent) => {
    for (const t of e.ticks) ticks.push({ ...t, source: e.source, symbol: e.symbol, resumed: e.resumed });
  });
  client.on('resumed', () => {
    resumes++;
  });
  client.on('close', () => {
    closes++;
  });
  return { ticks, resumes: () => resumes, closes: () => closes };
}

const wire = (t: JournalTick) => ({
  seq: t.seq,
  time: t.utcMsc,
  tsrv: t.serverMsc,
  bid: t.bid,
  ask: t.ask,
  last: t.last,
  vol: t.volume,
  volr: t.volumeReal,
  flags: t.flags,
  source: t.source,
  symbol: t.symbol,
});

/** Per source, ticks in seq order without the `resumed` flag (sources interleave as they come). */
const bySourceSeq = <T extends { source: string; seq: number }>(ticks: readonly T[]) =>
  [...ticks].sort((a, b) => (a.source === b.source ? a.seq - b.seq : a.source < b.source ? -1 : 1));

describe('@tickstream/client (real serve, sim, broker)', () => {
  const n = isolatedNames('client');
  let serve: ServeProcess;
  /** Ticks of the file run (the first test), also in the journal. */
  let fileTicks = 0;
  const clients: TickstreamClient[] = [];
  const open = async (options: ConstructorParameters<typeof TickstreamClient>[0]) => {
    const c = new TickstreamClient({ reconnect: { initialDelayMs: 50, maxDelayMs: 1000 }, ...options });
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    serve = await startServe(
      serveArgs(n, [
        '--redis-enabled',
        'false',
        '--loader-enabled',
        'false',
        '--source-time-zones',
        'mt5=+2',
      ]),
    );
  }, 60_000);

  afterAll(async () => {
    for (const c of clients) c.close();
    expect(await serve?.stop()).toBe(0);
    await removeNames([n]);
  }, 60_000);

  it.skipIf(!existsSync(mt5File))(
    'receives every tick of a file run, equal to the file, in JSON and in FlatBuffers',
    async () => {
      const file = parseMt5ExportFile(mt5File, 2);
      const json = await open({ url: `ws://127.0.0.1:${serve.httpPort}/ws`, channels: ['mt5:EURUSD'] });
      const flat = await open({
        url: `ws://127.0.0.1:${serve.httpPort}/ws`,
        channels: ['EURUSD'],
        format: 'flatbuffers',
      });
      const a = recorder(json);
      const b = recorder(flat);
      await Promise.all([json.connect(), flat.connect()]);
      const r = await runSim(
        [
          '--file',
          mt5File,
          '--source',
          'mt5',
          '--server-utc-offset',
          '2',
          '--port',
          String(serve.ingressPort),
        ],
        90_000,
      );
      expect(r.code, r.output).toBe(0);
      expect(captured(r.output)).toBe(file.length);
      expect(
        await waitFor(() => a.ticks.length >= file.length && b.ticks.length >= file.length, 60_000),
      ).toBe(true);
      for (const got of [a.ticks, b.ticks]) {
        expect(got.length).toBe(file.length);
        expect(got.map((t) => t.seq)).toEqual(file.map((_, i) => i + 1));
        const bad = got.findIndex((t, i) => {
          const f = file[i] as (typeof file)[number];
          return (
            t.time !== f.utcMsc ||
            t.bid !== f.bid ||
            t.ask !== f.ask ||
            t.last !== f.last ||
            t.flags !== f.flags ||
            t.symbol !== 'EURUSD'
          );
        });
        expect(bad === -1 ? null : { got: got[bad], file: file[bad] }).toBeNull();
      }
      fileTicks = file.length;
    },
    120_000,
  );

  it('a socket cut mid-stream reconnects and resumes: no hole, no repeat, several symbols, JSON and FlatBuffers', async () => {
    const p = await proxy(serve.httpPort);
    const json = await open({ url: `ws://127.0.0.1:${p.port}/ws`, channels: ['*'] });
    const flat = await open({ url: `ws://127.0.0.1:${p.port}/ws`, channels: ['*'], format: 'flatbuffers' });
    try {
      const a = recorder(json);
      const b = recorder(flat);
      await Promise.all([json.connect(), flat.connect()]);
      // 5 symbols at 2000 ticks/s in real time for 10 s: cuts fall mid-stream, mid-batch.
      const run = runSim([
        '--synthetic',
        '--symbols',
        '5',
        '--rate',
        '2000',
        '--duration',
        '10',
        '--seed',
        '3',
        '--source',
        'cut',
        '--port',
        String(serve.ingressPort),
      ]);
      for (const at of [3000, 9000]) {
        const ok = await waitFor(() => a.ticks.length >= at && b.ticks.length >= at, 60_000);
        expect(ok, `json ${a.ticks.length}, flatbuffers ${b.ticks.length} ticks before cut at ${at}`).toBe(
          true,
        );
        expect(p.cut()).toBe(2);
      }
      const r = await run;
      expect(r.code, r.output).toBe(0);
      const total = captured(r.output);
      const journal = (await readJournalTicks(n.ticksTopic, { expected: total + fileTicks })).filter(
        (t) => t.source === 'cut',
      );
      expect(journal.length).toBe(total);
      const want = journal.map(wire);
      for (const rec of [a, b]) {
        const ok = await waitFor(() => rec.ticks.length >= total, 30_000);
        expect(ok, `${rec.ticks.length} of ${total} ticks`).toBe(true);
        expect(rec.closes()).toBe(2);
        expect(rec.resumes()).toBe(2);
        expect(rec.ticks.some((t) => t.resumed)).toBe(true);
        // Exactly once each: as many as the journal, and equal to it in seq order.
        expect(rec.ticks.length).toBe(total);
        expect(bySourceSeq(rec.ticks).map(({ resumed: _, ...t }) => t)).toEqual(want);
      }
    } finally {
      json.close();
      flat.close();
      await p.close();
    }
  }, 120_000);

  it('replays a range of the journal through the client', async () => {
    const c = await open({ url: `ws://127.0.0.1:${serve.httpPort}/ws`, format: 'flatbuffers' });
    await c.connect();
    const got: Tick[] = [];
    const count = await c.replay(
      { channels: ['cut:SYN002'], source: 'cut', fromSeq: 100, toSeq: 5000 },
      (e) => got.push(...e.ticks),
    );
    const want = (await readJournalTicks(n.ticksTopic, { idleMs: 2000 }))
      .filter((t) => t.source === 'cut' && t.symbol === 'SYN002' && t.seq >= 100 && t.seq <= 5000)
      .map(({ source: _, ...t }) => wire({ ...t, source: 'cut' }));
    expect(count).toBe(want.length);
    expect(got.map((t) => ({ ...t, source: 'cut', symbol: 'SYN002' }))).toEqual(want);
  }, 120_000);
});
