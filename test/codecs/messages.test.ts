import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ErrorCode, type TickstreamError } from '../../codecs/errors.js';
import * as m from '../../codecs/messages.js';

const seq = fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER });
const ms = fc.integer({ min: -(2 ** 50), max: 2 ** 50 });
const sourceId = fc.stringMatching(/^[A-Za-z0-9._-]{1,64}$/);
// Symbol names are 1-64 bytes of UTF-8: ASCII and a few multi-byte characters.
const symbolName = fc.oneof(
  fc.string({ minLength: 1, maxLength: 64 }),
  fc.constantFrom('EURUSD.r', 'US30#', 'DAX40€', '日経225'),
);
const code = (r: unknown) => (r as TickstreamError).code;

describe('message payloads round-trip', () => {
  it('CHALLENGE', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.integer({ min: 1, max: 255 }),
        (nonce, v) => {
          const msg = { nonce, minVersion: 1, maxVersion: v };
          expect(m.decodeChallenge(m.encodeChallenge(msg))).toEqual(msg);
        },
      ),
    );
    const nonce = new Uint8Array(32);
    expect(m.decodeChallenge(m.encodeChallenge({ nonce }))).toEqual({ nonce, minVersion: 1, maxVersion: 1 });
  });

  it('HELLO', () => {
    fc.assert(
      fc.property(
        sourceId,
        fc.constantFrom(60, 52),
        fc.nat(2 ** 32 - 1),
        ms,
        ms,
        fc.array(symbolName, { maxLength: 50 }),
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        (source, structSize, terminalBuild, serverTimeMs, gmtTimeMs, symbols, proof) => {
          const hello = { source, structSize, terminalBuild, serverTimeMs, gmtTimeMs, symbols, proof };
          expect(m.decodeHello(m.encodeHello(hello))).toEqual(hello);
        },
      ),
    );
  });

  it('HELLO_ACK', () => {
    const cursor = fc.record({ symbol: symbolName, lastMsc: ms, countAtMsc: fc.nat(2 ** 32 - 1) });
    fc.assert(
      fc.property(
        seq,
        seq,
        fc.array(fc.nat(2 ** 32 - 1), { minLength: 4, maxLength: 4 }),
        fc.nat(65535),
        fc.array(cursor, { maxLength: 30 }),
        (nextSeq, creditLimit, [a, b, c, d], maxSymbols, cursors) => {
          const ack = {
            nextSeq,
            creditLimit,
            heartbeatIntervalMs: a as number,
            heartbeatTimeoutMs: b as number,
            maxFrameBytes: c as number,
            maxTicksPerFrame: d as number,
            maxSymbols,
            cursors,
          };
          expect(m.decodeHelloAck(m.encodeHelloAck(ack))).toEqual(ack);
        },
      ),
    );
  });

  it('SYMBOLS', () => {
    const def = fc.record({ id: fc.nat(65535), digits: fc.nat(255), name: symbolName });
    fc.assert(
      fc.property(fc.uniqueArray(def, { selector: (d) => d.id, maxLength: 40 }), (defs) => {
        expect(m.decodeSymbols(m.encodeSymbols(defs))).toEqual(defs);
      }),
    );
  });

  it('TICKS header', () => {
    fc.assert(
      fc.property(
        fc.nat(65535),
        seq,
        fc.integer({ min: 1, max: 20 }),
        fc.constantFrom(60, 52),
        (id, first, n, size) => {
          fc.pre(first <= Number.MAX_SAFE_INTEGER - n + 1);
          const p = m.encodeTicks({ symbolId: id, firstSeq: first, count: n }, new Uint8Array(n * size));
          expect(m.decodeTicksHeader(p, size)).toEqual({ symbolId: id, firstSeq: first, count: n });
        },
      ),
    );
  });

  it('HEARTBEAT, ACK, RESEND', () => {
    fc.assert(
      fc.property(seq, seq, ms, ms, (a, b, t1, t2) => {
        const hb = { serverTimeMs: t1, gmtTimeMs: t2 };
        expect(m.decodeHeartbeat(m.encodeHeartbeat(hb))).toEqual(hb);
        expect(m.decodeAck(m.encodeAck({ ackedSeq: a, creditLimit: b }))).toEqual({
          ackedSeq: a,
          creditLimit: b,
        });
        expect(m.decodeAck(m.encodeAck({ ackedSeq: 0, creditLimit: b }))).toEqual({
          ackedSeq: 0,
          creditLimit: b,
        });
        expect(m.decodeResend(m.encodeResend(a))).toBe(a);
      }),
    );
  });

  it('ERROR (every code, by its fixed wire number) and BYE', () => {
    const all = Object.values(ErrorCode);
    fc.assert(
      fc.property(fc.constantFrom(...all), fc.string({ maxLength: 200 }), (c, message) => {
        expect(m.decodeError(m.encodeError({ code: c, message }))).toEqual({ code: c, message });
        expect(m.decodeBye(m.encodeBye(message))).toBe(message);
      }),
    );
    // Wire numbers are unique, dense from 0 and cover every code.
    expect(Object.values(m.ERROR_WIRE_CODES).sort((a, b) => a - b)).toEqual(all.map((_, i) => i));
    expect(m.encodeError({ code: ErrorCode.AUTH, message: '' }).readUInt16LE(0)).toBe(14);
    // Long texts are cut, not refused.
    expect((m.decodeBye(m.encodeBye('x'.repeat(5000))) as string).length).toBe(m.MAX_TEXT_CHARS);
  });
});

describe('bad payloads get named errors, never throws', () => {
  const hello = {
    source: 'src1',
    structSize: 60,
    terminalBuild: 4000,
    serverTimeMs: 0,
    gmtTimeMs: 0,
    symbols: ['EURUSD'],
    proof: new Uint8Array(32),
  };

  it('struct size neither 60 nor 52: ERR_STRUCT_SIZE', () => {
    for (const structSize of [0, 56, 64, 61])
      expect(code(m.decodeHello(m.encodeHello({ ...hello, structSize })))).toBe(ErrorCode.STRUCT_SIZE);
  });

  it('bad source id or symbol name: ERR_FRAME_PAYLOAD', () => {
    for (const source of ['', 'has space', 'x'.repeat(65), 'é'])
      expect(code(m.decodeHello(m.encodeHello({ ...hello, source })))).toBe(ErrorCode.FRAME_PAYLOAD);
    for (const name of ['', 'x'.repeat(65)]) {
      expect(code(m.decodeHello(m.encodeHello({ ...hello, symbols: [name] })))).toBe(ErrorCode.FRAME_PAYLOAD);
      expect(code(m.decodeSymbols(m.encodeSymbols([{ id: 1, digits: 5, name }])))).toBe(
        ErrorCode.FRAME_PAYLOAD,
      );
    }
  });

  it('too many symbols: ERR_LIMIT', () => {
    const symbols = ['A', 'B', 'C'];
    expect(code(m.decodeHello(m.encodeHello({ ...hello, symbols }), 2))).toBe(ErrorCode.LIMIT);
    const defs = symbols.map((name, id) => ({ id, digits: 2, name }));
    expect(code(m.decodeSymbols(m.encodeSymbols(defs), 2))).toBe(ErrorCode.LIMIT);
  });

  it('the same symbol id twice in one SYMBOLS: ERR_FRAME_PAYLOAD', () => {
    const p = m.encodeSymbols([
      { id: 1, digits: 5, name: 'EURUSD' },
      { id: 1, digits: 5, name: 'GBPUSD' },
    ]);
    expect(code(m.decodeSymbols(p))).toBe(ErrorCode.FRAME_PAYLOAD);
  });

  it('TICKS count that disagrees with the length: ERR_TICK_COUNT', () => {
    const p = m.encodeTicks({ symbolId: 1, firstSeq: 1, count: 3 }, Buffer.alloc(120));
    const r = m.decodeTicksHeader(p, 60);
    expect(code(r)).toBe(ErrorCode.TICK_COUNT);
    expect((r as TickstreamError).message).toMatch(/says 3 ticks .* carries 120/);
    // 2 ticks of 60 bytes are not 2 ticks of 52.
    const two = m.encodeTicks({ symbolId: 1, firstSeq: 1, count: 2 }, Buffer.alloc(120));
    expect(code(m.decodeTicksHeader(two, 52))).toBe(ErrorCode.TICK_COUNT);
    expect(
      code(m.decodeTicksHeader(m.encodeTicks({ symbolId: 1, firstSeq: 1, count: 0 }, Buffer.alloc(0)), 60)),
    ).toBe(ErrorCode.TICK_COUNT);
  });

  it('TICKS seq 0 or past 2^53: ERR_TICK_VALUE', () => {
    const at = (firstSeq: number) => m.encodeTicks({ symbolId: 1, firstSeq, count: 1 }, Buffer.alloc(60));
    expect(code(m.decodeTicksHeader(at(0), 60))).toBe(ErrorCode.TICK_VALUE);
    expect(code(m.decodeTicksHeader(at(Number.MAX_SAFE_INTEGER), 60))).not.toBeDefined();
    const p = Buffer.from(at(1));
    p.writeUInt32LE(0x00200000, 6); // hi word: first seq 2^53 + 1
    expect(code(m.decodeTicksHeader(p, 60))).toBe(ErrorCode.TICK_VALUE);
  });

  it('unknown symbol id, given the session symbol table: ERR_UNKNOWN_SYMBOL', () => {
    const table = new Map([[1, 'EURUSD']]);
    const p = (symbolId: number) => m.encodeTicks({ symbolId, firstSeq: 1, count: 1 }, Buffer.alloc(60));
    expect(m.decodeTicksHeader(p(1), 60, table)).toEqual({ symbolId: 1, firstSeq: 1, count: 1 });
    const r = m.decodeTicksHeader(p(7), 60, table);
    expect(code(r)).toBe(ErrorCode.UNKNOWN_SYMBOL);
    expect((r as TickstreamError).message).toMatch(/symbol id 7/);
  });

  it('truncated payload: ERR_FRAME_PAYLOAD naming the field', () => {
    const r = m.decodeHello(m.encodeHello(hello).subarray(0, 10));
    expect(code(r)).toBe(ErrorCode.FRAME_PAYLOAD);
    expect((r as TickstreamError).message).toMatch(/ends inside/);
  });

  it('trailing bytes: ERR_FRAME_PAYLOAD', () => {
    expect(code(m.decodeAck(Buffer.alloc(17)))).toBe(ErrorCode.FRAME_PAYLOAD);
    expect(
      code(
        m.decodeChallenge(Buffer.concat([m.encodeChallenge({ nonce: new Uint8Array(32) }), Buffer.of(0)])),
      ),
    ).toBe(ErrorCode.FRAME_PAYLOAD);
  });

  it('an empty CHALLENGE version range: ERR_FRAME_PAYLOAD', () => {
    const nonce = new Uint8Array(32);
    expect(code(m.decodeChallenge(m.encodeChallenge({ nonce, minVersion: 2, maxVersion: 1 })))).toBe(
      ErrorCode.FRAME_PAYLOAD,
    );
  });

  it('seq past 2^53: ERR_TICK_VALUE; a time past ±2^53: ERR_FRAME_PAYLOAD', () => {
    expect(code(m.decodeAck(Buffer.alloc(16, 0xff)))).toBe(ErrorCode.TICK_VALUE);
    const hb = Buffer.alloc(16);
    hb.writeBigInt64LE(2n ** 60n, 0);
    expect(code(m.decodeHeartbeat(hb))).toBe(ErrorCode.FRAME_PAYLOAD);
  });

  it('an ERROR code number this side does not know: ERR_INTERNAL, number kept in the message', () => {
    const p = Buffer.from(m.encodeError({ code: ErrorCode.AUTH, message: 'x' }));
    p.writeUInt16LE(999, 0);
    expect(m.decodeError(p)).toEqual({ code: ErrorCode.INTERNAL, message: '(error 999) x' });
  });

  it('arbitrary bytes never throw from any decoder', () => {
    const decoders = [
      (p: Uint8Array) => m.decodeHello(p),
      m.decodeHelloAck,
      (p: Uint8Array) => m.decodeSymbols(p),
      m.decodeHeartbeat,
      m.decodeAck,
      m.decodeResend,
      m.decodeError,
      m.decodeBye,
      m.decodeChallenge,
      (p: Uint8Array) => m.decodeTicksHeader(p, 60, new Map()),
    ];
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        for (const d of decoders) expect(() => d(bytes)).not.toThrow();
      }),
    );
  });
});

describe('mergeSymbols (a session symbol table)', () => {
  const def = (id: number, name: string) => ({ id, digits: 5, name });

  it('adds, accepts repeats, and refuses remapping an id or a name without a partial apply', () => {
    const table = new Map<number, string>();
    expect(m.mergeSymbols(table, [def(1, 'EURUSD'), def(2, 'GBPUSD')], 10)).toBeNull();
    expect(m.mergeSymbols(table, [def(1, 'EURUSD'), def(3, 'USDJPY')], 10)).toBeNull();
    expect([...table]).toEqual([
      [1, 'EURUSD'],
      [2, 'GBPUSD'],
      [3, 'USDJPY'],
    ]);
    expect(code(m.mergeSymbols(table, [def(4, 'XAUUSD'), def(1, 'AUDUSD')], 10))).toBe(
      ErrorCode.PROTOCOL_STATE,
    );
    expect(code(m.mergeSymbols(table, [def(9, 'EURUSD')], 10))).toBe(ErrorCode.PROTOCOL_STATE);
    expect(table.size).toBe(3);
  });

  it('refuses growing past the limit: ERR_LIMIT', () => {
    const table = new Map([[1, 'EURUSD']]);
    expect(code(m.mergeSymbols(table, [def(2, 'A'), def(3, 'B')], 2))).toBe(ErrorCode.LIMIT);
    expect(table.size).toBe(1);
    expect(m.mergeSymbols(table, [def(2, 'A'), def(1, 'EURUSD')], 2)).toBeNull();
  });
});
