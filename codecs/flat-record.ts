/**
 * Kafka record values (codecs/schema/tick_batch.fbs): a FlatBuffers `TickRecord` per batch of
 * one source's ticks, a `BarRecord` per closed bar. The encoder reuses one Builder and copies
 * each column into it in one `set` (scalar vectors are raw little-endian arrays), instead of
 * adding ticks one by one. Readers in any language decode with the schema; `decodeTickRecord`
 * is the TypeScript one.
 */
import { Builder, ByteBuffer } from 'flatbuffers';
import type { Bar } from './bar.js';
import { ErrorCode, TickstreamError } from './errors.js';
import { BarRecord, TickRecord } from './generated/tick_batch_generated.js';
import { allocTickBatch, type TickBatch } from './tick-batch.js';

export const SCHEMA_VERSION = 1;
/** Kafka record headers, repeated from the record so readers can route without decoding. */
export const RecordHeader = {
  SCHEMA_VERSION: 'schema-version',
  SOURCE: 'source',
  SEQ_FIRST: 'seq-first',
  SEQ_LAST: 'seq-last',
  CONTENT: 'content-type',
} as const;
export const TICK_RECORD_CONTENT_TYPE = 'application/x-flatbuffers;schema=tickstream.TickRecord';
export const BAR_RECORD_CONTENT_TYPE = 'application/x-flatbuffers;schema=tickstream.BarRecord';

const TWO_32 = 2 ** 32;

/** The Builder's write position; the public API only has per-element adds. */
interface BuilderInternals {
  bb: ByteBuffer;
  space: number;
}

export class TickRecordEncoder {
  readonly #builder = new Builder(1 << 16);
  #scratch = new Uint32Array(2048);

  /** Encodes rows [from, to) of `batch` as one record; the result is a fresh copy. */
  encode(batch: TickBatch, from = 0, to = batch.length): Uint8Array {
    const b = this.#builder;
    b.clear();
    const n = to - from;
    // Only the symbols these rows use, re-indexed, so a 1-tick record stays small.
    const used = new Map<number, number>();
    const index = new Uint16Array(n);
    for (let i = 0; i < n; i++) {
      const s = batch.symbolIndex[from + i] as number;
      let k = used.get(s);
      if (k === undefined) {
        k = used.size;
        used.set(s, k);
      }
      index[i] = k;
    }
    const names = [...used.keys()].map((s) => b.createString(batch.symbols[s] ?? ''));
    const symbols = TickRecord.createSymbolsVector(b, names);
    const source = b.createString(batch.source);
    const seq = this.#int64(batch.seq, from, n, false);
    const symbolIndex = this.#raw(index, 2, 0, n);
    const serverTime = this.#int64(batch.serverTimeMsc, from, n, true);
    const utc = this.#int64(batch.utcMsc, from, n, true);
    const bid = this.#raw(batch.bid, 8, from, n);
    const ask = this.#raw(batch.ask, 8, from, n);
    const last = this.#raw(batch.last, 8, from, n);
    const volume = this.#int64(batch.volume, from, n, false);
    const volumeReal = this.#raw(batch.volumeReal, 8, from, n);
    const flags = this.#raw(batch.flags, 4, from, n);
    TickRecord.startTickRecord(b);
    TickRecord.addSchemaVersion(b, SCHEMA_VERSION);
    TickRecord.addSource(b, source);
    TickRecord.addFirstSeq(b, BigInt(n ? (batch.seq[from] as number) : 0));
    TickRecord.addLastSeq(b, BigInt(n ? (batch.seq[to - 1] as number) : 0));
    TickRecord.addSymbols(b, symbols);
    TickRecord.addSeq(b, seq);
    TickRecord.addSymbolIndex(b, symbolIndex);
    TickRecord.addServerTimeMsc(b, serverTime);
    TickRecord.addUtcMsc(b, utc);
    TickRecord.addBid(b, bid);
    TickRecord.addAsk(b, ask);
    TickRecord.addLast(b, last);
    TickRecord.addVolume(b, volume);
    TickRecord.addVolumeReal(b, volumeReal);
    TickRecord.addFlags(b, flags);
    TickRecord.finishTickRecordBuffer(b, TickRecord.endTickRecord(b));
    // asUint8Array() is a view of the Builder's buffer, which clear() reuses: copy it out.
    return b.asUint8Array().slice();
  }

  /** A scalar vector copied in one `set` from a typed array's bytes. */
  #raw(col: ArrayBufferView, size: number, from: number, n: number): number {
    const b = this.#builder;
    b.startVector(size, n, size);
    const internals = b as unknown as BuilderInternals;
    internals.space -= n * size;
    internals.bb.setPosition(internals.space);
    internals.bb
      .bytes()
      .set(new Uint8Array(col.buffer, col.byteOffset + from * size, n * size), internals.space);
    return b.endVector();
  }

  /** A 64-bit integer vector from a float64 column (exact below 2^53), two's complement. */
  #int64(col: Float64Array, from: number, n: number, signed: boolean): number {
    if (this.#scratch.length < 2 * n) this.#scratch = new Uint32Array(2 * n);
    const s = this.#scratch;
    for (let i = 0; i < n; i++) {
      const v = col[from + i] as number;
      const hi = Math.floor(v / TWO_32);
      s[2 * i] = v - hi * TWO_32;
      s[2 * i + 1] = signed ? hi >>> 0 : hi;
    }
    return this.#raw(s, 8, 0, n);
  }
}

/** Decodes a TickRecord into a new TickBatch (columns copied out of the record). */
export function decodeTickRecord(value: Uint8Array): TickBatch {
  // Typed-array views need aligned offsets: decode from an aligned copy.
  const bytes = value.byteOffset % 8 === 0 ? value : value.slice();
  const bb = new ByteBuffer(bytes);
  if (bytes.length < 8 || !TickRecord.bufferHasIdentifier(bb)) {
    throw new TickstreamError(
      ErrorCode.FRAME_PAYLOAD,
      'not a tickstream TickRecord (file identifier TSK1 missing)',
    );
  }
  const r = TickRecord.getRootAsTickRecord(bb);
  if (r.schemaVersion() > SCHEMA_VERSION) {
    throw new TickstreamError(
      ErrorCode.FRAME_VERSION,
      `TickRecord schema version ${r.schemaVersion()} is newer than this reader (${SCHEMA_VERSION}): update tickstream`,
    );
  }
  const n = r.seqLength();
  const symbols = Array.from({ length: r.symbolsLength() }, (_, i) => r.symbols(i));
  const batch = allocTickBatch(r.source() ?? '', symbols, n);
  batch.length = n;
  batch.symbolIndex.set(r.symbolIndexArray() ?? []);
  batch.bid.set(r.bidArray() ?? []);
  batch.ask.set(r.askArray() ?? []);
  batch.last.set(r.lastArray() ?? []);
  batch.volumeReal.set(r.volumeRealArray() ?? []);
  batch.flags.set(r.flagsArray() ?? []);
  readInt64(bb, vectorStart(r, 14), n, batch.seq, false);
  readInt64(bb, vectorStart(r, 18), n, batch.serverTimeMsc, true);
  readInt64(bb, vectorStart(r, 20), n, batch.utcMsc, true);
  readInt64(bb, vectorStart(r, 28), n, batch.volume, false);
  return batch;
}

/** Where a vector field's elements start (vtable offset as in the generated accessors). */
function vectorStart(r: TickRecord, vtableOffset: number): number {
  const bb = r.bb as ByteBuffer;
  const o = bb.__offset(r.bb_pos, vtableOffset);
  return o ? bb.__vector(r.bb_pos + o) : 0;
}

function readInt64(bb: ByteBuffer, at: number, n: number, out: Float64Array, signed: boolean): void {
  if (!at) return;
  const bytes = bb.bytes();
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset + at, 2 * n);
  for (let i = 0; i < n; i++) {
    const hi = words[2 * i + 1] as number;
    out[i] = (signed ? hi | 0 : hi) * TWO_32 + (words[2 * i] as number);
  }
}

export function encodeBar(bar: Bar): Uint8Array {
  const b = new Builder(256);
  const source = b.createString(bar.source);
  const symbol = b.createString(bar.symbol);
  BarRecord.startBarRecord(b);
  BarRecord.addSchemaVersion(b, SCHEMA_VERSION);
  BarRecord.addSource(b, source);
  BarRecord.addSymbol(b, symbol);
  BarRecord.addStartMs(b, BigInt(bar.startMs));
  BarRecord.addOpen(b, bar.open);
  BarRecord.addHigh(b, bar.high);
  BarRecord.addLow(b, bar.low);
  BarRecord.addClose(b, bar.close);
  BarRecord.addTickCount(b, bar.tickCount);
  BarRecord.addSpreadMin(b, bar.spreadMin);
  BarRecord.addSpreadMax(b, bar.spreadMax);
  BarRecord.addSpreadSum(b, bar.spreadSum);
  BarRecord.addLastOpen(b, bar.lastOpen);
  BarRecord.addLastHigh(b, bar.lastHigh);
  BarRecord.addLastLow(b, bar.lastLow);
  BarRecord.addLastClose(b, bar.lastClose);
  BarRecord.addVolume(b, bar.volume);
  BarRecord.addLastSeq(b, BigInt(bar.lastSeq));
  b.finish(BarRecord.endBarRecord(b));
  return b.asUint8Array().slice();
}

export function decodeBar(value: Uint8Array): Bar {
  const r = BarRecord.getRootAsBarRecord(new ByteBuffer(value));
  return {
    source: r.source() ?? '',
    symbol: r.symbol() ?? '',
    startMs: Number(r.startMs()),
    open: r.open(),
    high: r.high(),
    low: r.low(),
    close: r.close(),
    tickCount: r.tickCount(),
    spreadMin: r.spreadMin(),
    spreadMax: r.spreadMax(),
    spreadSum: r.spreadSum(),
    lastOpen: r.lastOpen(),
    lastHigh: r.lastHigh(),
    lastLow: r.lastLow(),
    lastClose: r.lastClose(),
    volume: r.volume(),
    lastSeq: Number(r.lastSeq()),
  };
}
