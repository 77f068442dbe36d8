/**
 * The columnar tick batch every layer passes around: one source, many ticks, one typed array
 * per field, all of them views on ONE ArrayBuffer (the batch's arena), so a batch is one
 * allocation and moves between threads as one transferable buffer.
 *
 * Arena layout for `capacity` ticks (every column starts on its element size, so no padding):
 *
 *   offset        width        column
 *   0             8·capacity   seq            Float64
 *   8·capacity    8·capacity   serverTimeMsc  Float64
 *   16·capacity   8·capacity   utcMsc         Float64
 *   24·capacity   8·capacity   bid            Float64
 *   32·capacity   8·capacity   ask            Float64
 *   40·capacity   8·capacity   last           Float64
 *   48·capacity   8·capacity   volume         Float64
 *   56·capacity   8·capacity   volumeReal     Float64
 *   64·capacity   4·capacity   flags          Uint32
 *   68·capacity   2·capacity   symbolIndex    Uint16
 *   (70 bytes a tick)
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
  /**
   * Price digits of each symbol, parallel to `symbols` (MT5 SYMBOL_DIGITS, sent by the EA):
   * sinks write prices as scaled integers with them. `DIGITS_UNKNOWN` (or a missing entry)
   * where the source never said (files, journal records, replay): prices are then written in
   * shortest round-trip form, the same text for every price that is exact at its digits.
   */
  symbolDigits: number[];
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

/** A symbol's digits are not known: prices are written in shortest round-trip form. */
export const DIGITS_UNKNOWN = -1;

/** Bytes of arena per tick: eight float64 columns, flags (uint32), symbolIndex (uint16). */
export const TICK_BATCH_BYTES_PER_TICK = 8 * 8 + 4 + 2;

/** Allocates an empty batch with room for `capacity` ticks: one arena, ten column views on it. */
export function allocTickBatch(
  source: string,
  symbols: string[],
  capacity: number,
  symbolDigits: number[] = [],
): TickBatch {
  const arena = new ArrayBuffer(capacity * TICK_BATCH_BYTES_PER_TICK);
  let offset = 0;
  const f64 = () => {
    const column = new Float64Array(arena, offset, capacity);
    offset += 8 * capacity;
    return column;
  };
  const seq = f64();
  const serverTimeMsc = f64();
  const utcMsc = f64();
  const bid = f64();
  const ask = f64();
  const last = f64();
  const volume = f64();
  const volumeReal = f64();
  const flags = new Uint32Array(arena, offset, capacity);
  const symbolIndex = new Uint16Array(arena, offset + 4 * capacity, capacity);
  return {
    source,
    symbols,
    symbolDigits,
    length: 0,
    receivedAtMs: 0,
    seq,
    symbolIndex,
    serverTimeMsc,
    utcMsc,
    bid,
    ask,
    last,
    volume,
    volumeReal,
    flags,
  };
}

/**
 * The ArrayBuffers behind a batch, for `postMessage` / `Piscina.move` transfer lists: the one
 * arena of a batch from allocTickBatch; a batch assembled from other arrays lists each of its
 * distinct buffers once (a transfer list must not name a buffer twice).
 */
export function tickBatchBuffers(batch: TickBatch): ArrayBuffer[] {
  const buffers = new Set<ArrayBuffer>();
  for (const column of [
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
  ])
    buffers.add(column.buffer as ArrayBuffer);
  return [...buffers];
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
