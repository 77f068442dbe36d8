/**
 * PostgreSQL binary COPY (https://www.postgresql.org/docs/15/sql-copy.html, "Binary Format"):
 *
 *   header   11 bytes "PGCOPY\n\377\r\n\0", int32 flags (0), int32 extension length (0)
 *   tuple    int16 field count, then per field int32 byte length (-1 = NULL) and the value,
 *            big-endian: int8 for bigint, float8 for double precision, int8 µs since
 *            2000-01-01 UTC for timestamptz, raw UTF-8 for text
 *   trailer  int16 -1
 *
 * Tick rows, in the column order of the `ticks` table:
 *   source text, seq bigint, symbol text, time timestamptz, server_time_msc bigint,
 *   bid float8, ask float8, last float8, volume bigint, volume_real float8, flags bigint
 * Bar rows, in the column order of `bars_1m`:
 *   source text, symbol text, start timestamptz, open, high, low, close float8,
 *   tick_count integer, spread_min, spread_max, spread_avg float8,
 *   last_open, last_high, last_low, last_close float8 (NULL when NaN: no trade),
 *   volume float8, last_seq bigint
 * One growable output buffer is reused; text values are encoded once per batch.
 */
import type { Bar } from './bar.js';
import type { TickBatch } from './tick-batch.js';

const SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');
/** Microseconds between 1970-01-01 and 2000-01-01, the PostgreSQL epoch. */
const PG_EPOCH_US = 946_684_800_000_000;
const TWO_32 = 2 ** 32;
export const TICK_COLUMNS = [
  'source',
  'seq',
  'symbol',
  'time',
  'server_time_msc',
  'bid',
  'ask',
  'last',
  'volume',
  'volume_real',
  'flags',
] as const;
export const BAR_COLUMNS = [
  'source',
  'symbol',
  'start',
  'open',
  'high',
  'low',
  'close',
  'tick_count',
  'spread_min',
  'spread_max',
  'spread_avg',
  'last_open',
  'last_high',
  'last_low',
  'last_close',
  'volume',
  'last_seq',
] as const;

export class CopyEncoder {
  #buf = Buffer.allocUnsafe(1 << 16);
  #view = new DataView(this.#buf.buffer, this.#buf.byteOffset, this.#buf.byteLength);
  #o = 0;

  /** The COPY header; send once per COPY statement, before any rows. */
  header(): Buffer {
    const out = Buffer.alloc(19);
    SIGNATURE.copy(out, 0);
    return out;
  }

  /** The COPY trailer; send once, last. */
  trailer(): Buffer {
    return Buffer.from([0xff, 0xff]);
  }

  /** Tick rows [from, to) of a batch. The result is a view, valid until the next encode call. */
  ticks(batch: TickBatch, from = 0, to = batch.length): Buffer {
    const source = Buffer.from(batch.source, 'utf8');
    const symbols = batch.symbols.map((s) => Buffer.from(s, 'utf8'));
    const longest = Math.max(0, ...symbols.map((s) => s.length));
    // Per row: field count, 11 lengths, 9 eight-byte values, two texts.
    this.#reset((to - from) * (2 + 11 * 4 + 9 * 8 + source.length + longest));
    for (let i = from; i < to; i++) {
      this.#i16(11);
      this.#text(source);
      this.#int8(batch.seq[i] as number);
      this.#text(symbols[batch.symbolIndex[i] as number] as Buffer);
      this.#int8((batch.utcMsc[i] as number) * 1000 - PG_EPOCH_US);
      this.#int8(batch.serverTimeMsc[i] as number);
      this.#float8(batch.bid[i] as number);
      this.#float8(batch.ask[i] as number);
      this.#float8(batch.last[i] as number);
      this.#int8(batch.volume[i] as number);
      this.#float8(batch.volumeReal[i] as number);
      this.#int8(batch.flags[i] as number);
    }
    return this.#buf.subarray(0, this.#o);
  }

  /** Bar rows. The result is a view, valid until the next encode call. */
  bars(bars: readonly Bar[]): Buffer {
    this.#reset(
      bars.reduce(
        (n, b) => n + 2 + 17 * 4 + 16 * 8 + Buffer.byteLength(b.source) + Buffer.byteLength(b.symbol),
        0,
      ),
    );
    for (const b of bars) {
      this.#i16(17);
      this.#text(Buffer.from(b.source, 'utf8'));
      this.#text(Buffer.from(b.symbol, 'utf8'));
      this.#int8(b.startMs * 1000 - PG_EPOCH_US);
      for (const v of [b.open, b.high, b.low, b.close]) this.#float8(v);
      this.#int4(b.tickCount);
      this.#float8(b.spreadMin);
      this.#float8(b.spreadMax);
      this.#float8(b.tickCount ? b.spreadSum / b.tickCount : 0);
      for (const v of [b.lastOpen, b.lastHigh, b.lastLow, b.lastClose]) {
        if (Number.isNaN(v)) this.#null();
        else this.#float8(v);
      }
      this.#float8(b.volume);
      this.#int8(b.lastSeq);
    }
    return this.#buf.subarray(0, this.#o);
  }

  #reset(bytes: number): void {
    if (this.#buf.length < bytes) {
      this.#buf = Buffer.allocUnsafe(Math.max(bytes, this.#buf.length * 2));
      this.#view = new DataView(this.#buf.buffer, this.#buf.byteOffset, this.#buf.byteLength);
    }
    this.#o = 0;
  }
  #i16(v: number): void {
    this.#view.setInt16(this.#o, v);
    this.#o += 2;
  }
  #null(): void {
    this.#view.setInt32(this.#o, -1);
    this.#o += 4;
  }
  #int4(v: number): void {
    this.#view.setInt32(this.#o, 4);
    this.#view.setInt32(this.#o + 4, v);
    this.#o += 8;
  }
  #int8(v: number): void {
    const hi = Math.floor(v / TWO_32);
    this.#view.setInt32(this.#o, 8);
    this.#view.setInt32(this.#o + 4, hi);
    this.#view.setUint32(this.#o + 8, v - hi * TWO_32);
    this.#o += 12;
  }
  #float8(v: number): void {
    this.#view.setInt32(this.#o, 8);
    this.#view.setFloat64(this.#o + 4, v);
    this.#o += 12;
  }
  #text(b: Buffer): void {
    this.#view.setInt32(this.#o, b.length);
    this.#buf.set(b, this.#o + 4);
    this.#o += 4 + b.length;
  }
}
