/**
 * Websockets and the HTTP operations surface on one uWebSockets.js port (behind this narrow
 * class, so uWS can be swapped). Protocol in docs/websocket.md:
 *
 *   → {"op":"subscribe","channels":["EURUSD","src1:BTCUSD","*"]}   (symbol, source:symbol, all)
 *   → {"op":"unsubscribe","channels":[...]}
 *   ← {"type":"subscribed",...}, then one {"type":"snapshot",...} per matching source:symbol seen
 *   ← {"type":"ticks","source","symbol","rt","ticks":[{seq,time,tsrv,bid,ask,last,vol,volr,flags}]}
 *   ← {"type":"bar",...}
 * `?format=flatbuffers` sends tick messages as binary TickRecords instead (codecs/schema).
 * Each (source, symbol) slice is serialised once per format per publish, whatever the number
 * of clients; a client subscribed to overlapping channels still gets each tick once.
 *
 * Slow consumers: once a client's unsent bytes pass `maxBackpressureBytes`, `conflate` keeps
 * only the newest tick per source:symbol for it and sends those (marked "conflated", with the
 * count skipped) when it drains; `disconnect` closes it with 1008 and a reason. Memory per
 * client stays bounded either way.
 */
import { readFileSync } from 'node:fs';
import uws from '@trufflesuite/uws-js-unofficial';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Bar } from '../../codecs/bar.js';
import { ErrorCode, TickstreamError } from '../../codecs/errors.js';
import { TickRecordEncoder } from '../../codecs/flat-record.js';
import type { TickBatch } from '../../codecs/tick-batch.js';

export interface WsServerOptions {
  host: string;
  port: number;
  tls?: { certFile: string; keyFile: string };
  tokens: readonly string[];
  maxBackpressureBytes: number;
  slowConsumerPolicy: 'conflate' | 'disconnect';
  maxClients: number;
  registry: Registry;
  logger: Logger;
}

export interface HttpRequest {
  path: string;
  query: string;
}
export interface HttpResponse {
  status: number;
  contentType: string;
  body: string;
}
export type HttpHandler = (req: HttpRequest) => HttpResponse | Promise<HttpResponse>;

interface Client {
  binary: boolean;
  channels: Set<string>;
  /** Newest tick message per source:symbol held back while the client is slow. */
  conflated: Map<string, { json: string; skipped: number }>;
}

type Socket = uws.WebSocket<Client>;

const STATUS: Record<number, string> = {
  200: '200 OK',
  401: '401 Unauthorized',
  404: '404 Not Found',
  503: '503 Service Unavailable',
  500: '500 Internal Server Error',
};

export class WsServer {
  readonly #o: WsServerOptions;
  readonly #app: uws.TemplatedApp;
  readonly #routes = new Map<string, HttpHandler>();
  readonly #clients = new Set<Socket>();
  /** Latest tick message per source:symbol, for snapshots on subscribe. */
  readonly #latest = new Map<string, { source: string; symbol: string; json: string }>();
  readonly #encoder = new TickRecordEncoder();
  #listen: uws.us_listen_socket | null = null;
  readonly #m;

  constructor(options: WsServerOptions) {
    this.#o = options;
    this.#app = options.tls
      ? uws.SSLApp({ cert_file_name: options.tls.certFile, key_file_name: options.tls.keyFile })
      : uws.App();
    if (options.tls) {
      // Fail early with a clear message: uWS itself only refuses to listen.
      for (const f of [options.tls.certFile, options.tls.keyFile]) readFileSync(f);
    }
    const registers = [options.registry];
    this.#m = {
      clients: new Gauge({ name: 'tickstream_ws_clients', help: 'Connected websocket clients', registers }),
      messages: new Counter({
        name: 'tickstream_ws_messages_sent_total',
        help: 'Websocket messages sent',
        registers,
      }),
      ticks: new Counter({
        name: 'tickstream_ws_ticks_sent_total',
        help: 'Ticks sent to websocket clients',
        registers,
      }),
      conflated: new Counter({
        name: 'tickstream_ws_conflated_ticks_total',
        help: 'Ticks skipped for slow clients (conflated to the newest)',
        registers,
      }),
      slowDisconnects: new Counter({
        name: 'tickstream_ws_slow_disconnects_total',
        help: 'Slow clients disconnected by policy',
        registers,
      }),
      authFailures: new Counter({
        name: 'tickstream_ws_auth_failures_total',
        help: 'Websocket upgrades refused for a missing or wrong token',
        registers,
      }),
      latency: new Histogram({
        name: 'tickstream_receipt_to_ws_publish_seconds',
        help: 'Bridge receipt of a tick to its websocket send',
        buckets: [0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1],
        registers,
      }),
    };
    this.#app.ws<Client>('/ws', {
      maxBackpressure: options.maxBackpressureBytes * 4,
      closeOnBackpressureLimit: 0,
      maxPayloadLength: 64 * 1024,
      idleTimeout: 120,
      sendPingsAutomatically: true,
      upgrade: (res, req, context) => {
        const query = new URLSearchParams(req.getQuery() ?? '');
        const auth = req.getHeader('authorization');
        const token = query.get('token') ?? (auth.startsWith('Bearer ') ? auth.slice(7) : '');
        const key = req.getHeader('sec-websocket-key');
        const protocol = req.getHeader('sec-websocket-protocol');
        const extensions = req.getHeader('sec-websocket-extensions');
        if (options.tokens.length && !options.tokens.includes(token)) {
          this.#m.authFailures.inc();
          res.cork(() =>
            res
              .writeStatus(STATUS[401] as string)
              .end('a valid token is required: connect with ?token=… or Authorization: Bearer …'),
          );
          return;
        }
        if (this.#clients.size >= options.maxClients) {
          res.cork(() =>
            res
              .writeStatus(STATUS[503] as string)
              .end(`the server holds ${options.maxClients} clients already`),
          );
          return;
        }
        res.upgrade<Client>(
          { binary: query.get('format') === 'flatbuffers', channels: new Set(), conflated: new Map() },
          key,
          protocol,
          extensions,
          context,
        );
      },
      open: (ws) => {
        this.#clients.add(ws);
        this.#m.clients.set(this.#clients.size);
      },
      message: (ws, data) => this.#onMessage(ws, Buffer.from(data).toString('utf8')),
      drain: (ws) => this.#drain(ws),
      close: (ws) => {
        this.#clients.delete(ws);
        this.#m.clients.set(this.#clients.size);
      },
    });
    this.#app.any('/*', (res, req) => {
      const path = req.getUrl();
      const query = req.getQuery() ?? '';
      const handler = this.#routes.get(path);
      let aborted = false;
      res.onAborted(() => {
        aborted = true;
      });
      const reply = (r: HttpResponse) => {
        if (aborted) return;
        res.cork(() =>
          res
            .writeStatus(STATUS[r.status] ?? `${r.status} Status`)
            .writeHeader('content-type', r.contentType)
            .end(r.body),
        );
      };
      if (!handler) return reply({ status: 404, contentType: 'text/plain', body: `no route ${path}\n` });
      Promise.resolve()
        .then(() => handler({ path, query }))
        .then(reply, (err: Error) =>
          reply({ status: 500, contentType: 'text/plain', body: `${err.message}\n` }),
        );
    });
  }

  route(path: string, handler: HttpHandler): void {
    this.#routes.set(path, handler);
  }

  async start(): Promise<number> {
    const socket = await new Promise<uws.us_listen_socket | false>((resolve) =>
      this.#app.listen(this.#o.host, this.#o.port, resolve),
    );
    if (!socket) {
      throw new TickstreamError(
        ErrorCode.CONFIG,
        `websocket/HTTP port ${this.#o.host}:${this.#o.port} is taken or not bindable: stop the other process or set --http-port`,
      );
    }
    this.#listen = socket;
    return uws.us_socket_local_port(socket as unknown as uws.us_socket);
  }

  get clientCount(): number {
    return this.#clients.size;
  }

  write(batch: TickBatch): void {
    if (this.#clients.size === 0) {
      this.#remember(batch);
      return;
    }
    const now = performance.timeOrigin + performance.now();
    // Rows of each symbol, in order: one message per (source, symbol) slice.
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
    for (const [sym, idx] of rows) {
      const symbol = batch.symbols[sym] as string;
      const key = `${batch.source}:${symbol}`;
      // Encoded to bytes once: uWS would convert a string again for every client.
      const json = Buffer.from(tickMessage(batch, symbol, idx));
      let binary: Uint8Array | null = null;
      this.#latest.set(key, {
        source: batch.source,
        symbol,
        json: tickMessage(batch, symbol, [idx[idx.length - 1] as number], 'snapshot'),
      });
      let sent = 0;
      for (const ws of this.#clients) {
        const c = ws.getUserData();
        if (!(c.channels.has('*') || c.channels.has(symbol) || c.channels.has(key))) continue;
        if (ws.getBufferedAmount() > this.#o.maxBackpressureBytes) {
          this.#slow(ws, c, key, batch, symbol, idx);
          continue;
        }
        if (c.binary) {
          binary ??= this.#encoder.encode(pick(batch, idx));
          ws.send(binary, true);
        } else ws.send(json, false);
        sent++;
      }
      this.#m.messages.inc(sent);
      this.#m.ticks.inc(sent * idx.length);
    }
    if (batch.receivedAtMs) this.#m.latency.observe((now - batch.receivedAtMs) / 1000);
  }

  writeBars(bars: Bar[]): void {
    for (const bar of bars) {
      const json = JSON.stringify({
        type: 'bar',
        ...bar,
        lastOpen: nan(bar.lastOpen),
        lastHigh: nan(bar.lastHigh),
        lastLow: nan(bar.lastLow),
        lastClose: nan(bar.lastClose),
      });
      for (const ws of this.#clients) {
        const c = ws.getUserData();
        if (
          (c.channels.has('*') ||
            c.channels.has(bar.symbol) ||
            c.channels.has(`${bar.source}:${bar.symbol}`)) &&
          ws.getBufferedAmount() <= this.#o.maxBackpressureBytes
        ) {
          ws.send(json, false);
        }
      }
    }
  }

  async close(reason = 'server shutting down'): Promise<void> {
    // A client that does not read would hold the close handshake (and the process) for uWS's
    // close timeout: it is cut at once; the others get a proper close with the reason.
    for (const ws of [...this.#clients]) {
      if (ws.getBufferedAmount() > 0) ws.close();
      else ws.end(1001, reason);
    }
    if (this.#listen) uws.us_listen_socket_close(this.#listen);
    this.#listen = null;
  }

  #remember(batch: TickBatch): void {
    const lastOf = new Map<number, number>();
    for (let i = 0; i < batch.length; i++) lastOf.set(batch.symbolIndex[i] as number, i);
    for (const [sym, i] of lastOf) {
      const symbol = batch.symbols[sym] as string;
      this.#latest.set(`${batch.source}:${symbol}`, {
        source: batch.source,
        symbol,
        json: tickMessage(batch, symbol, [i], 'snapshot'),
      });
    }
  }

  #slow(ws: Socket, c: Client, key: string, batch: TickBatch, symbol: string, idx: number[]): void {
    if (this.#o.slowConsumerPolicy === 'disconnect') {
      this.#m.slowDisconnects.inc();
      this.#o.logger.warn({ buffered: ws.getBufferedAmount() }, 'websocket client too slow: disconnecting');
      ws.end(1008, `too slow: more than ${this.#o.maxBackpressureBytes} bytes unsent`);
      return;
    }
    const prev = c.conflated.get(key);
    const last = idx[idx.length - 1] as number;
    // All but the newest tick of this slice are skipped, and so is the tick held back before it.
    const more = idx.length - 1 + (prev ? 1 : 0);
    const skipped = (prev?.skipped ?? 0) + more;
    c.conflated.set(key, { json: tickMessage(batch, symbol, [last], 'ticks', skipped), skipped });
    this.#m.conflated.inc(more);
  }

  #drain(ws: Socket): void {
    const c = ws.getUserData();
    if (ws.getBufferedAmount() > this.#o.maxBackpressureBytes) return;
    for (const [key, v] of c.conflated) {
      c.conflated.delete(key);
      ws.send(v.json, false);
    }
  }

  #onMessage(ws: Socket, text: string): void {
    let m: { op?: unknown; channels?: unknown };
    try {
      m = JSON.parse(text) as typeof m;
    } catch {
      ws.send(
        JSON.stringify({
          type: 'error',
          message: 'messages must be JSON: {"op":"subscribe","channels":["EURUSD"]}',
        }),
        false,
      );
      return;
    }
    const channels = Array.isArray(m.channels)
      ? m.channels.filter((x): x is string => typeof x === 'string' && x.length > 0 && x.length < 200)
      : [];
    const c = ws.getUserData();
    if (m.op === 'subscribe') {
      for (const ch of channels) c.channels.add(ch);
      ws.send(JSON.stringify({ type: 'subscribed', channels: [...c.channels] }), false);
      for (const [key, v] of this.#latest) {
        if (channels.includes('*') || channels.includes(v.symbol) || channels.includes(key))
          ws.send(v.json, false);
      }
    } else if (m.op === 'unsubscribe') {
      for (const ch of channels) c.channels.delete(ch);
      ws.send(JSON.stringify({ type: 'unsubscribed', channels: [...c.channels] }), false);
    } else {
      ws.send(
        JSON.stringify({
          type: 'error',
          message: `unknown op ${JSON.stringify(m.op)}: use subscribe or unsubscribe`,
        }),
        false,
      );
    }
  }
}

const nan = (v: number) => (Number.isNaN(v) ? null : v);

function tickMessage(batch: TickBatch, symbol: string, idx: number[], type = 'ticks', skipped = 0): string {
  let ticks = '';
  for (const i of idx) {
    ticks += `${ticks ? ',' : ''}{"seq":${batch.seq[i]},"time":${batch.utcMsc[i]},"tsrv":${batch.serverTimeMsc[i]},"bid":${batch.bid[i]},"ask":${batch.ask[i]},"last":${batch.last[i]},"vol":${batch.volume[i]},"volr":${batch.volumeReal[i]},"flags":${batch.flags[i]}}`;
  }
  const extra = skipped ? `,"conflated":true,"skipped":${skipped}` : '';
  return `{"type":"${type}","source":${JSON.stringify(batch.source)},"symbol":${JSON.stringify(symbol)},"rt":${batch.receivedAtMs}${extra},"ticks":[${ticks}]}`;
}

/** The rows `idx` of a batch as a batch of their own (for the binary format). */
function pick(batch: TickBatch, idx: number[]): TickBatch {
  const cols = ['seq', 'serverTimeMsc', 'utcMsc', 'bid', 'ask', 'last', 'volume', 'volumeReal'] as const;
  const out = { ...batch, length: idx.length } as TickBatch;
  for (const k of cols) out[k] = Float64Array.from(idx, (i) => batch[k][i] as number);
  out.symbolIndex = Uint16Array.from(idx, (i) => batch.symbolIndex[i] as number);
  out.flags = Uint32Array.from(idx, (i) => batch.flags[i] as number);
  return out;
}
