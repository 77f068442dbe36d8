import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { crc32c } from '../../codecs/crc32c.js';

/** The textbook bit-at-a-time CRC32C, to check the slice-by-8 tables against. */
function bitwise(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

describe('crc32c', () => {
  it('matches the standard check value and the RFC 3720 (iSCSI) examples', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i))).toBe(0x46dd794e);
    expect(crc32c(new Uint8Array(0))).toBe(0);
  });

  it('equals the bitwise CRC for any bytes, any range, and chains across split points', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.nat(), fc.nat(), (bytes, a, b) => {
        const [from, to] = [a % (bytes.length + 1), b % (bytes.length + 1)].sort((x, y) => x - y) as [
          number,
          number,
        ];
        expect(crc32c(bytes)).toBe(bitwise(bytes));
        expect(crc32c(bytes, 0, from, to)).toBe(bitwise(bytes.subarray(from, to)));
        expect(crc32c(bytes, crc32c(bytes, 0, 0, from), from)).toBe(crc32c(bytes));
      }),
    );
  });
});
