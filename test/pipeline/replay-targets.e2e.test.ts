// `tickstream replay --target redis|postgres` against what the live path wrote: a real `serve`
// (with its loader) fed a real MT5 export and a synthetic feed, then the same journal replayed
// at --speed max into a fresh Redis prefix and a fresh Postgres schema. Compared as the
// services hold them (XRANGE entries, quote hashes, rows as text), and replayed twice.
import { existsSync } from 'node:fs';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readJournal } from '../../sinks/kafka/reader.js';
import { readJournalTicks } from '../helpers/independent.js';
import {
  captured,
  dataDir,
  isolatedNames,
  KAFKA_BROKERS,
  POSTGRES_DB,
  REDIS_URL,
  removeNames,
  runCli,
  runSim,
  type ServeProcess,
  serveArgs,
  startServe,
  waitFor,
} from '../helpers/procs.js';

const mt5File = `${dataDir}EURUSD_mt5_export_derived_from_histdata.csv`;
const haveData = existsSync(mt5File);
if (!haveData) console.warn(`SKIPPED: ../shared/data tick file not found under ${dataDir}`);

describe.skipIf(!haveData)(
  'replay to Redis and Postgres equals the live run (real serve, loader, Redis, Postgres)',
  () => {
    const live = isolatedNames('rplive');
    // Fresh places to replay into: only their prefix and schema are used.
    const again = isolatedNames('rpagain');
    const redis = new Redis(REDIS_URL, { lazyConnect: true });
    const db = new pg.Client({ connectionString: POSTGRES_DB });
    let serve: ServeProcess;
    let total = 0;

    const replay = (args: string[]) =>
      runCli(['replay', '--ticks-topic', live.ticksTopic, '--speed', 'max', ...args], {}, 120_000);

    /** Every tick stream under `prefix`: key (without the prefix) → entries as XRANGE gives them. */
    async function streams(prefix: string): Promise<Map<string, [string, string[]][]>> {
      const keys = (await redis.keys(`${prefix}:ticks:*`)).sort();
      const out = new Map<string, [string, string[]][]>();
      for (const key of keys) out.set(key.slice(prefix.length), await redis.xrange(key, '-', '+'));
      return out;
    }

    async function quotes(prefix: string): Promise<Map<string, Record<string, string>>> {
      const keys = (await redis.keys(`${prefix}:quote:*`)).sort();
      const out = new Map<string, Record<string, string>>();
      for (const key of keys) out.set(key.slice(prefix.length), await redis.hgetall(key));
      return out;
    }

    const rows = async (schema: string, sql: string): Promise<string[]> =>
      (await db.query<{ r: string }>(sql.replaceAll('$schema', `"${schema}"`))).rows.map((r) => r.r);
    const ticksText = (schema: string) =>
      rows(schema, 'select t::text r from $schema.ticks t order by source, seq');
    const barsText = (schema: string, source: string) =>
      rows(
        schema,
        `select b::text r from $schema.bars_1m b where source = '${source}' order by symbol, start`,
      );
    const count = async (schema: string, table: string) =>
      Number((await rows(schema, `select count(*)::text r from $schema.${table}`))[0]);

    beforeAll(async () => {
      await redis.connect();
      await db.connect();
      // Synthetic ticks start at the bridge's clock and run ten minutes ahead of it at max speed:
      // the time window is widened so every one reaches Redis and the bars. Heartbeats keep
      // their default rate: one that closes bars while a feed streams is journaled (a record
      // with the bars-clock header), so the replay closes the same bars at the same point.
      serve = await startServe(serveArgs(live, ['--tick-max-ahead-ms', '3600000']));
      const port = String(serve.ingressPort);
      const results = await Promise.all([
        runSim(['--file', mt5File, '--source', 'mt5', '--server-utc-offset', '2', '--port', port]),
        runSim([
          '--synthetic',
          '--symbols',
          '3',
          '--rate',
          '100',
          '--duration',
          '600',
          '--seed',
          '7',
          '--speed',
          'max',
          '--source',
          'syn',
          '--port',
          port,
        ]),
      ]);
      for (const r of results) expect(r.code, r.output).toBe(0);
      total = results.reduce((sum, r) => sum + captured(r.output), 0);
      expect((await readJournalTicks(live.ticksTopic, { expected: total })).length).toBe(total);
      // The live views and the loader are done when they hold every tick and every journaled bar.
      let bars = 0;
      await readJournal({
        brokers: KAFKA_BROKERS,
        topic: live.barsTopic,
        onMessages: (m) => {
          bars += m.length;
        },
      });
      expect(bars).toBeGreaterThan(0);
      const settled = await waitFor(async () => {
        let inRedis = 0;
        for (const key of await redis.keys(`${live.redisPrefix}:ticks:*`)) inRedis += await redis.xlen(key);
        return (
          inRedis === total &&
          (await count(live.schema, 'ticks')) === total &&
          (await count(live.schema, 'bars_1m')) === bars
        );
      }, 120_000);
      expect(settled, serve.output()).toBe(true);
    }, 300_000);

    afterAll(async () => {
      expect(await serve?.stop()).toBe(0);
      await removeNames([live, again]);
      redis.disconnect();
      await db.end();
    }, 60_000);

    it('redis: a fresh prefix gets the live streams entry for entry (IDs, fields) and the same quotes; twice adds nothing', async () => {
      const first = await replay(['--target', 'redis', '--redis-key-prefix', again.redisPrefix]);
      expect(first.code, first.output).toBe(0);
      expect(first.output).toContain(`replay: ${total} ticks written from 2 source(s)`);
      expect(first.output).toContain(
        `to redis prefix '${again.redisPrefix}' (${total} added, 0 already there)`,
      );
      const want = await streams(live.redisPrefix);
      expect([...want.keys()].length).toBe(4); // EURUSD of mt5, 3 synthetic symbols
      expect(await streams(again.redisPrefix)).toEqual(want);
      expect(await quotes(again.redisPrefix)).toEqual(await quotes(live.redisPrefix));

      const second = await replay(['--target', 'redis', '--redis-key-prefix', again.redisPrefix]);
      expect(second.code, second.output).toBe(0);
      expect(second.output).toContain(`(0 added, ${total} already there)`);
      expect(await streams(again.redisPrefix)).toEqual(want);
    });

    it('postgres: a fresh schema gets the live ticks row for row and the live bars_1m byte for byte; twice changes nothing', async () => {
      const first = await replay(['--target', 'postgres', '--postgres-schema', again.schema]);
      expect(first.code, first.output).toBe(0);
      expect(first.output).toContain(`to postgres schema '${again.schema}' (${total} ticks replaced 0 rows,`);
      const ticks = await ticksText(live.schema);
      expect(ticks.length).toBe(total);
      expect(await ticksText(again.schema)).toEqual(ticks);
      // Bars are closed by later ticks only; the last minute of each symbol is still open (live
      // and replay alike: nothing journaled closes it).
      const bars = await barsText(live.schema, 'syn');
      expect(bars.length).toBeGreaterThanOrEqual(3 * 9);
      expect(await barsText(again.schema, 'syn'), serve.output()).toEqual(bars);
      const exportBars = await barsText(live.schema, 'mt5');
      expect(exportBars.length).toBeGreaterThan(100);
      expect(await barsText(again.schema, 'mt5'), serve.output()).toEqual(exportBars);

      const second = await replay(['--target', 'postgres', '--postgres-schema', again.schema]);
      expect(second.code, second.output).toBe(0);
      expect(second.output).toContain(`(${total} ticks replaced ${total} rows,`);
      expect(await ticksText(again.schema)).toEqual(ticks);
      expect(await barsText(again.schema, 'syn')).toEqual(bars);
      expect(await barsText(again.schema, 'mt5')).toEqual(exportBars);
    });

    it('postgres: a time range rebuilt into the live schema, beside its loader, leaves it as the loader wrote it', async () => {
      const beforeTicks = await ticksText(live.schema);
      const beforeBars = await barsText(live.schema, 'syn');
      const times = (
        await rows(
          live.schema,
          `select (extract(epoch from time) * 1000)::bigint::text r from $schema.ticks where source = 'syn' order by time`,
        )
      ).map(Number);
      const from = times[Math.floor(times.length / 3)] as number;
      const to = times[Math.floor((2 * times.length) / 3)] as number;
      const r = await replay([
        '--target',
        'postgres',
        '--postgres-schema',
        live.schema,
        '--loader-group-id',
        live.group,
        '--source',
        'syn',
        '--from',
        String(from),
        '--to',
        String(to),
      ]);
      expect(r.code, r.output).toBe(0);
      const inRange = times.filter((t) => t >= from && t < to).length;
      expect(r.output).toContain(`(${inRange} ticks replaced ${inRange} rows,`);
      expect(await ticksText(live.schema)).toEqual(beforeTicks);
      expect(await barsText(live.schema, 'syn')).toEqual(beforeBars);
    });

    it('refuses flags that do not go with a target, naming them (exit 2)', async () => {
      const cases: [string[], string][] = [
        [['--target', 'postgres', '--speed', '10'], '--speed'],
        [['--target', 'postgres', '--source', 'syn', '--from-seq', '1'], '--from-seq'],
        [['--target', 'redis', '--out', '/tmp/x'], '--out'],
        [['--speed', '0'], '--speed'],
        [['--speed', 'fast'], '--speed'],
      ];
      for (const [args, flag] of cases) {
        const r = await replay(args);
        expect(r.code, r.output).toBe(2);
        expect(r.output).toContain('ERR_USAGE');
        expect(r.output).toContain(flag);
      }
    });
  },
);
