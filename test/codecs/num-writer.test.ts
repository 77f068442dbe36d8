import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_NUMBER_BYTES, NumberText, writeNumber, writePrice } from '../../codecs/num-writer.js';
import { DIGITS_UNKNOWN } from '../../codecs/tick-batch.js';

const buf = Buffer.alloc(64);
const price = (x: number, digits: number): string => buf.toString('latin1', 0, writePrice(buf, 0, x, digits));
const number = (x: number): string => buf.toString('latin1', 0, writeNumber(buf, 0, x));

/** A price on the grid of `digits`: what an MT5 symbol with those digits quotes. */
const onGrid = fc
  .tuple(fc.integer({ min: 0, max: 8 }), fc.integer({ min: -1e12, max: 1e12 }))
  .map(([digits, points]) => ({ digits, x: points / 10 ** digits }));

describe('num-writer', () => {
  it('writes every price on its grid as String(x) (digits 0–8)', () => {
    fc.assert(
      fc.property(onGrid, ({ x, digits }) => {
        expect(price(x, digits)).toBe(String(x));
      }),
      { numRuns: 20_000 },
    );
  });

  it('writes prices at realistic magnitudes as String(x)', () => {
    const small = fc
      .tuple(fc.integer({ min: 0, max: 8 }), fc.integer({ min: -2_000_000, max: 2_000_000 }))
      .map(([digits, points]) => ({ digits, x: points / 10 ** digits }));
    fc.assert(
      fc.property(small, ({ x, digits }) => {
        expect(price(x, digits)).toBe(String(x));
      }),
      { numRuns: 20_000 },
    );
  });

  it('writes any double as String(x), whatever digits it is given', () => {
    fc.assert(
      fc.property(fc.double(), fc.integer({ min: -2, max: 20 }), (x, digits) => {
        expect(price(x, digits)).toBe(String(x));
        expect(number(x)).toBe(String(x));
      }),
      { numRuns: 20_000 },
    );
  });

  it('writes prices off their grid (more decimals than digits) through String', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 7 }), fc.integer({ min: 1, max: 1e9 }), (digits, points) => {
        const x = points / 10 ** (digits + 1) + 1e-12;
        expect(price(x, digits)).toBe(String(x));
      }),
      { numRuns: 5_000 },
    );
  });

  it('keeps the edge cases of String(x)', () => {
    const cases = [
      0,
      -0,
      1,
      -1,
      0.1,
      -0.1,
      1.1001,
      1.1001,
      108.34,
      151.27,
      0.000001,
      0.00000123,
      1e-7,
      -1e-8,
      0.00000001,
      99999.99999999,
      1234567.12345678,
      9999999.99999999,
      12345678.9012345,
      123456789.01234567,
      2 ** 53,
      2 ** 53 + 2,
      -(2 ** 53),
      1e21,
      1.5e300,
      Number.MAX_VALUE,
      Number.MIN_VALUE,
      Number.NaN,
      Number.POSITIVE_INFINITY,
      Number.NEGATIVE_INFINITY,
      0.1 + 0.2,
      1 / 3,
    ];
    for (const x of cases)
      for (const digits of [DIGITS_UNKNOWN, 0, 1, 2, 3, 5, 8, 15, 16, 255]) {
        expect(price(x, digits), `${x} at ${digits}`).toBe(String(x));
        expect(number(x)).toBe(String(x));
      }
  });

  it('states the byte length before writing, and stays within MAX_NUMBER_BYTES', () => {
    const t = new NumberText();
    fc.assert(
      fc.property(
        fc.oneof(
          fc.double(),
          onGrid.map((p) => p.x),
        ),
        fc.integer({ min: -1, max: 8 }),
        (x, digits) => {
          const len = t.price(x, digits);
          expect(len).toBeLessThanOrEqual(MAX_NUMBER_BYTES);
          expect(t.put(buf, 3) - 3).toBe(len);
        },
      ),
      { numRuns: 10_000 },
    );
  });
});
