/**
 * Writes ticks the Redis live view dropped back into their streams, in place: the healer
 * (pipeline/redis-heal.ts) reads them from the journal and hands them here.
 *
 * A stream only appends (XADD refuses an ID at or below its last one), and by the time a hole is
 * healed the live view has written past it. So one Lua script per stream and call, atomic in
 * Redis, puts the missing entries where they belong:
 *  1. finds the last entry with a seq below the first healed tick (the entry ID's sequence part
 *     is the tick's seq, and IDs grow with seq within a stream: sinks/redis/encoding.ts);
 *  2. merges the healed ticks, by seq, with the entries after it (read a page at a time, so
 *     ticks found present cost only the entries up to them). A healed tick whose seq is
 *     there already is skipped (idempotent: healing twice, or a tick Redis stored before its
 *     reply was lost, changes nothing). A new one gets the ID the live view would have given it,
 *     `<max(tick UTC ms, previous entry's ms)>-<seq>`, capped at the next entry's ms (that
 *     entry was written while the tick was missing: when time went backwards there, its ms is
 *     lower than the rule would give now), so the stream stays in seq order;
 *  3. deletes the entries after the first insertion, resets the stream's last ID (XSETID) and
 *     adds them back with their own IDs and fields, interleaved with the healed ones; trims to
 *     MAXLEN ~ as XADD does;
 *  4. moves the quote hash to the newest healed tick if it is newer (by seq) than the quote.
 * The cost is the entries read, written and moved, during which Redis serves nothing else
 * (measured 60–210 ms in Redis for 5,000 healed ticks with 10,000 entries after the hole on a
 * loaded 2-core machine, 23 ms for 5,000 found present): at most `maxMoveEntries` are moved per
 * call; a hole further behind the stream's end than that is not healed (the script answers -1)
 * and the healer counts it as abandoned. Readers that already read past the hole (XREAD) do not
 * see the healed entries; XRANGE readers and later readers do.
 *
 * Its own ioredis connection, not the live sink's: healing runs at a bounded rate and its
 * replies are few, while the live sink's pipeline only counts replies.
 */
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { ErrorCode, TickstreamError } from '../codecs/errors.js';
import { redactUrl } from '../codecs/redact.js';
import type { TickBatch } from '../codecs/tick-batch.js';

/** A Redis call that takes longer fails: a hung Redis must not hold a pass (or a shutdown). */
const CALL_TIMEOUT_MS = 10_000;
/** Values per healed tick in the script's ARGV: seq, utc ms, then the entry's field values. */
const PER_TICK = 9;

const HEAL_SCRIPT = `
local key = KEYS[1]
local maxlen = ARGV[1]
local maxMove = tonumber(ARGV[2])
local n = (#ARGV - 2) / ${PER_TICK}
local function parse(id)
  local d = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, d - 1)), tonumber(string.sub(id, d + 1))
end
local s1 = tonumber(ARGV[3])
local u1 = string.format('%.0f', tonumber(ARGV[4]))
-- 1. the last entry with a seq below s1: back from (u1-s1), past entries of higher seqs
local predId = nil
local predMs = 0
local finish = '(' .. u1 .. '-' .. string.format('%.0f', s1)
while predId == nil do
  local page = redis.call('XREVRANGE', key, finish, '-', 'COUNT', 64)
  if #page == 0 then break end
  for _, e in ipairs(page) do
    local ms, s = parse(e[1])
    if s < s1 then predId = e[1]; predMs = ms; break end
  end
  finish = '(' .. page[#page][1]
  if #page < 64 then break end
end
-- 2. merge the healed ticks by seq with the entries after it, read a page at a time: entries
--    before the first insertion stay where they are, the others are moved (at most maxMove)
local cursor = predId and ('(' .. predId) or '-'
local page = {}
local pi = 1
local exhausted = false
local function peek()
  if pi > #page then
    if exhausted then return nil end
    page = redis.call('XRANGE', key, cursor, '+', 'COUNT', 1000)
    pi = 1
    if #page < 1000 then exhausted = true end
    if #page == 0 then return nil end
    cursor = '(' .. page[#page][1]
  end
  return page[pi]
end
local out = {}
local moved = {}
local lastKept = predId
local prevMs = predMs
local inserted = 0
local present = 0
local newest = nil
local function takeEntry()
  local e = page[pi]
  pi = pi + 1
  if inserted > 0 then
    moved[#moved + 1] = e[1]
    out[#out + 1] = e
    if #moved > maxMove then return false end
  else
    lastKept = e[1]
  end
  return true
end
for h = 0, n - 1 do
  local b = 3 + h * ${PER_TICK}
  local seq = tonumber(ARGV[b])
  local e = peek()
  while e do
    local ms, s = parse(e[1])
    if s >= seq then break end
    prevMs = ms
    if not takeEntry() then return {-1, 0} end
    e = peek()
  end
  local nextMs = nil
  local there = false
  if e then
    local ms, s = parse(e[1])
    nextMs = ms
    there = (s == seq)
  end
  if there then
    present = present + 1
  else
    local ms = math.max(tonumber(ARGV[b + 1]), prevMs)
    if nextMs ~= nil and ms > nextMs then ms = nextMs end
    out[#out + 1] = {string.format('%.0f', ms) .. '-' .. ARGV[b], {'b', ARGV[b + 2], 'a', ARGV[b + 3], 'l', ARGV[b + 4], 'v', ARGV[b + 5], 'vr', ARGV[b + 6], 'f', ARGV[b + 7], 't', ARGV[b + 8], 's', ARGV[b]}}
    prevMs = ms
    inserted = inserted + 1
    newest = b
  end
end
if inserted == 0 then return {0, present} end
while peek() do
  if not takeEntry() then return {-1, 0} end
end
-- 3. delete the moved entries, rewind the last ID, add everything back in order
for i = 1, #moved, 1000 do
  redis.call('XDEL', key, unpack(moved, i, math.min(i + 999, #moved)))
end
if redis.call('EXISTS', key) == 1 then redis.call('XSETID', key, lastKept or '0-0') end
for i = 1, #out do redis.call('XADD', key, out[i][1], unpack(out[i][2])) end
redis.call('XTRIM', key, 'MAXLEN', '~', maxlen)
-- 4. the quote, when the newest healed tick is newer than it
local qseq = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
if tonumber(ARGV[newest]) > qseq then
  redis.call('HSET', KEYS[2], 'bid', ARGV[newest + 2], 'ask', ARGV[newest + 3], 'last', ARGV[newest + 4], 'time', ARGV[newest + 1], 'server_time_msc', ARGV[newest + 8], 'seq', ARGV[newest], 'flags', ARGV[newest + 7])
end
return {inserted, present}
`;

export interface RedisHealWriterOptions {
  url: string;
  keyPrefix: string;
  streamMaxLen: number;
  /** Entries after a hole moved back at most per call; a hole further behind is not healed. */
  maxMoveEntries: number;
  logger: Logger;
}

/** What one call did: ticks inserted, already there, and not healed (their hole is too far back). */
export interface HealResult {
  healed: number;
  present: number;
  abandoned: number;
}

type HealRedis = Redis & {
  tickstreamHeal(stream: string, quote: string, ...args: (string | number)[]): Promise<[number, number]>;
};

export class RedisHealWriter {
  readonly #o: RedisHealWriterOptions;
  readonly #redis: HealRedis;

  constructor(options: RedisHealWriterOptions) {
    this.#o = options;
    const redis = new Redis(options.url, {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      // A hung Redis fails the call (the pass stops, the ticks stay pending) instead of holding it.
      commandTimeout: CALL_TIMEOUT_MS,
      // Retries forever in the background, like the live sink; healing waits for it.
      retryStrategy: (times) => Math.min(2000, 50 * 2 ** times),
    });
    redis.on('error', () => {}); // the live sink logs outages; a failed heal call is retried later
    redis.defineCommand('tickstreamHeal', { numberOfKeys: 2, lua: HEAL_SCRIPT });
    this.#redis = redis as HealRedis;
  }

  async start(): Promise<void> {
    await this.#redis.connect().catch(() => {}); // reconnects on its own: heal() says when it cannot
  }

  /** Writes rows `rows` (in seq order) of `batch` back into their streams. */
  async heal(batch: TickBatch, rows: readonly number[]): Promise<HealResult> {
    if (this.#redis.status !== 'ready')
      throw new TickstreamError(
        ErrorCode.REDIS,
        `the Redis healer is not connected to ${redactUrl(this.#o.url)}: healing waits for it`,
      );
    const bySymbol = new Map<number, number[]>();
    for (const i of rows) {
      const s = batch.symbolIndex[i] as number;
      let list = bySymbol.get(s);
      if (!list) {
        list = [];
        bySymbol.set(s, list);
      }
      list.push(i);
    }
    const result: HealResult = { healed: 0, present: 0, abandoned: 0 };
    const prefix = this.#o.keyPrefix;
    for (const [s, list] of bySymbol) {
      const symbol = batch.symbols[s] as string;
      const args: (string | number)[] = [this.#o.streamMaxLen, this.#o.maxMoveEntries];
      for (const i of list)
        args.push(
          batch.seq[i] as number,
          batch.utcMsc[i] as number,
          batch.bid[i] as number,
          batch.ask[i] as number,
          batch.last[i] as number,
          batch.volume[i] as number,
          batch.volumeReal[i] as number,
          batch.flags[i] as number,
          batch.serverTimeMsc[i] as number,
        );
      const [healed, present] = await this.#redis.tickstreamHeal(
        `${prefix}:ticks:${batch.source}:${symbol}`,
        `${prefix}:quote:${batch.source}:${symbol}`,
        ...args,
      );
      if (healed < 0) result.abandoned += list.length;
      else {
        result.healed += healed;
        result.present += present;
      }
    }
    return result;
  }

  async close(): Promise<void> {
    this.#redis.disconnect();
  }
}
