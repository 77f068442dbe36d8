// The heal writer against a real Redis (its own key prefix): dropped ticks go back into the
// middle of their stream with the IDs the live view gives (`<ms>-<seq>`), in seq order, once
// however often they are healed; the quote moves only to a newer tick; a hole further behind
// the stream's end than the writer may move is left and reported.
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allocTickBatch, type TickBatch } from '../../codecs/tick-batch.js';
import { RedisHealWriter } from '../../sinks/redis-heal.js';
import { isolatedNames, REDIS_URL } from '../helpers/procs.js';

const names = isolatedNames('heal');
const prefix = names.redisPrefix;
const redis = new Redis(REDIS_URL, { lazyConnect: true });
let writer: RedisHealWriter;

beforeAll(async () => {
  await redis.connect();
  writer = new RedisHealWriter({
    url: REDIS_URL,
    keyPrefix: prefix,
    streamMaxLen: 100_000,
    maxMoveEntries: 5,
    logger: pino({ level: 'silent' }),
  });
  await writer.start();
});
afterAll(async () => {
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  await writer.close();
  await redis.quit();
});

/** Ticks of one symbol: [seq, utc ms] pairs, bid = seq / 1000. */
function batchOf(source: string, symbol: string, ticks: [number, number][]): TickBatch {
  const b = allocTickBatch(source, [symbol], ticks.length);
  ticks.forEach(([seq, utc], i) => {
    b.seq[i] = seq;
    b.symbolIndex[i] = 0;
    b.utcMsc[i] = utc;
    b.serverTimeMsc[i] = utc + 7_200_000;
    b.bid[i] = seq / 1000;
    b.ask[i] = seq / 1000 + 0.0001;
    b.flags[i] = 6;
  });
  b.length = ticks.length;
  return b;
}

/** What the live sink writes for a tick (sinks/redis/encoding.ts). */
async function liveXadd(key: string, seq: number, ms: number, utc: number): Promise<void> {
  await redis.xadd(
    key,
    `${ms}-${seq}`,
    'b',
    seq / 1000,
    'a',
    seq / 1000 + 0.0001,
    'l',
    0,
    'v',
    0,
    'vr',
    0,
    'f',
    6,
    't',
    utc + 7_200_000,
    's',
    seq,
  );
}

const rows = (b: TickBatch) => Array.from({ length: b.length }, (_, i) => i);

describe('RedisHealWriter', () => {
  it('puts a hole back in place, in seq order, with the live IDs and fields; healing again changes nothing', async () => {
    const key = `${prefix}:ticks:s1:EURUSD`;
    // Live wrote 1, 2, (3, 4 dropped), 5, 6; tick 6 went back in time (ms kept at 5's).
    await liveXadd(key, 1, 1000, 1000);
    await liveXadd(key, 2, 1100, 1100);
    await liveXadd(key, 5, 1500, 1500);
    await liveXadd(key, 6, 1500, 1400);
    const before = await redis.xrange(key, '-', '+');
    const hole = batchOf('s1', 'EURUSD', [
      [3, 1200],
      [4, 1300],
    ]);
    expect(await writer.heal(hole, rows(hole))).toEqual({ healed: 2, present: 0, abandoned: 0 });
    const after = await redis.xrange(key, '-', '+');
    expect(after.map(([id]) => id)).toEqual(['1000-1', '1100-2', '1200-3', '1300-4', '1500-5', '1500-6']);
    expect(after[2]?.[1]).toEqual([
      'b',
      '0.003',
      'a',
      '0.0031',
      'l',
      '0',
      'v',
      '0',
      'vr',
      '0',
      'f',
      '6',
      't',
      '7201200',
      's',
      '3',
    ]);
    // The moved entries keep their fields.
    expect(after.filter(([id]) => id.startsWith('1500'))).toEqual(before.slice(2));
    expect(await writer.heal(hole, rows(hole))).toEqual({ healed: 0, present: 2, abandoned: 0 });
    expect(await redis.xrange(key, '-', '+')).toEqual(after);
    // Live writes go on after the healed stream.
    await liveXadd(key, 7, 1600, 1600);
    expect(await redis.xlen(key)).toBe(7);
  });

  it('heals a range where some ticks are there already: only the missing ones are added, the rest stay', async () => {
    const key = `${prefix}:ticks:s5:EURUSD`;
    for (const seq of [1, 2, 4, 6]) await liveXadd(key, seq, 1000 + seq, 1000 + seq);
    const range = batchOf('s5', 'EURUSD', [
      [2, 1002],
      [3, 1003],
      [4, 1004],
      [5, 1005],
    ]);
    expect(await writer.heal(range, rows(range))).toEqual({ healed: 2, present: 2, abandoned: 0 });
    expect((await redis.xrange(key, '-', '+')).map(([id]) => id)).toEqual([
      '1001-1',
      '1002-2',
      '1003-3',
      '1004-4',
      '1005-5',
      '1006-6',
    ]);
  });

  it('caps a healed ID at the next entry when time went backwards across the hole', async () => {
    const key = `${prefix}:ticks:s2:EURUSD`;
    await liveXadd(key, 1, 1000, 1000);
    await liveXadd(key, 3, 1050, 1050); // live rule without the drop would have given 1100
    const hole = batchOf('s2', 'EURUSD', [[2, 1100]]);
    expect((await writer.heal(hole, rows(hole))).healed).toBe(1);
    expect((await redis.xrange(key, '-', '+')).map(([id]) => id)).toEqual(['1000-1', '1050-2', '1050-3']);
  });

  it('heals an empty or missing stream and moves the quote only to a newer tick', async () => {
    const key = `${prefix}:ticks:s3:GBPUSD`;
    const quote = `${prefix}:quote:s3:GBPUSD`;
    await redis.hset(quote, 'seq', 10, 'bid', 1);
    const old = batchOf('s3', 'GBPUSD', [
      [1, 100],
      [2, 200],
    ]);
    expect((await writer.heal(old, rows(old))).healed).toBe(2);
    expect(await redis.hget(quote, 'seq')).toBe('10');
    const newer = batchOf('s3', 'GBPUSD', [[11, 300]]);
    expect((await writer.heal(newer, rows(newer))).healed).toBe(1);
    expect(await redis.hgetall(quote)).toMatchObject({ seq: '11', bid: '0.011', time: '300', flags: '6' });
    expect((await redis.xrange(key, '-', '+')).map(([id]) => id)).toEqual(['100-1', '200-2', '300-11']);
  });

  it('leaves a hole further behind the stream end than maxMoveEntries and reports it', async () => {
    const key = `${prefix}:ticks:s4:EURUSD`;
    await liveXadd(key, 1, 1000, 1000);
    for (let seq = 3; seq <= 10; seq++) await liveXadd(key, seq, 1000 + seq, 1000 + seq);
    const hole = batchOf('s4', 'EURUSD', [[2, 1002]]);
    expect(await writer.heal(hole, rows(hole))).toEqual({ healed: 0, present: 0, abandoned: 1 });
    expect(await redis.xlen(key)).toBe(9);
  });
});
