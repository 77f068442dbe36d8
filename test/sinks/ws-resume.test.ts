// Websocket resume and replay against a real `serve` fed by `sim`, its journal on the real broker,
// checked against a consumer that shares no code with serve (test/helpers/independent.ts).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { type JournalTick, readJournalTicks } from '../helpers/independent.js';
import {
  captured,
  isolatedNames,
  removeNames,
  runSim,
  type ServeProcess,
  serveArgs,
  startServe,
  waitFor,
} from '../helpers/procs.js';

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
  id?: string;
  source?: string;
  symbol?: string;
  resumed?: boolean;
  conflated?: boolean;
  ticks?: WireTick[] | number;
  sources?: Record<string, number>;
  code?: string;
}

/** A raw websocket client that keeps every message it got, in order. */
async function connect(port: number): Promise<{ ws: WebSocket; messages: Message[]; closed: Promise<void> }> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
  const messages: Message[] = [];
  ws.on('message', (data) => messages.push(JSON.parse(data.toString()) as Message));
  const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    ws.once('error', reject);
    ws.once('open', () => resolve());
  });
  return { ws, messages, closed };
}

/** The ticks of `ticks` messages (live, resumed and held), each with its source and symbol. */
const ticksOf = (messages: readonly Message[], source: string) =>
  messages
    .filter((m) => m.type === 'ticks' && m.source === source)
    .flatMap((m) => (m.ticks as WireTick[]).map((t) => ({ ...t, symbol: m.symbol as string })));

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
  symbol: t.symbol,
});

const sim = (port: number, source: string, args: string[]) =>
  runSim(['--synthetic', '--seed', '7', '--source', source, '--port', String(port), ...args], 120_000);

describe('websocket resume and replay from the journal (real serve, sim, broker)', () => {
  const n = isolatedNames('wsresume');
  let serve: ServeProcess;
  /** The journal of source `res`, streamed live in the first test. */
  let journal: JournalTick[] = [];

  beforeAll(async () => {
    serve = await startServe(serveArgs(n, ['--redis-enabled', 'false', '--loader-enabled', 'false']));
  }, 60_000);

  afterAll(async () => {
    expect(await serve?.stop()).toBe(0);
    await removeNames([n]);
  }, 60_000);

  it('a client that disconnects for 5 s mid-stream and resumes misses nothing and repeats nothing', async () => {
    const first = await connect(serve.httpPort);
    first.ws.send(JSON.stringify({ op: 'subscribe', channels: ['res:SYN001'] }));
    // 1 symbol, real time: about 12 s of ticks, so the 5 s gap and the resume fall mid-stream.
    const run = sim(serve.ingressPort, 'res', ['--symbols', '1', '--rate', '1000', '--duration', '12']);
    expect(await waitFor(() => ticksOf(first.messages, 'res').length >= 1500, 60_000)).toBe(true);
    first.ws.close();
    await first.closed;
    const before = ticksOf(first.messages, 'res');
    const lastSeen = (before[before.length - 1] as WireTick).seq;
    await new Promise((r) => setTimeout(r, 5000));
    const second = await connect(serve.httpPort);
    second.ws.send(JSON.stringify({ op: 'resume', channels: ['res:SYN001'], after: { res: lastSeen } }));
    const result = await run;
    expect(result.code, result.output).toBe(0);
    const total = captured(result.output);
    // Still live when the resume came: the catch-up was not the whole rest of the stream.
    expect(lastSeen).toBeLessThan(total);
    expect(
      await waitFor(() => {
        const got = ticksOf(second.messages, 'res');
        return got.length > 0 && (got[got.length - 1] as WireTick).seq === total;
      }, 60_000),
    ).toBe(true);
    second.ws.close();
    const after = ticksOf(second.messages, 'res');
    // No hole, no repeat: both connections together hold 1..total once each, in order.
    expect([...before, ...after].map((t) => t.seq)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
    journal = await readJournalTicks(n.ticksTopic, { expected: total });
    expect([...before, ...after]).toEqual(journal.filter((t) => t.source === 'res').map(wire));
    // The catch-up is marked, then `resumed` says where the journal's part ended; the held live
    // ticks follow it unmarked.
    const kinds = second.messages.map((m) => m.type);
    const at = kinds.indexOf('resumed');
    expect(at).toBeGreaterThan(0);
    const resumed = second.messages[at] as Message;
    const covered = resumed.sources?.['res'] as number;
    expect(covered).toBeGreaterThan(lastSeen);
    const catchUp = second.messages.slice(0, at).filter((m) => m.type === 'ticks');
    expect(catchUp.length).toBeGreaterThan(0);
    expect(catchUp.every((m) => m.resumed === true)).toBe(true);
    expect(second.messages.slice(at).some((m) => m.resumed)).toBe(false);
    expect(second.messages.find((m) => m.type === 'snapshot')).toBeUndefined();
    // The seam: the first tick after the marker (a held live one) is the next seq after it.
    const next = second.messages.slice(at).find((m) => m.type === 'ticks');
    if (covered < total) expect((next?.ticks as WireTick[] | undefined)?.[0]?.seq).toBe(covered + 1);
  }, 120_000);

  it('resumes over a bridge that has already committed everything: exactly the ticks after the seq, then resumed', async () => {
    const mine = journal.filter((t) => t.source === 'res');
    expect(mine.length).toBeGreaterThan(2000);
    const from = 777;
    const c = await connect(serve.httpPort);
    c.ws.send(JSON.stringify({ op: 'resume', channels: ['*'], after: { res: from } }));
    expect(await waitFor(() => c.messages.some((m) => m.type === 'resumed'), 60_000)).toBe(true);
    const got = ticksOf(c.messages, 'res');
    expect(got).toEqual(mine.filter((t) => t.seq > from).map(wire));
    expect(c.messages.find((m) => m.type === 'resumed')?.sources).toEqual({ res: mine.length });
    // Resuming from the end: nothing to send, only the marker.
    c.ws.send(JSON.stringify({ op: 'resume', channels: ['*'], after: { res: mine.length } }));
    expect(await waitFor(() => c.messages.filter((m) => m.type === 'resumed').length === 2, 60_000)).toBe(
      true,
    );
    expect(ticksOf(c.messages, 'res').length).toBe(got.length);
    c.ws.close();
  }, 120_000);

  it('a replay session at speed max sends exactly the journal ticks of the range, marked replay, while live goes on', async () => {
    const mine = journal.filter((t) => t.source === 'res');
    const fromMs = (mine[1000] as JournalTick).utcMsc;
    const toMs = (mine[6000] as JournalTick).utcMsc;
    const want = mine.filter((t) => t.utcMsc >= fromMs && t.utcMsc < toMs).map(wire);
    const live = await connect(serve.httpPort);
    live.ws.send(JSON.stringify({ op: 'subscribe', channels: ['*'] }));
    const replayer = await connect(serve.httpPort);
    // Live traffic of another source through the whole replay.
    const run = sim(serve.ingressPort, 'other', ['--symbols', '3', '--rate', '2000', '--duration', '8']);
    expect(await waitFor(() => ticksOf(live.messages, 'other').length > 0, 30_000)).toBe(true);
    replayer.ws.send(
      JSON.stringify({
        op: 'replay',
        id: 'r1',
        channels: ['SYN001'],
        source: 'res',
        from: new Date(fromMs).toISOString(),
        to: toMs,
        speed: 'max',
      }),
    );
    expect(await waitFor(() => replayer.messages.some((m) => m.type === 'replay_end'), 60_000)).toBe(true);
    const replayed = replayer.messages
      .filter((m) => m.type === 'replay')
      .flatMap((m) => {
        expect(m.id).toBe('r1');
        return (m.ticks as WireTick[]).map((t) => ({ ...t, symbol: m.symbol as string }));
      });
    expect(replayed).toEqual(want);
    expect(replayer.messages.find((m) => m.type === 'replay_end')).toEqual({
      type: 'replay_end',
      id: 'r1',
      ticks: want.length,
    });
    // Nothing but the replay went to the replaying client (it subscribed to nothing).
    expect(replayer.messages.every((m) => m.type === 'replay' || m.type === 'replay_end')).toBe(true);
    const result = await run;
    expect(result.code, result.output).toBe(0);
    expect(
      await waitFor(() => ticksOf(live.messages, 'other').length === captured(result.output), 30_000),
    ).toBe(true);
    live.ws.close();
    replayer.ws.close();
  }, 120_000);

  it('refuses a bad replay with an error and runs at most wsMaxReplaysPerClient at once', async () => {
    const c = await connect(serve.httpPort);
    c.ws.send(JSON.stringify({ op: 'replay', id: 'x', channels: ['*'], from: 'yesterday' }));
    c.ws.send(JSON.stringify({ op: 'replay', id: 'y', channels: ['*'], fromSeq: 3 }));
    c.ws.send(JSON.stringify({ op: 'replay', id: 'z', channels: ['*'], from: 2000, to: 1000 }));
    expect(await waitFor(() => c.messages.length === 3, 10_000)).toBe(true);
    expect(c.messages.map((m) => m.code)).toEqual([
      'ERR_FRAME_PAYLOAD',
      'ERR_FRAME_PAYLOAD',
      'ERR_FRAME_PAYLOAD',
    ]);
    // The default allows 2 replays per client: the third is refused while both run (paced ×1 over
    // the whole journal, they last as long as the recording).
    for (const id of ['a', 'b', 'c'])
      c.ws.send(JSON.stringify({ op: 'replay', id, channels: ['*'], speed: 1 }));
    expect(await waitFor(() => c.messages.some((m) => m.code === 'ERR_LIMIT'), 10_000)).toBe(true);
    c.ws.close();
    await c.closed;
  }, 60_000);
});

describe('websocket resume over its bound of held live ticks (real serve, sim, broker)', () => {
  const n = isolatedNames('wsheld');
  let serve: ServeProcess;

  beforeAll(async () => {
    serve = await startServe(
      serveArgs(n, [
        '--redis-enabled',
        'false',
        '--loader-enabled',
        'false',
        '--ws-resume-max-held-ticks',
        '20',
      ]),
    );
  }, 60_000);

  afterAll(async () => {
    expect(await serve?.stop()).toBe(0);
    await removeNames([n]);
  }, 60_000);

  it('fails with ERR_LIMIT and closes with 1013 so the client resumes again; other clients are untouched', async () => {
    const live = await connect(serve.httpPort);
    live.ws.send(JSON.stringify({ op: 'subscribe', channels: ['*'] }));
    const run = sim(serve.ingressPort, 'held', ['--symbols', '2', '--rate', '2000', '--duration', '6']);
    expect(await waitFor(() => ticksOf(live.messages, 'held').length > 2000, 60_000)).toBe(true);
    // Catching up from seq 0 takes longer than 20 live ticks take to arrive.
    const c = await connect(serve.httpPort);
    const code = new Promise<number>((resolve) => c.ws.once('close', (n) => resolve(n)));
    c.ws.send(JSON.stringify({ op: 'resume', channels: ['*'], after: { held: 0 } }));
    expect(await code).toBe(1013);
    const error = c.messages.find((m) => m.type === 'error');
    expect(error?.code).toBe('ERR_LIMIT');
    expect(c.messages.some((m) => m.type === 'resumed')).toBe(false);
    const result = await run;
    expect(result.code, result.output).toBe(0);
    expect(
      await waitFor(() => ticksOf(live.messages, 'held').length === captured(result.output), 30_000),
    ).toBe(true);
    const metrics = await fetch(`http://127.0.0.1:${serve.httpPort}/metrics`).then((r) => r.text());
    expect(metrics).toMatch(
      /tickstream_ws_journal_session_failures_total\{kind="resume",code="ERR_LIMIT"\} 1/,
    );
    live.ws.close();
  }, 120_000);
});
