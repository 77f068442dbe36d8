/**
 * Decimal text of numbers written straight into bytes: the one number writer behind RESP
 * (codecs/resp.ts) and the websocket JSON ticks (sinks/ws/messages.ts). No I/O here.
 *
 * The text is always what `String(x)` gives (JavaScript's shortest round-trip form), so Redis
 * entries and JSON messages read the same whichever path wrote them. Two fast paths avoid V8's
 * float formatting:
 *
 *   safe integers (times, seqs, flags, volumes)   digit by digit, int32 arithmetic
 *   prices at the symbol's `digits` (MT5 SYMBOL_DIGITS)
 *       n = round(|x| × 10^digits), written as the integer with a decimal point inserted
 *       `digits` places from the right and trailing zeros trimmed: 1.10010 at 5 → "1.1001"
 *
 * The price path is taken only when it provably gives `String(x)`: x is exactly n / 10^digits
 * in float64, n < 10^15 (at most 15 significant digits: every such decimal is the shortest one
 * that rounds to x, since distinct decimals of ≤ 15 digits never round to the same double), and
 * |x| ≥ 1e-6 (below it `String` switches to exponent form). Anything else (digits unknown or
 * out of range, a price not on the symbol's grid, NaN, ±Infinity, huge values) goes through
 * `String(x)`.
 *
 * Output bound: `String` of a float64 is at most 25 characters (`-1.2345678901234567e-308`).
 */

const ZERO = 48;
const MINUS = 45;
const DOT = 46;

/** Most bytes one number takes. */
export const MAX_NUMBER_BYTES = 25;

/** Powers of ten that are exact in float64, for digits 0..15. */
const POW10 = Array.from({ length: 16 }, (_, d) => 10 ** d);
const MAX_DIGITS = POW10.length - 1;
/** n < 10^15: at most 15 significant digits (float64 keeps 15 decimal digits exactly). */
const MAX_SCALED = 1e15;

/** Decimal digits of a non-negative safe integer. */
export function digitCount(x: number): number {
  let n = 1;
  for (let p = 10; x >= p && n < 16; p *= 10) n++;
  return n;
}

/**
 * Writes the `d` low decimal digits of the non-negative safe integer `v` (zero-padded) into
 * `b[end - d, end)`. Above 2^31 nine digits at a time are split off in float64 (exact), the
 * rest is int32 arithmetic, about twice as fast as float division per digit.
 */
export function putDigits(b: Uint8Array, end: number, v: number, d: number): void {
  let i = end - 1;
  const stop = end - d;
  let rest = v;
  while (rest > 0x7fffffff && i >= stop) {
    const hi = Math.floor(rest / 1e9);
    let lo = rest - hi * 1e9;
    for (let j = 0; j < 9 && i >= stop; j++) {
      const q = (lo / 10) | 0;
      b[i--] = ZERO + lo - q * 10;
      lo = q;
    }
    rest = hi;
  }
  let n = rest | 0;
  for (; i >= stop; i--) {
    const q = (n / 10) | 0;
    b[i] = ZERO + n - q * 10;
    n = q;
  }
}

/**
 * Formats one number at a time in two steps, so a caller that must state the length first
 * (a RESP bulk header) gets it without a copy: `price`/`number` prepare and return the byte
 * length, `put` writes the prepared text. One instance per writer; it holds no buffer.
 */
export class NumberText {
  #neg = false;
  #int = 0;
  #intDigits = 0;
  #frac = 0;
  #fracDigits = 0;
  /** The `String` fallback's text, or null on a fast path. */
  #text: string | null = null;

  /** Prepares a price at `digits` (DIGITS_UNKNOWN or any out-of-range value: `String(x)`). */
  price(x: number, digits: number): number {
    if (digits >= 0 && digits <= MAX_DIGITS) {
      const neg = x < 0;
      const a = neg ? -x : x;
      const scale = POW10[digits] as number;
      const n = Math.round(a * scale);
      // a === n / scale exactly, so floor(n / scale) is floor(a): no second division.
      if (n < MAX_SCALED && n / scale === a && (a >= 1e-6 || a === 0)) {
        let int: number;
        let frac: number;
        let fd = digits;
        if (n <= 0x7fffffff) {
          // int32 arithmetic: what nearly every real price takes (1.0834 at 5 digits is 108340).
          int = a | 0;
          frac = (n - int * scale) | 0;
          while (frac !== 0 && frac % 10 === 0) {
            frac = (frac / 10) | 0;
            fd--;
          }
        } else {
          int = Math.floor(a);
          frac = n - int * scale;
          while (frac !== 0 && frac % 10 === 0) {
            frac /= 10;
            fd--;
          }
        }
        if (frac === 0) fd = 0;
        this.#neg = neg && a !== 0; // -0 is written "0", as String(-0) gives
        this.#int = int;
        this.#intDigits = digitCount(int);
        this.#frac = frac;
        this.#fracDigits = fd;
        this.#text = null;
        return (this.#neg ? 1 : 0) + this.#intDigits + (fd ? fd + 1 : 0);
      }
      return this.#fallback(x);
    }
    return this.number(x);
  }

  /** Prepares any number: safe integers digit by digit, the rest through `String(x)`. */
  number(x: number): number {
    return Number.isSafeInteger(x) ? this.#integer(x) : this.#fallback(x);
  }

  /** Writes the prepared text at `b[off]`; returns the offset after it. */
  put(b: Uint8Array, off: number): number {
    const text = this.#text;
    if (text !== null) {
      for (let i = 0; i < text.length; i++) b[off++] = text.charCodeAt(i);
      return off;
    }
    if (this.#neg) b[off++] = MINUS;
    off += this.#intDigits;
    putDigits(b, off, this.#int, this.#intDigits);
    if (this.#fracDigits === 0) return off;
    b[off++] = DOT;
    off += this.#fracDigits;
    putDigits(b, off, this.#frac, this.#fracDigits);
    return off;
  }

  #integer(x: number): number {
    // -0 is written "0", as String(-0) gives.
    const neg = x < 0;
    const a = neg ? -x : x;
    this.#neg = neg;
    this.#int = a;
    this.#intDigits = digitCount(a);
    this.#fracDigits = 0;
    this.#text = null;
    return (neg ? 1 : 0) + this.#intDigits;
  }

  #fallback(x: number): number {
    const text = String(x);
    this.#text = text;
    return text.length;
  }
}

const shared = new NumberText();

/** Writes `String(x)` at `b[off]` (room for MAX_NUMBER_BYTES); returns the offset after it. */
export function writeNumber(b: Uint8Array, off: number, x: number): number {
  shared.number(x);
  return shared.put(b, off);
}

/** Writes the price `x` at `digits` (the text of `String(x)`) at `b[off]`; returns the new offset. */
export function writePrice(b: Uint8Array, off: number, x: number, digits: number): number {
  shared.price(x, digits);
  return shared.put(b, off);
}
