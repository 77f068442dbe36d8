import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ErrorCode, TickstreamError } from '../../codecs/errors.js';
import { encodeFrame, type Frame, FrameDecoder, HEADER_BYTES, MessageType } from '../../codecs/frame.js';

const types = Object.values(MessageType);

interface Decoded {
  frames: { type: number; payload: string }[];
  error?: TickstreamError;
}

function decodeAll(chunks: Uint8Array[], max = 1 << 20): Decoded {
  const d = new FrameDecoder(max);
  const frames: Decoded['frames'] = [];
  for (const c of chunks) {
    d.push(c);
    for (let f = d.next(); f !== null; f = d.next()) {
      if (f instanceof TickstreamError) return { frames, error: f };
      frames.push({ type: f.type, payload: Buffer.from(f.payload).toString('hex') });
    }
  }
  const end = d.end();
  return end ? { frames, error: end } : { frames };
}

function splitAt(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let from = 0;
  for (const p of [...points, bytes.length]) {
    out.push(bytes.subarray(from, p));
    from = p;
  }
  return out;
}

const message = fc.record({ type: fc.constantFrom(...types), payload: fc.uint8Array({ maxLength: 300 }) });

describe('FrameDecoder', () => {
  it('decodes a stream split at arbitrary points exactly as the unsplit stream', () => {
    fc.assert(
      fc.property(
        fc.array(message, { maxLength: 20 }),
        fc.array(fc.nat(), { maxLength: 40 }),
        (msgs, cuts) => {
          const stream = Buffer.concat(msgs.map((m) => encodeFrame(m.type, m.payload)));
          const want = msgs.map((m) => ({ type: m.type, payload: Buffer.from(m.payload).toString('hex') }));
          expect(decodeAll([stream])).toEqual({ frames: want });
          expect(decodeAll(splitAt(stream, cuts))).toEqual({ frames: want });
        },
      ),
    );
  });

  it('one byte at a time decodes the same as whole', () => {
    const stream = Buffer.concat([
      encodeFrame(MessageType.TICKS, Buffer.alloc(70, 3)),
      encodeFrame(MessageType.BYE, Buffer.alloc(0)),
    ]);
    const bytes = [...stream].map((b) => Uint8Array.of(b));
    expect(decodeAll(bytes)).toEqual(decodeAll([stream]));
    expect(decodeAll(bytes).frames).toHaveLength(2);
  });

  it('payloads stay valid after later pushes (never overwritten by the decoder)', () => {
    const a = encodeFrame(MessageType.TICKS, Buffer.alloc(100, 0xaa));
    const b = encodeFrame(MessageType.TICKS, Buffer.alloc(100, 0xbb));
    const stream = Buffer.concat([a, b]);
    const d = new FrameDecoder();
    const kept: Uint8Array[] = [];
    for (const c of splitAt(stream, [50, 150])) {
      d.push(c);
      for (let f = d.next(); f !== null; f = d.next()) kept.push((f as Frame).payload);
    }
    expect(kept.map((p) => Buffer.from(p).toString('hex'))).toEqual(['aa'.repeat(100), 'bb'.repeat(100)]);
  });

  it('arbitrary garbage never throws and never makes the decoder hold more than header + limit', () => {
    const limit = 256;
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.uint8Array({ maxLength: 400 }),
            message.map((m) => encodeFrame(m.type, m.payload)),
          ),
          {
            maxLength: 20,
          },
        ),
        (chunks) => {
          const d = new FrameDecoder(limit);
          for (const c of chunks) {
            d.push(c);
            let f = d.next();
            while (f !== null && !(f instanceof TickstreamError)) f = d.next();
            expect(d.bufferedBytes).toBeLessThanOrEqual(HEADER_BYTES + limit);
            if (f instanceof TickstreamError) {
              expect(f.code).toMatch(/^ERR_FRAME_/);
              break;
            }
          }
          const end = d.end();
          expect(end === null || end instanceof TickstreamError).toBe(true);
        },
      ),
    );
  });

  const good = encodeFrame(MessageType.HEARTBEAT, Buffer.alloc(16, 1));
  const codeOf = (bytes: Uint8Array, max?: number) => decodeAll([bytes], max).error?.code;

  it('garbage bytes: ERR_FRAME_MAGIC', () =>
    expect(codeOf(Buffer.from('GET / HTTP/1.1\r\n\r\n'))).toBe(ErrorCode.FRAME_MAGIC));

  it('unknown version: ERR_FRAME_VERSION', () => {
    const b = Buffer.from(good);
    b[2] = 9;
    expect(codeOf(b)).toBe(ErrorCode.FRAME_VERSION);
  });

  it('unknown type: ERR_FRAME_TYPE', () => {
    for (const t of [0, 11, 200]) {
      const b = Buffer.from(good);
      b[3] = t;
      expect(codeOf(b)).toBe(ErrorCode.FRAME_TYPE);
    }
  });

  it('length over the limit: ERR_FRAME_TOO_LARGE from the header alone, nothing buffered', () => {
    const d = new FrameDecoder(1024);
    d.push(encodeFrame(MessageType.TICKS, Buffer.alloc(2000)).subarray(0, HEADER_BYTES));
    const r = d.next();
    expect(r).toBeInstanceOf(TickstreamError);
    expect((r as TickstreamError).code).toBe(ErrorCode.FRAME_TOO_LARGE);
    expect((r as TickstreamError).message).toMatch(/2000 bytes is over the limit of 1024/);
    expect(d.bufferedBytes).toBe(0);
    // A length at the limit is fine.
    expect(decodeAll([encodeFrame(MessageType.TICKS, Buffer.alloc(1024))], 1024).frames).toHaveLength(1);
  });

  it('a 4 GiB declared length split across chunks: ERR_FRAME_TOO_LARGE, not an allocation', () => {
    const head = Buffer.from(good.subarray(0, HEADER_BYTES));
    head.writeUInt32LE(0xffffffff, 4);
    expect(decodeAll(splitAt(head, [3, 7])).error?.code).toBe(ErrorCode.FRAME_TOO_LARGE);
  });

  it('wrong checksum: ERR_FRAME_CRC, whether the payload or the header was hit', () => {
    const payloadHit = Buffer.from(good);
    payloadHit.writeUInt8(payloadHit.readUInt8(HEADER_BYTES + 3) ^ 0xff, HEADER_BYTES + 3);
    expect(codeOf(payloadHit)).toBe(ErrorCode.FRAME_CRC);
    const crcHit = Buffer.from(good);
    crcHit.writeUInt8(crcHit.readUInt8(9) ^ 0x01, 9);
    expect(codeOf(crcHit)).toBe(ErrorCode.FRAME_CRC);
    const typeHit = Buffer.from(good);
    typeHit[3] = MessageType.ACK; // still a known type: only the CRC over the header catches it
    expect(codeOf(typeHit)).toBe(ErrorCode.FRAME_CRC);
  });

  it('truncated frame: waits for the rest, holding only that frame', () => {
    const d = new FrameDecoder();
    d.push(good.subarray(0, good.length - 3));
    expect(d.next()).toBeNull();
    expect(d.bufferedBytes).toBe(good.length - 3);
    d.push(good.subarray(good.length - 3));
    expect((d.next() as Frame).type).toBe(MessageType.HEARTBEAT);
    expect(d.bufferedBytes).toBe(0);
  });

  it('truncated frame at end of stream: ERR_FRAME_TRUNCATED from end()', () => {
    expect(codeOf(good.subarray(0, 5))).toBe(ErrorCode.FRAME_TRUNCATED);
    expect(codeOf(good.subarray(0, good.length - 1))).toBe(ErrorCode.FRAME_TRUNCATED);
    expect(codeOf(good)).toBeUndefined();
  });

  it('after an error every later call returns the same error', () => {
    const d = new FrameDecoder();
    d.push(Buffer.from('xxxxxxxxxxxxxxxx'));
    const e = d.next();
    d.push(good);
    expect(d.next()).toBe(e);
    expect(d.end()).toBe(e);
  });

  it('push() before the previous chunk was drained is refused, not a silent loss', () => {
    const d = new FrameDecoder();
    d.push(Buffer.concat([good, good]));
    expect(d.next()).not.toBeNull();
    d.push(good);
    expect((d.next() as TickstreamError).code).toBe(ErrorCode.INTERNAL);
  });
});
