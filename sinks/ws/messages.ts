/** Tick objects of websocket messages (docs/websocket.md), shared by live, resume and replay. */
import { writeNumber, writePrice } from '../../codecs/num-writer.js';
import { DIGITS_UNKNOWN, type TickBatch } from '../../codecs/tick-batch.js';

const key = (text: string): Uint8Array => Buffer.from(text, 'latin1');
const K = {
  seq: key('{"seq":'),
  time: key(',"time":'),
  tsrv: key(',"tsrv":'),
  bid: key(',"bid":'),
  ask: key(',"ask":'),
  last: key(',"last":'),
  vol: key(',"vol":'),
  volr: key(',"volr":'),
  flags: key(',"flags":'),
};
/** Bytes of one tick object at most: its keys and nine numbers of MAX_NUMBER_BYTES. */
const TICK_OBJECT_BOUND = 96 + 9 * 25;

/** Where tick objects are written before they become one string (grows, never shrinks). */
let scratch = Buffer.allocUnsafeSlow(64 * 1024);

function put(b: Buffer, off: number, bytes: Uint8Array): number {
  for (let i = 0; i < bytes.length; i++) b[off + i] = bytes[i] as number;
  return off + bytes.length;
}

/**
 * The rows `idx` of a batch as comma-separated JSON tick objects. Numbers are written by the
 * shared number writer (the text `String(x)` gives; prices as scaled integers at their symbol's
 * digits) into one scratch buffer, which becomes one string.
 */
export function tickObjects(batch: TickBatch, idx: readonly number[]): string {
  const need = idx.length * TICK_OBJECT_BOUND;
  if (scratch.length < need) scratch = Buffer.allocUnsafeSlow(need);
  const b = scratch;
  const digitsOf = batch.symbolDigits;
  let o = 0;
  for (const i of idx) {
    const digits = digitsOf[batch.symbolIndex[i] as number] ?? DIGITS_UNKNOWN;
    if (o) b[o++] = 44; // ','
    o = put(b, o, K.seq);
    o = writeNumber(b, o, batch.seq[i] as number);
    o = put(b, o, K.time);
    o = writeNumber(b, o, batch.utcMsc[i] as number);
    o = put(b, o, K.tsrv);
    o = writeNumber(b, o, batch.serverTimeMsc[i] as number);
    o = put(b, o, K.bid);
    o = writePrice(b, o, batch.bid[i] as number, digits);
    o = put(b, o, K.ask);
    o = writePrice(b, o, batch.ask[i] as number, digits);
    o = put(b, o, K.last);
    o = writePrice(b, o, batch.last[i] as number, digits);
    o = put(b, o, K.vol);
    o = writeNumber(b, o, batch.volume[i] as number);
    o = put(b, o, K.volr);
    o = writeNumber(b, o, batch.volumeReal[i] as number);
    o = put(b, o, K.flags);
    o = writeNumber(b, o, batch.flags[i] as number);
    b[o++] = 125; // '}'
  }
  return b.toString('latin1', 0, o);
}

/** The rows `idx` of a batch as a batch of their own (for the binary format, or to keep). */
export function pick(batch: TickBatch, idx: readonly number[]): TickBatch {
  const cols = ['seq', 'serverTimeMsc', 'utcMsc', 'bid', 'ask', 'last', 'volume', 'volumeReal'] as const;
  const out = { ...batch, length: idx.length } as TickBatch;
  for (const k of cols) out[k] = Float64Array.from(idx, (i) => batch[k][i] as number);
  out.symbolIndex = Uint16Array.from(idx, (i) => batch.symbolIndex[i] as number);
  out.flags = Uint32Array.from(idx, (i) => batch.flags[i] as number);
  return out;
}
