/**
 * MqlTick structs inside a TICKS payload (after its 14-byte header, messages.ts), packed,
 * little-endian (docs/protocol.md, MqlTick):
 *
 *   offset width  field
 *   0      8      time         int64, seconds, broker server time (redundant with time_msc: not read)
 *   8      8      bid          double
 *   16     8      ask          double
 *   24     8      last         double (0 for most forex)
 *   32     8      volume       uint64
 *   40     8      time_msc     int64, milliseconds, broker server time
 *   48     4      flags        uint32, every bit kept (unknown bits too)
 *   52     8      volume_real  double — absent in the 52-byte struct of older terminal builds
 *
 * Decoding appends into a pre-sized TickBatch (no allocation per tick) and validates: each price
 * finite and below MAX_ABS_PRICE in magnitude (zero and negative allowed: a missing side,
 * exchange spreads), volume_real finite, not negative and below MAX_VOLUME_REAL, volume below
 * 2^53, time_msc in [0, year 3000). The bounds keep the bar arithmetic finite: a spread
 * (ask − bid) stays below 2e15 and a minute's sums below 1e21 even over millions of ticks, where
 * 1e308 − (−1e308) overflowed to Infinity and stored −Infinity/NaN spreads in bars_1m. The
 * structs sit at 60-byte strides, so half of the
 * doubles are not 8-byte aligned: a DataView reads them (a Float64Array view cannot).
 */
import { ErrorCode, TickstreamError } from './errors.js';
import type { ServerClock } from './server-clock.js';
import type { TickBatch } from './tick-batch.js';

export const TICK_STRUCT_BYTES = 60;
export const LEGACY_TICK_STRUCT_BYTES = 52;
/** time_msc from 3000-01-01 on is refused: no clock means it, and dates stay in range. */
export const MAX_TIME_MSC = Date.UTC(3000, 0, 1);
/** No instrument is quoted near 1e15; past it a price is garbage (and its spread could overflow). */
export const MAX_ABS_PRICE = 1e15;
export const MAX_VOLUME_REAL = 1e15;
const TWO_32 = 2 ** 32;
const MAX_HI = 2 ** 21; // hi word of a value below 2^53

/**
 * Appends `count` ticks from `structs` (count × structSize bytes) to `batch`, all of one symbol
 * (`symbolIndex` in `batch.symbols`) with seqs from `firstSeq`. Returns null, or the error of
 * the first bad tick (the batch then holds the ticks before it).
 */
export function decodeTicksInto(
  batch: TickBatch,
  structs: Uint8Array,
  structSize: number,
  count: number,
  symbolIndex: number,
  firstSeq: number,
  clock: ServerClock,
): TickstreamError | null {
  if (structSize !== TICK_STRUCT_BYTES && structSize !== LEGACY_TICK_STRUCT_BYTES) {
    return new TickstreamError(
      ErrorCode.STRUCT_SIZE,
      `MqlTick struct size ${structSize} is neither 60 nor 52`,
    );
  }
  if (structs.length !== count * structSize) {
    return new TickstreamError(
      ErrorCode.TICK_COUNT,
      `${count} ticks need ${count * structSize} bytes, got ${structs.length}`,
    );
  }
  if (batch.length + count > batch.seq.length) {
    return new TickstreamError(
      ErrorCode.LIMIT,
      `batch capacity ${batch.seq.length} is too small for ${batch.length + count} ticks`,
    );
  }
  const v = new DataView(structs.buffer, structs.byteOffset, structs.byteLength);
  const hasVolumeReal = structSize === TICK_STRUCT_BYTES;
  let n = batch.length;
  for (let i = 0, o = 0; i < count; i++, o += structSize, n++) {
    const bid = v.getFloat64(o + 8, true);
    const ask = v.getFloat64(o + 16, true);
    const last = v.getFloat64(o + 24, true);
    // Negative prices are real (exchange spreads, oil futures in 2020); NaN and ±Infinity are not.
    // Each value is checked on its own: a sum of them overflows for 1e308 and cancels for ±1e308.
    if (!(isPrice(bid) && isPrice(ask) && isPrice(last))) {
      batch.length = n;
      return new TickstreamError(
        ErrorCode.TICK_VALUE,
        `tick seq ${firstSeq + i}: a price is not a finite number below ${MAX_ABS_PRICE} in magnitude (bid ${bid}, ask ${ask}, last ${last})`,
      );
    }
    const volHi = v.getUint32(o + 36, true);
    // Read unsigned: a negative time_msc has its top bit set and fails the same test.
    const mscHi = v.getUint32(o + 44, true);
    if (volHi >= MAX_HI || mscHi >= MAX_HI) {
      batch.length = n;
      return new TickstreamError(
        ErrorCode.TICK_VALUE,
        `tick seq ${firstSeq + i}: volume or time_msc is negative or past 2^53`,
      );
    }
    const volumeReal = hasVolumeReal ? v.getFloat64(o + 52, true) : Number.NaN;
    const volume = volHi * TWO_32 + v.getUint32(o + 32, true);
    if (hasVolumeReal && !(volumeReal >= 0 && volumeReal < MAX_VOLUME_REAL)) {
      batch.length = n;
      return new TickstreamError(
        ErrorCode.TICK_VALUE,
        `tick seq ${firstSeq + i}: volume_real ${volumeReal} is not a non-negative number below ${MAX_VOLUME_REAL}`,
      );
    }
    const msc = mscHi * TWO_32 + v.getUint32(o + 40, true);
    if (msc >= MAX_TIME_MSC) {
      batch.length = n;
      return new TickstreamError(
        ErrorCode.TICK_VALUE,
        `tick seq ${firstSeq + i}: time_msc ${msc} is past the year 3000: not a tick time`,
      );
    }
    batch.seq[n] = firstSeq + i;
    batch.symbolIndex[n] = symbolIndex;
    batch.serverTimeMsc[n] = msc;
    batch.utcMsc[n] = clock.toUtc(msc);
    batch.bid[n] = bid;
    batch.ask[n] = ask;
    batch.last[n] = last;
    batch.volume[n] = volume;
    // The 52-byte struct has no volume_real: the integer volume is the exact figure there.
    batch.volumeReal[n] = hasVolumeReal ? volumeReal : volume;
    batch.flags[n] = v.getUint32(o + 48, true);
  }
  batch.length = n;
  return null;
}

/** False for NaN and ±Infinity too: every comparison with NaN is false. */
function isPrice(v: number): boolean {
  return v > -MAX_ABS_PRICE && v < MAX_ABS_PRICE;
}

/**
 * Packs rows [from, to) of a batch into MqlTick structs (the simulator's EA side, tests).
 * Writes into `out` at `at` when given (room for (to - from) × structSize bytes), else into a
 * fresh buffer; returns the bytes written.
 */
export function encodeTickStructs(
  batch: TickBatch,
  from: number,
  to: number,
  structSize = TICK_STRUCT_BYTES,
  out: Uint8Array = new Uint8Array((to - from) * structSize),
  at = 0,
): Uint8Array {
  const bytes = (to - from) * structSize;
  const v = new DataView(out.buffer, out.byteOffset + at, bytes);
  for (let i = from, o = 0; i < to; i++, o += structSize) {
    const msc = batch.serverTimeMsc[i] as number;
    setInt64(v, o, Math.floor(msc / 1000));
    v.setFloat64(o + 8, batch.bid[i] as number, true);
    v.setFloat64(o + 16, batch.ask[i] as number, true);
    v.setFloat64(o + 24, batch.last[i] as number, true);
    setInt64(v, o + 32, Math.round(batch.volume[i] as number));
    setInt64(v, o + 40, msc);
    v.setUint32(o + 48, batch.flags[i] as number, true);
    if (structSize === TICK_STRUCT_BYTES) v.setFloat64(o + 52, batch.volumeReal[i] as number, true);
  }
  return out.subarray(at, at + bytes);
}

/** Writes an integer of magnitude below 2^53 as int64 LE, without a BigInt per call. */
function setInt64(v: DataView, at: number, value: number): void {
  const hi = Math.floor(value / TWO_32);
  v.setUint32(at, value - hi * TWO_32, true);
  v.setInt32(at + 4, hi, true);
}
