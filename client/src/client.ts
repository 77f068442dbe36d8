/**
 * A typed client of tickstream's websocket feed (docs/websocket.md) for Node and browsers:
 * subscribe/unsubscribe, JSON or FlatBuffers frames, snapshots, reconnect with capped
 * exponential backoff and jitter, and resume after the last (source, seq) seen, so a reconnect
 * loses nothing and repeats nothing; slow-consumer (conflated) notices and replay sessions are
 * events too.
 *
 * No hole, no repeat: the client remembers per source the highest seq below which it has
 * everything (the server sends a batch's symbols one message each, in the order they first
 * appear, so a message that starts above every seq seen so far closes the previous batch), and
 * resumes after it; ticks the server sends again are dropped by their (source, symbol, seq).
 */
import { decodeTickColumns, type Tick, tickObjects } from './records.js';

export type { Tick };

/** The part of the WebSocket API the client uses (browsers' WebSocket, Node's `ws`). */
export interface WebSocketLike {
  binaryType: string;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ReconnectOptions {
  /** First delay (default 250 ms), doubled after each failed attempt... */
  initialDelayMs?: number;
  /** ...up to this (default 10 000 ms). */
  maxDelayMs?: number;
  /** Each delay is shortened by up to this share at random (default 0.5), so clients spread out. */
  jitter?: number;
}

export interface ClientOptions {
  /** The server's websocket URL, e.g. ws://127.0.0.1:5001/ws */
  url: string;
  /** Sent as ?token= (browsers cannot set headers on a websocket). */
  token?: string;
  /** 'flatbuffers': tick messages come as binary TickRecords (decoded here). Default 'json'. */
  format?: 'json' | 'flatbuffers';
  /** Channels to subscribe on connect: 'EURUSD', 'source:EURUSD', '*'. */
  channels?: string[];
  /** A WebSocket constructor; default globalThis.WebSocket, else the `ws` package (Node 20). */
  WebSocket?: WebSocketConstructor;
  /** false: no reconnect. Default: reconnect with the defaults of ReconnectOptions. */
  reconnect?: false | ReconnectOptions;
  /** Resume after the last (source, seq) seen on reconnect (default true). */
  resume?: boolean;
}

export interface TicksEvent {
  source: string;
  symbol: string;
  ticks: Tick[];
  /** True for ticks of a resume's catch-up read from the journal. */
  resumed: boolean;
}
export interface ConflatedEvent {
  source: string;
  symbol: string;
  /** Ticks of this source and symbol the server did not send (the client read too slowly). */
  skipped: number;
  tick: Tick;
}
export interface ReplayEvent {
  id: string;
  source: string;
  symbol: string;
  ticks: Tick[];
}
export interface ReplayRequest {
  channels: string[];
  /** UTC ISO time or epoch ms; inclusive. */
  from?: string | number;
  /** UTC ISO time or epoch ms; exclusive. */
  to?: string | number;
  /** 'max' (default) or ×N of the original spacing. */
  speed?: 'max' | number;
  /** Only this source; needed with fromSeq/toSeq. */
  source?: string;
  fromSeq?: number;
  toSeq?: number;
}

export interface ClientEvents {
  open: undefined;
  /** Live ticks, and a resume's catch-up, each tick once. */
  ticks: TicksEvent;
  snapshot: { source: string; symbol: string; tick: Tick };
  conflated: ConflatedEvent;
  bar: Record<string, unknown> & { source: string; symbol: string; startMs: number };
  /** A resume's catch-up is over: per source, the last seq the journal covered. */
  resumed: { sources: Record<string, number> };
  replay: ReplayEvent;
  replayEnd: { id: string; ticks: number };
  /** An `error` message of the server (the connection stays open unless it says otherwise). */
  serverError: { code: string; message: string; id?: string };
  close: { code: number; reason: string; reconnectInMs: number | null };
  /** A socket-level error (the close that follows reconnects). */
  socketError: { error: unknown };
}

type Listener<T> = (event: T) => void;

const pairKey = (source: string, symbol: string) => `${source}\u0000${symbol}`;

export class TickstreamClient {
  readonly #o: ClientOptions;
  readonly #channels = new Set<string>();
  readonly #listeners = new Map<keyof ClientEvents, Set<Listener<never>>>();
  #ws: WebSocketLike | null = null;
  #open = false;
  #closedByUser = false;
  #attempt = 0;
  #timer: ReturnType<typeof setTimeout> | null = null;
  /** (source, symbol) → last seq delivered: what arrives again is dropped. */
  readonly #pairLast = new Map<string, number>();
  /** source → highest seq delivered. */
  readonly #sourceMax = new Map<string, number>();
  /** source → every tick of the channels up to this seq was delivered. */
  readonly #complete = new Map<string, number>();
  #resuming = false;
  /** A binary replay frame announced by its text header. */
  #replayHeader: { id: string; source: string; symbol: string } | null = null;
  readonly #replays = new Map<string, { resolve: (n: number) => void; reject: (e: Error) => void }>();
  #replayCount = 0;

  constructor(options: ClientOptions) {
    this.#o = options;
    for (const ch of options.channels ?? []) this.#channels.add(ch);
  }

  on<K extends keyof ClientEvents>(event: K, listener: Listener<ClientEvents[K]>): this {
    let set = this.#listeners.get(event);
    if (!set) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    set.add(listener as Listener<never>);
    return this;
  }

  off<K extends keyof ClientEvents>(event: K, listener: Listener<ClientEvents[K]>): this {
    this.#listeners.get(event)?.delete(listener as Listener<never>);
    return this;
  }

  #emit<K extends keyof ClientEvents>(event: K, value: ClientEvents[K]): void {
    for (const l of this.#listeners.get(event) ?? []) (l as Listener<ClientEvents[K]>)(value);
  }

  /** Connects; resolves on the first open (reconnects later happen by themselves). */
  async connect(): Promise<void> {
    this.#closedByUser = false;
    const Ctor = await this.#webSocketClass();
    await new Promise<void>((resolve, reject) => {
      const first = (ok: boolean, err?: Error) => {
        this.off('open', onOpen);
        this.off('close', onClose);
        if (ok) resolve();
        else reject(err);
      };
      const onOpen = () => first(true);
      const onClose = (e: ClientEvents['close']) =>
        e.reconnectInMs === null
          ? first(false, new Error(`websocket closed before it opened: ${e.code} ${e.reason}`))
          : undefined;
      this.on('open', onOpen);
      this.on('close', onClose);
      this.#dial(Ctor);
    });
  }

  async #webSocketClass(): Promise<WebSocketConstructor> {
    if (this.#o.WebSocket) return this.#o.WebSocket;
    const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (global) return global;
    const ws = (await import('ws')) as unknown as { default: WebSocketConstructor };
    return ws.default;
  }

  #url(): string {
    const url = new URL(this.#o.url);
    if (this.#o.format === 'flatbuffers') url.searchParams.set('format', 'flatbuffers');
    if (this.#o.token) url.searchParams.set('token', this.#o.token);
    return url.toString();
  }

  #dial(Ctor: WebSocketConstructor): void {
    const ws = new Ctor(this.#url());
    this.#ws = ws;
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => {
      this.#open = true;
      this.#attempt = 0;
      this.#replayHeader = null;
      this.#sendHello();
      this.#emit('open', undefined);
    };
    ws.onmessage = (ev) => this.#onMessage(ev.data);
    ws.onerror = (error) => this.#emit('socketError', { error });
    ws.onclose = (ev) => {
      this.#open = false;
      this.#ws = null;
      this.#resuming = false;
      for (const [id, r] of this.#replays) r.reject(new Error(`connection closed during replay ${id}`));
      this.#replays.clear();
      const delay = this.#closedByUser || this.#o.reconnect === false ? null : this.#nextDelay();
      this.#emit('close', { code: ev.code, reason: ev.reason, reconnectInMs: delay });
      if (delay !== null) this.#timer = setTimeout(() => this.#dial(Ctor), delay);
    };
  }

  #nextDelay(): number {
    const r = this.#o.reconnect || {};
    const initial = r.initialDelayMs ?? 250;
    const max = r.maxDelayMs ?? 10_000;
    const jitter = r.jitter ?? 0.5;
    const capped = Math.min(max, initial * 2 ** this.#attempt);
    this.#attempt++;
    return Math.round(capped * (1 - jitter * Math.random()));
  }

  /** On every open: resume where the last connection stopped, or subscribe. */
  #sendHello(): void {
    if (this.#channels.size === 0) return;
    const channels = [...this.#channels];
    if (this.#o.resume !== false && this.#complete.size) {
      this.#resuming = true;
      this.#send({ op: 'resume', channels, after: Object.fromEntries(this.#complete) });
    } else this.#send({ op: 'subscribe', channels });
  }

  #send(message: object): void {
    if (this.#open) this.#ws?.send(JSON.stringify(message));
  }

  subscribe(channels: string[]): void {
    const fresh = channels.filter((ch) => !this.#channels.has(ch));
    for (const ch of fresh) this.#channels.add(ch);
    if (fresh.length) this.#send({ op: 'subscribe', channels: fresh });
  }

  unsubscribe(channels: string[]): void {
    for (const ch of channels) this.#channels.delete(ch);
    this.#send({ op: 'unsubscribe', channels });
  }

  /** Per source, the seq up to which every tick of the channels was delivered. */
  get position(): Record<string, number> {
    return Object.fromEntries(this.#complete);
  }

  /**
   * Asks for a replay of the journal; `replay` events carry its ticks. Resolves with the number
   * of ticks at its `replay_end`; rejects on its error or when the connection closes.
   */
  replay(request: ReplayRequest, onMessage?: (event: ReplayEvent) => void): Promise<number> {
    if (!this.#open) return Promise.reject(new Error('not connected: await connect() first'));
    const id = `r${++this.#replayCount}`;
    return new Promise<number>((resolve, reject) => {
      const listener = (e: ReplayEvent) => {
        if (e.id === id) onMessage?.(e);
      };
      if (onMessage) this.on('replay', listener);
      const done = () => this.off('replay', listener);
      this.#replays.set(id, {
        resolve: (n) => {
          done();
          resolve(n);
        },
        reject: (e) => {
          done();
          reject(e);
        },
      });
      this.#send({ op: 'replay', id, speed: 'max', ...request });
    });
  }

  /** Closes for good (no reconnect). */
  close(): void {
    this.#closedByUser = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#ws?.close(1000, 'client closed');
  }

  #onMessage(data: unknown): void {
    if (typeof data !== 'string') {
      const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : (data as Uint8Array);
      const columns = decodeTickColumns(bytes);
      const source = columns.source;
      // A frame holds one symbol's ticks.
      const symbol = columns.symbols[0] ?? '';
      const ticks = tickObjects(columns);
      const header = this.#replayHeader;
      this.#replayHeader = null;
      if (header) this.#emit('replay', { id: header.id, source, symbol: header.symbol, ticks });
      else this.#deliver(source, symbol, ticks, this.#resuming);
      return;
    }
    const m = JSON.parse(data) as { type: string } & Record<string, unknown>;
    switch (m.type) {
      case 'ticks': {
        const source = m['source'] as string;
        const symbol = m['symbol'] as string;
        const ticks = m['ticks'] as Tick[];
        if (m['conflated'] === true) {
          const tick = ticks[0] as Tick;
          this.#track(source, symbol, [tick]);
          this.#emit('conflated', { source, symbol, skipped: m['skipped'] as number, tick });
        } else this.#deliver(source, symbol, ticks, m['resumed'] === true);
        return;
      }
      case 'snapshot': {
        const tick = (m['ticks'] as Tick[])[0];
        if (tick)
          this.#emit('snapshot', { source: m['source'] as string, symbol: m['symbol'] as string, tick });
        return;
      }
      case 'bar':
        this.#emit('bar', m as unknown as ClientEvents['bar']);
        return;
      case 'resumed':
        this.#resuming = false;
        this.#emit('resumed', { sources: m['sources'] as Record<string, number> });
        return;
      case 'replay': {
        const id = m['id'] as string;
        if (m['binary'] === true) {
          this.#replayHeader = { id, source: m['source'] as string, symbol: m['symbol'] as string };
          return;
        }
        const e = {
          id,
          source: m['source'] as string,
          symbol: m['symbol'] as string,
          ticks: m['ticks'] as Tick[],
        };
        this.#emit('replay', e);
        return;
      }
      case 'replay_end': {
        const id = m['id'] as string;
        const ticks = m['ticks'] as number;
        this.#replays.get(id)?.resolve(ticks);
        this.#replays.delete(id);
        this.#emit('replayEnd', { id, ticks });
        return;
      }
      case 'error': {
        const e = {
          code: m['code'] as string,
          message: m['message'] as string,
          id: m['id'] as string | undefined,
        };
        if (e.id !== undefined) {
          this.#replays.get(e.id)?.reject(new Error(`${e.code}: ${e.message}`));
          this.#replays.delete(e.id);
        }
        this.#emit('serverError', e);
        return;
      }
      default:
        // subscribed / unsubscribed and types of later servers: nothing to do.
        return;
    }
  }

  /** Emits the ticks not delivered before, and moves the resume position. */
  #deliver(source: string, symbol: string, ticks: Tick[], resumed: boolean): void {
    const fresh = this.#track(source, symbol, ticks);
    if (fresh.length) this.#emit('ticks', { source, symbol, ticks: fresh, resumed });
  }

  #track(source: string, symbol: string, ticks: Tick[]): Tick[] {
    const first = ticks[0];
    if (!first) return ticks;
    const max = this.#sourceMax.get(source);
    // A message starting above every seq seen of its source closes the batch before it.
    if (max === undefined) this.#complete.set(source, first.seq - 1);
    else if (first.seq > max) this.#complete.set(source, max);
    const key = pairKey(source, symbol);
    const last = this.#pairLast.get(key) ?? 0;
    const fresh = last === 0 ? ticks : ticks.filter((t) => t.seq > last);
    const top = (ticks[ticks.length - 1] as Tick).seq;
    if (top > last) this.#pairLast.set(key, top);
    if (max === undefined || top > max) this.#sourceMax.set(source, top);
    return fresh;
  }
}
