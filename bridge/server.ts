/**
 * The EA ingress: a TCP (optionally TLS) server speaking docs/protocol.md. Per connection it
 * runs the handshake (CHALLENGE → HELLO with an HMAC proof → HELLO_ACK with the resume state),
 * keeps the symbol table, accepts only the next contiguous seq (a repeat is dropped and counted,
 * a gap gets one RESEND), enforces credit, frame, symbol, connection and rate limits, and
 * closes silent sessions. Accepted TICKS payloads go to the handler as bytes — the structs are
 * decoded by the pipeline's workers, never here. ACKs come back from the pipeline once Kafka
 * has committed the ticks (`ack`).
 *
 * One live session per source: a new authenticated HELLO replaces the open one, which gets
 * ERR_SOURCE_REPLACED (the reconnecting EA is usually right; the old socket is half-dead).
 */
import net from 'node:net';
import tls from 'node:tls';
import { newNonce, verifyHelloProof } from '../codecs/auth.js';
import { ErrorCode, TickstreamError } from '../codecs/errors.js';
import { encodeFrame, FrameDecoder, MessageType } from '../codecs/frame.js';
import * as msg from '../codecs/messages.js';

export interface ResumeState {
  nextSeq: number;
  cursors: msg.SymbolCursor[];
}

export interface IngressOptions {
  host: string;
  port: number;
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Per-source secrets. Empty: any source is accepted without a proof (loopback use). */
  secrets: Readonly<Record<string, string>>;
  maxConnections: number;
  handshakeTimeoutMs: number;
  heartbeatIntervalMs: number;
  heartbeatTimeoutMs: number;
  maxFrameBytes: number;
  maxTicksPerFrame: number;
  maxSymbols: number;
  creditWindowTicks: number;
  maxTicksPerSecondPerSource: number;
  logger: { info: (o: object, m?: string) => void; warn: (o: object, m?: string) => void };
  crashPoint?: (name: string) => void;
}

export interface IngressHandler {
  /** The resume state for a source whose session is opening (after in-flight work drained). */
  resume(source: string): Promise<ResumeState>;
  /** Accepted ticks. `structs` is a view: copy it before returning. */
  onTicks(
    session: Session,
    symbol: string,
    firstSeq: number,
    count: number,
    structs: Uint8Array,
    receivedAtMs: number,
  ): void;
  onHeartbeat(session: Session, hb: msg.Heartbeat): void;
  onSessionOpen(session: Session): void;
  onSessionClose(session: Session): void;
  /** A frame or connection refused, by code (metrics). */
  onRejected(code: ErrorCode, source: string | undefined): void;
  onDuplicate(session: Session, ticks: number): void;
  onGap(session: Session, expected: number, got: number): void;
  /** False while the journal path is full: credit is not extended. */
  hasRoom(): boolean;
}

export class Session {
  readonly socket: net.Socket;
  readonly remote: string;
  source = '';
  structSize = 60;
  /** Next seq this session will accept. */
  expectedSeq = 0;
  ackedSeq = 0;
  creditLimit = 0;
  readonly symbols = new Map<number, string>();
  /** Price digits by symbol name, as the EA's SYMBOLS said. */
  readonly digits = new Map<string, number>();
  hello: msg.Hello | null = null;
  /** HELLO_ACK went out: ACKs may follow (never before it). */
  helloAcked = false;
  /** A RESEND went out; frames are dropped until the expected seq arrives. */
  resendSent = false;
  closed = false;
  /** performance.now() until which the bridge does not read this connection (rate limit). */
  rateLimitedUntil = 0;

  constructor(socket: net.Socket) {
    this.socket = socket;
    this.remote = `${socket.remoteAddress}:${socket.remotePort}`;
  }

  send(type: MessageType, payload: Uint8Array): void {
    if (!this.closed) this.socket.write(encodeFrame(type, payload));
  }

  /** Sends ERROR and closes (the peer sees why). */
  fail(code: ErrorCode, message: string): void {
    if (this.closed) return;
    this.send(MessageType.ERROR, msg.encodeError({ code, message }));
    this.closed = true;
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }
}

export class IngressServer {
  readonly #o: IngressOptions;
  readonly #h: IngressHandler;
  readonly #server: net.Server;
  readonly #connections = new Set<Session>();
  readonly #bySource = new Map<string, Session>();
  /** Per source (not per connection: a reconnect gets no fresh budget): a token bucket. */
  readonly #rateBuckets = new Map<string, { tokens: number; at: number }>();
  #paused = false;
  #stopping = false;
  /** While a session is not read (backpressure, rate limit) it still hears from us: see #keepAlive. */
  #keepAliveTimer: NodeJS.Timeout | null = null;

  constructor(options: IngressOptions, handler: IngressHandler) {
    this.#o = options;
    this.#h = handler;
    const onSocket = (socket: net.Socket) => this.#accept(socket);
    this.#server = options.tls
      ? tls.createServer(
          // A peer that never completes the TLS handshake must not hold a socket for Node's default 120 s.
          { cert: options.tls.cert, key: options.tls.key, handshakeTimeout: options.handshakeTimeoutMs },
          onSocket,
        )
      : net.createServer(onSocket);
    if (options.tls) {
      // A client that fails the TLS handshake never reaches #accept; count it all the same. Node
      // leaves the socket open after a handshake timeout: it is closed here.
      this.#server.on('tlsClientError', (_err: Error, socket: tls.TLSSocket) => {
        handler.onRejected(ErrorCode.AUTH, undefined);
        socket.destroy();
      });
    }
  }

  async start(): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          new TickstreamError(
            ErrorCode.CONFIG,
            err.code === 'EADDRINUSE'
              ? `EA ingress port ${this.#o.host}:${this.#o.port} is taken: stop the other process or set --ingress-port`
              : `EA ingress cannot listen on ${this.#o.host}:${this.#o.port}: ${err.message}`,
          ),
        ),
      );
      this.#server.listen(this.#o.port, this.#o.host, resolve);
    });
    this.#keepAliveTimer = setInterval(() => this.#keepAlive(), this.#o.heartbeatIntervalMs).unref();
    return (this.#server.address() as net.AddressInfo).port;
  }

  get connectionCount(): number {
    return this.#connections.size;
  }

  get sources(): string[] {
    return [...this.#bySource.keys()];
  }

  session(source: string): Session | undefined {
    return this.#bySource.get(source);
  }

  /** Ticks up to `ackedSeq` of `source` are durable: tell its EA, with new credit if there is room. */
  ack(source: string, ackedSeq: number): void {
    const s = this.#bySource.get(source);
    if (!s || s.closed || !s.helloAcked || ackedSeq <= s.ackedSeq) return;
    s.ackedSeq = ackedSeq;
    this.#sendAck(s);
  }

  /**
   * Stops (or resumes) reading from every source: TCP backpressure when queues are full.
   * Connections before HELLO are still read: a HELLO brings no ticks, and an EA that connects
   * during backpressure must not meet the handshake timeout (its session is paused from HELLO on).
   */
  setPaused(paused: boolean): void {
    if (paused === this.#paused) return;
    this.#paused = paused;
    for (const s of this.#connections) {
      if (!s.hello) continue;
      if (paused) s.socket.pause();
      else if (!this.#rateLimited(s)) s.socket.resume();
    }
  }

  /** Re-sends ACK with fresh credit to every session (called when room returns). */
  refreshCredit(): void {
    for (const s of this.#bySource.values()) if (!s.closed && s.helloAcked) this.#sendAck(s);
  }

  /**
   * Stops accepting; open sessions stay until `closeAll`. Returns at once: `server.close`'s own
   * callback waits for every open connection to end, and a terminal still streaming would hold
   * the shutdown's drain (and its deadline) until it left by itself.
   */
  stopAccepting(): void {
    this.#stopping = true;
    this.#server.close();
  }

  closeAll(code: ErrorCode, reason: string): void {
    if (this.#keepAliveTimer) clearInterval(this.#keepAliveTimer);
    for (const s of this.#connections) {
      if (code === ErrorCode.SHUTTING_DOWN) {
        s.send(MessageType.BYE, msg.encodeBye(reason));
        s.closed = true;
        s.socket.end();
      } else s.fail(code, reason);
    }
  }

  /** Ends a source's session with an error (e.g. a tick the workers refused). */
  failSource(source: string, code: ErrorCode, message: string): void {
    this.#bySource.get(source)?.fail(code, message);
  }

  /**
   * An EA treats a bridge silent for heartbeat_timeout_ms after its HEARTBEAT as dead. While we
   * do not read a session (backpressure, rate limit) its heartbeats wait unread in the socket, so
   * it gets an ACK every heartbeat interval instead: a paused bridge is slow, not dead, and the
   * EA must not turn that into a reconnect that resends its whole window (issue 19).
   */
  #keepAlive(): void {
    for (const s of this.#bySource.values())
      if (!s.closed && s.helloAcked && s.socket.isPaused()) this.#sendAck(s);
  }

  #sendAck(s: Session): void {
    if (this.#h.hasRoom())
      s.creditLimit = Math.max(s.creditLimit, s.ackedSeq + 1 + this.#o.creditWindowTicks);
    s.send(MessageType.ACK, msg.encodeAck({ ackedSeq: s.ackedSeq, creditLimit: s.creditLimit }));
  }

  #accept(socket: net.Socket): void {
    const s = new Session(socket);
    socket.setNoDelay(true);
    // Before any write: a peer that resets at once must not crash the bridge (unhandled 'error').
    socket.on('error', () => undefined); // 'close' follows; a reset peer is normal life for an EA
    if (this.#stopping) {
      s.fail(ErrorCode.SHUTTING_DOWN, 'the bridge is shutting down: reconnect later');
      return;
    }
    if (this.#connections.size >= this.#o.maxConnections) {
      this.#h.onRejected(ErrorCode.TOO_MANY_CONNECTIONS, undefined);
      s.fail(
        ErrorCode.TOO_MANY_CONNECTIONS,
        `the bridge holds ${this.#o.maxConnections} connections already (maxConnections)`,
      );
      return;
    }
    this.#connections.add(s);
    const decoder = new FrameDecoder(this.#o.maxFrameBytes);
    const nonce = newNonce();
    let silence: NodeJS.Timeout = setTimeout(
      () => this.#reject(s, ErrorCode.HANDSHAKE_TIMEOUT, `no HELLO within ${this.#o.handshakeTimeoutMs} ms`),
      this.#o.handshakeTimeoutMs,
    );
    const heard = () => {
      if (!s.hello) return;
      clearTimeout(silence);
      silence = setTimeout(() => {
        // While we do not read (backpressure, rate limit, resume pending) silence is ours.
        if (socket.isPaused()) heard();
        else
          this.#reject(s, ErrorCode.HEARTBEAT_TIMEOUT, `nothing heard for ${this.#o.heartbeatTimeoutMs} ms`);
      }, this.#o.heartbeatTimeoutMs);
    };
    s.send(MessageType.CHALLENGE, msg.encodeChallenge({ nonce }));

    socket.on('data', (chunk: Buffer) => {
      const receivedAtMs = performance.timeOrigin + performance.now();
      decoder.push(chunk);
      for (;;) {
        if (s.closed) return;
        const frame = decoder.next();
        if (frame === null) break;
        if (frame instanceof TickstreamError) {
          this.#reject(s, frame.code, frame.message);
          return;
        }
        this.#onFrame(s, frame.type, frame.payload, nonce, receivedAtMs, socket);
        // After the frame, not before: the HELLO frame itself is what ends the handshake timer
        // (called before it, `heard` saw no HELLO yet and left the 5 s timer running).
        if (!s.closed) heard();
      }
    });
    socket.on('close', () => {
      clearTimeout(silence);
      const cut = s.closed ? null : decoder.end();
      if (cut instanceof TickstreamError) this.#h.onRejected(cut.code, s.source || undefined);
      s.closed = true;
      this.#connections.delete(s);
      if (s.source && this.#bySource.get(s.source) === s) {
        this.#bySource.delete(s.source);
        this.#h.onSessionClose(s);
      }
    });
  }

  #reject(s: Session, code: ErrorCode, message: string): void {
    if (s.closed) return;
    this.#h.onRejected(code, s.source || undefined);
    this.#o.logger.warn(
      { code, source: s.source || undefined, remote: s.remote, reason: message },
      'closing EA connection',
    );
    s.fail(code, message);
  }

  #onFrame(
    s: Session,
    type: MessageType,
    payload: Uint8Array,
    nonce: Uint8Array,
    receivedAtMs: number,
    socket: net.Socket,
  ): void {
    if (!s.hello && type !== MessageType.HELLO) {
      if (type === MessageType.BYE) socket.end();
      else this.#reject(s, ErrorCode.PROTOCOL_STATE, `expected HELLO first, got message type ${type}`);
      return;
    }
    // Frames pipelined behind HELLO (same chunk) would meet a session without its resume state.
    if (
      !s.helloAcked &&
      type !== MessageType.HELLO &&
      type !== MessageType.BYE &&
      type !== MessageType.ERROR
    ) {
      this.#reject(s, ErrorCode.PROTOCOL_STATE, `message type ${type} sent before HELLO_ACK: wait for it`);
      return;
    }
    switch (type) {
      case MessageType.HELLO:
        this.#onHello(s, payload, nonce, socket);
        return;
      case MessageType.SYMBOLS: {
        const defs = msg.decodeSymbols(payload, this.#o.maxSymbols);
        const err =
          defs instanceof TickstreamError ? defs : msg.mergeSymbols(s.symbols, defs, this.#o.maxSymbols);
        if (err) this.#reject(s, err.code, err.message);
        else for (const d of defs as msg.SymbolDef[]) s.digits.set(d.name, d.digits);
        return;
      }
      case MessageType.TICKS:
        this.#onTicks(s, payload, receivedAtMs);
        return;
      case MessageType.HEARTBEAT: {
        const hb = msg.decodeHeartbeat(payload);
        if (hb instanceof TickstreamError) {
          this.#reject(s, hb.code, hb.message);
          return;
        }
        this.#h.onHeartbeat(s, hb);
        this.#sendAck(s);
        return;
      }
      case MessageType.BYE:
        s.closed = true;
        socket.end();
        return;
      case MessageType.ERROR: {
        const e = msg.decodeError(payload);
        this.#o.logger.warn(
          { source: s.source, error: e instanceof TickstreamError ? e.message : e },
          'EA reported an error',
        );
        s.closed = true;
        socket.end();
        return;
      }
      default:
        this.#reject(s, ErrorCode.PROTOCOL_STATE, `message type ${type} is not sent by an EA`);
    }
  }

  #onHello(s: Session, payload: Uint8Array, nonce: Uint8Array, socket: net.Socket): void {
    if (s.hello) {
      this.#reject(s, ErrorCode.PROTOCOL_STATE, 'HELLO sent twice');
      return;
    }
    const hello = msg.decodeHello(payload, this.#o.maxSymbols);
    if (hello instanceof TickstreamError) {
      this.#reject(s, hello.code, hello.message);
      return;
    }
    const secrets = this.#o.secrets;
    if (Object.keys(secrets).length > 0) {
      const secret = secrets[hello.source];
      // The same message for an unknown source and a wrong secret: no probing for source ids.
      if (secret === undefined || !verifyHelloProof(secret, nonce, hello.source, hello.proof)) {
        this.#reject(
          s,
          ErrorCode.AUTH,
          `authentication failed for source ${JSON.stringify(hello.source)}: check the EA's source id and secret`,
        );
        return;
      }
    }
    s.hello = hello;
    s.source = hello.source;
    s.structSize = hello.structSize;
    const previous = this.#bySource.get(hello.source);
    if (previous && previous !== s) {
      this.#bySource.delete(hello.source);
      previous.fail(
        ErrorCode.SOURCE_REPLACED,
        `a new connection from ${s.remote} took over source ${hello.source}`,
      );
      this.#h.onSessionClose(previous);
    }
    this.#bySource.set(hello.source, s);
    socket.pause();
    this.#h
      .resume(hello.source)
      .then((state) => {
        if (s.closed) return;
        s.expectedSeq = state.nextSeq;
        s.ackedSeq = state.nextSeq - 1;
        s.creditLimit = state.nextSeq + (this.#h.hasRoom() ? this.#o.creditWindowTicks : 0);
        s.helloAcked = true;
        s.send(
          MessageType.HELLO_ACK,
          msg.encodeHelloAck({
            nextSeq: state.nextSeq,
            creditLimit: s.creditLimit,
            heartbeatIntervalMs: this.#o.heartbeatIntervalMs,
            heartbeatTimeoutMs: this.#o.heartbeatTimeoutMs,
            maxFrameBytes: this.#o.maxFrameBytes,
            maxTicksPerFrame: this.#o.maxTicksPerFrame,
            maxSymbols: this.#o.maxSymbols,
            cursors: state.cursors,
          }),
        );
        this.#o.logger.info(
          { source: s.source, remote: s.remote, nextSeq: state.nextSeq, structSize: s.structSize },
          'source connected',
        );
        this.#h.onSessionOpen(s);
        if (!this.#paused) socket.resume();
      })
      .catch((err: Error) =>
        // A time-zone refusal keeps its code: the EA shows it to a person, who must fix the rule;
        // so does a claim another bridge keeps winning (the EA tries the next bridge).
        err instanceof TickstreamError &&
        (err.code === ErrorCode.TIME_ZONE || err.code === ErrorCode.SOURCE_FENCED)
          ? this.#reject(s, err.code, err.message)
          : this.#reject(s, ErrorCode.INTERNAL, `resume state unavailable: ${err.message}`),
      );
  }

  #onTicks(s: Session, payload: Uint8Array, receivedAtMs: number): void {
    const h = msg.decodeTicksHeader(payload, s.structSize, s.symbols);
    const err =
      h instanceof TickstreamError
        ? h
        : h.count > this.#o.maxTicksPerFrame
          ? new TickstreamError(
              ErrorCode.LIMIT,
              `${h.count} ticks in one frame is over the limit of ${this.#o.maxTicksPerFrame}`,
            )
          : null;
    if (err || h instanceof TickstreamError) {
      if (err) this.#reject(s, err.code, err.message);
      return;
    }
    const symbol = s.symbols.get(h.symbolId) as string;
    const last = h.firstSeq + h.count - 1;
    if (last < s.expectedSeq) {
      this.#h.onDuplicate(s, h.count);
      return;
    }
    if (h.firstSeq > s.expectedSeq) {
      if (!s.resendSent) {
        s.resendSent = true;
        this.#h.onGap(s, s.expectedSeq, h.firstSeq);
        s.send(MessageType.RESEND, msg.encodeResend(s.expectedSeq));
      }
      return;
    }
    if (last >= s.creditLimit) {
      this.#reject(
        s,
        ErrorCode.PROTOCOL_STATE,
        `ticks up to seq ${last} sent past the credit limit ${s.creditLimit}`,
      );
      return;
    }
    if (s.resendSent) {
      s.resendSent = false;
      this.#o.crashPoint?.('bridge-mid-resend');
    }
    // A frame that starts before the expected seq: its head was accepted already.
    const skip = s.expectedSeq - h.firstSeq;
    if (skip > 0) this.#h.onDuplicate(s, skip);
    const count = h.count - skip;
    const start = msg.TICKS_HEADER_BYTES + skip * s.structSize;
    this.#h.onTicks(
      s,
      symbol,
      s.expectedSeq,
      count,
      payload.subarray(start, start + count * s.structSize),
      receivedAtMs,
    );
    s.expectedSeq = last + 1;
    this.#limitRate(s, count);
  }

  /**
   * Token bucket per source: `maxTicksPerSecondPerSource` tokens a second, at most one second's
   * worth saved. A frame may overdraw it; the debt is paid by not reading the connection for as
   * long as it takes to refill (TCP backpressure), so the long-run rate holds whatever the frame
   * sizes.
   */
  #limitRate(s: Session, count: number): void {
    const limit = this.#o.maxTicksPerSecondPerSource;
    const now = performance.now();
    const b = this.#rateBuckets.get(s.source) ?? { tokens: limit, at: now };
    b.tokens = Math.min(limit, b.tokens + ((now - b.at) * limit) / 1000) - count;
    b.at = now;
    this.#rateBuckets.set(s.source, b);
    if (b.tokens >= 0) return;
    const waitMs = (-b.tokens / limit) * 1000;
    s.rateLimitedUntil = now + waitMs;
    s.socket.pause();
    // Timers may fire a little early against performance.now(): check, and wait again if so.
    const resume = () => {
      if (s.closed) return;
      if (this.#rateLimited(s)) {
        setTimeout(resume, Math.ceil(s.rateLimitedUntil - performance.now()) + 1).unref();
        return;
      }
      if (!this.#paused) s.socket.resume();
    };
    setTimeout(resume, Math.ceil(waitMs) + 1).unref();
  }

  #rateLimited(s: Session): boolean {
    return s.rateLimitedUntil > performance.now();
  }
}
