import { Piscina } from 'piscina';
import { describe, expect, it } from 'vitest';
import { allocTickBatch, DIGITS_UNKNOWN } from '../../codecs/tick-batch.js';
import { encodeTickStructs, TICK_STRUCT_BYTES } from '../../codecs/ticks.js';
import decode, { type DecodeResult, type DecodeTask } from '../../pipeline/decode-worker.js';

describe('decode worker', () => {
  it("carries each symbol's digits from the task into the batch", () => {
    const src = allocTickBatch('s', ['EURUSD', 'USDJPY'], 2);
    src.serverTimeMsc.set([1_711_800_000_123, 1_711_800_000_124]);
    src.bid.set([1.0834, 151.27]);
    src.ask.set([1.08348, 151.278]);
    src.flags.set([6, 6]);
    src.length = 2;
    const bytes = encodeTickStructs(src, 0, 2);
    const task: DecodeTask = {
      source: 's',
      symbols: ['EURUSD', 'USDJPY', 'X'],
      symbolDigits: [5, 3, DIGITS_UNKNOWN],
      structSize: TICK_STRUCT_BYTES,
      clockRule: 'UTC',
      recordTicks: 1000,
      bytes: bytes.buffer as ArrayBuffer,
      frames: Uint32Array.of(0, 1, 1, 1),
      firstSeq: 1,
      total: 2,
      receivedAtMs: 0,
    };
    const moved = decode(task) as { [k: symbol]: unknown };
    const result = moved[Piscina.valueSymbol] as DecodeResult;
    expect(result.error).toBeNull();
    expect(result.batch.symbols).toEqual(['EURUSD', 'USDJPY', 'X']);
    expect(result.batch.symbolDigits).toEqual([5, 3, DIGITS_UNKNOWN]);
    expect(Array.from(result.batch.bid.subarray(0, 2))).toEqual([1.0834, 151.27]);
  });
});
