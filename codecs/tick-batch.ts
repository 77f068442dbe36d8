/**
 * The columnar tick batch every layer passes around: one source, many ticks, one typed array
 * per field so a batch moves between threads as a handful of transferable ArrayBuffers.
 *
 * Integers that MT5 keeps as 64-bit (seq, time_msc, volume) are held as float64: exact up to
 * 2^53, which no tick counter or millisecond clock reaches; decoders reject larger values
 * with ERR_TICK_VALUE instead of rounding them.
 */
export interface TickBatch {
  /** Source id (the terminal or simulator run). */
  source: string;
  /** Symbol names; `symbolIndex[i]` points into this table. */
  symbols: string[];
  length: number;
  /**
   * When the bridge received the earliest frame of this batch (ms since the epoch, with
   * sub-ms fraction; 0 when unknown). Carried so sinks can report receipt→sink latency.
   */
  receivedAtMs: number;
  /** Per-source sequence number given at capture. */
  seq: Float64Array;
  symbolIndex: Uint16Array;
  /** MqlTick.time_msc: milliseconds, broker server time. */
  serverTimeMsc: Float64Array;
  /** The same instant in UTC milliseconds since the epoch. */
  utcMsc: Float64Array;
  bid: Float64Array;
  ask: Float64Array;
  last: Float64Array;
  /** MqlTick.volume (uint64 on the wire). */
  volume: Float64Array;
  volumeReal: Float64Array;
  /** MqlTick.flags, bit-exact, unknown bits kept. */
  flags: Uint32Array;
}

/** Allocates an empty batch with room for `capacity` ticks. */
export function allocTickBatch(source: string, symbols: string[], capacity: number): TickBatch {
  return {
    source,
    symbols,
    length: 0,
    receivedAtMs: 0,
    seq: new Float64Array(capacity),
    symbolIndex: new Uint16Array(capacity),
    serverTimeMsc: new Float64Array(capacity),
    utcMsc: new Float64Array(capacity),
    bid: new Float64Array(capacity),
    ask: new Float64Array(capacity),
    last: new Float64Array(capacity),
    volume: new Float64Array(capacity),
    volumeReal: new Float64Array(capacity),
    flags: new Uint32Array(capacity),
  };
}

/** The ArrayBuffers behind a batch, for `postMessage` / `Piscina.move` transfer lists. */
export function tickBatchBuffers(batch: TickBatch): ArrayBuffer[] {
  return [
    batch.seq,
    batch.symbolIndex,
    batch.serverTimeMsc,
    batch.utcMsc,
    batch.bid,
    batch.ask,
    batch.last,
    batch.volume,
    batch.volumeReal,
    batch.flags,
  ].map((a) => a.buffer as ArrayBuffer);
}

/** MqlTick flag bits (MQL5 TICK_FLAG_*, listed in docs/websocket.md). Unknown bits are kept, never rejected. */
export const TickFlag = {
  BID: 2,
  ASK: 4,
  LAST: 8,
  VOLUME: 16,
  BUY: 32,
  SELL: 64,
} as const;
