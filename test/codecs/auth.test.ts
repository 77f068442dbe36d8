import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { helloProof, newNonce, verifyHelloProof } from '../../codecs/auth.js';
import { NONCE_BYTES, PROOF_BYTES } from '../../codecs/messages.js';

/** HMAC-SHA256 built from bare SHA-256, as the MQL5 EA must (docs/protocol.md §8). */
function hmacFromSha256(secret: string, message: Uint8Array): Buffer {
  let key = Buffer.from(secret, 'utf8');
  if (key.length > 64) key = createHash('sha256').update(key).digest();
  const k = Buffer.concat([key, Buffer.alloc(64 - key.length)]);
  const pad = (x: number) => Buffer.from(k.map((b) => b ^ x));
  const inner = createHash('sha256').update(pad(0x36)).update(message).digest();
  return createHash('sha256').update(pad(0x5c)).update(inner).digest();
}

describe('HELLO proof', () => {
  it('fresh 32-byte nonces', () => {
    const a = newNonce();
    expect(a.length).toBe(NONCE_BYTES);
    expect(newNonce().equals(a)).toBe(false);
  });

  it('is HMAC-SHA256(secret, nonce ‖ source), as the EA builds it from SHA-256', () => {
    fc.assert(
      fc.property(
        fc.string({ maxLength: 100 }),
        fc.stringMatching(/^[A-Za-z0-9._-]{1,64}$/),
        (secret, source) => {
          const nonce = newNonce();
          const proof = helloProof(secret, nonce, source);
          expect(proof.length).toBe(PROOF_BYTES);
          expect(proof).toEqual(hmacFromSha256(secret, Buffer.concat([nonce, Buffer.from(source)])));
        },
      ),
    );
  });

  it('wrong HMAC: refused (wrong secret, other nonce, other source, cut or flipped proof)', () => {
    const nonce = newNonce();
    const proof = helloProof('correct horse', nonce, 'src1');
    expect(verifyHelloProof('correct horse', nonce, 'src1', proof)).toBe(true);
    expect(verifyHelloProof('wrong secret!', nonce, 'src1', proof)).toBe(false);
    expect(verifyHelloProof('correct horse', newNonce(), 'src1', proof)).toBe(false);
    expect(verifyHelloProof('correct horse', nonce, 'src2', proof)).toBe(false);
    expect(verifyHelloProof('correct horse', nonce, 'src1', proof.subarray(0, 31))).toBe(false);
    expect(verifyHelloProof('correct horse', nonce, 'src1', new Uint8Array(0))).toBe(false);
    const flipped = Buffer.from(proof);
    flipped.writeUInt8(flipped.readUInt8(31) ^ 1, 31);
    expect(verifyHelloProof('correct horse', nonce, 'src1', flipped)).toBe(false);
  });
});
