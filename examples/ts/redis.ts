// The ticks a Redis stream holds (key PREFIX:ticks:SOURCE:SYMBOL; entry ID `<utc ms>-<seq>`,
// fields b a l v vr f t s: sinks/redis/encoding.ts), oldest first, with ioredis, in pages of XRANGE.
//   node dist/examples/ts/redis.js SOURCE SYMBOL
// TICKSTREAM_REDIS_URL (default redis://127.0.0.1:6379), TICKSTREAM_REDIS_KEY_PREFIX (default mt5).
import { Redis } from 'ioredis';

const [source = 'terminal1', symbol = 'EURUSD'] = process.argv.slice(2);
const prefix = process.env['TICKSTREAM_REDIS_KEY_PREFIX'] ?? 'mt5';
const redis = new Redis(process.env['TICKSTREAM_REDIS_URL'] ?? 'redis://127.0.0.1:6379');

const key = `${prefix}:ticks:${source}:${symbol}`;
let start = '-';
for (;;) {
  const page = await redis.xrange(key, start, '+', 'COUNT', 10_000);
  for (const [id, fields] of page) {
    const f: Record<string, string> = {};
    for (let i = 0; i < fields.length; i += 2) f[fields[i] as string] = fields[i + 1] as string;
    const time = new Date(Number(id.split('-')[0])).toISOString();
    console.log(source, Number(f['s']), symbol, time, Number(f['b']), Number(f['a']));
  }
  if (page.length < 10_000) break;
  start = `(${(page.at(-1) as [string, string[]])[0]}`; // after the last entry read
}
await redis.quit();
