/**
 * Small pieces the sink comparisons share: best-of, short figures, and 1000-tick slices of a
 * synthetic feed (bench/codecs/synthetic.ts) as the bridge hands them to sinks.
 */
import { randomBytes } from 'node:crypto';
import type { TickBatch } from '../../codecs/tick-batch.js';
import { syntheticTicks } from '../codecs/synthetic.js';

export const best = (xs: number[]): number => Math.max(...xs);

/** 432100 → "432k", 1234567 → "1.23M": for the per-round lists in `settings`. */
export const short = (x: number): string =>
  x >= 1e6 ? `${(x / 1e6).toFixed(2)}M` : x >= 1e3 ? `${(x / 1e3).toFixed(0)}k` : x.toFixed(1);

export const randomTag = (): string => randomBytes(4).toString('hex');

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Rows [from, to) of a batch as a batch of their own (views, no copy). */
export function sliceBatch(b: TickBatch, from: number, to: number): TickBatch {
  return {
    source: b.source,
    symbols: b.symbols,
    symbolDigits: b.symbolDigits,
    length: to - from,
    receivedAtMs: b.receivedAtMs,
    seq: b.seq.subarray(from, to),
    symbolIndex: b.symbolIndex.subarray(from, to),
    serverTimeMsc: b.serverTimeMsc.subarray(from, to),
    utcMsc: b.utcMsc.subarray(from, to),
    bid: b.bid.subarray(from, to),
    ask: b.ask.subarray(from, to),
    last: b.last.subarray(from, to),
    volume: b.volume.subarray(from, to),
    volumeReal: b.volumeReal.subarray(from, to),
    flags: b.flags.subarray(from, to),
  };
}

/** `n` synthetic ticks of `symbols`, cut into batches of `perBatch` (the last may be shorter). */
export function feed(n: number, perBatch: number, symbols: string[], seed = 1): TickBatch[] {
  const all = syntheticTicks(n, symbols, seed);
  const out: TickBatch[] = [];
  for (let from = 0; from < n; from += perBatch)
    out.push(sliceBatch(all, from, Math.min(n, from + perBatch)));
  return out;
}
