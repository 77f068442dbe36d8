/**
 * The HELLO proof (docs/protocol.md §4): HMAC-SHA256(secret, nonce ‖ utf8(source)), 32 bytes.
 * The bridge sends a fresh random nonce per connection, so a captured proof cannot be
 * replayed and the secret never crosses the wire. Compared in constant time.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { NONCE_BYTES } from './messages.js';

export const newNonce = (): Buffer => randomBytes(NONCE_BYTES);

export function helloProof(secret: string, nonce: Uint8Array, source: string): Buffer {
  return createHmac('sha256', secret).update(nonce).update(source, 'utf8').digest();
}

export function verifyHelloProof(
  secret: string,
  nonce: Uint8Array,
  source: string,
  proof: Uint8Array,
): boolean {
  const want = helloProof(secret, nonce, source);
  return proof.length === want.length && timingSafeEqual(want, proof);
}
