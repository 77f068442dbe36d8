/**
 * The EA ingress's sequence rules (docs/protocol.md §5: gap, repeat, credit, resume, ACK) driven
 * in process: bridge/server.ts's IngressServer, a raw EA (test/helpers/raw-ea.ts) and a fake of
 * our own IngressHandler that records every call and ACKs only when the test says so
 * (CONVENTIONS 13). No timers are waited on: `ea.sync()` (HEARTBEAT → ACK) is the barrier, and
 * an ACK the test asks the server for is awaited (`ea.acked`) before the next `sync()`, which
 * would otherwise take it for the heartbeat's answer.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { type IngressHandler, IngressServer, type ResumeState, type Session } from '../../bridge/server.js';
import { ErrorCode } from '../../codecs/errors.js';
import { type Frame, MessageType } from '../../codecs/frame.js';
import * as msg from '../../codecs/messages.js';
import { RawEa } from '../helpers/raw-ea.js';
import { options } from './ingress-options.js';

/** Records what the server hands on; the resume state is whatever the test "committed". */
class FakeHandler implements IngressHandler {
  state: ResumeState = { nextSeq: 1, cursors: [] };
  /** While set, `resume` waits for it (a journal still draining). */
  gate: Promise<void> | null = null;
  /** Called as `resume` starts. */
  onResume: () => void = () => undefined;
  room = true;
  /** Per onTicks call: its seqs, and the tags (time_msc) of the structs it was given. */
  readonly ticks: { firstSeq: number; count: number; tags: number[] }[] = [];
  readonly gaps: [number, number][] = [];
  readonly duplicates: number[] = [];
  readonly rejected: [ErrorCode, string | undefined][] = [];
  async resume(): Promise<ResumeState> {
    this.onResume();
    await this.gate;
    return this.state;
  }
  onTicks(_s: Session, _symbol: string, firstSeq: number, count: number, structs: Uint8Array) {
    const v = new DataView(structs.buffer, structs.byteOffset, structs.byteLength);
    const tags = Array.from({ length: count }, (_, i) => Number(v.getBigInt64(i * 60 + 40, true)));
    this.ticks.push({ firstSeq, count, tags });
  }
  onHeartbeat() {}
  onSessionOpen() {}
  onSessionClose() {}
  onRejected(code: ErrorCode, source: string | undefined) {
    this.rejected.push([code, source]);
  }
  onDuplicate(_s: Session, ticks: number) {
    this.duplicates.push(ticks);
  }
  onGap(_s: Session, expected: number, got: number) {
    this.gaps.push([expected, got]);
  }
  hasRoom() {
    return this.room;
  }
}

const servers: IngressServer[] = [];
const eas: RawEa[] = [];
afterEach(() => {
  for (const ea of eas.splice(0)) ea.close();
  for (const s of servers.splice(0)) {
    s.closeAll(ErrorCode.SHUTTING_DOWN, 'test over');
    s.stopAccepting();
  }
});

async function start(creditWindowTicks = 1000) {
  const handler = new FakeHandler();
  const server = new IngressServer(options({ creditWindowTicks }), handler);
  servers.push(server);
  return { server, handler, port: await server.start() };
}

async function open(port: number, source: string) {
  const { ea, nextSeq } = await RawEa.open(port, source, ['EURUSD']);
  eas.push(ea);
  return { ea, nextSeq };
}

/** One TICKS frame of seqs first…first+count−1; each struct's time_msc is its seq (a tag). */
function send(ea: RawEa, firstSeq: number, count: number): void {
  ea.ticks(
    1,
    firstSeq,
    Array.from({ length: count }, (_, i) => ({ msc: firstSeq + i })),
  );
}

const seqs = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const of = (ea: RawEa, type: MessageType): Frame[] => ea.frames.filter((f) => f.type === type);
const acks = (ea: RawEa) => of(ea, MessageType.ACK).map((f) => msg.decodeAck(f.payload) as msg.Ack);
const resends = (ea: RawEa) => of(ea, MessageType.RESEND).map((f) => msg.decodeResend(f.payload));
const helloAck = (ea: RawEa) => msg.decodeHelloAck((of(ea, MessageType.HELLO_ACK)[0] as Frame).payload);

describe('gap', () => {
  it('ticks past the expected seq: onGap, one RESEND from the expected seq, nothing passed on', async () => {
    const { handler, port } = await start();
    const { ea } = await open(port, 'gap');
    send(ea, 1, 3);
    send(ea, 6, 2); // 4 and 5 missing
    send(ea, 8, 2); // still past: dropped, no second RESEND
    expect(await ea.sync()).toBe(true);
    expect(handler.gaps).toEqual([[4, 6]]);
    expect(resends(ea)).toEqual([4]);
    expect(handler.ticks.flatMap((t) => t.tags)).toEqual(seqs(1, 3));

    send(ea, 4, 6); // the EA's answer: everything from 4 on, in order
    send(ea, 12, 1); // a new gap after the resend: a new RESEND
    expect(await ea.sync()).toBe(true);
    expect(handler.ticks.flatMap((t) => t.tags)).toEqual(seqs(1, 9));
    expect(handler.gaps).toEqual([
      [4, 6],
      [10, 12],
    ]);
    expect(resends(ea)).toEqual([4, 10]);
    expect(ea.closed).toBe(false);
  });
});

describe('repeat', () => {
  it('ticks all below the expected seq: onDuplicate, nothing passed on, the session goes on', async () => {
    const { server, handler, port } = await start();
    const { ea } = await open(port, 'dup');
    send(ea, 1, 5);
    expect(await ea.sync()).toBe(true);
    server.ack('dup', 5);
    expect(await ea.acked(5)).toBe(true);
    send(ea, 1, 5); // a resend racing the ACK
    expect(await ea.sync()).toBe(true);
    expect(handler.duplicates).toEqual([5]);
    expect(handler.ticks).toEqual([{ firstSeq: 1, count: 5, tags: seqs(1, 5) }]);
    expect(resends(ea)).toEqual([]);

    send(ea, 6, 2);
    expect(await ea.sync()).toBe(true);
    expect(handler.ticks.flatMap((t) => t.tags)).toEqual(seqs(1, 7));
    expect(acks(ea).at(-1)?.ackedSeq).toBe(5);
    expect(ea.closed).toBe(false);
  });

  it('a frame straddling the expected seq: the head is counted as repeats, only the tail passed on', async () => {
    const { handler, port } = await start();
    const { ea } = await open(port, 'straddle');
    send(ea, 1, 7);
    send(ea, 4, 6); // 4…7 accepted already, 8 and 9 new
    expect(await ea.sync()).toBe(true);
    expect(handler.duplicates).toEqual([4]);
    // The tail's own structs, not the frame's first ones.
    expect(handler.ticks).toEqual([
      { firstSeq: 1, count: 7, tags: seqs(1, 7) },
      { firstSeq: 8, count: 2, tags: [8, 9] },
    ]);
  });
});

describe('credit', () => {
  it('HELLO_ACK grants next seq + the window; a frame reaching the limit is ERR_PROTOCOL_STATE', async () => {
    const { handler, port } = await start(10);
    const { ea } = await open(port, 'credit');
    expect(helloAck(ea)).toMatchObject({ nextSeq: 1, creditLimit: 11 }); // exclusive: seqs 1…10
    send(ea, 1, 10);
    expect(await ea.sync()).toBe(true);
    send(ea, 11, 1);
    const err = await ea.error();
    expect(err?.code).toBe(ErrorCode.PROTOCOL_STATE);
    expect(err?.message).toMatch(/past the credit limit 11/);
    expect(handler.rejected).toEqual([[ErrorCode.PROTOCOL_STATE, 'credit']]);
    expect(handler.ticks.flatMap((t) => t.tags)).toEqual(seqs(1, 10));
  });

  it('an ACK extends the credit to acked seq + 1 + window, and not while the handler has no room', async () => {
    const { server, handler, port } = await start(10);
    const { ea } = await open(port, 'room');
    send(ea, 1, 10);
    expect(await ea.sync()).toBe(true);
    handler.room = false;
    server.ack('room', 4);
    expect(await ea.acked(4)).toBe(true);
    expect(acks(ea).at(-1)).toEqual({ ackedSeq: 4, creditLimit: 11 });
    handler.room = true;
    server.ack('room', 6);
    expect(await ea.acked(6)).toBe(true);
    expect(acks(ea).at(-1)).toEqual({ ackedSeq: 6, creditLimit: 17 });
    send(ea, 11, 6); // up to 16: inside the new credit
    expect(await ea.sync()).toBe(true);
    expect(handler.ticks.flatMap((t) => t.tags)).toEqual(seqs(1, 16));
    expect(handler.rejected).toEqual([]);
  });
});

describe('resume', () => {
  it("HELLO_ACK carries the handler's state; a reconnect gets the state as committed since", async () => {
    const { server, handler, port } = await start();
    const cursors = [{ symbol: 'EURUSD', lastMsc: 1_700_000_000_123, countAtMsc: 2 }];
    handler.state = { nextSeq: 41, cursors };
    const first = await open(port, 'resume');
    expect(first.nextSeq).toBe(41);
    expect(helloAck(first.ea)).toMatchObject({ nextSeq: 41, creditLimit: 1041, cursors });
    send(first.ea, 41, 5);
    expect(await first.ea.sync()).toBe(true);
    server.ack('resume', 43); // the fake journal committed 41…43; 44 and 45 are lost with it
    handler.state = { nextSeq: 44, cursors: [] };

    const second = await open(port, 'resume');
    expect(second.nextSeq).toBe(44);
    expect((await first.ea.error())?.code).toBe(ErrorCode.SOURCE_REPLACED);
    send(second.ea, 44, 3); // the EA resends what was not ACKed
    expect(await second.ea.sync()).toBe(true);
    expect(handler.ticks.map((t) => t.tags)).toEqual([seqs(41, 45), seqs(44, 46)]);
    expect(handler.duplicates).toEqual([]);
  });
});

describe('ACK', () => {
  it('goes out only for what the handler acknowledges, never ahead of it', async () => {
    const { server, handler, port } = await start();
    const { ea } = await open(port, 'ack');
    send(ea, 1, 5);
    expect(await ea.sync()).toBe(true);
    expect(handler.ticks).toHaveLength(1);
    expect(acks(ea).map((a) => a.ackedSeq)).toEqual([0]); // the heartbeat's answer: nothing durable
    server.ack('ack', 3);
    expect(await ea.acked(3)).toBe(true);
    server.ack('ack', 2); // older than what was ACKed: nothing sent
    expect(await ea.sync()).toBe(true);
    expect(acks(ea).map((a) => a.ackedSeq)).toEqual([0, 3, 3]);
  });

  it('is never sent before HELLO_ACK, even when the handler acknowledges during resume', async () => {
    const { server, handler, port } = await start();
    const resuming = new Promise<void>((resolve) => {
      handler.onResume = resolve;
    });
    let release = () => {};
    handler.gate = new Promise((resolve) => {
      release = resolve;
    });
    handler.state = { nextSeq: 8, cursors: [] };
    const opening = open(port, 'early');
    await resuming; // HELLO read, the session is the source's, HELLO_ACK waits for the handler
    expect(server.session('early')).toBeDefined();
    server.ack('early', 7);
    release();
    const { ea } = await opening;
    expect(await ea.sync()).toBe(true);
    const types = ea.frames.map((f) => f.type).filter((t) => t !== MessageType.CHALLENGE);
    expect(types).toEqual([MessageType.HELLO_ACK, MessageType.ACK]);
    expect(acks(ea)).toEqual([{ ackedSeq: 7, creditLimit: 1008 }]);
  });
});
