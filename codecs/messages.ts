/**
 * Payloads of every message (docs/protocol.md §3). Little-endian; `str` is a u16 byte length
 * then UTF-8; `u64` seqs are read as two u32 halves and must stay below 2^53.
 *
 *   CHALLENGE  u8 nonce[32], u8 min_version, u8 max_version
 *   HELLO      str source, u16 struct_size (60|52), u32 terminal_build, i64 server_time_ms,
 *              i64 gmt_time_ms, u16 n, str symbol × n, u8 proof[32]
 *                (proof = HMAC-SHA256(secret, nonce ‖ utf8(source)))
 *   HELLO_ACK  u64 next_seq, u64 credit_limit, u32 heartbeat_interval_ms, u32 heartbeat_timeout_ms,
 *              u32 max_frame_bytes, u32 max_ticks_per_frame, u16 max_symbols,
 *              u16 n, { str symbol, i64 last_msc, u32 count_at_msc } × n
 *   SYMBOLS    u16 n, { u16 id, u8 digits, str name } × n
 *   TICKS      u16 symbol_id, u64 first_seq, u32 count (≥ 1), MqlTick × count (struct_size bytes each)
 *   HEARTBEAT  i64 server_time_ms, i64 gmt_time_ms
 *   ACK        u64 acked_seq (highest contiguous seq durable in Kafka; 0 = none), u64 credit_limit
 *   RESEND     u64 from_seq
 *   ERROR      u16 code (ERROR_WIRE_CODES), str message
 *   BYE        str reason
 * `credit_limit` is exclusive: the EA may send ticks with seq < credit_limit. A source id is 1-64
 * bytes of [A-Za-z0-9._-]; a symbol name 1-64 bytes of UTF-8 without control characters.
 */
import { ErrorCode, TickstreamError } from './errors.js';
import { MAX_PROTOCOL_VERSION, MessageType, MIN_PROTOCOL_VERSION } from './frame.js';

export const NONCE_BYTES = 32;
export const PROOF_BYTES = 32;
export const TICKS_HEADER_BYTES = 14;
export const MAX_SEQ = Number.MAX_SAFE_INTEGER;
export const MAX_NAME_BYTES = 64;
/** ERROR messages and BYE reasons are cut to this many characters when encoded. */
export const MAX_TEXT_CHARS = 1000;

/**
 * The u16 an ERROR frame carries for each code (docs/protocol.md §7). Fixed numbers, never
 * reused: a code added to errors.ts fails to compile here until it gets the next free number
 * (and a line in the protocol document).
 */
export const ERROR_WIRE_CODES = {
  ERR_FRAME_MAGIC: 0,
  ERR_FRAME_VERSION: 1,
  ERR_FRAME_TYPE: 2,
  ERR_FRAME_TOO_LARGE: 3,
  ERR_FRAME_TRUNCATED: 4,
  ERR_FRAME_CRC: 5,
  ERR_FRAME_PAYLOAD: 6,
  ERR_STRUCT_SIZE: 7,
  ERR_TICK_COUNT: 8,
  ERR_TICK_VALUE: 9,
  ERR_UNKNOWN_SYMBOL: 10,
  ERR_LIMIT: 11,
  ERR_SEQ_GAP: 12,
  ERR_PROTOCOL_STATE: 13,
  ERR_AUTH: 14,
  ERR_HANDSHAKE_TIMEOUT: 15,
  ERR_HEARTBEAT_TIMEOUT: 16,
  ERR_SOURCE_REPLACED: 17,
  ERR_TOO_MANY_CONNECTIONS: 18,
  ERR_RATE_LIMIT: 19,
  ERR_SHUTTING_DOWN: 20,
  ERR_FILE_FORMAT: 21,
  ERR_FILE_ENCODING: 22,
  ERR_FILE_EMPTY: 23,
  ERR_TIME_ZONE: 24,
  ERR_CONFIG: 25,
  ERR_KAFKA: 26,
  ERR_REDIS: 27,
  ERR_POSTGRES: 28,
  ERR_NATIVE_ADDON: 29,
  ERR_INTERNAL: 30,
  ERR_USAGE: 31,
  ERR_SOURCE_FENCED: 32,
} as const satisfies Record<ErrorCode, number>;

const codeByWire = new Map<number, ErrorCode>(
  Object.entries(ERROR_WIRE_CODES).map(([code, n]) => [n, code as ErrorCode]),
);

export interface Challenge {
  nonce: Uint8Array;
  /** The protocol versions the bridge accepts; the EA uses the highest it also speaks. */
  minVersion: number;
  maxVersion: number;
}
export interface Hello {
  source: string;
  structSize: number;
  terminalBuild: number;
  serverTimeMs: number;
  gmtTimeMs: number;
  symbols: string[];
  proof: Uint8Array;
}
export interface SymbolCursor {
  symbol: string;
  lastMsc: number;
  countAtMsc: number;
}
export interface HelloAck {
  nextSeq: number;
  creditLimit: number;
  heartbeatIntervalMs: number;
  heartbeatTimeoutMs: number;
  maxFrameBytes: number;
  maxTicksPerFrame: number;
  maxSymbols: number;
  cursors: SymbolCursor[];
}
export interface SymbolDef {
  id: number;
  digits: number;
  name: string;
}
export interface TicksHeader {
  symbolId: number;
  firstSeq: number;
  count: number;
}
export interface Heartbeat {
  serverTimeMs: number;
  gmtTimeMs: number;
}
export interface Ack {
  ackedSeq: number;
  creditLimit: number;
}
export interface ErrorMessage {
  code: ErrorCode;
  message: string;
}

class Writer {
  #buf = Buffer.allocUnsafe(256);
  #len = 0;
  #room(n: number): void {
    if (this.#len + n <= this.#buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.#buf.length * 2, this.#len + n));
    this.#buf.copy(grown, 0, 0, this.#len);
    this.#buf = grown;
  }
  u8(v: number): this {
    this.#room(1);
    this.#buf[this.#len++] = v;
    return this;
  }
  u16(v: number): this {
    this.#room(2);
    this.#len = this.#buf.writeUInt16LE(v, this.#len);
    return this;
  }
  u32(v: number): this {
    this.#room(4);
    this.#len = this.#buf.writeUInt32LE(v, this.#len);
    return this;
  }
  u64(v: number): this {
    this.#room(8);
    this.#len = this.#buf.writeUInt32LE(v % 2 ** 32, this.#len);
    this.#len = this.#buf.writeUInt32LE(Math.floor(v / 2 ** 32), this.#len);
    return this;
  }
  i64(v: number): this {
    this.#room(8);
    this.#len = this.#buf.writeBigInt64LE(BigInt(Math.trunc(v)), this.#len);
    return this;
  }
  bytes(b: Uint8Array): this {
    this.#room(b.length);
    this.#buf.set(b, this.#len);
    this.#len += b.length;
    return this;
  }
  str(s: string): this {
    const b = Buffer.from(s, 'utf8');
    if (b.length > 0xffff)
      throw new TickstreamError(ErrorCode.LIMIT, `string of ${b.length} bytes is too long for the protocol`);
    return this.u16(b.length).bytes(b);
  }
  done(): Buffer {
    return this.#buf.subarray(0, this.#len);
  }
}

/** Reads a payload; any overrun or bad value throws ERR_FRAME_PAYLOAD, caught by `decode`. */
class Reader {
  readonly #b: Buffer;
  #o = 0;
  constructor(payload: Uint8Array) {
    this.#b = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  }
  #need(n: number, what: string): void {
    if (this.#o + n > this.#b.length)
      throw new TickstreamError(ErrorCode.FRAME_PAYLOAD, `payload ends inside ${what}`);
  }
  u8(what: string): number {
    this.#need(1, what);
    return this.#b[this.#o++] as number;
  }
  u16(what: string): number {
    this.#need(2, what);
    const v = this.#b.readUInt16LE(this.#o);
    this.#o += 2;
    return v;
  }
  u32(what: string): number {
    this.#need(4, what);
    const v = this.#b.readUInt32LE(this.#o);
    this.#o += 4;
    return v;
  }
  u64(what: string): number {
    this.#need(8, what);
    const lo = this.#b.readUInt32LE(this.#o);
    const hi = this.#b.readUInt32LE(this.#o + 4);
    this.#o += 8;
    const v = hi * 2 ** 32 + lo;
    if (v > MAX_SEQ) throw new TickstreamError(ErrorCode.TICK_VALUE, `${what} ${v} is past 2^53`);
    return v;
  }
  i64(what: string): number {
    this.#need(8, what);
    const v = Number(this.#b.readBigInt64LE(this.#o));
    this.#o += 8;
    if (!Number.isSafeInteger(v))
      throw new TickstreamError(ErrorCode.FRAME_PAYLOAD, `${what} ${v} is outside ±2^53`);
    return v;
  }
  bytes(n: number, what: string): Uint8Array {
    this.#need(n, what);
    const v = new Uint8Array(this.#b.subarray(this.#o, this.#o + n));
    this.#o += n;
    return v;
  }
  str(what: string): string {
    const n = this.u16(what);
    this.#need(n, what);
    const v = this.#b.toString('utf8', this.#o, this.#o + n);
    // Control characters (NUL among them) are no part of a name, and Postgres text refuses NUL.
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the point is to find them
    if (/[\u0000-\u001f\u007f]/.test(v))
      throw new TickstreamError(
        ErrorCode.FRAME_PAYLOAD,
        `${what} ${JSON.stringify(v)} contains control characters`,
      );
    this.#o += n;
    return v;
  }
  /** A symbol name: 1 to MAX_NAME_BYTES bytes of UTF-8. */
  name(what: string): string {
    const n = this.u16(what);
    if (n === 0 || n > MAX_NAME_BYTES)
      throw new TickstreamError(
        ErrorCode.FRAME_PAYLOAD,
        `${what} of ${n} bytes (must be 1-${MAX_NAME_BYTES})`,
      );
    this.#need(n, what);
    const v = this.#b.toString('utf8', this.#o, this.#o + n);
    // Control characters (NUL among them) are no part of a name, and Postgres text refuses NUL.
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the point is to find them
    if (/[\u0000-\u001f\u007f]/.test(v))
      throw new TickstreamError(
        ErrorCode.FRAME_PAYLOAD,
        `${what} ${JSON.stringify(v)} contains control characters`,
      );
    this.#o += n;
    return v;
  }
  end(what: string): void {
    if (this.#o !== this.#b.length) {
      throw new TickstreamError(
        ErrorCode.FRAME_PAYLOAD,
        `${what} payload has ${this.#b.length - this.#o} bytes past its end`,
      );
    }
  }
}

/** CHALLENGE; the version range defaults to what this code speaks. */
export const encodeChallenge = (m: Pick<Challenge, 'nonce'> & Partial<Challenge>) =>
  new Writer()
    .bytes(m.nonce)
    .u8(m.minVersion ?? MIN_PROTOCOL_VERSION)
    .u8(m.maxVersion ?? MAX_PROTOCOL_VERSION)
    .done();

export function encodeHello(m: Hello): Buffer {
  const w = new Writer()
    .str(m.source)
    .u16(m.structSize)
    .u32(m.terminalBuild)
    .i64(m.serverTimeMs)
    .i64(m.gmtTimeMs)
    .u16(m.symbols.length);
  for (const s of m.symbols) w.str(s);
  return w.bytes(m.proof).done();
}

export function encodeHelloAck(m: HelloAck): Buffer {
  const w = new Writer()
    .u64(m.nextSeq)
    .u64(m.creditLimit)
    .u32(m.heartbeatIntervalMs)
    .u32(m.heartbeatTimeoutMs)
    .u32(m.maxFrameBytes)
    .u32(m.maxTicksPerFrame)
    .u16(m.maxSymbols)
    .u16(m.cursors.length);
  for (const c of m.cursors) w.str(c.symbol).i64(c.lastMsc).u32(c.countAtMsc);
  return w.done();
}

export function encodeSymbols(symbols: SymbolDef[]): Buffer {
  const w = new Writer().u16(symbols.length);
  for (const s of symbols) w.u16(s.id).u8(s.digits).str(s.name);
  return w.done();
}

/** TICKS payload: the header, then the packed MqlTick structs (see ticks.ts for their layout). */
export function encodeTicks(h: TicksHeader, structs: Uint8Array): Buffer {
  return new Writer().u16(h.symbolId).u64(h.firstSeq).u32(h.count).bytes(structs).done();
}

export const encodeHeartbeat = (m: Heartbeat) => new Writer().i64(m.serverTimeMs).i64(m.gmtTimeMs).done();
export const encodeAck = (m: Ack) => new Writer().u64(m.ackedSeq).u64(m.creditLimit).done();
export const encodeResend = (fromSeq: number) => new Writer().u64(fromSeq).done();
export const encodeError = (m: ErrorMessage) =>
  new Writer().u16(ERROR_WIRE_CODES[m.code]).str(m.message.slice(0, MAX_TEXT_CHARS)).done();
export const encodeBye = (reason: string) => new Writer().str(reason.slice(0, MAX_TEXT_CHARS)).done();

/** Runs a payload decoder; malformed payloads come back as an error, never a throw. */
function decode<T>(what: string, payload: Uint8Array, read: (r: Reader) => T): T | TickstreamError {
  try {
    const r = new Reader(payload);
    const v = read(r);
    r.end(what);
    return v;
  } catch (err) {
    if (err instanceof TickstreamError) return err;
    return new TickstreamError(
      ErrorCode.FRAME_PAYLOAD,
      `malformed ${what} payload: ${(err as Error).message}`,
    );
  }
}

export function decodeChallenge(p: Uint8Array): Challenge | TickstreamError {
  return decode('CHALLENGE', p, (r) => {
    const m = {
      nonce: r.bytes(NONCE_BYTES, 'nonce'),
      minVersion: r.u8('min version'),
      maxVersion: r.u8('max version'),
    };
    if (m.minVersion < 1 || m.minVersion > m.maxVersion)
      throw new TickstreamError(
        ErrorCode.FRAME_PAYLOAD,
        `CHALLENGE version range ${m.minVersion}-${m.maxVersion} is empty`,
      );
    return m;
  });
}

export function decodeHello(p: Uint8Array, maxSymbols = 4096): Hello | TickstreamError {
  return decode('HELLO', p, (r) => {
    const source = r.str('source');
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(source)) {
      throw new TickstreamError(
        ErrorCode.FRAME_PAYLOAD,
        `source id ${JSON.stringify(source.slice(0, 80))} must be 1-64 of A-Z a-z 0-9 . _ -`,
      );
    }
    const structSize = r.u16('struct size');
    if (structSize !== 60 && structSize !== 52) {
      throw new TickstreamError(
        ErrorCode.STRUCT_SIZE,
        `MqlTick struct size ${structSize} is neither 60 (current terminals) nor 52 (builds without volume_real)`,
      );
    }
    const terminalBuild = r.u32('terminal build');
    const serverTimeMs = r.i64('server time');
    const gmtTimeMs = r.i64('GMT time');
    const n = r.u16('symbol count');
    if (n > maxSymbols)
      throw new TickstreamError(ErrorCode.LIMIT, `HELLO lists ${n} symbols; the limit is ${maxSymbols}`);
    const symbols: string[] = [];
    for (let i = 0; i < n; i++) symbols.push(r.name('symbol name'));
    return {
      source,
      structSize,
      terminalBuild,
      serverTimeMs,
      gmtTimeMs,
      symbols,
      proof: r.bytes(PROOF_BYTES, 'proof'),
    };
  });
}

export function decodeHelloAck(p: Uint8Array): HelloAck | TickstreamError {
  return decode('HELLO_ACK', p, (r) => {
    const m = {
      nextSeq: r.u64('next seq'),
      creditLimit: r.u64('credit limit'),
      heartbeatIntervalMs: r.u32('heartbeat interval'),
      heartbeatTimeoutMs: r.u32('heartbeat timeout'),
      maxFrameBytes: r.u32('max frame bytes'),
      maxTicksPerFrame: r.u32('max ticks per frame'),
      maxSymbols: r.u16('max symbols'),
      cursors: [] as SymbolCursor[],
    };
    const n = r.u16('cursor count');
    for (let i = 0; i < n; i++)
      m.cursors.push({
        symbol: r.name('symbol name'),
        lastMsc: r.i64('last msc'),
        countAtMsc: r.u32('count'),
      });
    return m;
  });
}

export function decodeSymbols(p: Uint8Array, maxSymbols = 0xffff): SymbolDef[] | TickstreamError {
  return decode('SYMBOLS', p, (r) => {
    const n = r.u16('symbol count');
    if (n > maxSymbols)
      throw new TickstreamError(ErrorCode.LIMIT, `SYMBOLS lists ${n} symbols; the limit is ${maxSymbols}`);
    const out: SymbolDef[] = [];
    const seen = new Set<number>();
    for (let i = 0; i < n; i++) {
      const id = r.u16('symbol id');
      const digits = r.u8('digits');
      const name = r.name('symbol name');
      if (seen.has(id))
        throw new TickstreamError(ErrorCode.FRAME_PAYLOAD, `SYMBOLS defines symbol id ${id} twice`);
      seen.add(id);
      out.push({ id, digits, name });
    }
    return out;
  });
}

/**
 * Adds a SYMBOLS message to a session's table (id → name), all or nothing. An id keeps its
 * name for the whole session and a name keeps its id (per-symbol resume cursors depend on it):
 * redefining either is ERR_PROTOCOL_STATE; repeating a definition is allowed. Growing past
 * `maxSymbols` is ERR_LIMIT.
 */
export function mergeSymbols(
  table: Map<number, string>,
  defs: readonly SymbolDef[],
  maxSymbols: number,
): TickstreamError | null {
  const ids = new Map<string, number>();
  for (const [id, name] of table) ids.set(name, id);
  let added = 0;
  for (const d of defs) {
    const name = table.get(d.id);
    const id = ids.get(d.name);
    if (name === d.name) continue;
    if (name !== undefined || id !== undefined) {
      return new TickstreamError(
        ErrorCode.PROTOCOL_STATE,
        name !== undefined
          ? `symbol id ${d.id} is ${JSON.stringify(name)} in this session; it cannot become ${JSON.stringify(d.name)}`
          : `symbol ${JSON.stringify(d.name)} has id ${id} in this session; it cannot also be id ${d.id}`,
      );
    }
    ids.set(d.name, d.id);
    added++;
  }
  if (table.size + added > maxSymbols)
    return new TickstreamError(
      ErrorCode.LIMIT,
      `${table.size + added} symbols in one session is over the limit of ${maxSymbols}`,
    );
  for (const d of defs) table.set(d.id, d.name);
  return null;
}

/**
 * Reads only the TICKS header (the bridge's main thread); the structs are left to the workers.
 * Checks that the length matches `count` structs and, given the session's symbol table, that
 * the symbol id was defined by SYMBOLS (ERR_UNKNOWN_SYMBOL).
 */
export function decodeTicksHeader(
  p: Uint8Array,
  structSize: number,
  symbols?: ReadonlyMap<number, string>,
): TicksHeader | TickstreamError {
  if (p.length < TICKS_HEADER_BYTES)
    return new TickstreamError(
      ErrorCode.FRAME_PAYLOAD,
      `TICKS payload of ${p.length} bytes is shorter than its ${TICKS_HEADER_BYTES}-byte header`,
    );
  const v = new DataView(p.buffer, p.byteOffset, p.byteLength);
  const seqHi = v.getUint32(6, true);
  const h = {
    symbolId: v.getUint16(0, true),
    firstSeq: v.getUint32(2, true) + seqHi * 2 ** 32,
    count: v.getUint32(10, true),
  };
  if (h.count === 0)
    return new TickstreamError(ErrorCode.TICK_COUNT, 'TICKS with a count of 0: send at least one tick');
  // The high word first: past 2^53 the double sum rounds and could slip under the bound.
  if (seqHi >= 2 ** 21 || h.firstSeq < 1 || h.firstSeq > MAX_SEQ - h.count + 1)
    return new TickstreamError(
      ErrorCode.TICK_VALUE,
      `TICKS first seq ${h.firstSeq} is out of range (1 to 2^53)`,
    );
  if (p.length !== TICKS_HEADER_BYTES + h.count * structSize) {
    return new TickstreamError(
      ErrorCode.TICK_COUNT,
      `TICKS says ${h.count} ticks of ${structSize} bytes (${h.count * structSize} bytes) but carries ${p.length - TICKS_HEADER_BYTES}`,
    );
  }
  if (symbols !== undefined && !symbols.has(h.symbolId))
    return new TickstreamError(
      ErrorCode.UNKNOWN_SYMBOL,
      `TICKS for symbol id ${h.symbolId}, which no SYMBOLS message of this session defined: send SYMBOLS first`,
    );
  return h;
}

export const decodeHeartbeat = (p: Uint8Array) =>
  decode('HEARTBEAT', p, (r) => ({ serverTimeMs: r.i64('server time'), gmtTimeMs: r.i64('GMT time') }));
export const decodeAck = (p: Uint8Array) =>
  decode('ACK', p, (r) => ({ ackedSeq: r.u64('acked seq'), creditLimit: r.u64('credit limit') }));
export const decodeResend = (p: Uint8Array) => decode('RESEND', p, (r) => r.u64('from seq'));
export const decodeBye = (p: Uint8Array) => decode('BYE', p, (r) => r.str('reason'));
export function decodeError(p: Uint8Array): ErrorMessage | TickstreamError {
  return decode('ERROR', p, (r) => {
    const wire = r.u16('code');
    const message = r.str('message');
    const code = codeByWire.get(wire);
    // A code from a newer peer: keep its number visible rather than fail on it.
    return code === undefined
      ? { code: ErrorCode.INTERNAL, message: `(error ${wire}) ${message}` }
      : { code, message };
  });
}

export { MessageType };
