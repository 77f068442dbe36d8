// `tickstream replay --target ws`: a replay server for backtests. A real `serve` fills a journal
// from two `sim` sources; the replay CLI process serves a range on its own websocket port (port 0,
// printed), real `ws` clients subscribe to `*` as they would to `serve` live, and what they get
// is compared with `replay --target stdout --format jsonl` of the same range.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import {
  captured,
  isolatedNames,
  removeNames,
  runCli,
  runSim,
  type ServeProcess,
  serveArgs,
  startCli,
  startServe,
  waitFor,
} from '../helpers/procs.js';

interface Row {
  source: string;
  seq: number;
  symbol: string;
  time: number;
  server_time: number;
  bid: number;
  ask: number;
  last: number;
  volume: number;
  volume_real: number;
  flags: number;
}

interface WireTick {
  seq: number;
  time: number;
  tsrv: number;
  bid: number;
  ask: number;
  last: number;
  vol: number;
  volr: number;
  flags: number;
}

interface Message {
  type: string;
  source?: string;
  symbol?: string;
  replay?: boolean;
  conflated?: boolean;
  ticks?: WireTick[] | number;
}

const rowsOf = (m: Message): Row[] =>
  (m.ticks as WireTick[]).map((t) => ({
    source: m.source as string,
    seq: t.seq,
    symbol: m.symbol as string,
    time: t.time,
    server_time: t.tsrv,
    bid: t.bid,
    ask: t.ask,
    last: t.last,
    volume: t.vol,
    volume_real: t.volr,
    flags: t.flags,
  }));

/**
 * Rows per source:symbol in arrival order: a record's ticks go out as one message per symbol,
 * as live, so a client sees each source:symbol in seq order (and each source's ticks exactly once).
 */
function perPair(rows: readonly Row[]): Record<string, Row[]> {
  const out: Record<string, Row[]> = {};
  for (const r of rows) {
    const key = `${r.source}:${r.symbol}`;
    out[key] ??= [];
    out[key]?.push(r);
  }
  return out;
}

/** Replay CLI started with --target ws on port 0: its URL once it printed it. */
async function startReplayServer(args: string[]) {
  const p = startCli(['replay', '--target', 'ws', '--http-port', '0', ...args]);
  let url = '';
  const served = await waitFor(() => {
    const m = /replay: serving (ws:\/\/\S+\/ws)\n/.exec(p.output());
    url = m?.[1] ?? '';
    return url !== '' || p.child.exitCode !== null;
  }, 30_000);
  expect(served && url !== '', p.output()).toBe(true);
  return { ...p, url };
}

/** A client subscribed to `*` that keeps every message until replay_end or close. */
async function subscribe(url: string) {
  const ws = new WebSocket(url);
  const messages: Message[] = [];
  const ended = new Promise<void>((resolve) => {
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString()) as Message;
      messages.push(m);
      if (m.type === 'replay_end') resolve();
    });
    ws.once('close', () => resolve());
  });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  ws.send(JSON.stringify({ op: 'subscribe', channels: ['*'] }));
  return { ws, messages, ended };
}

describe('tickstream replay --target ws (real serve, sim, broker and ws clients)', () => {
  const n = isolatedNames('replayws');
  const dir = mkdtempSync(join(tmpdir(), 'replay-ws-'));
  let serve: ServeProcess;
  let total = 0;

  /** `replay --target stdout --format jsonl` of the same range, the reference. */
  async function reference(args: string[]): Promise<Row[]> {
    const out = join(dir, `ref-${Math.random().toString(36).slice(2)}`);
    const r = await runCli(
      ['replay', '--ticks-topic', n.ticksTopic, '--format', 'jsonl', '--out', out, ...args],
      {},
      60_000,
    );
    expect(r.code, r.output).toBe(0);
    return readFileSync(out, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as Row);
  }

  /** Every message is marked replay; the ticks, per source:symbol in order, equal the reference. */
  function expectSame(messages: readonly Message[], want: readonly Row[]): void {
    const types = new Set(messages.map((m) => m.type));
    expect([...types].sort()).toEqual(['replay_end', 'subscribed', 'ticks']);
    expect(messages[0]).toMatchObject({ type: 'subscribed', replay: true });
    expect(messages.at(-1)).toEqual({ type: 'replay_end', ticks: want.length });
    const ticks = messages.filter((m) => m.type === 'ticks');
    for (const m of ticks) {
      expect(m.replay).toBe(true);
      expect(m.conflated).toBeUndefined();
    }
    const rows = ticks.flatMap(rowsOf);
    expect(rows.length).toBe(want.length);
    expect(perPair(rows)).toEqual(perPair(want));
  }

  beforeAll(async () => {
    serve = await startServe(serveArgs(n));
    const sim = (source: string, symbols: number, seed: number, rate = 1000, duration = 2) =>
      runSim([
        '--synthetic',
        '--symbols',
        String(symbols),
        '--rate',
        String(rate),
        '--duration',
        String(duration),
        '--seed',
        String(seed),
        '--speed',
        'max',
        '--source',
        source,
        '--port',
        String(serve.ingressPort),
      ]);
    // wsbig: more JSON than the loopback socket buffers take (~13 MB), for the slow reader.
    const results = await Promise.all([sim('wsa', 3, 1), sim('wsb', 2, 2), sim('wsbig', 4, 3, 20_000, 5)]);
    for (const r of results) expect(r.code, r.output).toBe(0);
    total = results.reduce((sum, r) => sum + captured(r.output), 0);
    // Everything is committed once the reference reads every tick back.
    expect(await waitFor(async () => (await reference([])).length === total, 30_000)).toBe(true);
  }, 120_000);

  afterAll(async () => {
    expect(await serve?.stop()).toBe(0);
    await removeNames([n]);
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it('one client subscribed to * gets every tick of the range as stdout gives it, marked replay, then replay_end', async () => {
    const want = await reference([]);
    expect(want.length).toBe(total);
    const server = await startReplayServer(['--ticks-topic', n.ticksTopic]);
    expect(server.output()).toContain(`replay: waiting for 1 client(s) to subscribe on ${server.url}`);
    const client = await subscribe(server.url);
    await client.ended;
    expect(await server.exited, server.output()).toBe(0);
    expectSame(client.messages, want);
    expect(server.output()).toMatch(
      new RegExp(
        `replay: ${total} ticks written from 3 source\\(s\\) \\(.+\\) in [\\d.]+ s to websocket clients on ${server.url.replaceAll('.', '\\.')}\\n`,
      ),
    );
    client.ws.close();
  }, 60_000);

  it('--ws-wait-clients 2, paced and filtered: both clients get the whole range; nothing goes out before the second subscribes', async () => {
    const sourceArgs = ['--source', 'wsa', '--symbol', 'SYN001,SYN002'];
    const want = await reference(sourceArgs);
    expect(want.length).toBeGreaterThan(0);
    const server = await startReplayServer([
      '--ticks-topic',
      n.ticksTopic,
      '--ws-wait-clients',
      '2',
      '--speed',
      '20',
      ...sourceArgs,
    ]);
    const first = await subscribe(server.url);
    // The first client is subscribed (its answer came) and still gets no tick while alone.
    expect(await waitFor(() => first.messages.length > 0, 10_000)).toBe(true);
    expect(first.messages.map((m) => m.type)).toEqual(['subscribed']);
    const second = await subscribe(server.url);
    await Promise.all([first.ended, second.ended]);
    expect(await server.exited, server.output()).toBe(0);
    expectSame(first.messages, want);
    expectSame(second.messages, want);
    first.ws.close();
    second.ws.close();
  }, 60_000);

  it('a slow reader under a small backpressure limit still gets every tick, none conflated', async () => {
    const want = await reference(['--source', 'wsbig']);
    const server = await startReplayServer([
      '--ticks-topic',
      n.ticksTopic,
      '--source',
      'wsbig',
      '--ws-max-backpressure-bytes',
      '65536',
    ]);
    const client = await subscribe(server.url);
    // The client stops reading for a while: the server's buffer for it fills, the replay waits.
    const socket = (client.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket;
    socket.pause();
    await new Promise((r) => setTimeout(r, 3000));
    socket.resume();
    await client.ended;
    expect(await server.exited, server.output()).toBe(0);
    expectSame(client.messages, want);
    client.ws.close();
  }, 60_000);

  it('a client that stops reading is waited for --ws-stall-ms only, then left to the slow-consumer policy; the others get everything', async () => {
    const want = await reference(['--source', 'wsbig']);
    const server = await startReplayServer([
      '--ticks-topic',
      n.ticksTopic,
      '--source',
      'wsbig',
      '--ws-wait-clients',
      '2',
      '--ws-max-backpressure-bytes',
      '65536',
      '--ws-stall-ms',
      '1000',
      '--ws-slow-consumer-policy',
      'disconnect',
    ]);
    const reader = await subscribe(server.url);
    const stuck = await subscribe(server.url);
    const closed = new Promise<number>((resolve) => stuck.ws.once('close', (code) => resolve(code)));
    const socket = (stuck.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket;
    socket.pause();
    await reader.ended;
    // Read again: a peer that never reads holds the replay's exit for a while after its summary.
    socket.resume();
    expect(await server.exited, server.output()).toBe(0);
    expectSame(reader.messages, want);
    expect(server.output()).toContain('a websocket client read too little for --ws-stall-ms');
    // Disconnected by the policy (1008), or cut at the close if its buffer was still full.
    expect([1006, 1008]).toContain(await closed);
    expect(stuck.messages.some((m) => m.type === 'replay_end')).toBe(false);
  }, 60_000);

  it('SIGTERM while waiting for clients ends it cleanly with the summary (exit 143)', async () => {
    const server = await startReplayServer(['--ticks-topic', n.ticksTopic]);
    expect(await waitFor(() => server.output().includes('replay: waiting for 1 client(s)'), 10_000)).toBe(
      true,
    );
    server.child.kill('SIGTERM');
    expect(await server.exited, server.output()).toBe(143);
    expect(server.output()).toContain(`replay: 0 ticks written from 0 source(s) in`);
    expect(server.output()).toContain(`to websocket clients on ${server.url} (stopped by SIGTERM)`);
  }, 30_000);

  it('SIGINT in the middle of a paced replay closes the clients with a reason and exits 130', async () => {
    const server = await startReplayServer([
      '--ticks-topic',
      n.ticksTopic,
      '--source',
      'wsa',
      '--speed',
      '1',
    ]);
    const client = await subscribe(server.url);
    const closed = new Promise<[number, string]>((resolve) =>
      client.ws.once('close', (code, reason) => resolve([code, reason.toString()])),
    );
    expect(await waitFor(() => client.messages.some((m) => m.type === 'ticks'), 20_000)).toBe(true);
    server.child.kill('SIGINT');
    expect(await server.exited, server.output()).toBe(130);
    expect(await closed).toEqual([1001, 'replay stopped by SIGINT']);
    expect(client.messages.some((m) => m.type === 'replay_end')).toBe(false);
    expect(server.output()).toMatch(/to websocket clients on \S+ \(stopped by SIGINT\)\n/);
  }, 30_000);
});
