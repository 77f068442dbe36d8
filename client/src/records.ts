/**
 * The Kafka journal's records as plain data: a tick record (one FlatBuffers `TickRecord`, a
 * batch of one source's ticks, codecs/schema/tick_batch.fbs) as objects or as columns, and a bar
 * record (`BarRecord`). The same decoding serves `?format=flatbuffers` websocket frames.
 */
import type { Bar as BarRecord } from '../../codecs/bar.js';
import { decodeBar, decodeTickRecord } from '../../codecs/flat-record.js';

/** One tick, with the field names of the websocket JSON messages. */
export interface Tick {
  /** Per-source sequence number: (source, seq) identifies a tick everywhere. */
  seq: number;
  /** UTC time, ms since the epoch. */
  time: number;
  /** MqlTick.time_msc on the broker's server clock. */
  tsrv: number;
  bid: number;
  ask: number;
  last: number;
  vol: number;
  volr: number;
  flags: number;
}

/** A tick of a record, with its symbol. */
export interface RecordTick extends Tick {
  symbol: string;
}

/** A tick record as columns: `symbols[symbolIndex[i]]` is tick i's symbol. */
export interface TickColumns {
  source: string;
  symbols: string[];
  length: number;
  seq: Float64Array;
  symbolIndex: Uint16Array;
  time: Float64Array;
  tsrv: Float64Array;
  bid: Float64Array;
  ask: Float64Array;
  last: Float64Array;
  vol: Float64Array;
  volr: Float64Array;
  flags: Uint32Array;
}

/** Decodes a tick record (a Kafka record value or a binary websocket frame) to columns. */
export function decodeTickColumns(value: Uint8Array): TickColumns {
  const b = decodeTickRecord(value);
  return {
    source: b.source,
    symbols: b.symbols,
    length: b.length,
    seq: b.seq.subarray(0, b.length),
    symbolIndex: b.symbolIndex.subarray(0, b.length),
    time: b.utcMsc.subarray(0, b.length),
    tsrv: b.serverTimeMsc.subarray(0, b.length),
    bid: b.bid.subarray(0, b.length),
    ask: b.ask.subarray(0, b.length),
    last: b.last.subarray(0, b.length),
    vol: b.volume.subarray(0, b.length),
    volr: b.volumeReal.subarray(0, b.length),
    flags: b.flags.subarray(0, b.length),
  };
}

/** Tick objects of rows [0, length) of columns, without their symbol. */
export function tickObjects(c: TickColumns): Tick[] {
  const ticks: Tick[] = new Array(c.length);
  for (let i = 0; i < c.length; i++) {
    ticks[i] = {
      seq: c.seq[i] as number,
      time: c.time[i] as number,
      tsrv: c.tsrv[i] as number,
      bid: c.bid[i] as number,
      ask: c.ask[i] as number,
      last: c.last[i] as number,
      vol: c.vol[i] as number,
      volr: c.volr[i] as number,
      flags: c.flags[i] as number,
    };
  }
  return ticks;
}

/** Decodes a tick record to its source and one object per tick, in seq order. */
export function decodeTicks(value: Uint8Array): { source: string; ticks: RecordTick[] } {
  const c = decodeTickColumns(value);
  const ticks: RecordTick[] = new Array(c.length);
  for (let i = 0; i < c.length; i++) {
    ticks[i] = {
      symbol: c.symbols[c.symbolIndex[i] as number] ?? '',
      seq: c.seq[i] as number,
      time: c.time[i] as number,
      tsrv: c.tsrv[i] as number,
      bid: c.bid[i] as number,
      ask: c.ask[i] as number,
      last: c.last[i] as number,
      vol: c.vol[i] as number,
      volr: c.volr[i] as number,
      flags: c.flags[i] as number,
    };
  }
  return { source: c.source, ticks };
}

/** A closed 1-minute bar; last-price fields are null when the minute had no LAST tick. */
export interface Bar {
  source: string;
  symbol: string;
  startMs: number;
  open: number;
  high: number;
  low: number;
  close: number;
  tickCount: number;
  spreadMin: number;
  spreadMax: number;
  spreadSum: number;
  lastOpen: number | null;
  lastHigh: number | null;
  lastLow: number | null;
  lastClose: number | null;
  volume: number;
  lastSeq: number;
}

const nan = (v: number) => (Number.isNaN(v) ? null : v);

/** Decodes a bar record (the bars topic) to the shape of the websocket `bar` message. */
export function decodeBarRecord(value: Uint8Array): Bar {
  const b: BarRecord = decodeBar(value);
  return {
    ...b,
    lastOpen: nan(b.lastOpen),
    lastHigh: nan(b.lastHigh),
    lastLow: nan(b.lastLow),
    lastClose: nan(b.lastClose),
  };
}
