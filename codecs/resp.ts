/**
 * RESP2 (the Redis wire protocol) as the Redis sink needs it: commands encoded straight into one
 * reusable Buffer, and a streaming reply parser that only counts replies and hands over error
 * texts. No I/O here.
 *
 * Request layout (RESP array of bulk strings), e.g. one tick:
 *
 *   *22\r\n                          array header: 22 elements
 *   $4\r\nXADD\r\n                    bulk: `$<byte length>\r\n<bytes>\r\n`
 *   $19\r\nmt5:ticks:SRC:EURUSD\r\n   key
 *   $6\r\nMAXLEN\r\n$1\r\n~\r\n$6\r\n100000\r\n
 *   $15\r\n1711800000123-7\r\n        entry ID
 *   $1\r\nb\r\n$7\r\n1.10012\r\n ...  field, value pairs
 *
 * Everything up to the ID is the same for every tick of one stream, so it is encoded once per
 * stream (`encodeCommand`) and copied; field names likewise. Numbers are formatted once, straight
 * into the Buffer, by the shared number writer (codecs/num-writer.ts): the same text `String(x)`
 * gives (shortest round-trip form), prices as scaled integers at their symbol's digits.
 *
 * Reply layout: a type byte, a line ending in \r\n, and for bulk strings a body:
 *   `+OK`  simple string   `-ERR text`  error   `:12`  integer
 *   `$15\r\n1711800000123-7\r\n`  bulk (`$-1` null)   `*2\r\n...`  array of n replies (`*-1` null)
 */

import { digitCount, NumberText, putDigits } from './num-writer.js';

const CR = 13;
const LF = 10;
const MINUS = 45;
const ZERO = 48;

/** `*<n>\r\n$<len>\r\n<arg>\r\n...` for a whole command (strings are UTF-8). */
export function encodeCommand(args: readonly (string | number | Buffer)[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const body = Buffer.isBuffer(a) ? a : Buffer.from(String(a), 'utf8');
    parts.push(Buffer.from(`$${body.length}\r\n`), body, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

/**
 * A growable output Buffer with RESP writers. `ensure` before each command with a bound on its
 * size; the writers themselves do not check, so the per-value cost stays a few byte stores.
 */
export class RespWriter {
  buf: Buffer;
  off = 0;
  readonly #text = new NumberText();

  constructor(capacity = 1 << 20) {
    this.buf = Buffer.allocUnsafeSlow(capacity);
  }

  /** Room for `n` more bytes (grows by doubling, copying what is written so far). */
  ensure(n: number): void {
    if (this.off + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.off + n) size *= 2;
    const next = Buffer.allocUnsafeSlow(size);
    this.buf.copy(next, 0, 0, this.off);
    this.buf = next;
  }

  /**
   * Hands out the bytes written so far and continues in `next` (a buffer freed by an earlier
   * write, to reuse) or in a new buffer of the same size.
   */
  detach(next?: Buffer): Buffer {
    const out = this.buf.subarray(0, this.off);
    this.buf = next ?? Buffer.allocUnsafeSlow(this.buf.length);
    this.off = 0;
    return out;
  }

  /** Pre-encoded bytes (a command head, a field name). */
  raw(bytes: Buffer): void {
    this.buf.set(bytes, this.off);
    this.off += bytes.length;
  }

  /** `*<n>\r\n`. */
  arrayHeader(n: number): void {
    this.buf[this.off++] = 42; // '*'
    this.#digits(n, digitCount(n));
    this.#crlf();
  }

  /** A bulk string of ASCII text (numbers formatted elsewhere). */
  ascii(s: string): void {
    this.#bulkHeader(s.length);
    const b = this.buf;
    let o = this.off;
    for (let i = 0; i < s.length; i++) b[o++] = s.charCodeAt(i);
    this.off = o;
    this.#crlf();
  }

  /**
   * A number as a bulk string, with exactly the text `String(x)` gives. Safe integers (times,
   * seqs, flags, volumes) are written digit by digit, twice as fast as `String`; other values
   * go through `String`.
   */
  num(x: number): void {
    if (Number.isSafeInteger(x)) this.#int(x);
    else this.ascii(String(x));
  }

  /**
   * A price of a symbol with `digits` decimals (DIGITS_UNKNOWN: `num`), the same text as
   * `num` gives, written as a scaled integer instead of through V8's float formatting.
   */
  price(x: number, digits: number): void {
    if (digits < 0) {
      this.num(x); // digits unknown: what `num` writes, without the scaled-integer attempt
      return;
    }
    this.#bulkHeader(this.#text.price(x, digits));
    this.off = this.#text.put(this.buf, this.off);
    this.#crlf();
  }
  /** `<ms>-<seq>` as a bulk string (a stream entry ID). */
  id(ms: number, seq: number): void {
    if (!(Number.isSafeInteger(ms) && ms >= 0 && Number.isSafeInteger(seq) && seq >= 0)) {
      this.ascii(`${ms}-${seq}`); // not a valid ID: Redis answers with an error, counted as failed
      return;
    }
    const dm = digitCount(ms);
    const ds = digitCount(seq);
    this.#bulkHeader(dm + 1 + ds);
    this.#digits(ms, dm);
    this.buf[this.off++] = MINUS;
    this.#digits(seq, ds);
    this.#crlf();
  }

  #int(x: number): void {
    const neg = x < 0;
    const a = neg ? -x : x;
    const d = digitCount(a);
    this.#bulkHeader(neg ? d + 1 : d);
    if (neg) this.buf[this.off++] = MINUS;
    this.#digits(a, d);
    this.#crlf();
  }

  #bulkHeader(len: number): void {
    this.buf[this.off++] = 36; // '$'
    this.#digits(len, digitCount(len));
    this.#crlf();
  }

  #digits(x: number, d: number): void {
    this.off += d;
    putDigits(this.buf, this.off, x, d);
  }

  #crlf(): void {
    this.buf[this.off++] = CR;
    this.buf[this.off++] = LF;
  }
}

/**
 * Counts top-level replies in a RESP2 byte stream, chunk by chunk. `onReply(null)` for each
 * success, `onReply(text)` for each top-level error (`-ERR ...`). Bulk bodies are skipped, not
 * copied; only error lines become strings.
 */
export class RespReplyCounter {
  readonly #onReply: (error: string | null) => void;
  /** Bytes of a bulk body (with its \r\n) still to skip. */
  #skip = 0;
  /** Elements still to come, per open array. */
  #open: number[] = [];
  /** The start of a reply line cut by the chunk boundary. */
  #partial: Buffer | null = null;

  constructor(onReply: (error: string | null) => void) {
    this.#onReply = onReply;
  }

  reset(): void {
    this.#skip = 0;
    this.#open.length = 0;
    this.#partial = null;
  }

  /** Feeds one chunk; returns a message when the bytes are not RESP2 (then reset or drop). */
  push(chunk: Buffer): string | null {
    let pos = 0;
    const end = chunk.length;
    if (this.#partial) {
      const nl = chunk.indexOf(LF);
      if (nl < 0) {
        this.#partial = Buffer.concat([this.#partial, chunk]);
        return this.#partial.length > 64 * 1024 ? 'reply line longer than 64 KiB' : null;
      }
      const line = Buffer.concat([this.#partial, chunk.subarray(0, nl + 1)]);
      this.#partial = null;
      const bad = this.#line(line, 0, line.length - 1);
      if (bad) return bad;
      pos = nl + 1;
    }
    while (pos < end) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, end - pos);
        pos += n;
        this.#skip -= n;
        if (this.#skip === 0) this.#done(null);
        continue;
      }
      const nl = chunk.indexOf(LF, pos);
      if (nl < 0) {
        this.#partial = Buffer.from(chunk.subarray(pos)); // a copy: the socket may reuse chunks
        return null;
      }
      const bad = this.#line(chunk, pos, nl);
      if (bad) return bad;
      pos = nl + 1;
    }
    return null;
  }

  /** One reply line: `buf[start]` is the type byte, `buf[nl]` the \n ending it. */
  #line(buf: Buffer, start: number, nl: number): string | null {
    const stop = buf[nl - 1] === CR ? nl - 1 : nl;
    switch (buf[start]) {
      case 43: // '+'
      case 58: // ':'
        this.#done(null);
        return null;
      case 45: // '-'
        this.#done(buf.toString('latin1', start + 1, stop));
        return null;
      case 36: {
        // '$'
        const n = parseLength(buf, start + 1, stop);
        if (n === null) return 'bad bulk length';
        if (n < 0) this.#done(null);
        else this.#skip = n + 2;
        return null;
      }
      case 42: {
        // '*'
        const n = parseLength(buf, start + 1, stop);
        if (n === null) return 'bad array length';
        if (n <= 0) this.#done(null);
        else this.#open.push(n);
        return null;
      }
      default:
        return `unexpected reply type byte ${buf[start]}`;
    }
  }

  /** An element ended; when it closes the outermost reply, report it. */
  #done(error: string | null): void {
    const open = this.#open;
    if (open.length === 0) {
      this.#onReply(error);
      return;
    }
    while (open.length) {
      const top = open.length - 1;
      const left = (open[top] as number) - 1;
      if (left > 0) {
        open[top] = left;
        return;
      }
      open.pop();
    }
    this.#onReply(null); // an array reply: its elements are not inspected
  }
}

function parseLength(buf: Buffer, from: number, to: number): number | null {
  if (from >= to) return null;
  let neg = false;
  let i = from;
  if (buf[i] === MINUS) {
    neg = true;
    i++;
  }
  let n = 0;
  for (; i < to; i++) {
    const c = (buf[i] as number) - ZERO;
    if (c < 0 || c > 9) return null;
    n = n * 10 + c;
  }
  return neg ? -n : n;
}
