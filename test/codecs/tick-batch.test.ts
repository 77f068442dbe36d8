import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  allocTickBatch,
  TICK_BATCH_BYTES_PER_TICK,
  type TickBatch,
  tickBatchBuffers,
} from '../../codecs/tick-batch.js';

const COLUMNS = [
  'seq',
  'symbolIndex',
  'serverTimeMsc',
  'utcMsc',
  'bid',
  'ask',
  'last',
  'volume',
  'volumeReal',
  'flags',
] as const;

/** Fills every column with values of its own (tick i, column c), within each column's type. */
function fill(b: TickBatch, capacity: number): void {
  COLUMNS.forEach((name, c) => {
    const column = b[name];
    for (let i = 0; i < capacity; i++) column[i] = (c + 1) * 1000 + i;
  });
}

describe('TickBatch arena', () => {
  it('places the ten columns on one buffer, aligned and apart', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 5000 }), (capacity) => {
        const b = allocTickBatch('s', ['X'], capacity);
        const buffers = tickBatchBuffers(b);
        expect(buffers).toHaveLength(1);
        expect(buffers[0]?.byteLength).toBe(capacity * TICK_BATCH_BYTES_PER_TICK);
        for (const name of COLUMNS) {
          const column = b[name];
          expect(column.length).toBe(capacity);
          expect(column.buffer).toBe(buffers[0]);
          expect(column.byteOffset % column.BYTES_PER_ELEMENT).toBe(0);
        }
        // Writing every column leaves every other column's values intact: no overlap.
        fill(b, capacity);
        let wrong = 0;
        COLUMNS.forEach((name, c) => {
          const column = b[name];
          for (let i = 0; i < capacity; i++) if (column[i] !== (c + 1) * 1000 + i) wrong++;
        });
        expect(wrong).toBe(0);
      }),
      { numRuns: 50 },
    );
  });

  it('moves to another thread as one transferred buffer, values intact', () => {
    const capacity = 777;
    const b = allocTickBatch('s', ['X'], capacity);
    fill(b, capacity);
    b.bid[3] = 1.23456;
    b.seq[capacity - 1] = 2 ** 53 - 1;
    const copy = structuredClone(b, { transfer: tickBatchBuffers(b) });
    expect(b.bid.length).toBe(0); // detached: transferred, not copied
    expect(tickBatchBuffers(copy)).toHaveLength(1);
    expect(copy.bid[3]).toBe(1.23456);
    expect(copy.seq[capacity - 1]).toBe(2 ** 53 - 1);
    expect(copy.flags[capacity - 1]).toBe(10 * 1000 + capacity - 1);
    expect(copy.symbolIndex[capacity - 1]).toBe((2 * 1000 + capacity - 1) & 0xffff);
  });

  it('lists each buffer of an assembled batch once', () => {
    const a = allocTickBatch('s', ['X'], 4);
    const other = new Float64Array(4);
    const mixed: TickBatch = { ...a, bid: other, ask: other };
    const buffers = tickBatchBuffers(mixed);
    expect(buffers).toHaveLength(2);
    expect(buffers).toContain(other.buffer);
  });
});
