/**
 * The websocket fan-out against a bare uWebSockets.js app (the same package, the native
 * ceiling), in the same run, to the same clients, with the same messages.
 *
 * - ours: a WsServer (production options: 1 MiB slow-consumer limit, conflate) given N ticks as
 *   TickBatches of 300 ticks over three symbols, so every `write(batch)` makes three
 *   `{"type":"ticks",...}` messages of ~100 ticks, serialised by the server and published to
 *   the uWS topic its clients (subscribed to `*`) are on.
 * - native: a uWS app whose clients subscribe to one topic, `app.publish(topic, message)` of the
 *   same messages, serialised beforehand (its best case).
 * - peer: the `ws` package's WebSocketServer sending the same pre-serialised messages to each
 *   subscribed client (the usual broadcast loop).
 *
 * Clients are `ws` WebSockets in a worker thread (bench/sinks/ws-clients.ts), so the server
 * has one core and the clients the other. Every side is paced the same way: a message goes out
 * only while the slowest client is fewer than WINDOW_BYTES behind, which keeps ours under its
 * slow-consumer limit (a conflated tick would never arrive) and uWS under its maxBackpressure.
 * Timed from the first send until every client has counted every message; the last message
 * each client got is compared with the last one sent. Figures are ticks delivered per second
 * summed over clients.
 *
 * Rounds alternate native and ours, best of each counts (shared machine). On a loaded machine
 * the clients' thread sets both rates, so one more round per side measures what the fan-out
 * costs the server: CPU time of the main thread (where uWS writes to the sockets) per tick
 * delivered, paced with 1 ms timers instead of turns of the loop (which would burn that thread
 * while it waits). Ours includes the JSON serialisation native is spared.
 */
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import uws from '@trufflesuite/uws-js-unofficial';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { WebSocketServer, type WebSocket as WsSocket } from 'ws';
import type { TickBatch } from '../../codecs/tick-batch.js';
import { WsServer } from '../../sinks/ws/server.js';
import type { Comparison } from '../report.js';
import { best, feed, short } from './common.js';
import type { ClientsData } from './ws-clients.js';

const HOST = '127.0.0.1';
const SYMBOLS = ['EURUSD', 'GBPUSD', 'USDJPY'];
const BATCH_TICKS = 300;
const MAX_BACKPRESSURE_BYTES = 1 << 20; // wsMaxBackpressureBytes default
const WINDOW_BYTES = 512 << 10; // per client, half the slow-consumer limit
const STALL_MS = 15_000;
const TICKS = 300_000; // per round, sent to every client
const ROUNDS = 3;
const TOPIC = 'ticks';
const SUBSCRIBE = JSON.stringify({ op: 'subscribe', channels: ['*'] });

/** The server's tick message (sinks/ws/server.ts tickMessage), for the native side and checks. */
function tickMessage(batch: TickBatch, symbol: string, idx: number[]): string {
  let ticks = '';
  for (const i of idx) {
    ticks += `${ticks ? ',' : ''}{"seq":${batch.seq[i]},"time":${batch.utcMsc[i]},"tsrv":${batch.serverTimeMsc[i]},"bid":${batch.bid[i]},"ask":${batch.ask[i]},"last":${batch.last[i]},"vol":${batch.volume[i]},"volr":${batch.volumeReal[i]},"flags":${batch.flags[i]}}`;
  }
  return `{"type":"ticks","source":${JSON.stringify(batch.source)},"symbol":${JSON.stringify(symbol)},"rt":${batch.receivedAtMs},"ticks":[${ticks}]}`;
}

/** The messages one write(batch) makes: one per symbol, in first-appearance order. */
function messagesOf(batch: TickBatch): string[] {
  const rows = new Map<number, number[]>();
  for (let i = 0; i < batch.length; i++) {
    const s = batch.symbolIndex[i] as number;
    let list = rows.get(s);
    if (!list) {
      list = [];
      rows.set(s, list);
    }
    list.push(i);
  }
  return [...rows].map(([s, idx]) => tickMessage(batch, batch.symbols[s] as string, idx));
}

interface Clients {
  counts: Int32Array;
  min(): number;
  report(): Promise<{ counts: number[]; first: string[]; last: string[] }>;
  close(): Promise<void>;
}

/** Starts the client worker and waits until every client is subscribed. */
async function startClients(url: string, n: number): Promise<Clients> {
  const sab = new SharedArrayBuffer(4 * n);
  const counts = new Int32Array(sab);
  const data: ClientsData = { url, clients: n, counts: sab, subscribe: SUBSCRIBE };
  const worker = new Worker(new URL('./ws-clients.js', import.meta.url), { workerData: data });
  let error: string | null = null;
  const replies: ((m: unknown) => void)[] = [];
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error('the ws clients did not all subscribe within 15 s')),
      15_000,
    );
    worker.on('message', (m: unknown) => {
      if (m === 'ready') {
        clearTimeout(timer);
        resolve();
      } else if (typeof m === 'object' && m && 'error' in m) {
        error = String(m.error);
        clearTimeout(timer);
        reject(new Error(error));
      } else replies.shift()?.(m);
    });
    worker.on('error', (err) => {
      error = err.message;
      reject(err);
    });
  });
  const ask = <T>(m: string) =>
    new Promise<T>((resolve) => {
      replies.push(resolve as (m: unknown) => void);
      worker.postMessage(m);
    });
  return {
    counts,
    min() {
      if (error) throw new Error(`ws clients: ${error}`);
      let m = Number.POSITIVE_INFINITY;
      for (let i = 0; i < n; i++) {
        const c = Atomics.load(counts, i);
        if (c < m) m = c;
      }
      return m;
    },
    report: () => ask('report'),
    async close() {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([ask('close'), new Promise((r) => (timer = setTimeout(r, 5000)))]);
      clearTimeout(timer);
      await worker.terminate();
    },
  };
}

const tick = () => new Promise<void>((r) => setImmediate(r));
const nap = () => new Promise<void>((r) => setTimeout(r, 1));

/** CPU time of this process's main thread in ms (Linux; 10 ms resolution), or null elsewhere. */
function mainThreadCpuMs(): number | null {
  try {
    const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * 10;
  } catch {
    return null;
  }
}

/** How a side is timed: best wall rate (`tick` waits) or main-thread CPU (`nap` waits). */
interface Timing {
  wait: () => Promise<void>;
}
const FAST: Timing = { wait: tick };
const CPU: Timing = { wait: nap };

/**
 * Sends `total` messages through `send(k)` (which may send several: `perSend[k]`), never more
 * than `window` messages ahead of the slowest client; resolves once all have arrived.
 */
async function paced(
  clients: Clients,
  sends: number,
  perSend: (k: number) => number,
  send: (k: number) => void,
  window: number,
  wait: () => Promise<void>,
): Promise<{ seconds: number; cpuMs: number | null }> {
  let sent = 0;
  let lastProgress = performance.now();
  let lastMin = -1;
  const check = () => {
    const m = clients.min();
    const now = performance.now();
    if (m !== lastMin) {
      lastMin = m;
      lastProgress = now;
    } else if (now - lastProgress > STALL_MS)
      throw new Error(`no progress for ${STALL_MS / 1000} s: clients at ${m} of ${sent} messages`);
    return m;
  };
  const t0 = performance.now();
  const cpu0 = mainThreadCpuMs();
  for (let k = 0; k < sends; k++) {
    while (sent - check() >= window) await wait();
    send(k);
    sent += perSend(k);
  }
  while (check() < sent) await wait();
  const cpu1 = mainThreadCpuMs();
  return {
    seconds: (performance.now() - t0) / 1000,
    cpuMs: cpu0 === null || cpu1 === null ? null : cpu1 - cpu0,
  };
}

interface Run {
  ticksPerS: number;
  /** Main-thread CPU per tick delivered (summed over clients), ns. */
  cpuNsPerTick: number | null;
}

const runOf = (w: Workload, n: number, r: { seconds: number; cpuMs: number | null }): Run => ({
  ticksPerS: (w.ticks * n) / r.seconds,
  cpuNsPerTick: r.cpuMs === null ? null : (r.cpuMs * 1e6) / (w.ticks * n),
});

interface Workload {
  batches: TickBatch[];
  /** Pre-serialised, per batch. */
  messages: Buffer[][];
  flat: Buffer[];
  ticks: number;
  window: number;
}

async function verify(clients: Clients, w: Workload, side: string): Promise<void> {
  const r = await clients.report();
  const expectedFirst = (w.flat[0] as Buffer).toString('utf8');
  const expectedLast = (w.flat[w.flat.length - 1] as Buffer).toString('utf8');
  r.counts.forEach((c, i) => {
    if (c !== w.flat.length) throw new Error(`${side}: client ${i} got ${c} of ${w.flat.length} messages`);
    if (r.first[i] !== expectedFirst || r.last[i] !== expectedLast)
      throw new Error(`${side}: client ${i} got other bytes than the messages sent`);
  });
}

async function runOurs(w: Workload, n: number, timing: Timing): Promise<Run & { conflated: number }> {
  const registry = new Registry();
  const server = new WsServer({
    host: HOST,
    port: 0,
    tokens: [],
    maxBackpressureBytes: MAX_BACKPRESSURE_BYTES,
    slowConsumerPolicy: 'conflate',
    maxClients: 1000,
    maxChannelsPerClient: 1000,
    snapshotsPerTurn: 256,
    registry,
    logger: pino({ level: 'silent' }),
  });
  const port = await server.start();
  const clients = await startClients(`ws://${HOST}:${port}/ws`, n);
  try {
    const r = await paced(
      clients,
      w.batches.length,
      (k) => (w.messages[k] as Buffer[]).length,
      (k) => server.write(w.batches[k] as TickBatch),
      w.window,
      timing.wait,
    );
    await verify(clients, w, 'WsServer');
    const metric = async (name: string) =>
      (await registry.getSingleMetric(name)?.get())?.values[0]?.value ?? 0;
    // The server's own count (uWS numSubscribers per publish) against what the clients counted.
    const counted = await metric('tickstream_ws_ticks_sent_total');
    if (counted !== w.ticks * n)
      throw new Error(`WsServer: tickstream_ws_ticks_sent_total ${counted}, clients got ${w.ticks * n}`);
    return { ...runOf(w, n, r), conflated: await metric('tickstream_ws_conflated_ticks_total') };
  } finally {
    await clients.close();
    await server.close();
  }
}

async function runNative(w: Workload, n: number, timing: Timing): Promise<Run> {
  const app = uws.App();
  const sockets = new Set<uws.WebSocket<unknown>>();
  app.ws('/ws', {
    // As ours: uWS's own limit at 4× the slow-consumer limit.
    maxBackpressure: MAX_BACKPRESSURE_BYTES * 4,
    closeOnBackpressureLimit: 0,
    maxPayloadLength: 64 * 1024,
    idleTimeout: 120,
    sendPingsAutomatically: true,
    open: (ws) => {
      sockets.add(ws);
    },
    message: (ws, data) => {
      const m = JSON.parse(Buffer.from(data).toString('utf8')) as { op?: string; channels?: string[] };
      if (m.op === 'subscribe' && m.channels?.includes('*')) ws.subscribe(TOPIC);
      ws.send(JSON.stringify({ type: 'subscribed', channels: m.channels ?? [] }), false);
    },
    close: (ws) => {
      sockets.delete(ws);
    },
  });
  const listen = await new Promise<uws.us_listen_socket | false>((r) => app.listen(HOST, 0, r));
  if (!listen) throw new Error('uWS could not listen');
  const port = uws.us_socket_local_port(listen as unknown as uws.us_socket);
  const clients = await startClients(`ws://${HOST}:${port}/ws`, n);
  try {
    const r = await paced(
      clients,
      w.flat.length,
      () => 1,
      (k) => app.publish(TOPIC, w.flat[k] as Buffer, false),
      w.window,
      timing.wait,
    );
    await verify(clients, w, 'uWS publish');
    return runOf(w, n, r);
  } finally {
    await clients.close();
    for (const ws of sockets) ws.end(1001);
    uws.us_listen_socket_close(listen);
  }
}

async function runWs(w: Workload, n: number): Promise<number> {
  const wss = new WebSocketServer({ host: HOST, port: 0, perMessageDeflate: false, path: '/ws' });
  await new Promise<void>((resolve, reject) => {
    wss.once('listening', resolve);
    wss.once('error', reject);
  });
  const subscribed = new Set<WsSocket>();
  wss.on('connection', (ws) => {
    ws.on('message', (data: Buffer) => {
      const m = JSON.parse(data.toString('utf8')) as { op?: string; channels?: string[] };
      if (m.op === 'subscribe' && m.channels?.includes('*')) subscribed.add(ws);
      ws.send(JSON.stringify({ type: 'subscribed', channels: m.channels ?? [] }));
    });
    ws.on('close', () => subscribed.delete(ws));
  });
  const port = (wss.address() as { port: number }).port;
  const clients = await startClients(`ws://${HOST}:${port}/ws`, n);
  try {
    const { seconds } = await paced(
      clients,
      w.flat.length,
      () => 1,
      (k) => {
        const m = w.flat[k] as Buffer;
        for (const ws of subscribed) ws.send(m, { binary: false });
      },
      w.window,
      tick,
    );
    await verify(clients, w, 'ws WebSocketServer');
    return (w.ticks * n) / seconds;
  } finally {
    await clients.close();
    for (const ws of wss.clients) ws.terminate();
    await new Promise((r) => wss.close(r));
  }
}

export async function compare({ quick }: { quick: boolean }): Promise<Comparison[]> {
  const clientsN = quick ? 20 : 50;
  const ticks = TICKS;
  const rounds = ROUNDS;
  const batches = feed(ticks, BATCH_TICKS, SYMBOLS);
  const messages = batches.map((b) => messagesOf(b).map((m) => Buffer.from(m, 'utf8')));
  const flat = messages.flat();
  const bytes = flat.reduce((s, m) => s + m.length, 0);
  const mean = bytes / flat.length;
  const sizes = flat.map((m) => m.length).sort((a, b) => a - b);
  const window = Math.max(1, Math.floor(WINDOW_BYTES / (sizes[sizes.length - 1] as number)));
  const w: Workload = { batches, messages, flat, ticks, window };

  // Warm-up (JIT, sockets): not timed.
  const warm: Workload = {
    ...w,
    batches: batches.slice(0, 50),
    messages: messages.slice(0, 50),
    flat: messages.slice(0, 50).flat(),
    ticks: batches.slice(0, 50).reduce((s, b) => s + b.length, 0),
  };
  await runOurs(warm, 4, FAST);
  await runNative(warm, 4, FAST);

  const native: number[] = [];
  const ours: (Run & { conflated: number })[] = [];
  for (let r = 0; r < rounds; r++) {
    native.push((await runNative(w, clientsN, FAST)).ticksPerS);
    ours.push(await runOurs(w, clientsN, FAST));
  }
  const nativeCpu = (await runNative(w, clientsN, CPU)).cpuNsPerTick;
  const oursCpuRun = await runOurs(w, clientsN, CPU);
  const oursCpu = oursCpuRun.cpuNsPerTick;
  const ns = (v: number | null) => (v === null ? 'n/a (no /proc)' : `${v.toFixed(0)} ns`);
  const peer = await runWs(w, clientsN);
  const oursBest = best(ours.map((o) => o.ticksPerS));
  const nativeBest = best(native);
  const mbps = (ticksPerS: number) => `${(((ticksPerS / ticks) * bytes) / 1e6).toFixed(0)} MB/s`;
  return [
    {
      name: 'ws: fan-out of JSON tick messages to every client (ticks delivered, summed)',
      ours: {
        label: 'WsServer.write (uWS topics, serialises per batch)',
        value: oursBest,
        unit: 'ticks/s delivered',
      },
      native: { label: 'uWS app.publish (pre-serialised)', value: nativeBest, unit: 'ticks/s delivered' },
      ratio_to_native: oursBest / nativeBest,
      settings: {
        clients: `${clientsN} ws clients in a worker thread, subscribed to *`,
        ticks_per_message: `~${Math.round(ticks / flat.length)}`,
        ticks_per_round: ticks,
        rounds,
        best_of: 'rounds (shared machine)',
        batch: `${BATCH_TICKS} ticks of ${SYMBOLS.length} symbols → ${SYMBOLS.length} messages per write`,
        messages_per_client: flat.length,
        message_bytes: `mean ${Math.round(mean)}, min ${sizes[0]}, max ${sizes[sizes.length - 1]}`,
        bytes_per_client: bytes,
        pacing: `≤ ${window} messages (${WINDOW_BYTES >> 10} KiB) ahead of the slowest client`,
        ours_options: `maxBackpressureBytes ${MAX_BACKPRESSURE_BYTES}, conflate, uWS maxBackpressure ${MAX_BACKPRESSURE_BYTES * 4}`,
        ours_conflated_ticks: ours.reduce((s, o) => s + o.conflated, oursCpuRun.conflated),
        ours_rounds: ours.map((o) => short(o.ticksPerS)).join('/'),
        server_cpu_per_delivered_tick: `ours ${ns(oursCpu)}, native ${ns(nativeCpu)} (main thread, one more round each, 1 ms timer pacing)`,
        server_cpu_ratio_native_to_ours:
          oursCpu && nativeCpu !== null ? Number((nativeCpu / oursCpu).toFixed(2)) : 'n/a',
        ours_mb_per_s: mbps(oursBest),
        native_app: `uWS.App, ws.subscribe('${TOPIC}'), app.publish of Buffers, maxBackpressure ${MAX_BACKPRESSURE_BYTES * 4}`,
        native_rounds: native.map(short).join('/'),
        native_mb_per_s: mbps(nativeBest),
        peer_ws: 'WebSocketServer, perMessageDeflate off, ws.send(buffer) per client',
      },
      peers: [
        {
          label: 'ws WebSocketServer send loop',
          value: peer,
          unit: 'ticks/s delivered',
          ratio_ours_to_peer: oursBest / peer,
        },
      ],
      note: 'Clients verify count, first and last message bytes, and ours counts the ticks it sent (tickstream_ws_ticks_sent_total) as the clients did. Ours serialises each slice once and publishes it to a uWS topic; native publishes pre-serialised bytes',
    },
  ];
}
