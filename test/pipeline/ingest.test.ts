// The ingest's rules in process (CONVENTIONS 13): a fake journal that commits, fences or holds
// each append on demand, and a fake ingress server that records ACKs, pauses and failed sources.
// The decode pool is the real one (built workers, dist/pipeline/decode-worker.js).
import { Socket } from 'node:net';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { Session } from '../../bridge/server.js';
import { ErrorCode, TickstreamError } from '../../codecs/errors.js';
import { allocTickBatch } from '../../codecs/tick-batch.js';
import { encodeTickStructs } from '../../codecs/ticks.js';
import { loadConfig } from '../../pipeline/config.js';
import { Ingest, type IngestServer } from '../../pipeline/ingest.js';
import type { IngestJournal, LiveSink } from '../../pipeline/ingest-commit.js';
import { createPipelineMetrics } from '../../pipeline/metrics.js';
import type { Committed, JournalEntry, SourceState } from '../../sinks/kafka/journal.js';

const logger = pino({ level: 'silent' });
const T0 = Date.UTC(2026, 0, 5, 10, 0, 0);

/** A journal whose appends wait until the test commits or fences them. */
class FakeJournal implements IngestJournal {
  readonly held: { entry: JournalEntry; resolve: (c: Committed) => void; reject: (e: Error) => void }[] = [];
  readonly states = new Map<string, SourceState>();
  room = true;
  failure = null;
  append(entry: JournalEntry): Promise<Committed> {
    return new Promise((resolve, reject) => this.held.push({ entry, resolve, reject }));
  }
  hasRoom(): boolean {
    return this.room;
  }
  /** Commits every held append, in order. */
  commitAll(): void {
    for (const h of this.held.splice(0)) {
      for (const s of h.entry.states) this.states.set(s.source, s);
      h.resolve({ sourcesOffset: -1 });
    }
  }
  fenceAll(): void {
    for (const h of this.held.splice(0))
      h.reject(new TickstreamError(ErrorCode.SOURCE_FENCED, 'source claimed by another bridge'));
  }
}

class FakeServer implements IngestServer {
  readonly acks: [string, number][] = [];
  readonly failed: [string, string][] = [];
  readonly pauses: boolean[] = [];
  readonly #sessions = new Map<string, Session>();
  get sources(): string[] {
    return [...this.#sessions.keys()];
  }
  open(session: Session): void {
    this.#sessions.set(session.source, session);
  }
  session(source: string): Session | undefined {
    return this.#sessions.get(source);
  }
  ack(source: string, ackedSeq: number): void {
    this.acks.push([source, ackedSeq]);
  }
  failSource(source: string, code: ErrorCode): void {
    this.failed.push([source, code]);
  }
  setPaused(paused: boolean): void {
    this.pauses.push(paused);
  }
}

const noLive: LiveSink = { write: () => {}, writeBars: () => {}, forgetSource: () => {} };
const ingests: Ingest[] = [];
afterEach(async () => {
  for (const i of ingests.splice(0)) await i.close();
});

function setup(flags: Record<string, string> = {}) {
  const journal = new FakeJournal();
  const server = new FakeServer();
  const claims = {
    claimed: 0,
    // The state the (fake) journal holds, with the next epoch, as pipeline/source-claims.ts does.
    claim: async (source: string): Promise<SourceState> => {
      claims.claimed++;
      const s = journal.states.get(source);
      return s
        ? { ...s, cursors: { ...s.cursors }, epoch: (s.epoch ?? 0) + 1 }
        : { source, nextSeq: 1, cursors: {}, updatedAtMs: 0, epoch: 1 };
    },
  };
  const ingest = new Ingest({
    config: loadConfig({ flags: { 'decode-threads': '1', ...flags } }),
    journal,
    claims,
    live: [noLive],
    metrics: createPipelineMetrics(new Registry()),
    logger,
    states: new Map(),
  });
  ingest.attach(server);
  ingests.push(ingest);
  return { ingest, journal, server, claims };
}

/** A session of `source` whose terminal's clock says UTC+2, opened as the bridge does: resume, then open. */
async function open(s: ReturnType<typeof setup>, source: string) {
  const session = new Session(new Socket());
  session.source = source;
  session.hello = {
    source,
    structSize: 60,
    terminalBuild: 4000,
    serverTimeMs: T0 + 7_200_000,
    gmtTimeMs: T0,
    symbols: ['EURUSD'],
    proof: new Uint8Array(),
  };
  s.server.open(session);
  const resumed = await s.ingest.resume(source);
  s.ingest.onSessionOpen(session);
  return { session, resumed };
}

/** `count` ticks of EURUSD from seq `first`, as MqlTick structs. */
function structs(first: number, count: number): Uint8Array {
  const b = allocTickBatch('x', ['EURUSD'], count);
  for (let i = 0; i < count; i++) {
    b.seq[i] = first + i;
    b.serverTimeMsc[i] = T0 + 7_200_000 + (first + i) * 10;
    b.bid[i] = 1.1;
    b.ask[i] = 1.1002;
    b.flags[i] = 6;
  }
  b.length = count;
  return encodeTickStructs(b, 0, count);
}

async function until(what: string, ok: () => boolean, ms = 5000): Promise<void> {
  for (const end = Date.now() + ms; !ok(); ) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

describe('Ingest with a fake journal and server', () => {
  it('ACKs only after the journal commits, with the batch last seq and the new resume state', async () => {
    const s = setup();
    const { session, resumed } = await open(s, 'a');
    expect(resumed.nextSeq).toBe(1);
    s.ingest.onTicks(session, 'EURUSD', 1, 5, structs(1, 5), Date.now());
    expect(s.ingest.queuedTicks).toBe(5);
    await until('the append', () => s.journal.held.length === 1);
    expect(s.server.acks).toEqual([]);
    const entry = s.journal.held[0]?.entry;
    expect(entry?.states.map((st) => [st.source, st.nextSeq, st.epoch])).toEqual([['a', 6, 1]]);
    expect(entry?.ticks[0]?.headers).toMatchObject({ source: 'a', 'seq-first': '1', 'seq-last': '5' });
    s.journal.commitAll();
    await until('the ACK', () => s.server.acks.length === 1);
    expect(s.server.acks).toEqual([['a', 5]]);
    expect(s.ingest.queuedTicks).toBe(0);
    expect(s.ingest.busy).toBe(false);
  });

  it('a fenced append is never ACKed: the source is failed with ERR_SOURCE_FENCED and its ticks leave the queue', async () => {
    const s = setup();
    const { session } = await open(s, 'a');
    s.ingest.onTicks(session, 'EURUSD', 1, 3, structs(1, 3), Date.now());
    await until('the append', () => s.journal.held.length === 1);
    s.journal.fenceAll();
    await until('the failed source', () => s.server.failed.length === 1);
    expect(s.server.failed).toEqual([['a', ErrorCode.SOURCE_FENCED]]);
    expect(s.server.acks).toEqual([]);
    expect(s.ingest.queuedTicks).toBe(0);
  });

  it('credit: past maxQueuedTicks the server pauses and hasRoom() is false, until commits bring it under 80 %', async () => {
    const s = setup({ 'max-queued-ticks': '10' });
    const { session } = await open(s, 'a');
    s.ingest.onTicks(session, 'EURUSD', 1, 6, structs(1, 6), Date.now());
    expect(s.ingest.hasRoom()).toBe(true);
    s.ingest.onTicks(session, 'EURUSD', 7, 6, structs(7, 6), Date.now());
    expect(s.ingest.hasRoom()).toBe(false);
    expect(s.server.pauses.at(-1)).toBe(true);
    // Both frames came in one turn of the event loop: one decode task, one append.
    await until('the append', () => s.journal.held.length === 1);
    expect(s.ingest.queuedTicks).toBe(12);
    s.journal.commitAll();
    await until('the ACK', () => s.server.acks.length === 1);
    expect(s.server.acks).toEqual([['a', 12]]);
    expect(s.ingest.hasRoom()).toBe(true);
    expect(s.server.pauses.at(-1)).toBe(false);
    // The journal's own room counts too.
    s.journal.room = false;
    expect(s.ingest.hasRoom()).toBe(false);
  });

  it('resume waits until what was accepted is committed, then says where the journal stands', async () => {
    const s = setup();
    const first = await open(s, 'a');
    s.ingest.onTicks(first.session, 'EURUSD', 1, 4, structs(1, 4), Date.now());
    let resumed: { nextSeq: number } | null = null;
    const again = s.ingest.resume('a').then((r) => {
      resumed = r;
    });
    await until('the append', () => s.journal.held.length === 1);
    expect(resumed).toBeNull(); // ticks 1-4 are not committed yet: HELLO_ACK must not promise them
    expect(s.claims.claimed).toBe(1);
    s.journal.commitAll();
    await again;
    expect(resumed).toMatchObject({ nextSeq: 5 });
    expect(s.claims.claimed).toBe(2);
  });
});
