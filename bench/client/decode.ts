/**
 * @tickstream/client decoding: one `?format=flatbuffers` websocket frame (a TickRecord of one
 * symbol's slice of a live batch, as serve sends it) to tick objects and to columns, beside
 * JSON.parse of the same ticks as a JSON `ticks` message, which is what a JSON client pays.
 */
import { decodeTickColumns, decodeTicks, tickObjects } from '../../client/src/index.js';
import { TickRecordEncoder } from '../../codecs/flat-record.js';
import { syntheticTicks } from '../codecs/synthetic.js';
import type { MicroBench } from '../types.js';

/** Ticks in one message: a 100 ms batch of a busy symbol. */
const TICKS = 200;

export async function benches(): Promise<MicroBench[]> {
  const batch = syntheticTicks(TICKS, ['EURUSD']);
  const frame = new TickRecordEncoder().encode(batch);
  const json = JSON.stringify({
    type: 'ticks',
    source: 'bench',
    symbol: 'EURUSD',
    rt: 0,
    ticks: Array.from({ length: TICKS }, (_, i) => ({
      seq: batch.seq[i],
      time: batch.utcMsc[i],
      tsrv: batch.serverTimeMsc[i],
      bid: batch.bid[i],
      ask: batch.ask[i],
      last: batch.last[i],
      vol: batch.volume[i],
      volr: batch.volumeReal[i],
      flags: batch.flags[i],
    })),
  });
  const check = (n: number) => {
    if (n !== TICKS) throw new Error(`decoded ${n} ticks of ${TICKS}`);
    return n;
  };
  return [
    {
      name: `client: FlatBuffers ws frame → tick objects (${TICKS} ticks)`,
      group: 'client',
      ticksPerOp: TICKS,
      fn: () => check(tickObjects(decodeTickColumns(frame)).length),
    },
    {
      name: `client: FlatBuffers Kafka record → tick objects with symbol (${TICKS} ticks)`,
      group: 'client',
      ticksPerOp: TICKS,
      fn: () => check(decodeTicks(frame).ticks.length),
    },
    {
      name: `client: FlatBuffers ws frame → columns (${TICKS} ticks)`,
      group: 'client',
      ticksPerOp: TICKS,
      fn: () => check(decodeTickColumns(frame).length),
    },
    {
      name: `client: JSON ws message → tick objects (${TICKS} ticks, JSON.parse)`,
      group: 'client',
      ticksPerOp: TICKS,
      fn: () => check((JSON.parse(json) as { ticks: unknown[] }).ticks.length),
    },
  ];
}
