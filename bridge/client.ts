/**
 * A protocol client that speaks exactly what the EA speaks (docs/protocol.md): CHALLENGE →
 * HELLO with the HMAC proof → HELLO_ACK → SYMBOLS → TICKS within credit, HEARTBEATs, ACK and
 * RESEND handling, reconnect with capped exponential backoff and jitter — to the next bridge of
 * its list each time, as the EA's InpBridge list — resending what was not ACKed. It never writes while the socket buffer is full (the Node equivalent of an EA
 * that must not block in SocketSend). Capture runs through `TickCapture`, like the EA's timer.
 */
import net from 'node:net';
import tls from 'node:tls';
import { helloProof } from '../codecs/auth.js';
import { ErrorCode, TickstreamError } from '../codecs/errors.js';
import { encodeFrame, FrameDecoder, MessageType } from '../codecs/frame.js';
import * as msg from '../codecs/messages.js';
import { ArrayHistory, TickCapture } from './capture.js';

/** One symbol's terminal history, in broker server time, ascending. */
export interface SimSymbol {
  name: string;
  digits: number;
  times: Float64Array;
  bid: Float64Array;
  ask: Float64Array;
  last: Float64Array;
  volume: Float64Array;
  volumeReal: Float64Array;
  flags: Uint32Array;
}

export interface BridgeAddress {
  host: string;
  port: number;
}

export interface ClientOptions {
  /** The bridges of a pool: each reconnect goes to the next one, in turn. */
  bridges: BridgeAddress[];
  source: string;
  secret: string;
  symbols: SimSymbol[];
  structSize: 60 | 52;
  terminalBuild: number;
  /** Server-time offset to report in HELLO/HEARTBEAT (serverNow − gmtNow), ms. */
  serverOffsetMs: (utcMs: number) => number;
  /** The terminal clock the capture polls up to (server ms); Infinity = everything now. */
  now: () => number;
  maxBufferedTicks: number;
  pollIntervalMs: number;
  tls?: { ca?: string | Buffer; rejectUnauthorized: boolean };
  /** Drop all memory (an EA restart) after this many ticks are ACKed, once. */
  restartAfterAcked?: number;
  onProgress?: (s: ClientStats) => void;
  /** Bench aid: ticks firstSeq … firstSeq+count−1 just went out (resends too). */
  onSent?: (firstSeq: number, count: number) => void;
  /** Bench aid: an ACK came in for everything up to ackedSeq. */
  onAcked?: (ackedSeq: number) => void;
  /** Test aid: the n-th TICKS frame is "lost in transit" once (not sent), so the bridge sees a gap. */
  dropFrame?: number;
  /**
   * The EA's `InpMaxFrameBytes`: TICKS payloads at most this big, and at most two such frames'
   * worth of ticks sent but not ACKed, so what waits in the socket always fits its buffers and a
   * send never blocks (see `#pump`). Unset: the bridge's limits only (no in-flight cap).
   */
  maxFrameBytes?: number;
  /** A terminal that is slow to sync: the first history read of each symbol blocks this long. */
  historyDelayMs?: number;
  /** The EA's send timeout (SocketTimeouts): a frame not handed to the kernel in this long drops the connection. */
  sendTimeoutMs?: number;
}

export interface ClientStats {
  captured: number;
  sent: number;
  resent: number;
  acked: number;
  reconnects: number;
  restarts: number;
  lastAckedSeq: number;
  lastError: string;
}

const BACKOFF_MIN_MS = 100;
const CHALLENGE_TIMEOUT_MS = 10_000;
const BACKOFF_MAX_MS = 5000;
/** The EA's SOCKET_TIMEOUT_MS: a SocketSend blocked this long fails and the EA reconnects. */
const SEND_TIMEOUT_MS = 10_000;
/** Frames' worth of ticks a capped sender keeps un-ACKed (the EA's IN_FLIGHT_FRAMES). */
const IN_FLIGHT_FRAMES = 2;

export class BridgeClient {
  readonly #o: ClientOptions;
  #capture: TickCapture;
  /** An EA starts with no memory: its first HELLO_ACK says where it stands. */
  #amnesia = true;
  #socket: net.Socket | null = null;
  #creditLimit = 0;
  #nextSend = 1;
  #heartbeatMs = 1000;
  #heartbeatTimeoutMs = 15_000;
  /** When the first HEARTBEAT went out since the bridge last spoke; 0: none (the EA's g_hbWaitSince). */
  #hbWaitSince = 0;
  /** Ticks a TICKS frame may carry: the bridge's limits and our own frame cap. */
  #ticksPerFrame = 16384;
  /** Symbols whose first history read (the terminal's sync) is done in this run. */
  #warm = 0;
  #sendBlocked: NodeJS.Timeout | null = null;
  #stopped = false;
  #ready = false;
  #writable = true;
  #backoff = BACKOFF_MIN_MS;
  /** Connections made so far: the next one goes to bridges[#attempts % bridges.length]. */
  #attempts = 0;
  #framesSent = 0;
  /** Some connection of this run got a CHALLENGE: a bridge listens there. */
  #greetedOnce = false;
  #silentConnects = 0;
  #pollTimer: NodeJS.Timeout | null = null;
  #heartbeatTimer: NodeJS.Timeout | null = null;
  #done: { resolve: (s: ClientStats) => void; reject: (e: Error) => void } | null = null;
  readonly stats: ClientStats = {
    captured: 0,
    sent: 0,
    resent: 0,
    acked: 0,
    reconnects: 0,
    restarts: 0,
    lastAckedSeq: 0,
    lastError: '',
  };
  readonly #total: number;
  #highestSent = 0;
  /** nextSeq of the first HELLO_ACK: this run's ticks are numbered from here. */
  #firstSeq = 0;

  constructor(options: ClientOptions) {
    this.#o = options;
    this.#capture = this.#newCapture();
    this.#total = options.symbols.reduce((n, s) => n + s.times.length, 0);
  }

  /** Runs until every tick of every symbol is captured and ACKed (or `stop`). */
  run(): Promise<ClientStats> {
    return new Promise((resolve, reject) => {
      this.#done = { resolve, reject };
      this.#pollTimer = setInterval(() => this.#tick(), this.#o.pollIntervalMs);
    });
  }

  stop(): void {
    this.#stopped = true;
    this.#cleanup();
    this.#done?.resolve(this.stats);
  }

  #newCapture(): TickCapture {
    return new TickCapture(
      this.#o.symbols.map((s) => s.name),
      this.#o.symbols.map((s) => new ArrayHistory(s.times)),
      this.#o.maxBufferedTicks,
    );
  }

  /** Stops for good: what went wrong needs a person. */
  #giveUp(err: TickstreamError): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#cleanup();
    this.#done?.reject(err);
  }

  #cleanup(): void {
    if (this.#pollTimer) clearInterval(this.#pollTimer);
    if (this.#heartbeatTimer) clearInterval(this.#heartbeatTimer);
    if (this.#sendBlocked) clearTimeout(this.#sendBlocked);
    this.#socket?.destroy();
  }

  #connect(): void {
    if (this.#stopped) return;
    this.#ready = false;
    const decoder = new FrameDecoder(64 << 20);
    const { host, port } = this.#o.bridges[this.#attempts++ % this.#o.bridges.length] as BridgeAddress;
    const socket = this.#o.tls
      ? tls.connect({ host, port, ...this.#o.tls, servername: 'localhost' })
      : net.connect({ host, port });
    socket.setNoDelay(true);
    this.#socket = socket;
    this.#writable = true;
    let connected = false;
    let greeted = false;
    socket.once(this.#o.tls ? 'secureConnect' : 'connect', () => {
      connected = true;
    });
    // A bridge answers a connection with CHALLENGE at once: silence means something else listens
    // there (or it expects TLS and we speak plain TCP).
    const silence = setTimeout(() => {
      this.stats.lastError = `no CHALLENGE within ${CHALLENGE_TIMEOUT_MS} ms`;
      socket.destroy();
    }, CHALLENGE_TIMEOUT_MS);
    socket.on('data', (chunk: Buffer) => {
      this.#hbWaitSince = 0; // the bridge is alive
      if (!greeted) {
        greeted = true;
        this.#greetedOnce = true;
        clearTimeout(silence);
      }
      decoder.push(chunk);
      for (let f = decoder.next(); f !== null; f = decoder.next()) {
        if (f instanceof TickstreamError) {
          this.stats.lastError = f.message;
          socket.destroy();
          return;
        }
        this.#onFrame(socket, f.type, f.payload);
      }
    });
    socket.on('drain', () => {
      if (this.#sendBlocked) clearTimeout(this.#sendBlocked);
      this.#sendBlocked = null;
      this.#writable = true;
      this.#pump();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.stats.lastError = err.message;
      // An untrusted certificate needs a person (--ca, --insecure): retrying cannot help.
      if (err.code && /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ALTNAME/.test(err.code))
        this.#giveUp(
          new TickstreamError(
            ErrorCode.AUTH,
            `the bridge's TLS certificate is not trusted (${err.code}: ${err.message}): pass its CA with --ca FILE`,
          ),
        );
    });
    socket.on('close', () => {
      clearTimeout(silence);
      if (this.#socket !== socket) return;
      if (connected && !greeted && !this.#greetedOnce && ++this.#silentConnects >= 3) {
        this.#giveUp(
          new TickstreamError(
            ErrorCode.HANDSHAKE_TIMEOUT,
            `${host}:${port} accepted 3 connections but never sent a CHALLENGE (${this.stats.lastError || 'closed'}): is it a tickstream bridge, and does it expect TLS (--tls)?`,
          ),
        );
        return;
      }
      this.#ready = false;
      if (this.#heartbeatTimer) clearInterval(this.#heartbeatTimer);
      if (this.#sendBlocked) clearTimeout(this.#sendBlocked);
      this.#sendBlocked = null;
      if (this.#stopped) return;
      this.stats.reconnects++;
      const delay = this.#backoff * (0.5 + Math.random());
      this.#backoff = Math.min(this.#backoff * 2, BACKOFF_MAX_MS);
      setTimeout(() => this.#connect(), delay);
    });
  }

  #send(socket: net.Socket, type: MessageType, payload: Uint8Array): void {
    if (!socket.write(encodeFrame(type, payload))) this.#writable = false;
    // The EA's SocketSend returns only once the kernel has the whole frame; blocked past its
    // timeout it fails and the EA reconnects. Bytes Node still holds are bytes that call would
    // be blocked on.
    this.#watchSend(socket);
  }

  /** Drops the connection when bytes written `sendTimeoutMs` ago are still not in the kernel. */
  #watchSend(socket: net.Socket): void {
    if (socket.writableLength === 0 || this.#sendBlocked !== null) return;
    const timeoutMs = this.#o.sendTimeoutMs ?? SEND_TIMEOUT_MS;
    // bytesWritten counts what Node still holds too: the end of everything written so far.
    const mustBeOutBy = socket.bytesWritten;
    this.#sendBlocked = setTimeout(() => {
      this.#sendBlocked = null;
      if (this.#socket !== socket) return;
      if (socket.bytesWritten - socket.writableLength >= mustBeOutBy) return this.#watchSend(socket);
      this.stats.lastError = `a send stayed blocked for ${timeoutMs} ms (the bridge reads nothing)`;
      socket.destroy();
    }, timeoutMs);
  }

  #onFrame(socket: net.Socket, type: number, payload: Uint8Array): void {
    switch (type) {
      case MessageType.CHALLENGE: {
        const c = msg.decodeChallenge(payload);
        if (c instanceof TickstreamError) return void socket.destroy();
        const gmt = Date.now();
        this.#send(
          socket,
          MessageType.HELLO,
          msg.encodeHello({
            source: this.#o.source,
            structSize: this.#o.structSize,
            terminalBuild: this.#o.terminalBuild,
            serverTimeMs: gmt + this.#o.serverOffsetMs(gmt),
            gmtTimeMs: gmt,
            symbols: this.#o.symbols.map((s) => s.name),
            proof: helloProof(this.#o.secret, c.nonce, this.#o.source),
          }),
        );
        return;
      }
      case MessageType.HELLO_ACK: {
        const a = msg.decodeHelloAck(payload);
        if (a instanceof TickstreamError) return void socket.destroy();
        this.#capture.resume(a.nextSeq, a.cursors, this.#amnesia);
        this.#amnesia = false;
        this.stats.lastAckedSeq = Math.max(this.stats.lastAckedSeq, a.nextSeq - 1);
        this.#firstSeq ||= a.nextSeq;
        // Everything buffered from nextSeq on goes again (counted as resent).
        this.#nextSend = a.nextSeq;
        this.#creditLimit = a.creditLimit;
        const frameBytes = Math.min(a.maxFrameBytes, this.#o.maxFrameBytes ?? a.maxFrameBytes);
        this.#ticksPerFrame = Math.max(
          1,
          Math.min(
            a.maxTicksPerFrame,
            Math.floor((frameBytes - msg.TICKS_HEADER_BYTES) / this.#o.structSize),
          ),
        );
        this.#heartbeatMs = a.heartbeatIntervalMs;
        this.#heartbeatTimeoutMs = a.heartbeatTimeoutMs;
        this.#hbWaitSince = 0;
        this.#backoff = BACKOFF_MIN_MS;
        this.#send(
          socket,
          MessageType.SYMBOLS,
          msg.encodeSymbols(this.#o.symbols.map((s, i) => ({ id: i + 1, digits: s.digits, name: s.name }))),
        );
        this.#ready = true;
        if (this.#heartbeatTimer) clearInterval(this.#heartbeatTimer);
        this.#heartbeatTimer = setInterval(() => {
          const gmt = Date.now();
          if (!this.#ready) return;
          this.#hbWaitSince ||= gmt;
          this.#send(
            socket,
            MessageType.HEARTBEAT,
            msg.encodeHeartbeat({ serverTimeMs: gmt + this.#o.serverOffsetMs(gmt), gmtTimeMs: gmt }),
          );
        }, this.#heartbeatMs);
        this.#pump();
        return;
      }
      case MessageType.ACK: {
        const a = msg.decodeAck(payload);
        if (a instanceof TickstreamError) return void socket.destroy();
        if (a.ackedSeq > this.stats.lastAckedSeq) {
          this.stats.lastAckedSeq = a.ackedSeq;
          this.stats.acked = a.ackedSeq - this.#firstSeq + 1;
        }
        this.#capture.ack(a.ackedSeq);
        this.#o.onAcked?.(a.ackedSeq);
        this.#creditLimit = Math.max(this.#creditLimit, a.creditLimit);
        this.#maybeRestart(socket);
        this.#pump();
        this.#checkDone();
        return;
      }
      case MessageType.RESEND: {
        const from = msg.decodeResend(payload);
        if (typeof from === 'number' && from >= this.#capture.bufferStart) this.#nextSend = from;
        this.#pump();
        return;
      }
      case MessageType.ERROR: {
        const e = msg.decodeError(payload);
        if (!(e instanceof TickstreamError)) {
          this.stats.lastError = `${e.code}: ${e.message}`;
          // A person must fix these: retrying cannot help.
          if (
            e.code === ErrorCode.AUTH ||
            e.code === ErrorCode.STRUCT_SIZE ||
            e.code === ErrorCode.FRAME_VERSION ||
            e.code === ErrorCode.LIMIT
          )
            this.#giveUp(new TickstreamError(e.code, `the bridge refused this source: ${e.message}`));
        }
        return;
      }
      case MessageType.BYE:
        socket.end();
        return;
    }
  }

  /** EA restart with an empty memory: forget everything, reconnect, resume from HELLO_ACK. */
  #maybeRestart(socket: net.Socket): void {
    const after = this.#o.restartAfterAcked;
    if (after === undefined || this.stats.restarts > 0 || this.stats.lastAckedSeq < after) return;
    this.stats.restarts++;
    this.#capture = this.#newCapture();
    this.#amnesia = true;
    this.#ready = false;
    socket.destroy();
  }

  #tick(): void {
    if (this.#warm < this.#o.symbols.length) {
      this.#warmUp();
      return;
    }
    // The EA's rule: a bridge that says nothing for heartbeat_timeout_ms after a HEARTBEAT is dead.
    if (this.#ready && this.#hbWaitSince > 0 && Date.now() - this.#hbWaitSince > this.#heartbeatTimeoutMs) {
      this.stats.lastError = `the bridge sent nothing for ${this.#heartbeatTimeoutMs} ms after a HEARTBEAT`;
      this.#hbWaitSince = 0;
      this.#socket?.destroy();
    }
    // An EA without memory does not capture before HELLO_ACK tells it where it stands.
    if (!this.#amnesia && this.#capture.buffered < this.#o.maxBufferedTicks) {
      this.stats.captured += this.#capture.poll(this.#o.now());
    }
    this.#pump();
    this.#o.onProgress?.(this.stats);
    this.#checkDone();
  }

  /**
   * The EA's warm-up (TickStream.mq5 WarmUp): before its first connection it reads each symbol's
   * newest ticks once, one symbol per timer event, so the terminal syncs its tick history while
   * no session is open to time out. `historyDelayMs` makes that read block the whole thread, as
   * CopyTicks blocks the EA's (up to 45 s in an EA, MQL5 reference). Atomics.wait sleeps
   * without burning the CPU.
   */
  #warmUp(): void {
    const delay = this.#o.historyDelayMs ?? 0;
    if (delay > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, delay);
    this.#warm = delay > 0 ? this.#warm + 1 : this.#o.symbols.length;
    if (this.#warm === this.#o.symbols.length) this.#connect();
  }

  /** Seq limit for sending: the bridge's credit and, with a frame cap, the in-flight window. */
  #sendLimit(): number {
    if (this.#o.maxFrameBytes === undefined) return this.#creditLimit;
    const acked = Math.max(this.stats.lastAckedSeq, this.#capture.bufferStart - 1);
    return Math.min(this.#creditLimit, acked + 1 + IN_FLIGHT_FRAMES * this.#ticksPerFrame);
  }

  /** Sends buffered ticks from #nextSend while credit, socket room and frame limits allow. */
  #pump(): void {
    const socket = this.#socket;
    if (!socket || !this.#ready) return;
    if (this.#capture.buffered < this.#o.maxBufferedTicks)
      this.stats.captured += this.#capture.poll(this.#o.now());
    const limit = this.#sendLimit();
    while (this.#writable && this.#nextSend < this.#capture.nextSeq && this.#nextSend < limit) {
      const first = this.#nextSend;
      const { symbol } = this.#capture.at(first);
      let n = 1;
      const max = Math.min(this.#ticksPerFrame, limit - first, this.#capture.nextSeq - first);
      while (n < max && this.#capture.at(first + n).symbol === symbol) n++;
      if (++this.#framesSent !== this.#o.dropFrame)
        this.#send(
          socket,
          MessageType.TICKS,
          msg.encodeTicks({ symbolId: symbol + 1, firstSeq: first, count: n }, this.#structs(first, n)),
        );
      this.#o.onSent?.(first, n);
      this.stats.sent += n;
      if (first <= this.#highestSent) this.stats.resent += Math.min(n, this.#highestSent - first + 1);
      this.#highestSent = Math.max(this.#highestSent, first + n - 1);
      this.#nextSend = first + n;
    }
  }

  #structs(first: number, n: number): Buffer {
    const size = this.#o.structSize;
    const out = Buffer.allocUnsafe(n * size);
    for (let k = 0, o = 0; k < n; k++, o += size) {
      const { symbol, index } = this.#capture.at(first + k);
      const s = this.#o.symbols[symbol] as SimSymbol;
      const msc = s.times[index] as number;
      out.writeBigInt64LE(BigInt(Math.floor(msc / 1000)), o);
      out.writeDoubleLE(s.bid[index] as number, o + 8);
      out.writeDoubleLE(s.ask[index] as number, o + 16);
      out.writeDoubleLE(s.last[index] as number, o + 24);
      const vol = s.volume[index] as number;
      out.writeUInt32LE(vol % 2 ** 32, o + 32);
      out.writeUInt32LE(Math.floor(vol / 2 ** 32), o + 36);
      const hi = Math.floor(msc / 2 ** 32);
      out.writeUInt32LE(msc - hi * 2 ** 32, o + 40);
      out.writeInt32LE(hi, o + 44);
      out.writeUInt32LE(s.flags[index] as number, o + 48);
      if (size === 60) out.writeDoubleLE(s.volumeReal[index] as number, o + 52);
    }
    return out;
  }

  #checkDone(): void {
    if (this.#stopped || this.#amnesia) return;
    const allCaptured = this.#capture.cursors.every((c, k) => {
      const s = this.#o.symbols[k] as SimSymbol;
      return (
        s.times.length === 0 ||
        (c.lastMsc === s.times[s.times.length - 1] && this.#countAtEnd(s) === c.countAtMsc)
      );
    });
    if (allCaptured && this.#capture.buffered === 0 && this.stats.lastAckedSeq >= this.#capture.nextSeq - 1) {
      this.#stopped = true;
      if (this.#socket) this.#send(this.#socket, MessageType.BYE, msg.encodeBye('done'));
      this.#cleanup();
      this.#done?.resolve(this.stats);
    }
  }

  #countAtEnd(s: SimSymbol): number {
    const last = s.times[s.times.length - 1];
    let n = 0;
    for (let i = s.times.length - 1; i >= 0 && s.times[i] === last; i--) n++;
    return n;
  }

  get total(): number {
    return this.#total;
  }
}
