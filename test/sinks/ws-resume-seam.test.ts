// The seam of a websocket resume, in process with a fake journal cursor (our interface): live
// ticks reach websockets before their Kafka commit, so the catch-up must follow the journal past
// its end until it covers what was live before the resume, and the held live ticks must start
// exactly after what the journal covered — across symbols of one batch, whose seqs interleave.
import { describe, expect, it } from 'vitest';
import { TickRecordEncoder } from '../../codecs/flat-record.js';
import { allocTickBatch, type TickBatch } from '../../codecs/tick-batch.js';
import type { JournalCursor, JournalRecord, SessionSocket } from '../../sinks/ws/replay-session.js';
import { ResumeSession } from '../../sinks/ws/replay-session.js';

const SYMBOLS = ['AAA', 'BBB', 'CCC'];

/** Ticks `from`..`to` of source `s`, symbols in turn. */
function batch(from: number, to: number): TickBatch {
  const b = allocTickBatch('s', SYMBOLS, to - from + 1);
  for (let seq = from; seq <= to; seq++) {
    const i = b.length++;
    b.seq[i] = seq;
    b.symbolIndex[i] = seq % SYMBOLS.length;
    b.utcMsc[i] = 1_700_000_000_000 + seq;
    b.serverTimeMsc[i] = b.utcMsc[i] as number;
    b.bid[i] = 1 + seq / 1000;
    b.ask[i] = 1.0001 + seq / 1000;
    b.flags[i] = 6;
  }
  return b;
}

const encoder = new TickRecordEncoder();
const record = (from: number, to: number): JournalRecord => ({
  key: 's',
  value: encoder.encode(batch(from, to)),
  seqFirst: from,
  seqLast: to,
});

/** Rows per symbol in first-appearance order, as the server slices a live batch. */
function slices(b: TickBatch): [string, number[]][] {
  const out = new Map<string, number[]>();
  for (let i = 0; i < b.length; i++) {
    const symbol = SYMBOLS[b.symbolIndex[i] as number] as string;
    out.set(symbol, [...(out.get(symbol) ?? []), i]);
  }
  return [...out];
}

interface Sent {
  type: string;
  symbol?: string;
  resumed?: boolean;
  ticks?: { seq: number }[];
  sources?: Record<string, number>;
}

describe('resume seam (fake journal cursor)', () => {
  it('journal up to the newest seq published live before the resume, then the held live ticks above it: no hole, no repeat', async () => {
    const sent: Sent[] = [];
    const socket: SessionSocket = {
      binary: false,
      closed: false,
      send: (data) => sent.push(JSON.parse(String(data)) as Sent),
      buffered: () => 0,
    };
    // The client has up to 10. Committed when the resume starts: 1..40; published live but not
    // committed yet: 41..45 (the target); live after the resume: 46..60 (held), of which the
    // journal later commits 41..50 in one record (overlapping the held 46..50).
    const session = new ResumeSession(
      { socket, maxBuffered: 1 << 20, encoder: new TickRecordEncoder(), ticksPerTurn: 1000 },
      {
        channels: new Set(['*']),
        after: new Map([['s', 10]]),
        targets: new Map([['s', 45]]),
        maxHeldTicks: 1000,
        idleTimeoutMs: 10_000,
      },
    );
    const polls: JournalRecord[][] = [
      [record(1, 20), record(21, 40)],
      [],
      [],
      [record(41, 50)],
      [record(51, 60)],
    ];
    let reached = false;
    const cursor: JournalCursor = {
      next: async () => {
        const out = polls.shift() ?? [];
        reached = true;
        // Live batches arrive while the journal is being read.
        if (polls.length === 3)
          for (const [symbol, idx] of slices(batch(46, 55))) session.hold(batch(46, 55), symbol, idx);
        if (polls.length === 2)
          for (const [symbol, idx] of slices(batch(56, 60))) session.hold(batch(56, 60), symbol, idx);
        return out;
      },
      get reachedOpeningEnd() {
        return reached;
      },
      close: async () => {},
    };
    expect(session.holds('s')).toBe(true);
    await session.run(cursor, () => {});
    expect(session.holds('s')).toBe(false);
    const at = sent.findIndex((m) => m.type === 'resumed');
    expect(sent[at]?.sources).toEqual({ s: 50 });
    const seqs = sent.filter((m) => m.type === 'ticks').flatMap((m) => (m.ticks ?? []).map((t) => t.seq));
    expect([...seqs].sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i + 11));
    // Journal part marked resumed and before the marker; held part after it, unmarked.
    expect(sent.slice(0, at).every((m) => m.resumed === true)).toBe(true);
    expect(sent.slice(at + 1).every((m) => m.type === 'ticks' && m.resumed === undefined)).toBe(true);
    // Per symbol, seqs strictly increase.
    for (const symbol of SYMBOLS) {
      const mine = sent.filter((m) => m.symbol === symbol).flatMap((m) => (m.ticks ?? []).map((t) => t.seq));
      expect(mine).toEqual([...mine].sort((a, b) => a - b));
    }
  });

  it('over its bound of held live ticks the resume fails with ERR_LIMIT', async () => {
    const socket: SessionSocket = { binary: false, closed: false, send: () => {}, buffered: () => 0 };
    const session = new ResumeSession(
      { socket, maxBuffered: 1 << 20, encoder: new TickRecordEncoder(), ticksPerTurn: 1000 },
      {
        channels: new Set(['*']),
        after: new Map([['s', 0]]),
        targets: new Map([['s', 100]]),
        maxHeldTicks: 10,
        idleTimeoutMs: 10_000,
      },
    );
    const cursor: JournalCursor = {
      next: async () => {
        const b = batch(101, 120);
        for (const [symbol, idx] of slices(b)) session.hold(b, symbol, idx);
        return [];
      },
      reachedOpeningEnd: true,
      close: async () => {},
    };
    await expect(session.run(cursor, () => {})).rejects.toMatchObject({ code: 'ERR_LIMIT' });
  });
});
