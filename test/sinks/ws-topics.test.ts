// Live fan-out through uWS topics (sinks/ws/server.ts), in process: a real WsServer on a
// loopback port and real `ws` clients, batches handed to write() by the test. Each client must
// get each tick of its channels exactly once whatever the overlap of its channels, in both
// formats; a pair seen for the first time reaches the clients subscribed to it; a client that
// stops reading leaves the topics, is conflated, and comes back live with every tick either
// delivered or counted in one `skipped`.
import { setImmediate as turn } from 'node:timers/promises';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { decodeTickRecord } from '../../codecs/flat-record.js';
import { allocTickBatch, type TickBatch } from '../../codecs/tick-batch.js';
import { WsServer } from '../../sinks/ws/server.js';

interface Msg {
  type: string;
  source?: string;
  symbol?: string;
  conflated?: boolean;
  skipped?: number;
  ticks?: { seq: number }[];
}

/** Ticks of one source, `symbols` in turn, seqs from `from` on. */
function batch(source: string, symbols: string[], from: number, n: number): TickBatch {
  const b = allocTickBatch(source, symbols, n);
  for (let k = 0; k < n; k++) {
    const i = b.length++;
    b.seq[i] = from + k;
    b.symbolIndex[i] = k % symbols.length;
    b.utcMsc[i] = 1_700_000_000_000 + from + k;
    b.serverTimeMsc[i] = b.utcMsc[i] as number;
    b.bid[i] = 1 + k / 1e5;
    b.ask[i] = 1.0001 + k / 1e5;
    b.flags[i] = 6;
  }
  return b;
}

/** Waits until `probe` holds, polling each event-loop turn and every few ms. */
async function until(
  probe: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 20_000,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** A `ws` client that keeps every message (binary TickRecords as `ticks` messages). */
class Client {
  readonly ws: WebSocket;
  readonly messages: Msg[] = [];
  closeCode = 0;

  constructor(port: number, binary = false) {
    this.ws = new WebSocket(`ws://127.0.0.1:${port}/ws${binary ? '?format=flatbuffers' : ''}`, {
      perMessageDeflate: false,
    });
    this.ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary) {
        this.messages.push(JSON.parse(data.toString('utf8')) as Msg);
        return;
      }
      const b = decodeTickRecord(new Uint8Array(data));
      const symbol = b.symbols[b.symbolIndex[0] as number];
      this.messages.push({
        type: 'ticks',
        source: b.source,
        symbol,
        ticks: [...b.seq].map((seq) => ({ seq })),
      });
    });
    this.ws.on('close', (code) => {
      this.closeCode = code;
    });
  }

  async subscribe(channels: string[], snapshots = 0): Promise<void> {
    if (this.ws.readyState !== WebSocket.OPEN) await new Promise((r) => this.ws.once('open', r));
    const before = this.messages.length;
    this.ws.send(JSON.stringify({ op: 'subscribe', channels }));
    await until(
      () =>
        this.messages.slice(before).filter((m) => m.type === 'subscribed').length === 1 &&
        this.messages.slice(before).filter((m) => m.type === 'snapshot').length === snapshots,
      `subscribed and ${snapshots} snapshots`,
    );
  }

  /** Seqs of live `ticks` messages per `source:symbol`, in arrival order. */
  seqs(): Map<string, number[]> {
    const out = new Map<string, number[]>();
    for (const m of this.messages) {
      if (m.type !== 'ticks') continue;
      const k = `${m.source}:${m.symbol}`;
      out.set(k, [...(out.get(k) ?? []), ...(m.ticks ?? []).map((t) => t.seq)]);
    }
    return out;
  }

  ticks(): number {
    return this.messages.reduce((s, m) => s + (m.type === 'ticks' ? (m.ticks?.length ?? 0) : 0), 0);
  }
}

const servers: WsServer[] = [];
const clients: Client[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.ws.terminate();
  for (const s of servers.splice(0)) await s.close();
});

async function serve(limit: number, policy: 'conflate' | 'disconnect' = 'conflate') {
  const registry = new Registry();
  const server = new WsServer({
    host: '127.0.0.1',
    port: 0,
    tokens: [],
    maxBackpressureBytes: limit,
    slowConsumerPolicy: policy,
    maxClients: 100,
    maxChannelsPerClient: 100,
    snapshotsPerTurn: 256,
    registry,
    logger: pino({ level: 'silent' }),
  });
  servers.push(server);
  const port = await server.start();
  const metric = async (name: string) =>
    (await registry.getSingleMetric(name)?.get())?.values[0]?.value ?? Number.NaN;
  const client = (binary = false) => {
    const c = new Client(port, binary);
    clients.push(c);
    return c;
  };
  return { server, metric, client };
}

/** The seqs `from`..`to` of a source whose batches cycle through `symbols`, per symbol. */
function expected(
  source: string,
  symbols: string[],
  from: number,
  to: number,
  keep: (symbol: string) => boolean,
) {
  const out = new Map<string, number[]>();
  for (let seq = from; seq <= to; seq++) {
    const symbol = symbols[(seq - from) % symbols.length] as string;
    if (!keep(symbol)) continue;
    out.set(`${source}:${symbol}`, [...(out.get(`${source}:${symbol}`) ?? []), seq]);
  }
  return out;
}

describe('websocket fan-out through uWS topics', () => {
  it('each tick reaches each client once whatever the overlap of its channels, JSON and FlatBuffers; the counters match', async () => {
    const { server, metric, client } = await serve(1 << 20);
    const S = ['EURUSD', 'GBPUSD'];
    // Subscribed before any pair exists: the pairs' topics come with their first ticks.
    const early = client();
    await early.subscribe(['s1:EURUSD', 'GBPUSD']);
    let seq = { s1: 1, s2: 1 };
    const write = (rounds: number) => {
      for (let r = 0; r < rounds; r++) {
        for (const source of ['s1', 's2'] as const) {
          server.write(batch(source, S, seq[source], 30));
          seq = { ...seq, [source]: seq[source] + 30 };
        }
      }
    };
    write(3);
    // Four known pairs now: snapshots, then live through the topics.
    const all = client();
    await all.subscribe(['*', 'EURUSD', 's1:EURUSD'], 4);
    const some = client();
    await some.subscribe(['EURUSD', 's1:EURUSD', 's2:GBPUSD'], 3);
    const flat = client(true);
    await flat.subscribe(['*', 'GBPUSD'], 4);
    const none = client();
    await none.subscribe(['NOPE', 's3:EURUSD']);
    await until(
      async () => (await metric('tickstream_ws_direct_clients')) === 0,
      'every client on its topics',
    );
    const from = { ...seq };
    write(20);
    const to = { s1: seq.s1 - 1, s2: seq.s2 - 1 };
    const total = (keep: (source: string, symbol: string) => boolean, start: typeof from) =>
      new Map([
        ...expected('s1', S, start.s1, to.s1, (sym) => keep('s1', sym)),
        ...expected('s2', S, start.s2, to.s2, (sym) => keep('s2', sym)),
      ]);
    const wantEarly = total((src, sym) => sym === 'GBPUSD' || (src === 's1' && sym === 'EURUSD'), {
      s1: 1,
      s2: 1,
    });
    const wantAll = total(() => true, from);
    const wantSome = total((src, sym) => sym === 'EURUSD' || src === 's2', from);
    const wantFlat = total(() => true, from);
    const count = (m: Map<string, number[]>) => [...m.values()].reduce((s, v) => s + v.length, 0);
    await until(
      () =>
        early.ticks() === count(wantEarly) &&
        all.ticks() === count(wantAll) &&
        some.ticks() === count(wantSome) &&
        flat.ticks() === count(wantFlat),
      'every client has its ticks',
    );
    expect(early.seqs()).toEqual(wantEarly);
    expect(all.seqs()).toEqual(wantAll);
    expect(some.seqs()).toEqual(wantSome);
    expect(flat.seqs()).toEqual(wantFlat);
    expect(none.ticks()).toBe(0);
    const delivered = [early, all, some, flat].reduce((s, c) => s + c.ticks(), 0);
    expect(await metric('tickstream_ws_ticks_sent_total')).toBe(delivered);
  });

  it('an unsubscribe stops the pair at once; a pair first seen later reaches the clients it matches; `*` comes and goes', async () => {
    const { server, client } = await serve(1 << 20);
    const c = client();
    await c.subscribe(['s3:NEW', 'MARK']);
    server.write(batch('s3', ['NEW', 'OTHER', 'MARK'], 1, 9));
    await until(() => c.seqs().get('s3:MARK')?.length === 3, 'the first MARK ticks');
    expect(c.seqs()).toEqual(
      new Map([
        ['s3:NEW', [1, 4, 7]],
        ['s3:MARK', [3, 6, 9]],
      ]),
    );
    c.ws.send(JSON.stringify({ op: 'unsubscribe', channels: ['s3:NEW'] }));
    await until(() => c.messages.some((m) => m.type === 'unsubscribed'), 'unsubscribed');
    server.write(batch('s3', ['NEW', 'OTHER', 'MARK'], 10, 9));
    // MARK comes after NEW in each batch: once its ticks are in, NEW's would be too.
    await until(() => c.seqs().get('s3:MARK')?.length === 6, 'the second MARK ticks');
    expect(c.seqs().get('s3:NEW')).toEqual([1, 4, 7]);
    // A source first seen now: its MARK pair reaches the client subscribed to the symbol.
    server.write(batch('s4', ['MARK'], 1, 2));
    await until(() => c.seqs().get('s4:MARK')?.length === 2, 'the new pair');
    // `*` on top of MARK (snapshots of the four pairs first), then off again: MARK keeps
    // coming once per tick, NEW and OTHER only while `*` is held.
    await c.subscribe(['*'], 4);
    server.write(batch('s3', ['NEW', 'OTHER', 'MARK'], 19, 9));
    await until(() => c.seqs().get('s3:MARK')?.length === 9, 'MARK under *');
    c.ws.send(JSON.stringify({ op: 'unsubscribe', channels: ['*'] }));
    await until(() => c.messages.filter((m) => m.type === 'unsubscribed').length === 2, 'unsubscribed *');
    server.write(batch('s3', ['NEW', 'OTHER', 'MARK'], 28, 9));
    await until(() => c.seqs().get('s3:MARK')?.length === 12, 'MARK after *');
    expect(c.seqs()).toEqual(
      new Map([
        ['s3:NEW', [1, 4, 7, 19, 22, 25]],
        ['s3:MARK', [3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36]],
        ['s4:MARK', [1, 2]],
        ['s3:OTHER', [20, 23, 26]],
      ]),
    );
  });

  it('a client that stops reading leaves the topics, is conflated, then comes back live: every tick delivered or skipped once, in order', async () => {
    const LIMIT = 256 << 10;
    const { server, metric, client } = await serve(LIMIT);
    // Ten symbols: ten messages a batch, so the check that takes the client off its topics
    // mostly comes between two slices of one batch, while uWS still holds the first ones for it.
    const S = Array.from({ length: 10 }, (_, i) => `SYM${i}`);
    const reader = client();
    await reader.subscribe(['*']);
    const slow = client();
    await slow.subscribe(['*']);
    slow.ws.pause();
    let seq = 1;
    const writeOne = async () => {
      server.write(batch('src', S, seq, 300));
      seq += 300;
      // Paced on the reader (it must never be slow itself): it has every tick written so far.
      await until(() => reader.ticks() === seq - 1, 'the reader');
    };
    // Until the slow client is off the topics and conflated for a while (its kernel buffers
    // take a few MB first).
    let extra = 0;
    for (let n = 0; extra < 30; n++) {
      if (n > 3000) throw new Error('the paused client never went over its limit');
      await writeOne();
      if ((await metric('tickstream_ws_conflated_ticks_total')) > 0) extra++;
    }
    expect(await metric('tickstream_ws_direct_clients')).toBe(1);
    const skippedAt = await metric('tickstream_ws_conflated_ticks_total');
    slow.ws.resume();
    await until(() => slow.messages.some((m) => m.conflated), 'the conflated ticks');
    await until(async () => (await metric('tickstream_ws_direct_clients')) === 0, 'back on the topics');
    // Live again: these go through the topics.
    for (let n = 0; n < 10; n++) await writeOne();
    const last = seq - 1;
    await until(() => [...slow.seqs().values()].some((v) => v.at(-1) === last), 'the last tick');
    const delivered = new Map<string, number>();
    const skipped = new Map<string, number>();
    for (const m of slow.messages) {
      if (m.type !== 'ticks') continue;
      const k = m.symbol as string;
      delivered.set(k, (delivered.get(k) ?? 0) + (m.ticks?.length ?? 0));
      if (m.conflated) skipped.set(k, (skipped.get(k) ?? 0) + (m.skipped ?? 0));
    }
    for (const [k, seqs] of slow.seqs())
      expect(seqs, `${k} in seq order`).toEqual([...seqs].sort((a, b) => a - b));
    for (const symbol of S)
      expect((delivered.get(symbol) ?? 0) + (skipped.get(symbol) ?? 0), symbol).toBe(last / S.length);
    const skippedTotal = [...skipped.values()].reduce((s, v) => s + v, 0);
    expect(skippedTotal).toBe(await metric('tickstream_ws_conflated_ticks_total'));
    expect(skippedTotal).toBeGreaterThanOrEqual(skippedAt);
    expect(reader.seqs().get('src:SYM0')?.length).toBe(last / S.length);
    expect(slow.closeCode).toBe(0);
  }, 60_000);

  it('policy disconnect: a client that stops reading is closed with 1008 while the reader goes on', async () => {
    const LIMIT = 256 << 10;
    const { server, metric, client } = await serve(LIMIT, 'disconnect');
    const reader = client();
    await reader.subscribe(['*']);
    const slow = client();
    await slow.subscribe(['*']);
    slow.ws.pause();
    let seq = 1;
    for (let n = 0; slow.closeCode === 0; n++) {
      if (n > 3000) throw new Error('the paused client was never disconnected');
      server.write(batch('src', ['AAA'], seq, 300));
      seq += 300;
      await until(() => reader.ticks() === seq - 1, 'the reader');
      if ((await metric('tickstream_ws_slow_disconnects_total')) > 0) slow.ws.resume();
      await turn();
    }
    expect(slow.closeCode).toBe(1008);
    expect(reader.closeCode).toBe(0);
  }, 60_000);
});
