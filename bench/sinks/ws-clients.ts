/**
 * The websocket comparison's clients (bench/sinks/ws.ts), run in a worker thread so they use the
 * second core and not the server's: N `ws` clients that subscribe, then count the tick messages
 * they receive into a SharedArrayBuffer (one Int32 per client) that the server side reads to
 * pace itself and to see when every client has everything.
 *
 * Messages from the parent: 'report' → { counts, first, last } (the first and last tick message
 * each client got, for the parent to compare with what was sent); 'close' → closes every client
 * and answers 'closed'. To the parent: 'ready' once every client is subscribed, or
 * { error } when a client fails.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { WebSocket } from 'ws';

export interface ClientsData {
  url: string;
  clients: number;
  /** Int32Array over it: tick messages received per client. */
  counts: SharedArrayBuffer;
  /** Sent once open, e.g. {"op":"subscribe","channels":["*"]}. */
  subscribe: string;
}

const TICKS = Buffer.from('{"type":"ticks"');
const SUBSCRIBED = Buffer.from('{"type":"subscribed"');

function main(): void {
  const port = parentPort;
  if (!port) return;
  const d = workerData as ClientsData;
  const counts = new Int32Array(d.counts);
  const first: (Buffer | null)[] = new Array(d.clients).fill(null);
  const last: (Buffer | null)[] = new Array(d.clients).fill(null);
  const sockets: WebSocket[] = [];
  let subscribed = 0;
  let failed = false;
  const fail = (message: string) => {
    if (failed) return;
    failed = true;
    port.postMessage({ error: message });
  };
  for (let i = 0; i < d.clients; i++) {
    const ws = new WebSocket(d.url, { perMessageDeflate: false, maxPayload: 64 << 20 });
    sockets.push(ws);
    ws.on('open', () => ws.send(d.subscribe));
    ws.on('message', (data: Buffer) => {
      if (data.length > TICKS.length && data.compare(TICKS, 0, TICKS.length, 0, TICKS.length) === 0) {
        if (first[i] === null) first[i] = data;
        last[i] = data;
        Atomics.add(counts, i, 1);
      } else if (data.compare(SUBSCRIBED, 0, SUBSCRIBED.length, 0, SUBSCRIBED.length) === 0) {
        if (++subscribed === d.clients) port.postMessage('ready');
      }
    });
    ws.on('error', (err) => fail(`client ${i}: ${err.message}`));
    ws.on('close', (code, reason) => {
      if (code !== 1000 && code !== 1001 && code !== 1005) fail(`client ${i} closed: ${code} ${reason}`);
    });
  }
  port.on('message', (m: string) => {
    if (m === 'report') {
      port.postMessage({
        counts: [...counts],
        first: first.map((b) => b?.toString('utf8') ?? ''),
        last: last.map((b) => b?.toString('utf8') ?? ''),
      });
    } else if (m === 'close') {
      failed = true; // closing on purpose
      let open = sockets.length;
      const done = () => {
        if (--open === 0) port.postMessage('closed');
      };
      for (const ws of sockets) {
        if (ws.readyState === WebSocket.CLOSED) done();
        else {
          ws.once('close', done);
          ws.close(1000);
        }
      }
    }
  });
}

main();
