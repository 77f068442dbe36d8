/**
 * The live views' text encoding: a 1000-tick batch as Redis commands (one XADD per tick and a
 * quote HSET per symbol, sinks/redis/encoding.ts into the sink's RespWriter) and as websocket
 * JSON tick objects (sinks/ws/messages.ts). Each with the symbols' digits (prices written as
 * scaled integers by codecs/num-writer.ts) and without (prices through `String`, as before the
 * digits were kept). "fresh prices" cycles 64 batches of distinct prices (128k, more than V8's
 * number-string cache holds), as many symbols in a fast market give; the synthetic random walk
 * alone repeats a few hundred prices, which that cache serves.
 */
import { RespWriter } from '../../codecs/resp.js';
import type { TickBatch } from '../../codecs/tick-batch.js';
import { RedisLiveEncoding } from '../../sinks/redis/encoding.js';
import { tickObjects } from '../../sinks/ws/messages.js';
import type { MicroBench } from '../types.js';
import { syntheticTicks } from './synthetic.js';

const TICKS = 1000;
const FRESH_BATCHES = 64;

const withoutDigits = (b: TickBatch): TickBatch => ({ ...b, symbolDigits: [] });

function freshBatches(): TickBatch[] {
  const base = syntheticTicks(TICKS, ['EURUSD', 'GBPUSD'], 7);
  return Array.from({ length: FRESH_BATCHES }, (_, k) => {
    const b = { ...base, bid: new Float64Array(TICKS), ask: new Float64Array(TICKS) };
    for (let i = 0; i < TICKS; i++) {
      const points = 100_000 + k * TICKS + i;
      b.bid[i] = points / 1e5;
      b.ask[i] = (points + 8) / 1e5;
    }
    return b;
  });
}

export async function benches(): Promise<MicroBench[]> {
  const batch = syntheticTicks(TICKS, ['EURUSD', 'GBPUSD', 'USDJPY']);
  const fresh = freshBatches();
  const rows = Array.from({ length: TICKS }, (_, i) => i);
  const w = new RespWriter(1 << 20);
  const encoding = new RedisLiveEncoding('mt5', 100_000);
  const resp = (b: TickBatch) => {
    w.off = 0;
    encoding.ticks(w, b);
    return w.off;
  };
  const cycle = (batches: TickBatch[], fn: (b: TickBatch) => number) => {
    let k = 0;
    return () => fn(batches[k++ % batches.length] as TickBatch);
  };
  const noDigits = withoutDigits(batch);
  const freshNoDigits = fresh.map(withoutDigits);
  const json = (b: TickBatch) => tickObjects(b, rows).length;
  return [
    {
      name: `Redis XADD+HSET encode (${TICKS} ticks, 3 symbols, digits)`,
      group: 'codecs',
      ticksPerOp: TICKS,
      fn: () => resp(batch),
    },
    {
      name: `Redis XADD+HSET encode (${TICKS} ticks, 3 symbols, no digits)`,
      group: 'codecs',
      ticksPerOp: TICKS,
      fn: () => resp(noDigits),
    },
    {
      name: `Redis XADD+HSET encode (${TICKS} ticks, fresh prices, digits)`,
      group: 'codecs',
      ticksPerOp: TICKS,
      fn: cycle(fresh, resp),
    },
    {
      name: `Redis XADD+HSET encode (${TICKS} ticks, fresh prices, no digits)`,
      group: 'codecs',
      ticksPerOp: TICKS,
      fn: cycle(freshNoDigits, resp),
    },
    {
      name: `websocket JSON tick objects (${TICKS} ticks, 3 symbols, digits)`,
      group: 'codecs',
      ticksPerOp: TICKS,
      fn: () => json(batch),
    },
    {
      name: `websocket JSON tick objects (${TICKS} ticks, fresh prices, digits)`,
      group: 'codecs',
      ticksPerOp: TICKS,
      fn: cycle(fresh, json),
    },
    {
      name: `websocket JSON tick objects (${TICKS} ticks, fresh prices, no digits)`,
      group: 'codecs',
      ticksPerOp: TICKS,
      fn: cycle(freshNoDigits, json),
    },
  ];
}
