/**
 * Keys and encoding of the Redis live view (the layout is in sinks/redis/sink.ts): which commands a
 * batch of ticks or bars becomes, encoded into the sink's RespWriter. No I/O here; the sink
 * (transport, replies, queue and drops) decides when to encode and where the bytes go.
 *
 *   XADD {prefix}:ticks:{SOURCE}:{SYMBOL} MAXLEN ~ N <ms>-<seq> b a l v vr f t s   per tick
 *   HSET {prefix}:quote:{SOURCE}:{SYMBOL} bid ask last time server_time_msc seq flags
 *                                                                  per symbol of a batch (its last tick)
 *   XADD {prefix}:bars:1m:{SOURCE}:{SYMBOL} MAXLEN ~ N <start ms>-<last seq> o h l c n sa v
 *
 * Everything before a command's ID is the same for every command of one key: it is encoded once
 * and cached (`#head`). Prices are written at their symbol's digits (codecs/num-writer.ts).
 */
import type { Bar } from '../../codecs/bar.js';
import { encodeCommand, type RespWriter } from '../../codecs/resp.js';
import { DIGITS_UNKNOWN, type TickBatch } from '../../codecs/tick-batch.js';

/** Bytes per command beyond its pre-encoded head: IDs and values are at most ~40 bytes each. */
const COMMAND_TAIL_BOUND = 512;
const MAX_CACHED_HEADS = 50_000;

const field = (name: string) => encodeCommand([name]).subarray(4); // `$<n>\r\n<name>\r\n`
const F = {
  b: field('b'),
  a: field('a'),
  l: field('l'),
  v: field('v'),
  vr: field('vr'),
  f: field('f'),
  t: field('t'),
  s: field('s'),
  bid: field('bid'),
  ask: field('ask'),
  last: field('last'),
  time: field('time'),
  serverTimeMsc: field('server_time_msc'),
  seq: field('seq'),
  flags: field('flags'),
  o: field('o'),
  h: field('h'),
  c: field('c'),
  n: field('n'),
  sa: field('sa'),
};

/** What one batch became: `ticks` XADDs, then `quotes` HSETs; `bad` ticks were left out. */
export interface EncodedTicks {
  ticks: number;
  quotes: number;
  /** Ticks whose symbol index is outside the batch's table (a decoder bug): not encoded. */
  bad: number;
}

export class RedisLiveEncoding {
  readonly #prefix: string;
  /** `MAXLEN ~ N` after the key, the same for every XADD. */
  readonly #maxLenTail: Buffer;
  readonly #heads = new Map<string, Buffer>();
  /** Per tick stream (`source\0symbol`): the greatest ID ms given (see sinks/redis/sink.ts). */
  readonly #idMs = new Map<string, number>();
  #lastOf = new Int32Array(64);
  #msOf = new Float64Array(64);

  constructor(keyPrefix: string, streamMaxLen: number) {
    this.#prefix = keyPrefix;
    this.#maxLenTail = encodeCommand(['MAXLEN', '~', streamMaxLen]).subarray(4);
  }

  /** Forgets the cached heads and stream IDs of a source (idle past sourceForgetAfterMs). */
  forgetSource(source: string): void {
    const infix = `:${source}:`;
    for (const key of this.#heads.keys()) {
      const at = key.indexOf(infix, key.indexOf('\n') + 1 + this.#prefix.length);
      if (at >= 0) this.#heads.delete(key);
    }
    const prefix = `${source}\u0000`;
    for (const key of this.#idMs.keys()) if (key.startsWith(prefix)) this.#idMs.delete(key);
  }

  /** `*<argc>\r\n$..\r\n<NAME>\r\n$..\r\n<key>\r\n` (+ `MAXLEN ~ N`), encoded once per key. */
  #head(key: string, argc: number, name: string, withMaxLen: boolean): Buffer {
    const cacheKey = `${argc}\n${key}`;
    let h = this.#heads.get(cacheKey);
    if (!h) {
      if (this.#heads.size >= MAX_CACHED_HEADS) this.#heads.clear();
      const nameAndKey = encodeCommand([name, key]).subarray(4); // drops `*2\r\n`
      h = Buffer.concat([Buffer.from(`*${argc}\r\n`), nameAndKey, ...(withMaxLen ? [this.#maxLenTail] : [])]);
      this.#heads.set(cacheKey, h);
    }
    return h;
  }

  /** A batch as one XADD per tick, then one quote HSET per symbol, written into `w`. */
  ticks(w: RespWriter, b: TickBatch): EncodedTicks {
    const prefix = this.#prefix;
    const nSym = b.symbols.length;
    const heads: Buffer[] = new Array(nSym);
    for (let s = 0; s < nSym; s++)
      heads[s] = this.#head(`${prefix}:ticks:${b.source}:${b.symbols[s]}`, 22, 'XADD', true);
    if (this.#lastOf.length < nSym) {
      this.#lastOf = new Int32Array(nSym * 2);
      this.#msOf = new Float64Array(nSym * 2);
    }
    const lastOf = this.#lastOf;
    lastOf.fill(-1, 0, nSym);
    const msOf = this.#msOf;
    for (let s = 0; s < nSym; s++) msOf[s] = this.#idMs.get(`${b.source}\u0000${b.symbols[s]}`) ?? 0;
    const { seq, symbolIndex, serverTimeMsc, utcMsc, bid, ask, last, volume, volumeReal, flags } = b;
    const digitsOf = b.symbolDigits;
    let bad = 0;
    for (let i = 0; i < b.length; i++) {
      const sym = symbolIndex[i] as number;
      const head = heads[sym];
      if (!head) {
        bad++; // a symbol index outside the table: a decoder bug, not worth a broken stream
        continue;
      }
      lastOf[sym] = i;
      const utc = utcMsc[i] as number;
      const ms = Math.max(utc, msOf[sym] as number);
      msOf[sym] = ms;
      const digits = digitsOf[sym] ?? DIGITS_UNKNOWN;
      w.ensure(head.length + COMMAND_TAIL_BOUND);
      w.raw(head);
      w.id(ms, seq[i] as number);
      w.raw(F.b);
      w.price(bid[i] as number, digits);
      w.raw(F.a);
      w.price(ask[i] as number, digits);
      w.raw(F.l);
      w.price(last[i] as number, digits);
      w.raw(F.v);
      w.num(volume[i] as number);
      w.raw(F.vr);
      w.num(volumeReal[i] as number);
      w.raw(F.f);
      w.num(flags[i] as number);
      w.raw(F.t);
      w.num(serverTimeMsc[i] as number);
      w.raw(F.s);
      w.num(seq[i] as number);
    }
    let quotes = 0;
    for (let s = 0; s < nSym; s++) {
      const i = lastOf[s] as number;
      if (i < 0) continue;
      this.#idMs.set(`${b.source}\u0000${b.symbols[s]}`, msOf[s] as number);
      quotes++;
      const head = this.#head(`${prefix}:quote:${b.source}:${b.symbols[s]}`, 16, 'HSET', false);
      const digits = digitsOf[s] ?? DIGITS_UNKNOWN;
      w.ensure(head.length + COMMAND_TAIL_BOUND);
      w.raw(head);
      w.raw(F.bid);
      w.price(bid[i] as number, digits);
      w.raw(F.ask);
      w.price(ask[i] as number, digits);
      w.raw(F.last);
      w.price(last[i] as number, digits);
      w.raw(F.time);
      w.num(utcMsc[i] as number);
      w.raw(F.serverTimeMsc);
      w.num(serverTimeMsc[i] as number);
      w.raw(F.seq);
      w.num(seq[i] as number);
      w.raw(F.flags);
      w.num(flags[i] as number);
    }
    return { ticks: b.length - bad, quotes, bad };
  }

  /** One XADD per closed bar, written into `w`. */
  bars(w: RespWriter, bars: readonly Bar[]): void {
    const prefix = this.#prefix;
    for (const bar of bars) {
      const head = this.#head(`${prefix}:bars:1m:${bar.source}:${bar.symbol}`, 20, 'XADD', true);
      w.ensure(head.length + COMMAND_TAIL_BOUND);
      w.raw(head);
      w.id(bar.startMs, bar.lastSeq);
      w.raw(F.o);
      w.num(bar.open);
      w.raw(F.h);
      w.num(bar.high);
      w.raw(F.l);
      w.num(bar.low);
      w.raw(F.c);
      w.num(bar.close);
      w.raw(F.n);
      w.num(bar.tickCount);
      w.raw(F.sa);
      w.num(bar.tickCount ? bar.spreadSum / bar.tickCount : 0);
      w.raw(F.v);
      w.num(bar.volume);
    }
  }
}
