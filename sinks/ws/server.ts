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
 *
 * Hostile clients: every inbound message is parsed and then checked against a zod schema (never
 * read by property access: `null` is valid JSON); a message that fails gets an `error` reply with
 * a code and is counted. A client holds `maxChannelsPerClient` channels at most; replies name the
 * channels of the message, not the client's whole list. Snapshot work per subscribe is a lookup
 * per channel (an index by symbol), and the snapshots go out `snapshotsPerTurn` per event-loop
 * turn, pausing while the client is over its backpressure limit, so a subscribe to `*` over tens
 * of thousands of pairs never blocks the loop. An exception in one client's handler is caught at
 * the uWS callback (where it would otherwise end the process), logged, counted, and closes that
 * client with 1011 and a reason; the other clients and the pipeline go on (docs/operations.md).
 *
 * HTTP: GET and HEAD on known routes (HEAD without a body), 405 with `Allow` for other methods,
 * 404 for unknown paths.
 */
import { readFileSync } from 'node:fs';
import uws from '@trufflesuite/uws-js-unofficial';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { z } from 'zod';
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
  /** Channels one client may hold; a subscribe past it is refused whole. */
  maxChannelsPerClient: number;
  /** Snapshot messages sent per event-loop turn to one subscribing client. */
  snapshotsPerTurn: number;
  registry: Registry;
  logger: Logger;
  /** Fault injection (tests): throws at `ws-message` to prove a handler's exception stays its client's. */
  failPoint?: (name: string) => void;
}

export interface HttpRequest {
  path: string;
  query: string;
}
export interface HttpResponse {
  status: number;
  contentType: string;
  /**
   * The whole body, or a stream of chunks: each is written when uWS has taken the one before
   * (backpressure through onWritable), and the iterator is returned early if the client goes away.
   */
  body: string | AsyncIterable<Uint8Array>;
  headers?: Record<string, string>;
}
export type HttpHandler = (req: HttpRequest) => HttpResponse | Promise<HttpResponse>;
export interface RouteOptions {
  /** Requires one of the websocket tokens (`?token=` or `Authorization: Bearer`), as /ws does. */
  auth?: boolean;
  /** A streamed body whose client takes nothing for this long is cut (and its iterator returned). */
  stallTimeoutMs?: number;
}

interface Client {
  binary: boolean;
  channels: Set<string>;
  /** Newest tick message per source:symbol held back while the client is slow. */
  conflated: Map<string, { json: string; skipped: number }>;
  /** Set in uWS's close: a closed socket must not be touched again (uWS throws). */
  closed: boolean;
  /** Pairs (`latestKey`) whose snapshot is still to send, a few per event-loop turn. */
  snapshots: Set<string>;
  snapshotScheduled: boolean;
}

type Socket = uws.WebSocket<Client>;

const STATUS: Record<number, string> = {
  200: '200 OK',
  400: '400 Bad Request',
  401: '401 Unauthorized',
  404: '404 Not Found',
  405: '405 Method Not Allowed',
  503: '503 Service Unavailable',
  500: '500 Internal Server Error',
};

/** Longest channel name, in UTF-16 units: longer ones are refused. */
const MAX_CHANNEL_LENGTH = 199;
const channel = z.string().min(1).max(MAX_CHANNEL_LENGTH);
/** The only client messages there are (docs/websocket.md). */
const clientMessage = z.object({
  op: z.enum(['subscribe', 'unsubscribe']),
  channels: z.array(channel),
});
const USAGE = 'send {"op":"subscribe","channels":["EURUSD"]} or {"op":"unsubscribe","channels":["EURUSD"]}';

/** Routes answer these; HEAD is GET without the body. */
const ALLOW = 'GET, HEAD';

/** A pair's key in the snapshot index; NUL cannot occur in a source or symbol name. */
const latestKey = (source: string, symbol: string) => `${source}\u0000${symbol}`;

export class WsServer {
  readonly #o: WsServerOptions;
  readonly #app: uws.TemplatedApp;
  #closing = false;
  readonly #routes = new Map<string, { handler: HttpHandler; auth: boolean; stallTimeoutMs: number }>();
  readonly #clients = new Set<Socket>();
  /** Latest tick message per pair (`latestKey`), for snapshots on subscribe. */
  readonly #latest = new Map<string, string>();
  /** symbol → sources that have a snapshot of it: a subscribe looks up, never scans. */
  readonly #sourcesOf = new Map<string, Set<string>>();
  #lastBarDropLogAt = 0;
  #lastFullLogAt = 0;
  #lastRefusalLogAt = 0;
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
        help: 'Websocket upgrades and history API requests refused for a missing or wrong token',
        registers,
      }),
      fullRefusals: new Counter({
        name: 'tickstream_ws_full_refusals_total',
        help: 'Websocket upgrades refused with 503 because wsMaxClients clients are connected',
        registers,
      }),
      refusedMessages: new Counter({
        name: 'tickstream_ws_refused_messages_total',
        help: 'Client messages refused with an error reply, by reason (not_json, shape, channel_limit)',
        labelNames: ['reason'],
        registers,
      }),
      handlerErrors: new Counter({
        name: 'tickstream_ws_handler_errors_total',
        help: 'Unexpected exceptions in a websocket or HTTP handler (the client is closed, serve goes on)',
        labelNames: ['handler'],
        registers,
      }),
      channels: new Gauge({
        name: 'tickstream_ws_subscribed_channels',
        help: 'Channels held by all websocket clients together',
        registers,
      }),
      channelsLimit: new Gauge({
        name: 'tickstream_ws_max_channels_per_client',
        help: 'Configured wsMaxChannelsPerClient',
        registers,
      }),
      snapshotsPending: new Gauge({
        name: 'tickstream_ws_snapshots_pending',
        help: 'Snapshot messages queued for subscribing clients, sent a few per event-loop turn',
        registers,
      }),
      droppedBars: new Counter({
        name: 'tickstream_ws_dropped_bars_total',
        help: 'Bar messages not sent to a client because it was over its backpressure limit',
        registers,
      }),
      latency: new Histogram({
        name: 'tickstream_receipt_to_ws_publish_seconds',
        help: 'Bridge receipt of a tick to its websocket send',
        buckets: [0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1],
        registers,
      }),
    };
    this.#m.channelsLimit.set(options.maxChannelsPerClient);
    this.#app.ws<Client>('/ws', {
      maxBackpressure: options.maxBackpressureBytes * 4,
      closeOnBackpressureLimit: 0,
      maxPayloadLength: 64 * 1024,
      idleTimeout: 120,
      sendPingsAutomatically: true,
      upgrade: (res, req, context) => {
        const query = new URLSearchParams(req.getQuery() ?? '');
        const token = tokenOf(query, req.getHeader('authorization'));
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
          this.#m.fullRefusals.inc();
          this.#logFull();
          res.cork(() =>
            res
              .writeStatus(STATUS[503] as string)
              .end(`the server holds ${options.maxClients} clients already`),
          );
          return;
        }
        res.upgrade<Client>(
          {
            binary: query.get('format') === 'flatbuffers',
            channels: new Set(),
            conflated: new Map(),
            closed: false,
            snapshots: new Set(),
            snapshotScheduled: false,
          },
          key,
          protocol,
          extensions,
          context,
        );
      },
      // uWS calls these from C++: an exception thrown here would reach the process's
      // uncaughtException and stop serve. Each is fenced to its own client.
      open: (ws) =>
        this.#guard('open', ws, () => {
          this.#clients.add(ws);
          this.#m.clients.set(this.#clients.size);
        }),
      message: (ws, data) =>
        this.#guard('message', ws, () => this.#onMessage(ws, Buffer.from(data).toString('utf8'))),
      drain: (ws) => this.#guard('drain', ws, () => this.#drain(ws)),
      close: (ws) =>
        this.#guard('close', null, () => {
          const c = ws.getUserData();
          c.closed = true;
          this.#m.snapshotsPending.dec(c.snapshots.size);
          this.#m.channels.dec(c.channels.size);
          c.snapshots.clear();
          this.#clients.delete(ws);
          this.#m.clients.set(this.#clients.size);
        }),
    });
    this.#app.any('/*', (res, req) => {
      let aborted = false;
      const head = req.getMethod() === 'head';
      let onWritable: (() => void) | null = null;
      let path = '';
      let stallTimeoutMs = 0;
      let abortStream: (() => void) | null = null;
      res.onAborted(() => {
        aborted = true;
        onWritable?.();
        abortStream?.();
      });
      const reply = (r: HttpResponse, headers: Record<string, string> = {}) => {
        if (aborted) return;
        const body = r.body;
        res.cork(() => {
          res
            .writeStatus(STATUS[r.status] ?? `${r.status} Status`)
            .writeHeader('content-type', r.contentType);
          for (const [k, v] of Object.entries({ ...r.headers, ...headers })) res.writeHeader(k, v);
          // HEAD: the length GET would send, and no body (one after the headers breaks keep-alive
          // framing). Written as a header: endWithoutBody(length) makes uWS drop the connection
          // at the next request, and any argument to it is read as a length.
          if (typeof body !== 'string') {
            if (head) res.endWithoutBody();
          } else if (head) {
            res.writeHeader('content-length', String(Buffer.byteLength(body)));
            res.endWithoutBody();
          } else res.end(body, this.#closing);
        });
        if (typeof body !== 'string') {
          const chunks = body[Symbol.asyncIterator]();
          if (head) return void chunks.return?.();
          // Over backpressure uWS keeps the chunk; the next waits for onWritable (or an abort).
          res.onWritable(() => {
            const wake = onWritable;
            onWritable = null;
            wake?.();
            return true;
          });
          abortStream = () => void chunks.return?.();
          void this.#pump(res, chunks, {
            path,
            stallTimeoutMs,
            aborted: () => aborted,
            waitWritable: (wake) => {
              onWritable = wake;
            },
          });
        }
      };
      try {
        path = req.getUrl();
        const method = req.getMethod();
        const query = req.getQuery() ?? '';
        const route = this.#routes.get(path);
        if (!route) return reply({ status: 404, contentType: 'text/plain', body: `no route ${path}\n` });
        stallTimeoutMs = route.stallTimeoutMs;
        const { handler } = route;
        if (method !== 'get' && !head)
          return reply(
            {
              status: 405,
              contentType: 'text/plain',
              body: `${req.getCaseSensitiveMethod().toUpperCase()} is not allowed on ${path}: use GET or HEAD\n`,
            },
            { allow: ALLOW },
          );
        if (route.auth && this.#o.tokens.length) {
          const token = tokenOf(new URLSearchParams(query), req.getHeader('authorization'));
          if (!this.#o.tokens.includes(token)) {
            this.#m.authFailures.inc();
            return reply({
              status: 401,
              contentType: 'text/plain',
              body: 'a valid token is required: add ?token=… or Authorization: Bearer …\n',
            });
          }
        }
        Promise.resolve()
          .then(() => handler({ path, query }))
          .then(reply, (err: Error) => {
            this.#unexpected('http', err);
            reply({ status: 500, contentType: 'text/plain', body: `${err.message}\n` });
          })
          .catch((err: Error) => this.#unexpected('http', err));
      } catch (err) {
        this.#unexpected('http', err as Error);
        reply({ status: 500, contentType: 'text/plain', body: 'internal error\n' });
      }
    });
  }

  /** Runs a uWS callback; an exception is logged, counted and closes that client only. */
  #guard(handler: string, ws: Socket | null, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#unexpected(handler, err as Error);
      if (ws && !ws.getUserData().closed) ws.end(1011, `internal error in the ${handler} handler: reconnect`);
    }
  }

  #unexpected(handler: string, err: Error): void {
    this.#m.handlerErrors.inc({ handler });
    this.#o.logger.error(
      { handler, err: err.message, stack: err.stack },
      'unexpected exception in a client handler: that client is closed, serve goes on (please report it)',
    );
  }

  route(path: string, handler: HttpHandler, options: RouteOptions = {}): void {
    this.#routes.set(path, {
      handler,
      auth: options.auth ?? false,
      stallTimeoutMs: options.stallTimeoutMs ?? 0,
    });
  }

  /**
   * Writes a streamed body chunk by chunk, waiting for uWS to drain when it is over backpressure;
   * a client that takes nothing for the route's stall timeout is cut.
   */
  async #pump(
    res: uws.HttpResponse,
    chunks: AsyncIterator<Uint8Array>,
    o: {
      path: string;
      stallTimeoutMs: number;
      aborted: () => boolean;
      waitWritable: (wake: () => void) => void;
    },
  ): Promise<void> {
    const { aborted } = o;
    try {
      for (;;) {
        const next = await chunks.next();
        if (aborted()) return;
        if (next.done) {
          res.cork(() => res.end(undefined, this.#closing));
          return;
        }
        let taken = true;
        res.cork(() => {
          taken = res.write(next.value);
        });
        if (!taken && (await this.#stalled(o.stallTimeoutMs, o.waitWritable)) && !aborted()) {
          this.#o.logger.warn(
            { path: o.path, stallTimeoutMs: o.stallTimeoutMs },
            'HTTP client took no data for its stall timeout: response cut',
          );
          res.close();
          await chunks.return?.();
          return;
        }
        if (aborted()) return;
      }
    } catch (err) {
      // The status line is out already: the only honest signal left is a cut connection.
      this.#o.logger.warn(
        { path: o.path, err: (err as Error).message },
        'a streamed HTTP response failed mid-way: connection cut (the client sees a truncated body)',
      );
      if (!aborted()) res.close();
      await chunks.return?.();
    }
  }

  /** Waits for uWS's onWritable; true when `timeoutMs` (0: none) passed first. */
  #stalled(timeoutMs: number, waitWritable: (wake: () => void) => void): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = timeoutMs ? setTimeout(() => resolve(true), timeoutMs) : undefined;
      waitWritable(() => {
        clearTimeout(timer);
        resolve(false);
      });
    });
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
      const pair = latestKey(batch.source, symbol);
      // The snapshot a client subscribed for, as it stood before this slice (sent first below).
      const before = this.#latest.get(pair);
      this.#setLatest(
        batch.source,
        symbol,
        tickMessage(batch, symbol, [idx[idx.length - 1] as number], 'snapshot'),
      );
      let sent = 0;
      for (const ws of this.#clients) {
        const c = ws.getUserData();
        if (!(c.channels.has('*') || c.channels.has(symbol) || c.channels.has(key))) continue;
        // Its snapshot still waits for a later turn: it goes now, before the live ticks that
        // follow it (a client must never see a snapshot older than ticks it already got).
        if (c.snapshots.delete(pair)) {
          this.#m.snapshotsPending.dec();
          if (before !== undefined) {
            ws.send(before, false);
            this.#m.messages.inc();
          }
        }
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
      let dropped = 0;
      for (const ws of this.#clients) {
        const c = ws.getUserData();
        if (
          !(
            c.channels.has('*') ||
            c.channels.has(bar.symbol) ||
            c.channels.has(`${bar.source}:${bar.symbol}`)
          )
        )
          continue;
        if (ws.getBufferedAmount() <= this.#o.maxBackpressureBytes) ws.send(json, false);
        else dropped++;
      }
      if (dropped) this.#barsDropped(dropped);
    }
  }

  #logFull(): void {
    const now = Date.now();
    if (now - this.#lastFullLogAt < 10_000) return;
    this.#lastFullLogAt = now;
    this.#o.logger.warn(
      { maxClients: this.#o.maxClients },
      'websocket upgrade refused with 503: wsMaxClients clients are connected (counted in tickstream_ws_full_refusals_total; logged at most every 10 s). Raise --ws-max-clients or find the client that leaks connections',
    );
  }

  #barsDropped(n: number): void {
    this.#m.droppedBars.inc(n);
    const now = Date.now();
    if (now - this.#lastBarDropLogAt < 10_000) return;
    this.#lastBarDropLogAt = now;
    this.#o.logger.warn(
      { bars: n },
      'bars not sent to websocket clients over their backpressure limit (counted in tickstream_ws_dropped_bars_total; logged at most every 10 s): those clients read too slowly',
    );
  }

  /** Drops the snapshots of a source the pipeline forgot (idle past sourceForgetAfterMs). */
  forgetSource(source: string): void {
    for (const [symbol, sources] of this.#sourcesOf) {
      if (!sources.delete(source)) continue;
      this.#latest.delete(latestKey(source, symbol));
      if (sources.size === 0) this.#sourcesOf.delete(symbol);
    }
  }

  /** Snapshots held, one per (source, symbol) seen. */
  get snapshotCount(): number {
    return this.#latest.size;
  }

  #setLatest(source: string, symbol: string, json: string): void {
    const key = latestKey(source, symbol);
    if (!this.#latest.has(key)) {
      let sources = this.#sourcesOf.get(symbol);
      if (!sources) {
        sources = new Set();
        this.#sourcesOf.set(symbol, sources);
      }
      sources.add(source);
    }
    this.#latest.set(key, json);
  }

  async close(reason = 'server shutting down'): Promise<void> {
    // A keep-alive HTTP client that asks often (Prometheus scraping) never lets its connection
    // idle out, and an open connection keeps the process alive: answers from now on close theirs.
    this.#closing = true;
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
      this.#setLatest(batch.source, symbol, tickMessage(batch, symbol, [i], 'snapshot'));
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
    if (c.snapshots.size) this.#scheduleSnapshots(ws, c);
  }

  #refuse(ws: Socket, reason: string, code: ErrorCode, message: string): void {
    this.#m.refusedMessages.inc({ reason });
    ws.send(JSON.stringify({ type: 'error', code, message }), false);
    // Logged at most every 10 s: a client sending garbage in a loop must not flood the log.
    const now = Date.now();
    if (now - this.#lastRefusalLogAt < 10_000) return;
    this.#lastRefusalLogAt = now;
    this.#o.logger.warn(
      { reason, code, message },
      'websocket client message refused with an error reply (counted in tickstream_ws_refused_messages_total; logged at most every 10 s)',
    );
  }

  #onMessage(ws: Socket, text: string): void {
    this.#o.failPoint?.('ws-message');
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      this.#refuse(ws, 'not_json', ErrorCode.FRAME_PAYLOAD, `messages must be JSON: ${USAGE}`);
      return;
    }
    const m = clientMessage.safeParse(parsed);
    if (!m.success) {
      const issue = m.error.issues[0];
      const where = issue?.path.length ? ` at ${issue.path.join('.')}` : '';
      this.#refuse(
        ws,
        'shape',
        ErrorCode.FRAME_PAYLOAD,
        `not a client message (${issue?.message ?? 'wrong shape'}${where}; channels are strings of 1 to ${MAX_CHANNEL_LENGTH} characters): ${USAGE}`,
      );
      return;
    }
    const { op, channels } = m.data;
    const c = ws.getUserData();
    if (op === 'unsubscribe') {
      let removed = 0;
      for (const ch of channels) if (c.channels.delete(ch)) removed++;
      this.#m.channels.dec(removed);
      ws.send(JSON.stringify({ type: 'unsubscribed', channels, total: c.channels.size }), false);
      return;
    }
    const fresh = new Set<string>();
    for (const ch of channels) if (!c.channels.has(ch)) fresh.add(ch);
    const limit = this.#o.maxChannelsPerClient;
    if (c.channels.size + fresh.size > limit) {
      this.#refuse(
        ws,
        'channel_limit',
        ErrorCode.LIMIT,
        `subscribing to ${fresh.size} more channel(s) would pass the limit of ${limit} per client (you hold ${c.channels.size}): nothing was subscribed; unsubscribe some, subscribe to "*" or a symbol for all its sources, or ask for a higher --ws-max-channels-per-client`,
      );
      return;
    }
    for (const ch of fresh) c.channels.add(ch);
    this.#m.channels.inc(fresh.size);
    ws.send(JSON.stringify({ type: 'subscribed', channels, total: c.channels.size }), false);
    // A lookup per channel, never a scan of the pairs per channel; the sending is spread over turns.
    const before = c.snapshots.size;
    if (channels.includes('*')) for (const key of this.#latest.keys()) c.snapshots.add(key);
    else for (const ch of channels) this.#matchSnapshots(ch, c.snapshots);
    this.#m.snapshotsPending.inc(c.snapshots.size - before);
    if (c.snapshots.size) this.#scheduleSnapshots(ws, c);
  }

  /** Adds the pairs `ch` names: a symbol of any source, or `source:symbol` split at any `:`. */
  #matchSnapshots(ch: string, into: Set<string>): void {
    for (const source of this.#sourcesOf.get(ch) ?? []) into.add(latestKey(source, ch));
    for (let at = ch.indexOf(':'); at >= 0; at = ch.indexOf(':', at + 1)) {
      const key = latestKey(ch.slice(0, at), ch.slice(at + 1));
      if (this.#latest.has(key)) into.add(key);
    }
  }

  #scheduleSnapshots(ws: Socket, c: Client): void {
    if (c.snapshotScheduled) return;
    c.snapshotScheduled = true;
    setImmediate(() => {
      c.snapshotScheduled = false;
      this.#guard('snapshot', ws, () => this.#sendSnapshots(ws, c));
    });
  }

  /** Up to snapshotsPerTurn snapshots (each the pair's newest tick now), then yields the loop. */
  #sendSnapshots(ws: Socket, c: Client): void {
    if (c.closed) return;
    let taken = 0;
    let sent = 0;
    for (const key of c.snapshots) {
      // Over the limit: wait for uWS's drain, which calls back here.
      if (taken === this.#o.snapshotsPerTurn || ws.getBufferedAmount() > this.#o.maxBackpressureBytes) break;
      c.snapshots.delete(key);
      taken++;
      const json = this.#latest.get(key);
      if (json === undefined) continue; // its source was forgotten since the subscribe
      ws.send(json, false);
      sent++;
    }
    this.#m.snapshotsPending.dec(taken);
    this.#m.messages.inc(sent);
    if (c.snapshots.size && ws.getBufferedAmount() <= this.#o.maxBackpressureBytes)
      this.#scheduleSnapshots(ws, c);
  }
}
/** The token a request carries: `?token=`, else `Authorization: Bearer …`. */
function tokenOf(query: URLSearchParams, authorization: string): string {
  return query.get('token') ?? (authorization.startsWith('Bearer ') ? authorization.slice(7) : '');
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
