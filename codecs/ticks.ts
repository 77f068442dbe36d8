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
 * Decoding appends into a pre-sized TickBatch (no allocation per tick) and validates: prices
 * finite (zero and negative allowed: a missing side, exchange spreads), volume_real finite and
 * not negative, volume below 2^53, time_msc in [0, year 3000). The structs sit at 60-byte strides, so half of the
 * doubles are not 8-byte aligned: a DataView reads them (a Float64Array view cannot).
 */
import { ErrorCode, TickstreamError } from './errors.js';
import type { ServerClock } from './server-clock.js';
import type { TickBatch } from './tick-batch.js';

export const TICK_STRUCT_BYTES = 60;
export const LEGACY_TICK_STRUCT_BYTES = 52;
/** time_msc from 3000-01-01 on is refused: no clock means it, and dates stay in range. */
export const MAX_TIME_MSC = Date.UTC(3000, 0, 1);
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
    if (!Number.isFinite(bid + ask + last)) {
      batch.length = n;
      return new TickstreamError(
        ErrorCode.TICK_VALUE,
        `tick seq ${firstSeq + i}: price not a finite number (bid ${bid}, ask ${ask}, last ${last})`,
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
    if (hasVolumeReal && !(volumeReal >= 0 && volumeReal < Number.POSITIVE_INFINITY)) {
      batch.length = n;
      return new TickstreamError(
        ErrorCode.TICK_VALUE,
        `tick seq ${firstSeq + i}: volume_real ${volumeReal} is not a finite non-negative number`,
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
