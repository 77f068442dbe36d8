/**
 * Frames on the EA ingress (docs/protocol.md §2). Every message is one frame:
 *
 *   offset width  field
 *   0      2      magic 0x5354 (bytes 'T' 'S'), little-endian u16
 *   2      1      protocol version (1)
 *   3      1      message type (MessageType)
 *   4      4      payload length in bytes, u32 LE (≤ the session's max frame size)
 *   8      4      CRC32C over bytes 0..7 of this header followed by the payload, u32 LE
 *   12     n      payload
 *
 * All integers are little-endian (the byte order of MQL5 structs on x86/x64).
 */
import { crc32c } from './crc32c.js';
import { ErrorCode, TickstreamError } from './errors.js';

export const FRAME_MAGIC = 0x5354;
/** The version this code writes in every frame header and the only one it accepts. */
export const PROTOCOL_VERSION = 1;
/** The range of versions a bridge offers in CHALLENGE; both 1 until a version 2 exists. */
export const MIN_PROTOCOL_VERSION = 1;
export const MAX_PROTOCOL_VERSION = 1;
export const HEADER_BYTES = 12;
export const DEFAULT_MAX_FRAME_BYTES = 1 << 20;

export const MessageType = {
  CHALLENGE: 1,
  HELLO: 2,
  HELLO_ACK: 3,
  SYMBOLS: 4,
  TICKS: 5,
  HEARTBEAT: 6,
  ACK: 7,
  RESEND: 8,
  ERROR: 9,
  BYE: 10,
} as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

const typeNames = Object.fromEntries(Object.entries(MessageType).map(([k, v]) => [v, k])) as Record<
  number,
  string
>;
export const messageTypeName = (type: number): string => typeNames[type] ?? `unknown(${type})`;

export interface Frame {
  type: MessageType;
  /**
   * A view of the chunk given to `push()` when the frame lay inside it (no copy), else of a
   * buffer allocated for this frame alone. The decoder never writes to either again, so the
   * payload stays valid as long as you hold it — but a small view can pin a whole chunk:
   * copy what you keep for long.
   */
  payload: Uint8Array;
}

/** Encodes one frame around `payload` (a fresh buffer). */
export function encodeFrame(type: MessageType, payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(HEADER_BYTES + payload.length);
  out.writeUInt16LE(FRAME_MAGIC, 0);
  out[2] = PROTOCOL_VERSION;
  out[3] = type;
  out.writeUInt32LE(payload.length, 4);
  out.set(payload, HEADER_BYTES);
  out.writeUInt32LE(crc32c(out, crc32c(out, 0, 0, 8), HEADER_BYTES), 8);
  return out;
}

const u32le = (b: Uint8Array, at: number): number =>
  ((b[at] as number) |
    ((b[at + 1] as number) << 8) |
    ((b[at + 2] as number) << 16) |
    ((b[at + 3] as number) << 24)) >>>
  0;

/**
 * Incremental decoder for a TCP byte stream: frames split across chunks, many frames per
 * chunk. Use: `push(chunk)`, then call `next()` until it returns null (more bytes needed) or a
 * TickstreamError; `end()` when the peer closes. Errors are returned, never thrown; after one
 * the stream cannot be trusted (no resynchronisation) and every later call returns it again.
 *
 * Memory: a frame split across chunks is gathered in one buffer of exactly its declared size,
 * allocated once its header is known; a declared length over `maxFrameBytes` is refused from
 * the header alone (ERR_FRAME_TOO_LARGE), so a decoder never holds more than header + limit.
 */
export class FrameDecoder {
  readonly #maxFrameBytes: number;
  #chunk: Uint8Array = new Uint8Array(0);
  #offset = 0;
  /** Header bytes of a split frame, while fewer than HEADER_BYTES have arrived. */
  readonly #head = Buffer.alloc(HEADER_BYTES);
  #headLen = 0;
  /** A split frame (header included) being gathered, and how much of it has arrived. */
  #frame: Buffer | null = null;
  #frameLen = 0;
  #error: TickstreamError | null = null;

  constructor(maxFrameBytes = DEFAULT_MAX_FRAME_BYTES) {
    this.#maxFrameBytes = maxFrameBytes;
  }

  /** Bytes copied and held for a frame not yet complete (≤ header + maxFrameBytes). */
  get bufferedBytes(): number {
    return this.#frame === null ? this.#headLen : this.#frameLen;
  }

  /** Hands over the next chunk. Call `next()` until it returns null before pushing another. */
  push(chunk: Uint8Array): void {
    if (this.#offset < this.#chunk.length && this.#error === null) {
      // Dropping the rest of the previous chunk would lose frames silently.
      this.#error = new TickstreamError(
        ErrorCode.INTERNAL,
        `FrameDecoder.push() called with ${this.#chunk.length - this.#offset} bytes of the previous chunk not read: call next() until it returns null first`,
      );
    }
    this.#chunk = chunk;
    this.#offset = 0;
  }

  /** The next whole frame, null when more bytes are needed, or the error that ended the stream. */
  next(): Frame | TickstreamError | null {
    if (this.#error !== null) return this.#error;
    const chunk = this.#chunk;
    const available = chunk.length - this.#offset;
    if (this.#frame === null && this.#headLen === 0) {
      // Between frames: the common case, a whole frame inside the chunk, costs no copy.
      if (available < HEADER_BYTES) {
        if (available > 0) this.#gatherHead(available);
        return null;
      }
      const start = this.#offset;
      const length = this.#checkHeader(chunk, start);
      if (length < 0) return this.#error;
      if (available >= HEADER_BYTES + length) {
        this.#offset += HEADER_BYTES + length;
        return this.#finish(chunk, start, length);
      }
      this.#frame = Buffer.allocUnsafe(HEADER_BYTES + length);
      this.#frame.set(chunk.subarray(start), 0);
      this.#frameLen = available;
      this.#offset = chunk.length;
      return null;
    }
    if (this.#frame === null) {
      this.#gatherHead(Math.min(HEADER_BYTES - this.#headLen, available));
      if (this.#headLen < HEADER_BYTES) return null;
      const length = this.#checkHeader(this.#head, 0);
      if (length < 0) return this.#error;
      this.#frame = Buffer.allocUnsafe(HEADER_BYTES + length);
      this.#frame.set(this.#head, 0);
      this.#frameLen = HEADER_BYTES;
      this.#headLen = 0;
    }
    const frame = this.#frame;
    const n = Math.min(frame.length - this.#frameLen, chunk.length - this.#offset);
    frame.set(chunk.subarray(this.#offset, this.#offset + n), this.#frameLen);
    this.#frameLen += n;
    this.#offset += n;
    if (this.#frameLen < frame.length) return null;
    this.#frame = null;
    this.#frameLen = 0;
    return this.#finish(frame, 0, frame.length - HEADER_BYTES);
  }

  /**
   * The peer closed the stream: null when it ended on a frame boundary, else
   * ERR_FRAME_TRUNCATED (the EA died or the network cut it mid-frame).
   */
  end(): TickstreamError | null {
    if (this.#error !== null) return this.#error;
    const held = this.bufferedBytes;
    if (held === 0) return null;
    const want = this.#frame === null ? '' : ` of ${this.#frame.length}`;
    return this.#fail(
      ErrorCode.FRAME_TRUNCATED,
      `the stream ended ${held} bytes into a frame${want}: the peer closed the connection mid-frame`,
    );
  }

  #gatherHead(n: number): void {
    this.#head.set(this.#chunk.subarray(this.#offset, this.#offset + n), this.#headLen);
    this.#headLen += n;
    this.#offset += n;
  }

  /** Validates a header at `at`; returns the payload length, or -1 with #error set. */
  #checkHeader(b: Uint8Array, at: number): number {
    const magic = (b[at] as number) | ((b[at + 1] as number) << 8);
    if (magic !== FRAME_MAGIC) {
      this.#fail(
        ErrorCode.FRAME_MAGIC,
        `bad frame magic 0x${magic.toString(16).padStart(4, '0')} (expected 0x5354, "TS"): not a tickstream client, or the stream lost its place`,
      );
      return -1;
    }
    const version = b[at + 2] as number;
    if (version !== PROTOCOL_VERSION) {
      this.#fail(
        ErrorCode.FRAME_VERSION,
        `protocol version ${version} is not supported (this end speaks ${PROTOCOL_VERSION}): update the EA or the bridge`,
      );
      return -1;
    }
    const type = b[at + 3] as number;
    if (typeNames[type] === undefined) {
      this.#fail(ErrorCode.FRAME_TYPE, `unknown message type ${type} (version ${PROTOCOL_VERSION} has 1-10)`);
      return -1;
    }
    const length = u32le(b, at + 4);
    if (length > this.#maxFrameBytes) {
      this.#fail(
        ErrorCode.FRAME_TOO_LARGE,
        `frame of ${length} bytes is over the limit of ${this.#maxFrameBytes} bytes: send smaller TICKS batches (HELLO_ACK max_frame_bytes)`,
      );
      return -1;
    }
    return length;
  }

  #finish(bytes: Uint8Array, start: number, length: number): Frame | TickstreamError {
    const payloadStart = start + HEADER_BYTES;
    const want = u32le(bytes, start + 8);
    const got = crc32c(bytes, crc32c(bytes, 0, start, start + 8), payloadStart, payloadStart + length);
    if (got !== want) {
      return this.#fail(
        ErrorCode.FRAME_CRC,
        `frame checksum mismatch (CRC32C 0x${got.toString(16)}, header says 0x${want.toString(16)}): the bytes were corrupted on the way`,
      );
    }
    return {
      type: bytes[start + 3] as MessageType,
      payload: bytes.subarray(payloadStart, payloadStart + length),
    };
  }

  #fail(code: ErrorCode, message: string): TickstreamError {
    this.#error = new TickstreamError(code, message);
    return this.#error;
  }
}
