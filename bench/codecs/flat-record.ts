/**
 * Kafka record values: one FlatBuffers TickRecord per 1000 ticks (the default `recordTicks`),
 * encoded by a decode worker with its reused TickRecordEncoder and decoded by consumers.
 * The batch mixes three symbols, as one source's batch does.
 */
import { decodeTickRecord, TickRecordEncoder } from '../../codecs/flat-record.js';
import type { MicroBench } from '../types.js';
import { syntheticTicks } from './synthetic.js';

const TICKS = 1000;

export async function benches(): Promise<MicroBench[]> {
  const batch = syntheticTicks(TICKS, ['EURUSD', 'GBPUSD', 'USDJPY']);
  const encoder = new TickRecordEncoder();
  const record = encoder.encode(batch);
  return [
    {
      name: `FlatBuffers TickRecord encode (${TICKS} ticks, 3 symbols)`,
      group: 'codecs',
      ticksPerOp: TICKS,
      fn: () => encoder.encode(batch).length,
    },
    {
      name: `FlatBuffers TickRecord decode → TickBatch (${TICKS} ticks, 3 symbols)`,
      group: 'codecs',
      ticksPerOp: TICKS,
      fn: () => {
        const out = decodeTickRecord(record);
        if (out.length !== TICKS) throw new Error(`decoded ${out.length} ticks of ${TICKS}`);
        return out.length;
      },
    },
  ];
}
