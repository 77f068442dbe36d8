/**
 * Websockets and the HTTP operations surface on one uWebSockets.js port (behind this narrow
 * class, so uWS can be swapped). Protocol in docs/websocket.md:
 *
 *   → {"op":"subscribe","channels":["EURUSD","src1:BTCUSD","*"]}   (symbol, source:symbol, all)
 *   → {"op":"unsubscribe","channels":[...]}
 *   ← {"type":"subscribed",...}, then one {"type":"snapshot",...} per matching source:symbol seen
 *   ← {"type":"ticks","source","symbol","rt","ticks":[{seq,time,tsrv,bid,ask,last,vol,volr,flags}]}
 *   ← {"type":"bar",...}
 *   → {"op":"resume","channels":[...],"after":{"SOURCE":SEQ}}   journal catch-up, "resumed", then live
 *   → {"op":"replay","id":"r1","channels":[...],"from":T,"to":T,"speed":"max"|N}   "replay"…, "replay_end"
 * Resume and replay read the journal through `options.journal` (sinks/ws/replay-session.ts);
 * a resuming client's live ticks of its `after` sources are held until its catch-up is over.
 * `?format=flatbuffers` sends tick messages as binary TickRecords instead (codecs/schema).
 * Each (source, symbol) slice is serialised once per format per publish, whatever the number
 * of clients; a client subscribed to overlapping channels still gets each tick once.
 *
 * Fan-out through uWS topics: a slice goes out as one `app.publish` to the topic of everything
 * (`*`) and one to its pair's topic, per format; uWS copies it to the subscribers in C++. A
 * client's channels become topics normalised so that every slice reaches it through exactly one:
 * `*` alone when it holds `*`, else the topic of every known pair its channels match (a pair
 * seen for the first time subscribes the clients it matches before its first publish). A client
 * that needs a step of its own (snapshots still to send, a resume holding its ticks, conflation)
 * leaves its topics and is served one by one as before (`#direct`); it rejoins once that is
 * over. Leaving and rejoining happen between two slices, so no tick is lost or doubled: what
 * uWS has queued for it from a publish goes out before anything sent to it afterwards.
 *
 * Slow consumers: once a client's unsent bytes pass `maxBackpressureBytes`, `conflate` keeps
 * only the newest tick per source:symbol for it and sends those (marked "conflated", with the
 * count skipped) when it drains, then live ticks; `disconnect` closes it with 1008 and a reason.
 * Memory per client stays bounded either way. A client on the topics is checked whenever a
 * quarter of the limit has been published since the last check (`#checkLive`), not per message:
 * it may pass the limit by that much before it is conflated.
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
import { pick, tickObjects } from './messages.js';
import {
  channelMatches,
  type OpenJournal,
  type PacerLike,
  parseTime,
  ReplaySession,
  ResumeSession,
  type SessionSocket,
} from './replay-session.js';

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
  /** Replay and resume from the tick journal; without it those ops are refused. */
  journal?: JournalSessionOptions;
  /**
   * A replay server (`tickstream replay --target ws`): tick, snapshot and `subscribed` messages
   * carry `"replay":true` (JSON; a FlatBuffers tick frame has no room for it).
   */
  replay?: boolean;
  /** Fault injection (tests): throws at `ws-message` to prove a handler's exception stays its client's. */
  failPoint?: (name: string) => void;
}

export interface JournalSessionOptions {
  /** Opens a cursor over the tick journal (serve: sinks/kafka/range-reader.ts). */
  open: OpenJournal;
  /** Paces a replay at `speed` (×N of event time, or 'max'). */
  pacer: (speed: number | 'max') => PacerLike;
  /** Replay and resume sessions at once, all clients together. */
  maxSessions: number;
  /** Replay sessions at once per client. */
  maxReplaysPerClient: number;
  /** Live ticks held per resuming client while it catches up; past it the resume fails (ERR_LIMIT). */
  resumeMaxHeldTicks: number;
  /** A resume fails when the journal brings nothing new for this long before it caught up. */
  resumeIdleTimeoutMs: number;
}

/**
 * Ticks a replay or resume decodes (and turns into messages) between two yields of the event
 * loop: live publishing waits at most that much work of one session (one record of the default
 * recordTicks; 10 such records took 8 to 60 ms on the loaded 2-core test machine).
 */
const SESSION_TICKS_PER_TURN = 1000;

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
  /** The topics its channels map to (`#topicsOf`), subscribed in uWS while `live`. */
  topics: Set<string>;
  /** Live ticks reach it through its topics; when false write() sends them to it one by one. */
  live: boolean;
  /** Newest tick message per source:symbol held back while the client is slow. */
  conflated: Map<string, { json: string; skipped: number }>;
  /** Set in uWS's close: a closed socket must not be touched again (uWS throws). */
  closed: boolean;
  /** Pairs (`latestKey`) whose snapshot is still to send, a few per event-loop turn. */
  snapshots: Set<string>;
  snapshotScheduled: boolean;
  /** The catch-up in progress, holding live ticks of its sources. */
  resume: ResumeSession | null;
  /** Replay sessions in progress, by id. */
  replays: Map<string, ReplaySession>;
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
const time = z.union([z.number().int(), z.string().min(1).max(64)]);
const seq = z.number().int().min(0);
const clientMessage = z.discriminatedUnion('op', [
  z.strictObject({ op: z.enum(['subscribe', 'unsubscribe']), channels: z.array(channel) }),
  z.strictObject({
    op: z.literal('resume'),
    channels: z.array(channel),
    after: z.record(z.string().min(1).max(MAX_CHANNEL_LENGTH), seq),
  }),
  z.strictObject({
    op: z.literal('replay'),
    id: z.string().min(1).max(64),
    channels: z.array(channel).min(1),
    from: time.optional(),
    to: time.optional(),
    speed: z.union([z.literal('max'), z.number().positive()]).default('max'),
    source: z.string().min(1).max(MAX_CHANNEL_LENGTH).optional(),
    fromSeq: seq.optional(),
    toSeq: seq.optional(),
  }),
]);
type ClientMessage = z.infer<typeof clientMessage>;
const USAGE =
  'send {"op":"subscribe","channels":["EURUSD"]}, {"op":"unsubscribe","channels":["EURUSD"]}, {"op":"resume","channels":["EURUSD"],"after":{"SOURCE":SEQ}} or {"op":"replay","id":"r1","channels":["EURUSD"],"from":TIME,"to":TIME,"speed":"max"}';

/** Routes answer these; HEAD is GET without the body. */
const ALLOW = 'GET, HEAD';

/** A pair's key in the snapshot index; NUL cannot occur in a source or symbol name. */
const latestKey = (source: string, symbol: string) => `${source}\u0000${symbol}`;

/** The uWS topic of every slice (`pair` null) or of one pair (`latestKey`), per format. */
const topicOf = (binary: boolean, pair: string | null) =>
  `${binary ? 'b' : 'j'}${pair === null ? '*' : `:${pair}`}`;
/**
 * Every client holds this topic, never published to: uWS frees a socket's subscriber, and with
 * it the published messages not yet written to that socket, when it leaves its last topic.
 */
const KEEP_TOPIC = 'keep';
/**
 * Published messages uWS may hold per socket before writing them: it writes at once those of
 * 16 KiB and more (LoopData::CORK_BUFFER_SIZE), and a socket's queue of smaller ones at 32
 * (TopicTree.h). Added to uWS's own limit so a publish is never dropped for a client on the topics.
 */
const UWS_QUEUED_BYTES = 32 * 16 * 1024;

export class WsServer {
  readonly #o: WsServerOptions;
  readonly #app: uws.TemplatedApp;
  #closing = false;
  readonly #routes = new Map<string, { handler: HttpHandler; auth: boolean; stallTimeoutMs: number }>();
  readonly #clients = new Set<Socket>();
  /** Clients off the topics, whose live ticks write() sends one by one. */
  readonly #direct = new Set<Socket>();
  /** Bytes published since the clients on the topics were last checked for backpressure. */
  #sinceCheck = 0;
  readonly #checkEveryBytes: number;
  /** Latest tick message per pair (`latestKey`), for snapshots on subscribe. */
  readonly #latest = new Map<string, string>();
  /** symbol → sources that have a snapshot of it: a subscribe looks up, never scans. */
  readonly #sourcesOf = new Map<string, Set<string>>();
  #lastBarDropLogAt = 0;
  #lastFullLogAt = 0;
  #lastRefusalLogAt = 0;
  readonly #encoder = new TickRecordEncoder();
  /** Source → the newest seq published live: where a resume's journal read must get to. */
  readonly #lastLiveSeq = new Map<string, number>();
  /** Replay and resume sessions running, all clients. */
  #sessions = 0;
  #listen: uws.us_listen_socket | null = null;
  readonly #m;

  constructor(options: WsServerOptions) {
    this.#o = options;
    this.#checkEveryBytes = Math.max(1, Math.floor(options.maxBackpressureBytes / 4));
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
        help: 'Client messages refused with an error reply, by reason (not_json, shape, channel_limit, resume, replay)',
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
      directClients: new Gauge({
        name: 'tickstream_ws_direct_clients',
        help: 'Websocket clients sent live ticks one by one (snapshots pending, resuming, over their backpressure limit) instead of through uWS topics',
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
      sessions: new Gauge({
        name: 'tickstream_ws_journal_sessions',
        help: 'Websocket replay and resume sessions reading the journal now',
        labelNames: ['kind'],
        registers,
      }),
      sessionTicks: new Counter({
        name: 'tickstream_ws_journal_ticks_sent_total',
        help: 'Ticks read from the journal and sent to websocket clients (replay, resume catch-up)',
        labelNames: ['kind'],
        registers,
      }),
      sessionFailures: new Counter({
        name: 'tickstream_ws_journal_session_failures_total',
        help: 'Replay and resume sessions that ended with an error to the client, by code',
        labelNames: ['kind', 'code'],
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
      // uWS drops a message silently past this (WebSocket.h send: DROPPED), publishes included.
      // Ours is checked first (writes, snapshots, sessions, `#checkLive`), so only what a client
      // can be sent past ours (a quarter of it between checks and the message that crosses it,
      // what uWS holds from publishes, error replies to a client that sends but does not read)
      // ever meets it.
      maxBackpressure: options.maxBackpressureBytes * 4 + UWS_QUEUED_BYTES,
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
            topics: new Set(),
            live: true,
            conflated: new Map(),
            closed: false,
            snapshots: new Set(),
            snapshotScheduled: false,
            resume: null,
            replays: new Map(),
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
          ws.subscribe(KEEP_TOPIC);
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
          c.resume?.cancel();
          for (const r of c.replays.values()) r.cancel();
          this.#clients.delete(ws);
          this.#direct.delete(ws);
          this.#m.directClients.set(this.#direct.size);
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

  /** Clients holding at least one channel (a replay server waits for these). */
  get subscribedCount(): number {
    let n = 0;
    for (const ws of this.#clients) if (ws.getUserData().channels.size > 0) n++;
    return n;
  }

  /**
   * Unsent bytes of each open client, keyed by an object that stands for the client while it is
   * connected (a replay server waits while one is over the limit).
   */
  buffered(): Map<object, number> {
    const out = new Map<object, number>();
    for (const ws of this.#clients) {
      const c = ws.getUserData();
      if (!c.closed) out.set(c, ws.getBufferedAmount());
    }
    return out;
  }

  /** Sends one JSON message to every client (a replay server's `replay_end`). */
  broadcast(message: Record<string, unknown>): void {
    const json = JSON.stringify(message);
    let sent = 0;
    for (const ws of this.#clients) {
      if (ws.getUserData().closed) continue;
      ws.send(json, false);
      sent++;
    }
    this.#m.messages.inc(sent);
  }

  #tickMessage(batch: TickBatch, symbol: string, idx: number[], type = 'ticks', skipped = 0): string {
    return tickMessage(batch, symbol, idx, type, skipped, this.#o.replay === true);
  }

  write(batch: TickBatch): void {
    if (batch.length) this.#lastLiveSeq.set(batch.source, batch.seq[batch.length - 1] as number);
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
      // Encoded to bytes once: uWS would convert a string again for every client.
      const json = Buffer.from(this.#tickMessage(batch, symbol, idx));
      let binary: Uint8Array | null = null;
      const encode = () => {
        binary ??= this.#encoder.encode(pick(batch, idx));
        return binary;
      };
      const pair = latestKey(batch.source, symbol);
      // The snapshot a client subscribed for, as it stood before this slice (sent first below).
      const before = this.#latest.get(pair);
      // A new pair subscribes the clients it matches to its topics here, before its publish.
      this.#setLatest(
        batch.source,
        symbol,
        this.#tickMessage(batch, symbol, [idx[idx.length - 1] as number], 'snapshot'),
      );
      if (this.#sinceCheck > 0 && this.#sinceCheck + json.length > this.#checkEveryBytes) this.#checkLive();
      let sent = this.#sendDirect(batch, symbol, idx, pair, before, json, encode);
      const jsonTopics = this.#subscribers(false, pair);
      if (jsonTopics) {
        this.#publish(false, pair, json);
        sent += jsonTopics;
      }
      const binaryTopics = this.#subscribers(true, pair);
      if (binaryTopics) {
        this.#publish(true, pair, encode());
        sent += binaryTopics;
      }
      this.#m.messages.inc(sent);
      this.#m.ticks.inc(sent * idx.length);
    }
    // Clients whose step of their own ended in this batch (their last snapshot went out) go
    // back to the topics for the next one.
    for (const ws of this.#direct) this.#settle(ws, ws.getUserData());
    if (batch.receivedAtMs) this.#m.latency.observe((now - batch.receivedAtMs) / 1000);
  }

  /** Sends a slice to each matching client off the topics; the number of messages sent. */
  #sendDirect(
    batch: TickBatch,
    symbol: string,
    idx: number[],
    pair: string,
    before: string | undefined,
    json: Buffer,
    encode: () => Uint8Array,
  ): number {
    let sent = 0;
    for (const ws of this.#direct) {
      const c = ws.getUserData();
      if (!channelMatches(c.channels, batch.source, symbol)) continue;
      // Its snapshot still waits for a later turn: it goes now, before the live ticks that
      // follow it (a client must never see a snapshot older than ticks it already got).
      if (c.snapshots.delete(pair)) {
        this.#m.snapshotsPending.dec();
        if (before !== undefined) {
          ws.send(before, false);
          this.#m.messages.inc();
        }
      }
      // A resuming client gets its sources' live ticks once its catch-up is over.
      if (c.resume?.holds(batch.source)) {
        c.resume.hold(batch, symbol, idx);
        continue;
      }
      if (ws.getBufferedAmount() > this.#o.maxBackpressureBytes) {
        this.#slow(ws, c, `${batch.source}:${symbol}`, batch, symbol, idx);
        continue;
      }
      if (c.binary) ws.send(encode(), true);
      else ws.send(json, false);
      sent++;
    }
    return sent;
  }

  /**
   * Clients a slice of `pair` reaches through the topics of one format: uWS's own count, read
   * before the publish (a client holds at most one of the two topics, and none is dropped by uWS:
   * see maxBackpressure), so tickstream_ws_messages_sent_total counts what goes out.
   */
  #subscribers(binary: boolean, pair: string): number {
    return this.#app.numSubscribers(topicOf(binary, null)) + this.#app.numSubscribers(topicOf(binary, pair));
  }

  #publish(binary: boolean, pair: string, data: Uint8Array): void {
    const everything = topicOf(binary, null);
    const one = topicOf(binary, pair);
    if (this.#app.publish(everything, data, binary)) this.#sinceCheck += data.length;
    if (this.#app.publish(one, data, binary)) this.#sinceCheck += data.length;
  }

  /**
   * Takes the clients on the topics that are over their limit off them (conflated from the next
   * slice on) or disconnects them, by policy. Run whenever a quarter of the limit has been
   * published since the last run: a per-message check is what the topics save.
   */
  #checkLive(): void {
    this.#sinceCheck = 0;
    for (const ws of this.#clients) {
      const c = ws.getUserData();
      if (!c.live || ws.getBufferedAmount() <= this.#o.maxBackpressureBytes) continue;
      if (this.#o.slowConsumerPolicy === 'disconnect') this.#disconnectSlow(ws);
      else this.#leaveTopics(ws, c);
    }
  }

  /** The topics a client's channels map to, each slice reaching it through one at most. */
  #topicsOf(c: Client): Set<string> {
    if (c.channels.has('*')) return new Set([topicOf(c.binary, null)]);
    const pairs = new Set<string>();
    for (const ch of c.channels) this.#matchPairs(ch, pairs);
    const topics = new Set<string>();
    for (const pair of pairs) topics.add(topicOf(c.binary, pair));
    return topics;
  }

  /**
   * After `changed` channels were added or removed: the client's topics, subscribed in uWS if it
   * is on them. Only the pairs of those channels are looked at (a client holding many channels
   * must not make each small subscribe cost them all), except when `*` comes or goes.
   */
  #retopic(ws: Socket, c: Client, changed: Iterable<string>): void {
    const everything = topicOf(c.binary, null);
    if (c.channels.has('*') !== c.topics.has(everything)) {
      const next = this.#topicsOf(c);
      if (c.live) {
        for (const t of c.topics) if (!next.has(t)) ws.unsubscribe(t);
        for (const t of next) if (!c.topics.has(t)) ws.subscribe(t);
      }
      c.topics = next;
      return;
    }
    if (c.channels.has('*')) return;
    const pairs = new Set<string>();
    for (const ch of changed) this.#matchPairs(ch, pairs);
    for (const pair of pairs) {
      const at = pair.indexOf('\u0000');
      const topic = topicOf(c.binary, pair);
      if (channelMatches(c.channels, pair.slice(0, at), pair.slice(at + 1))) {
        if (c.topics.has(topic)) continue;
        c.topics.add(topic);
        if (c.live) ws.subscribe(topic);
      } else if (c.topics.delete(topic) && c.live) ws.unsubscribe(topic);
    }
  }

  /**
   * Takes a client off its topics: write() sends to it one by one from the next slice. What uWS
   * holds for it from earlier publishes stays queued (KEEP_TOPIC) and is written first.
   */
  #leaveTopics(ws: Socket, c: Client): void {
    if (!c.live) return;
    for (const t of c.topics) ws.unsubscribe(t);
    c.live = false;
    this.#direct.add(ws);
    this.#m.directClients.set(this.#direct.size);
  }

  /**
   * Puts a client off the topics back on them once it needs nothing of its own: no snapshot to
   * send, no resume holding ticks, nothing conflated and under its limit.
   */
  #settle(ws: Socket, c: Client): void {
    if (c.live || c.closed || c.snapshots.size || c.resume || c.conflated.size) return;
    if (ws.getBufferedAmount() > this.#o.maxBackpressureBytes) return;
    for (const t of c.topics) ws.subscribe(t);
    c.live = true;
    this.#direct.delete(ws);
    this.#m.directClients.set(this.#direct.size);
  }

  /** A pair seen for the first time: the clients it matches (not by `*`) get its topic. */
  #pairAdded(source: string, symbol: string, pair: string): void {
    for (const ws of this.#clients) {
      const c = ws.getUserData();
      if (c.closed || c.channels.has('*') || !channelMatches(c.channels, source, symbol)) continue;
      const topic = topicOf(c.binary, pair);
      c.topics.add(topic);
      if (c.live) ws.subscribe(topic);
    }
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
        if (!channelMatches(c.channels, bar.source, bar.symbol)) continue;
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
    // Its ticks are long committed: a resume reads the journal to its end without a target.
    this.#lastLiveSeq.delete(source);
    const gone: string[] = [];
    for (const [symbol, sources] of this.#sourcesOf) {
      if (!sources.delete(source)) continue;
      gone.push(latestKey(source, symbol));
      this.#latest.delete(latestKey(source, symbol));
      if (sources.size === 0) this.#sourcesOf.delete(symbol);
    }
    if (gone.length === 0) return;
    // Its pairs' topics go too (they come back with the pairs): a client's topics stay bounded
    // by the pairs known now.
    for (const ws of this.#clients) {
      const c = ws.getUserData();
      if (c.closed) continue;
      for (const pair of gone) {
        const topic = topicOf(c.binary, pair);
        if (c.topics.delete(topic) && c.live) ws.unsubscribe(topic);
      }
    }
  }

  /** Snapshots held, one per (source, symbol) seen. */
  get snapshotCount(): number {
    return this.#latest.size;
  }

  #setLatest(source: string, symbol: string, json: string): void {
    const key = latestKey(source, symbol);
    const fresh = !this.#latest.has(key);
    if (fresh) {
      let sources = this.#sourcesOf.get(symbol);
      if (!sources) {
        sources = new Set();
        this.#sourcesOf.set(symbol, sources);
      }
      sources.add(source);
    }
    this.#latest.set(key, json);
    if (fresh) this.#pairAdded(source, symbol, key);
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
      this.#setLatest(batch.source, symbol, this.#tickMessage(batch, symbol, [i], 'snapshot'));
    }
  }

  #disconnectSlow(ws: Socket): void {
    this.#m.slowDisconnects.inc();
    this.#o.logger.warn({ buffered: ws.getBufferedAmount() }, 'websocket client too slow: disconnecting');
    ws.end(1008, `too slow: more than ${this.#o.maxBackpressureBytes} bytes unsent`);
  }

  #slow(ws: Socket, c: Client, key: string, batch: TickBatch, symbol: string, idx: number[]): void {
    if (this.#o.slowConsumerPolicy === 'disconnect') {
      this.#disconnectSlow(ws);
      return;
    }
    const prev = c.conflated.get(key);
    const last = idx[idx.length - 1] as number;
    // All but the newest tick of this slice are skipped, and so is the tick held back before it.
    const more = idx.length - 1 + (prev ? 1 : 0);
    const skipped = (prev?.skipped ?? 0) + more;
    c.conflated.set(key, { json: this.#tickMessage(batch, symbol, [last], 'ticks', skipped), skipped });
    this.#m.conflated.inc(more);
  }

  #drain(ws: Socket): void {
    const c = ws.getUserData();
    c.resume?.drained();
    for (const r of c.replays.values()) r.drained();
    if (ws.getBufferedAmount() > this.#o.maxBackpressureBytes) return;
    for (const [key, v] of c.conflated) {
      c.conflated.delete(key);
      ws.send(v.json, false);
      this.#m.messages.inc();
      this.#m.ticks.inc();
    }
    if (c.snapshots.size) this.#scheduleSnapshots(ws, c);
    // Conflated ticks first, then live again through the topics.
    else this.#settle(ws, c);
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
    const c = ws.getUserData();
    if (m.data.op === 'replay') {
      this.#startReplay(ws, c, m.data);
      return;
    }
    if (m.data.op === 'resume' && !this.#canResume(ws, c, m.data.after)) return;
    const { op, channels } = m.data;
    if (op === 'unsubscribe') {
      const removed = channels.filter((ch) => c.channels.delete(ch));
      this.#m.channels.dec(removed.length);
      this.#retopic(ws, c, removed);
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
    ws.send(
      JSON.stringify({
        type: 'subscribed',
        channels,
        total: c.channels.size,
        ...(this.#o.replay ? { replay: true } : {}),
      }),
      false,
    );
    if (m.data.op === 'resume') {
      // No snapshots: the catch-up brings every tick after the client's last one instead. Its
      // live ticks are held by write() meanwhile, so it leaves the topics.
      this.#leaveTopics(ws, c);
      this.#retopic(ws, c, fresh);
      this.#startResume(ws, c, m.data.after);
      return;
    }
    // A lookup per channel, never a scan of the pairs per channel; the sending is spread over turns.
    const before = c.snapshots.size;
    if (channels.includes('*')) for (const key of this.#latest.keys()) c.snapshots.add(key);
    else for (const ch of channels) this.#matchPairs(ch, c.snapshots);
    this.#m.snapshotsPending.inc(c.snapshots.size - before);
    // Each pending snapshot must precede that pair's next live tick: write() sees to it one by
    // one while the client is off the topics.
    if (c.snapshots.size) this.#leaveTopics(ws, c);
    this.#retopic(ws, c, fresh);
    if (c.snapshots.size) this.#scheduleSnapshots(ws, c);
  }

  /** Why a journal session cannot start now, or null. */
  #sessionRefusal(): { code: ErrorCode; message: string } | null {
    if (!this.#o.journal)
      return {
        code: ErrorCode.CONFIG,
        message: 'this server has no journal reader: replay and resume are not available here',
      };
    const max = this.#o.journal.maxSessions;
    if (this.#sessions >= max)
      return {
        code: ErrorCode.LIMIT,
        message: `the server runs ${max} replay/resume sessions already (wsMaxJournalSessions): try again shortly`,
      };
    return null;
  }

  #canResume(ws: Socket, c: Client, after: Record<string, number>): boolean {
    const refusal =
      this.#sessionRefusal() ??
      (c.resume
        ? {
            code: ErrorCode.LIMIT,
            message: 'a resume is in progress on this connection already: wait for its "resumed" message',
          }
        : Object.keys(after).length > this.#o.maxChannelsPerClient
          ? {
              code: ErrorCode.LIMIT,
              message: `resume names more than ${this.#o.maxChannelsPerClient} sources (wsMaxChannelsPerClient)`,
            }
          : null);
    if (!refusal) return true;
    this.#refuse(ws, 'resume', refusal.code, refusal.message);
    return false;
  }

  #sessionSocket(ws: Socket, c: Client): SessionSocket {
    return {
      binary: c.binary,
      get closed() {
        return c.closed;
      },
      send: (data, binary) => {
        if (c.closed) return;
        ws.send(data, binary);
        this.#m.messages.inc();
      },
      buffered: () => (c.closed ? 0 : ws.getBufferedAmount()),
    };
  }

  #sessionContext(ws: Socket, c: Client) {
    return {
      socket: this.#sessionSocket(ws, c),
      maxBuffered: this.#o.maxBackpressureBytes,
      encoder: new TickRecordEncoder(),
      ticksPerTurn: SESSION_TICKS_PER_TURN,
    };
  }

  /** Holds this client's live ticks of the `after` sources from now on, and catches up from the journal. */
  #startResume(ws: Socket, c: Client, after: Record<string, number>): void {
    const sources = new Map(Object.entries(after));
    const targets = new Map<string, number>();
    for (const [source, seq] of sources) {
      const live = this.#lastLiveSeq.get(source);
      if (live !== undefined && live > seq) targets.set(source, live);
    }
    const session = new ResumeSession(this.#sessionContext(ws, c), {
      channels: new Set(c.channels),
      after: sources,
      targets,
      maxHeldTicks: this.#o.journal?.resumeMaxHeldTicks ?? 0,
      idleTimeoutMs: this.#o.journal?.resumeIdleTimeoutMs ?? 0,
    });
    c.resume = session;
    void this.#runSession('resume', ws, c, async () => {
      const cursor = await (this.#o.journal as JournalSessionOptions).open();
      try {
        await session.run(cursor, (n) => this.#m.sessionTicks.inc({ kind: 'resume' }, n));
      } finally {
        await cursor.close();
      }
    }).finally(() => {
      if (c.resume !== session) return;
      c.resume = null;
      this.#settle(ws, c);
    });
  }

  #startReplay(ws: Socket, c: Client, m: Extract<ClientMessage, { op: 'replay' }>): void {
    const fromMs = m.from === undefined ? Number.NEGATIVE_INFINITY : parseTime(m.from);
    const toMs = m.to === undefined ? Number.POSITIVE_INFINITY : parseTime(m.to);
    const bad =
      Number.isNaN(fromMs) || Number.isNaN(toMs)
        ? 'from and to are UTC ISO times ("2024-03-01T12:00:00Z") or epoch milliseconds'
        : toMs <= fromMs
          ? `to (${m.to}) must be after from (${m.from})`
          : (m.fromSeq !== undefined || m.toSeq !== undefined) && m.source === undefined
            ? 'fromSeq and toSeq need "source": seqs are counted per source'
            : m.fromSeq !== undefined && m.toSeq !== undefined && m.toSeq < m.fromSeq
              ? `toSeq (${m.toSeq}) must not be below fromSeq (${m.fromSeq})`
              : c.replays.has(m.id)
                ? `a replay with id ${JSON.stringify(m.id)} is running on this connection already: use another id`
                : null;
    if (bad) {
      this.#refuse(ws, 'replay', ErrorCode.FRAME_PAYLOAD, `${bad}; ${USAGE}`);
      return;
    }
    const perClient = this.#o.journal?.maxReplaysPerClient ?? 0;
    const refusal =
      this.#sessionRefusal() ??
      (c.replays.size >= perClient
        ? {
            code: ErrorCode.LIMIT,
            message: `this connection runs ${perClient} replays already (wsMaxReplaysPerClient): wait for a replay_end`,
          }
        : null);
    if (refusal) {
      this.#refuse(ws, 'replay', refusal.code, refusal.message);
      return;
    }
    const session = new ReplaySession(
      this.#sessionContext(ws, c),
      {
        id: m.id,
        channels: new Set(m.channels),
        source: m.source ?? null,
        fromMs,
        toMs,
        fromSeq: m.fromSeq ?? 0,
        toSeq: m.toSeq ?? Number.POSITIVE_INFINITY,
      },
      (this.#o.journal as JournalSessionOptions).pacer(m.speed),
    );
    c.replays.set(m.id, session);
    const socket = this.#sessionSocket(ws, c);
    void this.#runSession(
      'replay',
      ws,
      c,
      async () => {
        const cursor = await (this.#o.journal as JournalSessionOptions).open();
        try {
          const ticks = await session.run(cursor, (n) => this.#m.sessionTicks.inc({ kind: 'replay' }, n));
          if (!session.cancelled) socket.send(JSON.stringify({ type: 'replay_end', id: m.id, ticks }), false);
        } finally {
          await cursor.close();
        }
      },
      m.id,
    ).finally(() => c.replays.delete(m.id));
  }

  /**
   * Runs a session, counted; an error goes to the client with its code (and the replay id). A
   * failed resume closes the connection with 1013: the live ticks it held are gone, so the
   * client must reconnect and resume again.
   */
  async #runSession(
    kind: 'replay' | 'resume',
    ws: Socket,
    c: Client,
    body: () => Promise<void>,
    id?: string,
  ) {
    this.#sessions++;
    this.#m.sessions.inc({ kind });
    try {
      await body();
    } catch (err) {
      const e =
        err instanceof TickstreamError ? err : new TickstreamError(ErrorCode.KAFKA, (err as Error).message);
      this.#m.sessionFailures.inc({ kind, code: e.code });
      this.#o.logger.warn({ kind, code: e.code, err: e.message }, `websocket ${kind} failed`);
      if (!c.closed) {
        ws.send(
          JSON.stringify({ type: 'error', code: e.code, message: e.message, ...(id ? { id } : {}) }),
          false,
        );
        if (kind === 'resume') ws.end(1013, 'resume failed: reconnect and resume again');
      }
    } finally {
      this.#sessions--;
      this.#m.sessions.dec({ kind });
    }
  }

  /** Adds the known pairs (`latestKey`) `ch` names: a symbol of any source, or `source:symbol` split at any `:`. */
  #matchPairs(ch: string, into: Set<string>): void {
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
    if (c.snapshots.size === 0) this.#settle(ws, c);
    else if (ws.getBufferedAmount() <= this.#o.maxBackpressureBytes) this.#scheduleSnapshots(ws, c);
  }
}
/** The token a request carries: `?token=`, else `Authorization: Bearer …`. */
function tokenOf(query: URLSearchParams, authorization: string): string {
  return query.get('token') ?? (authorization.startsWith('Bearer ') ? authorization.slice(7) : '');
}

const nan = (v: number) => (Number.isNaN(v) ? null : v);

function tickMessage(
  batch: TickBatch,
  symbol: string,
  idx: number[],
  type: string,
  skipped: number,
  replay: boolean,
): string {
  const extra = `${replay ? ',"replay":true' : ''}${skipped ? `,"conflated":true,"skipped":${skipped}` : ''}`;
  return `{"type":"${type}","source":${JSON.stringify(batch.source)},"symbol":${JSON.stringify(symbol)},"rt":${batch.receivedAtMs}${extra},"ticks":[${tickObjects(batch, idx)}]}`;
}
