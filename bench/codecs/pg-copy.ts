/**
 * The Postgres loader's encode step: 1000 ticks of three symbols as binary COPY rows, with
 * the encoder's output buffer reused across calls as the loader reuses it.
 */
import { CopyEncoder } from '../../codecs/pg-copy.js';
import type { MicroBench } from '../types.js';
import { syntheticTicks } from './synthetic.js';

const TICKS = 1000;

export async function benches(): Promise<MicroBench[]> {
  const batch = syntheticTicks(TICKS, ['EURUSD', 'GBPUSD', 'USDJPY']);
  const encoder = new CopyEncoder();
  return [
    {
      name: `Postgres binary COPY encode (${TICKS} ticks, 3 symbols)`,
      group: 'codecs',
      ticksPerOp: TICKS,
      fn: () => encoder.ticks(batch).length,
    },
  ];
}
