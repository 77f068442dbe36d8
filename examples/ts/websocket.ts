// The live feed over a websocket (docs/websocket.md), with the `ws` package: subscribe to a
// symbol and print each tick. Stops after COUNT live ticks when given.
//   node dist/examples/ts/websocket.js EURUSD [COUNT]
// TICKSTREAM_WS_URL (default ws://127.0.0.1:5001/ws; add ?token=… when serve has --ws-tokens).
import WebSocket from 'ws';

interface WsTick {
  seq: number;
  time: number;
  bid: number;
  ask: number;
}

const symbol = process.argv[2] ?? 'EURUSD';
const count = Number(process.argv[3] ?? Number.POSITIVE_INFINITY);
const url = process.env['TICKSTREAM_WS_URL'] ?? 'ws://127.0.0.1:5001/ws';

let seen = 0;
const ws = new WebSocket(url);
ws.on('open', () => ws.send(JSON.stringify({ op: 'subscribe', channels: [symbol] })));
ws.on('message', (data) => {
  const m = JSON.parse(data.toString()) as { type: string; source: string; symbol: string; ticks?: WsTick[] };
  if (m.type === 'subscribed') console.log(`subscribed ${symbol}`);
  if (m.type !== 'ticks') return; // snapshots (the newest tick on subscribing), bars, errors
  for (const t of m.ticks ?? []) {
    if (seen >= count) return; // closing: messages already on the way are not printed
    console.log(m.source, t.seq, m.symbol, new Date(t.time).toISOString(), t.bid, t.ask);
    if (++seen >= count) ws.close();
  }
});
// exitCode, not process.exit(): the process ends once stdout has flushed what was printed.
ws.on('close', () => {
  process.exitCode = seen >= count ? 0 : 1;
});
ws.on('error', (err) => console.error(`websocket ${url}: ${err.message}`));
