/**
 * The one error module. Every failure a user can meet has a code from this closed list and a
 * message that says what was wrong and what to do. Errors cross worker boundaries as
 * `{ code, message }` (see `toWire` / `fromWire`), never as class instances.
 */
export const ErrorCode = {
  // Frames on the EA ingress (docs/protocol.md).
  FRAME_MAGIC: 'ERR_FRAME_MAGIC',
  FRAME_VERSION: 'ERR_FRAME_VERSION',
  FRAME_TYPE: 'ERR_FRAME_TYPE',
  FRAME_TOO_LARGE: 'ERR_FRAME_TOO_LARGE',
  FRAME_TRUNCATED: 'ERR_FRAME_TRUNCATED',
  FRAME_CRC: 'ERR_FRAME_CRC',
  FRAME_PAYLOAD: 'ERR_FRAME_PAYLOAD',
  STRUCT_SIZE: 'ERR_STRUCT_SIZE',
  TICK_COUNT: 'ERR_TICK_COUNT',
  TICK_VALUE: 'ERR_TICK_VALUE',
  UNKNOWN_SYMBOL: 'ERR_UNKNOWN_SYMBOL',
  LIMIT: 'ERR_LIMIT',
  // Session rules.
  /** Reserved (protocol.md §7), never sent: a gap gets RESEND. */
  SEQ_GAP: 'ERR_SEQ_GAP',
  PROTOCOL_STATE: 'ERR_PROTOCOL_STATE',
  AUTH: 'ERR_AUTH',
  HANDSHAKE_TIMEOUT: 'ERR_HANDSHAKE_TIMEOUT',
  HEARTBEAT_TIMEOUT: 'ERR_HEARTBEAT_TIMEOUT',
  SOURCE_REPLACED: 'ERR_SOURCE_REPLACED',
  TOO_MANY_CONNECTIONS: 'ERR_TOO_MANY_CONNECTIONS',
  /** Reserved (protocol.md §7), never sent: over the rate limit a source meets TCP backpressure. */
  RATE_LIMIT: 'ERR_RATE_LIMIT',
  SHUTTING_DOWN: 'ERR_SHUTTING_DOWN',
  /** Another bridge claimed the source (a newer epoch): this one may not commit for it. */
  SOURCE_FENCED: 'ERR_SOURCE_FENCED',
  // Input files and time zones.
  FILE_FORMAT: 'ERR_FILE_FORMAT',
  FILE_ENCODING: 'ERR_FILE_ENCODING',
  FILE_EMPTY: 'ERR_FILE_EMPTY',
  TIME_ZONE: 'ERR_TIME_ZONE',
  // Configuration and infrastructure.
  CONFIG: 'ERR_CONFIG',
  /** A command line the CLI cannot take (unknown flag, missing value, not a number): exit 2. */
  USAGE: 'ERR_USAGE',
  KAFKA: 'ERR_KAFKA',
  REDIS: 'ERR_REDIS',
  POSTGRES: 'ERR_POSTGRES',
  NATIVE_ADDON: 'ERR_NATIVE_ADDON',
  INTERNAL: 'ERR_INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const codes = new Set<string>(Object.values(ErrorCode));

export class TickstreamError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TickstreamError';
    this.code = code;
  }
}

export interface WireError {
  code: ErrorCode;
  message: string;
}

export function toWire(err: unknown): WireError {
  if (err instanceof TickstreamError) return { code: err.code, message: err.message };
  const message = err instanceof Error ? err.message : String(err);
  return { code: ErrorCode.INTERNAL, message };
}

export function fromWire(wire: { code: string; message: string }): TickstreamError {
  const code = codes.has(wire.code) ? (wire.code as ErrorCode) : ErrorCode.INTERNAL;
  return new TickstreamError(code, wire.message);
}

export function isErrorCode(value: string): value is ErrorCode {
  return codes.has(value);
}
