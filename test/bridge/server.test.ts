/**
 * The EA ingress's session timers (bridge/server.ts) against a raw protocol client and the
 * simulated EA (bridge/client.ts), in process. The handler is a small fake of our own
 * IngressHandler interface (CONVENTIONS 13): it "commits" what it gets and ACKs at once.
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { BridgeClient, type ClientStats } from '../../bridge/client.js';
import {
  type IngressHandler,
  type IngressOptions,
  IngressServer,
  type Session,
} from '../../bridge/server.js';
import { syntheticSymbols } from '../../bridge/sim.js';
import { helloProof } from '../../codecs/auth.js';
import { ErrorCode, TickstreamError } from '../../codecs/errors.js';
import { encodeFrame, type Frame, FrameDecoder, MessageType } from '../../codecs/frame.js';
import * as msg from '../../codecs/messages.js';
import { waitFor } from '../helpers/procs.js';
import { options } from './ingress-options.js';

/** Commits every accepted tick at once (seq order is the server's job) and remembers them. */
class Journal implements IngressHandler {
  server!: IngressServer;
  readonly seqs: number[] = [];
  readonly rejected: ErrorCode[] = [];
  opened = 0;
  /** Called once, with the first accepted ticks. */
  onFirstTicks: (() => void) | null = null;
  async resume() {
    return { nextSeq: this.seqs.length + 1, cursors: [] };
  }
  onTicks(s: Session, _symbol: string, firstSeq: number, count: number) {
    if (this.seqs.length === 0) this.onFirstTicks?.();
    for (let i = 0; i < count; i++) this.seqs.push(firstSeq + i);
    this.server.ack(s.source, firstSeq + count - 1);
  }
  onHeartbeat() {}
  onSessionOpen() {
    this.opened++;
  }
  onSessionClose() {}
  onRejected(code: ErrorCode) {
    this.rejected.push(code);
  }
  onDuplicate() {}
  onGap() {}
  hasRoom() {
    return true;
  }
}

const servers: IngressServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAll(ErrorCode.SHUTTING_DOWN, 'test over');
    s.stopAccepting();
  }
});

async function start(o: IngressOptions): Promise<{ server: IngressServer; journal: Journal; port: number }> {
  const journal = new Journal();
  const server = new IngressServer(o, journal);
  journal.server = server;
  servers.push(server);
  return { server, journal, port: await server.start() };
}

/** A raw EA: handshakes, then does only what the test says. Collects every frame it gets. */
async function rawSession(port: number, source: string) {
  const socket = net.connect({ host: '127.0.0.1', port });
  const decoder = new FrameDecoder();
  const got: Frame[] = [];
  let closedAt = 0;
  socket.on('data', (chunk: Buffer) => {
    decoder.push(chunk);
    for (let f = decoder.next(); f !== null; f = decoder.next())
      if (!(f instanceof TickstreamError)) got.push(f);
  });
  socket.on('close', () => {
    closedAt = Date.now();
  });
  socket.on('error', () => undefined);
  expect(await waitFor(() => got.length > 0, 5000)).toBe(true);
  const challenge = msg.decodeChallenge((got[0] as Frame).payload) as msg.Challenge;
  socket.write(
    encodeFrame(
      MessageType.HELLO,
      msg.encodeHello({
        source,
        structSize: 60,
        terminalBuild: 4755,
        serverTimeMs: Date.now(),
        gmtTimeMs: Date.now(),
        symbols: ['EURUSD'],
        proof: helloProof('', challenge.nonce, source),
      }),
    ),
  );
  expect(await waitFor(() => got.some((f) => f.type === MessageType.HELLO_ACK), 5000)).toBe(true);
  return {
    socket,
    got,
    closed: () => closedAt > 0,
    heartbeat: () =>
      socket.write(
        encodeFrame(
          MessageType.HEARTBEAT,
          msg.encodeHeartbeat({ serverTimeMs: Date.now(), gmtTimeMs: Date.now() }),
        ),
      ),
    errors: () =>
      got
        .filter((f) => f.type === MessageType.ERROR)
        .map((f) => msg.decodeError(f.payload) as { code: ErrorCode; message: string }),
  };
}

describe('session timers', () => {
  it('issue 20.6: a session quiet after HELLO_ACK is not closed by the handshake timer', async () => {
    // Handshake 1 s, heartbeat timeout 3 s: the same order as the defaults (5 s, 15 s).
    const { port } = await start(
      options({ handshakeTimeoutMs: 1000, heartbeatTimeoutMs: 3000, heartbeatIntervalMs: 600 }),
    );
    const ea = await rawSession(port, 'quiet');
    expect(await waitFor(ea.closed, 10_000)).toBe(true);
    // Closed by the heartbeat timer (before the fix: `no HELLO within 1000 ms`).
    expect(ea.errors().map((e) => e.message)).toEqual(['nothing heard for 3000 ms']);
  });

  it('a session that has said HELLO and sends heartbeats stays open while its EA reads history', async () => {
    const { port } = await start(
      options({ handshakeTimeoutMs: 1000, heartbeatTimeoutMs: 1500, heartbeatIntervalMs: 300 }),
    );
    const ea = await rawSession(port, 'waiting');
    // Four heartbeat timeouts long, heartbeats at the interval, not one TICKS frame.
    const hb = setInterval(ea.heartbeat, 300);
    const openFor = Date.now() + 6000;
    await waitFor(() => ea.closed() || Date.now() > openFor, 10_000);
    clearInterval(hb);
    expect(ea.closed()).toBe(false);
    expect(ea.errors()).toEqual([]);
    ea.socket.destroy();
  });

  it('an EA that connects during backpressure gets HELLO_ACK, and its paused session stays open', async () => {
    const { server, port } = await start(
      options({ handshakeTimeoutMs: 1000, heartbeatTimeoutMs: 1500, heartbeatIntervalMs: 300 }),
    );
    server.setPaused(true);
    const ea = await rawSession(port, 'during-pause'); // HELLO read and answered while paused
    const until = Date.now() + 3000; // twice the heartbeat timeout, three handshake timeouts
    await waitFor(() => ea.closed() || Date.now() > until, 5000);
    server.setPaused(false);
    expect(ea.closed()).toBe(false);
    expect(ea.errors()).toEqual([]);
    ea.socket.destroy();
  });

  it('a bridge that does not read (backpressure) still answers, so the EA does not call it dead', async () => {
    const { server, port } = await start(options({ heartbeatTimeoutMs: 1500, heartbeatIntervalMs: 300 }));
    const ea = await rawSession(port, 'paused');
    server.setPaused(true);
    const acksBefore = ea.got.filter((f) => f.type === MessageType.ACK).length;
    const until = Date.now() + 3000; // twice the EA's dead-bridge timeout
    await waitFor(() => Date.now() > until, 5000);
    server.setPaused(false);
    // An ACK at least every heartbeat interval while paused (the EA's hbWaitSince resets on any frame).
    expect(ea.got.filter((f) => f.type === MessageType.ACK).length - acksBefore).toBeGreaterThanOrEqual(5);
    expect(ea.closed()).toBe(false);
    ea.socket.destroy();
  });
});

describe('backpressure does not make a capped EA reconnect', () => {
  /**
   * The real defaults are a 15 s heartbeat timeout, a 10 s EA send timeout and a 30 s pause; this
   * test divides every one of them by 10 (1.5 s, 1 s, 3 s): the same order of events, faster.
   */
  async function pausedRun(maxFrameBytes: number | undefined) {
    // A credit window of 36 MB of ticks: more than loopback's socket buffers hold (a terminal's
    // Windows socket buffers are far smaller than Linux loopback's, so there 64k ticks suffice).
    const { server, journal, port } = await start(
      options({ heartbeatTimeoutMs: 1500, heartbeatIntervalMs: 300, creditWindowTicks: 600_000 }),
    );
    const symbols = syntheticSymbols(2, 600_000, 1, 7, Date.UTC(2024, 0, 2));
    const total = symbols.reduce((n, s) => n + s.times.length, 0);
    let stats: ClientStats | null = null;
    const client = new BridgeClient({
      bridges: [{ host: '127.0.0.1', port }],
      source: `bp${maxFrameBytes ?? 'uncapped'}`,
      secret: '',
      symbols,
      structSize: 60,
      terminalBuild: 4755,
      serverOffsetMs: () => 0,
      now: () => Number.POSITIVE_INFINITY,
      maxBufferedTicks: 200_000,
      pollIntervalMs: 10,
      sendTimeoutMs: 1000,
      ...(maxFrameBytes ? { maxFrameBytes } : {}),
    });
    // Reading pauses with the first ticks, for twice the heartbeat timeout.
    let resumed = false;
    journal.onFirstTicks = () => {
      server.setPaused(true);
      setTimeout(() => {
        server.setPaused(false);
        resumed = true;
      }, 3000);
    };
    const done = client.run().then((s) => {
      stats = s;
    });
    await done;
    expect(resumed).toBe(true);
    return { stats: stats as unknown as ClientStats, journal, total };
  }

  it('a sim capped like the EA (32 KB frames, two in flight) rides out a pause of twice the timeout', async () => {
    const { stats, journal, total } = await pausedRun(32_768);
    expect(stats.reconnects, stats.lastError).toBe(0);
    expect(journal.seqs).toHaveLength(total);
    expect(journal.seqs.every((seq, i) => seq === i + 1)).toBe(true);
  }, 60_000);

  it('an uncapped sim (credit only) is blocked into a reconnect by the same pause', async () => {
    const { stats, journal, total } = await pausedRun(undefined);
    expect(stats.reconnects).toBeGreaterThanOrEqual(1);
    expect(stats.lastError).toMatch(/send stayed blocked/);
    expect(journal.seqs).toHaveLength(total);
  }, 60_000);
});
