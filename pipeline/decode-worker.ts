/**
 * A piscina worker: decodes the TICKS payloads of one source (many frames at once) into a
 * columnar TickBatch, encodes its Kafka records (FlatBuffers) and summarises each symbol's
 * cursor. Input bytes arrive transferred, and the result's buffers are transferred back.
 * Workers never import a sink or the Kafka client (the addon cannot load in worker threads).
 */
import { Piscina } from 'piscina';
import { toWire, type WireError } from '../codecs/errors.js';
import { TickRecordEncoder } from '../codecs/flat-record.js';
import { createServerClock, type ServerClock } from '../codecs/server-clock.js';
import { allocTickBatch, type TickBatch, tickBatchBuffers } from '../codecs/tick-batch.js';
import { decodeTicksInto } from '../codecs/ticks.js';

export interface DecodeTask {
  source: string;
  symbols: string[];
  /** Price digits of each of `symbols` (DIGITS_UNKNOWN when the EA did not say). */
  symbolDigits: number[];
  structSize: number;
  clockRule: string;
  recordTicks: number;
  /** Concatenated MqlTick structs of every frame, in arrival order (the buffer may go on past them). */
  bytes: ArrayBuffer;
  /** Per frame: symbol index (into `symbols`), tick count. */
  frames: Uint32Array;
  firstSeq: number;
  total: number;
  receivedAtMs: number;
}

export interface CursorSummary {
  symbol: string;
  lastMsc: number;
  /** Ticks of `lastMsc` in this batch. */
  countAtLast: number;
  /** Every tick of this symbol in the batch is at `lastMsc` (its count adds to an earlier one). */
  allAtLast: boolean;
}

export interface DecodeResult {
  /** Echoed from the task: what was accepted, whatever the outcome. */
  firstSeq: number;
  total: number;
  batch: TickBatch;
  records: Uint8Array[];
  cursors: CursorSummary[];
  error: WireError | null;
}

const clocks = new Map<string, ServerClock>();
const encoder = new TickRecordEncoder();

export default function decode(task: DecodeTask): unknown {
  let clock = clocks.get(task.clockRule);
  if (!clock) {
    clock = createServerClock(task.clockRule);
    clocks.set(task.clockRule, clock);
  }
  const batch = allocTickBatch(task.source, task.symbols, task.total, task.symbolDigits);
  batch.receivedAtMs = task.receivedAtMs;
  const bytes = new Uint8Array(task.bytes);
  let error: WireError | null = null;
  let offset = 0;
  let seq = task.firstSeq;
  for (let f = 0; f < task.frames.length; f += 2) {
    const symbolIndex = task.frames[f] as number;
    const count = task.frames[f + 1] as number;
    const size = count * task.structSize;
    const err = decodeTicksInto(
      batch,
      bytes.subarray(offset, offset + size),
      task.structSize,
      count,
      symbolIndex,
      seq,
      clock,
    );
    if (err) {
      error = toWire(err);
      break;
    }
    offset += size;
    seq += count;
  }
  const records: Uint8Array[] = [];
  const cursors: CursorSummary[] = [];
  if (!error) {
    for (let from = 0; from < batch.length; from += task.recordTicks)
      records.push(encoder.encode(batch, from, Math.min(batch.length, from + task.recordTicks)));
    cursors.push(...summarise(batch));
  }
  const result: DecodeResult = { firstSeq: task.firstSeq, total: task.total, batch, records, cursors, error };
  const movable = {
    [Piscina.transferableSymbol]: [
      ...tickBatchBuffers(batch),
      ...records.map((r) => r.buffer as ArrayBuffer),
    ],
    [Piscina.valueSymbol]: result,
  };
  return Piscina.move(movable as unknown as Parameters<typeof Piscina.move>[0]);
}

function summarise(batch: TickBatch): CursorSummary[] {
  const out = batch.symbols.map((symbol) => ({
    symbol,
    lastMsc: Number.NaN,
    countAtLast: 0,
    allAtLast: true,
  }));
  for (let i = 0; i < batch.length; i++) {
    const c = out[batch.symbolIndex[i] as number] as CursorSummary;
    const t = batch.serverTimeMsc[i] as number;
    if (t === c.lastMsc) c.countAtLast++;
    else {
      if (c.countAtLast > 0) c.allAtLast = false;
      c.lastMsc = t;
      c.countAtLast = 1;
    }
  }
  return out.filter((c) => c.countAtLast > 0);
}
