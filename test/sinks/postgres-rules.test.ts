// The loader's rules in milliseconds: which stored offsets fit the broker's log, and what one
// transaction loads, parks, or leaves for the next one.
import { describe, expect, it } from 'vitest';
import { TickRecordEncoder } from '../../codecs/flat-record.js';
import { allocTickBatch } from '../../codecs/tick-batch.js';
import { DAY_MS, planTicks, risingRun } from '../../sinks/postgres/load-plan.js';
import { checkBinding } from '../../sinks/postgres/log-binding.js';

const log = { topicId: 'T2', low: 100, high: 500 };

describe('checkBinding', () => {
  it('loads from the stored offset when it lies in the same log', () => {
    expect(checkBinding('t:0', { nextOffset: 300, topicId: 'T2' }, log)).toEqual({
      ok: true,
      offset: 300,
      lostToRetention: 0,
    });
    // A row from before the binding existed is bound to the log it fits.
    expect(checkBinding('t:0', { nextOffset: 500, topicId: null }, log)).toMatchObject({
      ok: true,
      offset: 500,
    });
  });

  it('starts a first binding at the first retained record, counting what retention took', () => {
    expect(checkBinding('t:0', null, log)).toEqual({ ok: true, offset: 100, lostToRetention: 100 });
  });

  it('blocks another log, an offset past the end and one before the start, naming both offsets', () => {
    const other = checkBinding('t:0', { nextOffset: 300, topicId: 'T1' }, log);
    expect(other).toMatchObject({ ok: false, reason: 'other-log' });
    if (!other.ok) expect(other.message).toMatch(/t:0.*300.*T1.*T2.*--reset-offsets/);
    expect(checkBinding('t:0', { nextOffset: 900, topicId: 'T2' }, log)).toMatchObject({
      ok: false,
      reason: 'past-end',
    });
    expect(checkBinding('t:0', { nextOffset: 40, topicId: 'T2' }, log)).toMatchObject({
      ok: false,
      reason: 'before-start',
      lostToRetention: 60,
    });
  });
});

function record(source: string, firstSeq: number, times: number[]): Uint8Array {
  const b = allocTickBatch(source, ['EURUSD'], times.length);
  b.length = times.length;
  times.forEach((t, i) => {
    b.seq[i] = firstSeq + i;
    b.utcMsc[i] = t;
    b.serverTimeMsc[i] = t;
    b.bid[i] = 1.1;
    b.ask[i] = 1.2;
  });
  return new TickRecordEncoder().encode(b);
}

describe('planTicks', () => {
  const now = Date.UTC(2026, 11, 1);
  const limits = { minUtcMs: now - 100 * DAY_MS, maxUtcMs: now + DAY_MS, maxDays: 4 };

  it('parks a record spanning more days than a transaction may touch, loads its neighbours', () => {
    const poison = record(
      'poison',
      1,
      Array.from({ length: 50 }, (_, i) => now - i * DAY_MS),
    );
    const honest = record('honest', 1, [now, now + 1, now + 2]);
    const plan = planTicks([honest, poison, honest], limits);
    expect(plan.taken).toBe(3);
    expect(plan.ticks).toBe(6);
    expect(plan.days).toEqual([now / DAY_MS]);
    expect(plan.parked).toEqual([expect.objectContaining({ index: 1, kind: 'days', source: 'poison' })]);
    expect(plan.parked[0]?.seqs).toHaveLength(50);
  });

  it('parks only the ticks dated outside the window (a tick dated 2999)', () => {
    const plan = planTicks([record('s', 10, [now, Date.UTC(2999, 0, 1), now + 5])], limits);
    expect(plan.ticks).toBe(2);
    expect(Array.from(plan.batches[0]?.seq ?? [])).toEqual([10, 12]);
    expect(plan.parked).toEqual([expect.objectContaining({ kind: 'time-window', seqs: [11] })]);
  });

  it('leaves records for the next transaction once the day limit is reached', () => {
    const days = (d: number) => record('s', d * 10, [now - d * DAY_MS, now - (d + 1) * DAY_MS]);
    const plan = planTicks([days(0), days(2), days(4)], limits);
    expect(plan.taken).toBe(2);
    expect(plan.days).toHaveLength(4);
  });

  it('parks a record that does not decode', () => {
    const plan = planTicks([Uint8Array.from([1, 2, 3])], limits);
    expect(plan.parked).toEqual([expect.objectContaining({ kind: 'undecodable' })]);
    expect(plan.taken).toBe(1);
  });
});

describe('risingRun', () => {
  it('takes the records while offsets rise, gaps (transaction markers) included', () => {
    expect(risingRun([])).toBe(0);
    expect(risingRun([7])).toBe(1);
    expect(risingRun([10, 11, 13, 14])).toBe(4);
  });

  it('stops where a consume call spanning a re-assignment repeats what it fetched before the seek', () => {
    // Fetched 10..12 before the partition was revoked and assigned again, then 10.. after the seek.
    expect(risingRun([10, 11, 12, 10, 11, 12, 13])).toBe(3);
    expect(risingRun([10, 10])).toBe(1);
  });
});
