// A scripted EA over a raw loopback socket: HELLO, SYMBOLS and TICKS frames built by hand from
// the codecs, so a test can send exactly the ticks it wants (a tick dated 2999, one going
// backwards, prices of 1e308) and read the ACKs and ERRORs the bridge answers.
import net from 'node:net';
import { helloProof } from '../../codecs/auth.js';
import { TickstreamError } from '../../codecs/errors.js';
import { encodeFrame, type Frame, FrameDecoder, MessageType } from '../../codecs/frame.js';
import * as msg from '../../codecs/messages.js';

export interface RawTick {
  /** time_msc (server time; UTC with serve's default time zone). */
  msc: number;
  bid?: number;
  ask?: number;
}

export class RawEa {
  readonly socket: net.Socket;
  readonly frames: Frame[] = [];
  closed = false;
  #wakers: (() => void)[] = [];

  private constructor(port: number) {
    this.socket = net.connect(port, '127.0.0.1');
    const decoder = new FrameDecoder(64 << 20);
    this.socket.on('data', (chunk: Buffer) => {
      decoder.push(chunk);
      for (let f = decoder.next(); f !== null && !(f instanceof TickstreamError); f = decoder.next())
        this.frames.push({ type: f.type, payload: Buffer.from(f.payload) });
      this.#wake();
    });
    this.socket.on('error', () => undefined); // a reset after the bridge's ERROR is expected
    this.socket.on('close', () => {
      this.closed = true;
      this.#wake();
    });
  }

  /** Connects, answers the CHALLENGE and waits for HELLO_ACK (or the ERROR that refused it). */
  static async open(
    port: number,
    source: string,
    symbols: string[],
  ): Promise<{ ea: RawEa; nextSeq: number }> {
    const ea = new RawEa(port);
    const challenge = msg.decodeChallenge((await ea.frame(MessageType.CHALLENGE)).payload);
    if (challenge instanceof TickstreamError) throw challenge;
    const now = Date.now();
    ea.send(
      MessageType.HELLO,
      msg.encodeHello({
        source,
        structSize: 60,
        terminalBuild: 4755,
        serverTimeMs: now,
        gmtTimeMs: now,
        symbols,
        proof: helloProof('no-secrets-on-this-bridge', challenge.nonce, source),
      }),
    );
    const ack = msg.decodeHelloAck((await ea.frame(MessageType.HELLO_ACK)).payload);
    if (ack instanceof TickstreamError) throw ack;
    ea.send(
      MessageType.SYMBOLS,
      msg.encodeSymbols(symbols.map((name, i) => ({ id: i + 1, digits: 5, name }))),
    );
    return { ea, nextSeq: ack.nextSeq };
  }

  send(type: MessageType, payload: Uint8Array): void {
    if (!this.socket.destroyed) this.socket.write(encodeFrame(type, payload));
  }

  /** One TICKS frame of symbol id `symbolId` (1-based, in the order given to open). */
  ticks(symbolId: number, firstSeq: number, ticks: RawTick[]): void {
    const body = Buffer.alloc(ticks.length * 60);
    ticks.forEach((t, i) => {
      const at = i * 60;
      body.writeBigInt64LE(BigInt(Math.floor(t.msc / 1000)), at);
      body.writeDoubleLE(t.bid ?? 1.1012, at + 8);
      body.writeDoubleLE(t.ask ?? 1.1014, at + 16);
      body.writeBigInt64LE(BigInt(t.msc), at + 40);
      body.writeUInt32LE(6, at + 48);
    });
    this.send(MessageType.TICKS, msg.encodeTicks({ symbolId, firstSeq, count: ticks.length }, body));
  }

  /** Waits for an ACK of `seq` or later; false when the bridge closed or the time ran out. */
  async acked(seq: number, timeoutMs = 10_000): Promise<boolean> {
    return this.#until(() => this.ackedSeq() >= seq, timeoutMs);
  }

  ackedSeq(): number {
    let best = 0;
    for (const f of this.frames) {
      if (f.type !== MessageType.ACK) continue;
      const a = msg.decodeAck(f.payload);
      if (!(a instanceof TickstreamError)) best = Math.max(best, a.ackedSeq);
    }
    return best;
  }

  /**
   * Sends HEARTBEAT and waits for the ACK the bridge answers it with: the bridge reads a
   * connection in order, so every frame sent before has been handled once this returns true.
   * An ACK the bridge sends of its own accord and still in flight ends the wait too: await it
   * with `acked` first.
   */
  async sync(timeoutMs = 10_000): Promise<boolean> {
    const acks = this.frames.filter((f) => f.type === MessageType.ACK).length;
    this.send(
      MessageType.HEARTBEAT,
      msg.encodeHeartbeat({ serverTimeMs: Date.now(), gmtTimeMs: Date.now() }),
    );
    return this.#until(() => this.frames.filter((f) => f.type === MessageType.ACK).length > acks, timeoutMs);
  }

  /** The ERROR the bridge sent, once it closed the connection (undefined: none). */
  async error(timeoutMs = 10_000): Promise<msg.ErrorMessage | undefined> {
    await this.#until(() => this.closed || this.frames.some((f) => f.type === MessageType.ERROR), timeoutMs);
    const f = this.frames.find((x) => x.type === MessageType.ERROR);
    if (!f) return undefined;
    const e = msg.decodeError(f.payload);
    return e instanceof TickstreamError ? undefined : e;
  }

  close(): void {
    this.socket.destroy();
  }

  async frame(type: MessageType, timeoutMs = 10_000): Promise<Frame> {
    await this.#until(() => this.closed || this.frames.some((f) => f.type === type), timeoutMs);
    const f = this.frames.find((x) => x.type === type);
    if (f) return f;
    const err = this.frames.find((x) => x.type === MessageType.ERROR);
    const e = err ? msg.decodeError(err.payload) : undefined;
    throw new Error(
      e && !(e instanceof TickstreamError)
        ? `ERROR(${e.code}: ${e.message})`
        : `no frame ${type} from the bridge`,
    );
  }

  async #until(pred: () => boolean, timeoutMs: number): Promise<boolean> {
    const end = Date.now() + timeoutMs;
    while (!pred()) {
      const left = end - Date.now();
      if (left <= 0 || this.closed) return pred();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#wakers.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return true;
  }

  #wake(): void {
    const wakers = this.#wakers;
    this.#wakers = [];
    for (const w of wakers) w();
  }
}
