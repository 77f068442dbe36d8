// Merged feeds (issue 14) end to end: a real `serve`, separate `sim` processes, the shared broker
// and Redis. first-seen over two copies of a recorded export under different broker symbol
// names; failover with the primary's sim killed (-9) mid-stream and started again; and the
// journal replayed through the rules gives the same merged stream and decisions.
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { FeedGroupConfig } from '../../pipeline/config.js';
import type { Decision } from '../../pipeline/feed-arbiter.js';
import { journaledMergedFeed, MergedHeader, replayMergedFeed } from '../../pipeline/merged-feed.js';
import { type JournalMessage, readJournal } from '../../sinks/kafka/reader.js';
import {
  captured,
  dataDir,
  isolatedNames,
  KAFKA_BROKERS,
  type Names,
  POSTGRES_DB,
  REDIS_URL,
  removeNames,
  runSim,
  type ServeProcess,
  serveArgs,
  startCli,
  startServe,
  waitFor,
} from '../helpers/procs.js';

const EXPORT = `${dataDir}EURUSD_mt5_export_derived_from_histdata.csv`;
const all: Names[] = [];

function names(tag: string): Names {
  const n = isolatedNames(tag);
  all.push(n);
  return n;
}

async function readMerged(topic: string): Promise<JournalMessage[]> {
  const out: JournalMessage[] = [];
  await readJournal({ brokers: KAFKA_BROKERS, topic, onMessages: (m) => void out.push(...m) });
  return out.sort((a, b) => a.offset - b.offset);
}

async function metric(serve: ServeProcess, line: RegExp): Promise<number | null> {
  const text = await fetch(`http://127.0.0.1:${serve.httpPort}/metrics`).then((r) => r.text());
  const m = line.exec(text);
  return m ? Number(m[1]) : null;
}

afterAll(async () => {
  await removeNames(all);
}, 60_000);

describe('merged feeds (real serve, sims, broker, Redis)', () => {
  it('first-seen: two sims send the same export as two sources under different symbol names; the merged stream holds every tick exactly once, in order', async () => {
    const n = names('feedfirst');
    const groups: FeedGroupConfig[] = [
      {
        symbol: 'EURUSD',
        policy: 'first-seen',
        members: [
          { source: 'fs-a', symbol: 'EURUSD.a' },
          { source: 'fs-b', symbol: 'EURUSDm' },
        ],
        stallMs: 3000,
        maxLagMs: 5000,
        holdMs: 30_000,
        // The whole export (one day of tick time) stays matchable: every copy counts as a duplicate.
        dedupWindowMs: 2 * 86_400_000,
      },
    ];
    const serve = await startServe(serveArgs(n, ['--feed-groups', JSON.stringify(groups)]));
    try {
      const sim = (source: string, symbol: string) =>
        runSim([
          '--file',
          EXPORT,
          '--symbol',
          symbol,
          '--source',
          source,
          '--port',
          String(serve.ingressPort),
        ]);
      const [a, b] = await Promise.all([sim('fs-a', 'EURUSD.a'), sim('fs-b', 'EURUSDm')]);
      expect(a.code, a.output).toBe(0);
      expect(b.code, b.output).toBe(0);
      const total = captured(a.output);
      expect(captured(b.output)).toBe(total);
      expect(total).toBeGreaterThan(9000);

      // Every input is committed once the sims have their ACKs; read the merged topic.
      const messages = await readMerged(n.mergedTopic);
      const merged = journaledMergedFeed(messages);
      expect(merged.ticks.length).toBe(total);
      expect(new Set(merged.ticks.map((t) => t.symbol))).toEqual(new Set(['EURUSD']));
      // The merged stream is the export itself: each tick's own seq in its source is its
      // position in the file (both sims send the file from seq 1), whichever source it came from.
      expect(merged.ticks.map((t) => t.seq)).toEqual(merged.ticks.map((_, i) => i + 1));
      for (let i = 1; i < merged.ticks.length; i++)
        expect((merged.ticks[i]?.utcMsc ?? 0) >= (merged.ticks[i - 1]?.utcMsc ?? 0)).toBe(true);
      expect(merged.decisions).toEqual([]);
      expect(messages.filter((m) => m.headers[MergedHeader.KIND] === 'start').length).toBe(1);

      // The other copy of every tick was suppressed as a duplicate; the live views got the merged stream.
      expect(
        await metric(
          serve,
          /tickstream_feed_suppressed_ticks_total\{symbol="EURUSD",kind="duplicate"\} (\d+)/,
        ),
      ).toBe(total);
      expect(await metric(serve, /tickstream_feed_merged_ticks_total\{symbol="EURUSD"\} (\d+)/)).toBe(total);
      const redis = new Redis(REDIS_URL);
      try {
        expect(
          await waitFor(async () => (await redis.xlen(`${n.redisPrefix}:ticks:merged:EURUSD`)) === total),
        ).toBe(true);
        const quote = await redis.hgetall(`${n.redisPrefix}:quote:merged:EURUSD`);
        expect(Number(quote['bid'])).toBe(merged.ticks.at(-1)?.bid);
      } finally {
        await redis.quit();
      }

      // A replay of the journal through the rules gives the same merged stream.
      const replay = await replayMergedFeed({
        brokers: KAFKA_BROKERS,
        ticksTopic: n.ticksTopic,
        mergedTopic: n.mergedTopic,
        groups,
      });
      expect(replay.recomputed.ticks.length).toBe(total);
      expect(replay.recomputed).toEqual(replay.journaled);

      // Postgres: ticks_merged (loaded from the merged topic) holds the merged stream, canonical
      // symbol, each row naming its source; bars of the merged stream are in bars_1m as source merged.
      const db = new pg.Client({ connectionString: POSTGRES_DB });
      await db.connect();
      try {
        const count = async () =>
          (
            await db
              .query(`select count(*)::int as n from "${n.schema}".ticks_merged`)
              .catch(() => ({ rows: [{ n: -1 }] }))
          ).rows[0].n as number;
        expect(await waitFor(async () => (await count()) === total, 90_000)).toBe(true);
        const { rows } = await db.query(
          `select source, seq, symbol, extract(epoch from time) * 1000 as ms, bid, ask from "${n.schema}".ticks_merged order by time, seq`,
        );
        expect(new Set(rows.map((r) => r.symbol))).toEqual(new Set(['EURUSD']));
        const bySourceSeq = new Map(merged.ticks.map((t) => [`${t.source}#${t.seq}`, t]));
        for (const r of rows) {
          const t = bySourceSeq.get(`${r.source}#${r.seq}`);
          expect(t && Math.round(Number(r.ms)) === t.utcMsc && r.bid === t.bid && r.ask === t.ask).toBe(true);
        }
        const bars = await db.query(
          `select count(*)::int as n from "${n.schema}".bars_1m where source = 'merged' and symbol = 'EURUSD'`,
        );
        expect(bars.rows[0].n).toBeGreaterThan(0);

        // The history API reads the merged stream as source=merged: exactly the rows of ticks_merged.
        const res = await fetch(
          `http://127.0.0.1:${serve.httpPort}/api/v1/ticks?symbol=EURUSD&source=merged&from=0&to=${Date.now() + 86_400_000}&format=jsonl&limit=${total + 10}`,
        );
        expect(res.status).toBe(200);
        const lines = (await res.text())
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as { source: string; seq: number });
        expect(lines.map((l) => `${l.source}#${l.seq}`).sort()).toEqual(
          rows.map((r) => `${r.source}#${r.seq}`).sort(),
        );
      } finally {
        await db.end();
      }
    } finally {
      expect(await serve.stop()).toBe(0);
    }
  }, 240_000);

  it('failover: the primary killed -9 mid-stream → switch within the stall time, on from the secondary with no older tick; primary back → switch back only after the hold time; replay reproduces it', async () => {
    const n = names('feedfail');
    const stallMs = 2000;
    const holdMs = 4000;
    const groups: FeedGroupConfig[] = [
      {
        symbol: 'SYN',
        policy: 'failover',
        members: [
          { source: 'fo-a', symbol: 'SYN001' },
          { source: 'fo-b', symbol: 'SYN001' },
        ],
        stallMs,
        maxLagMs: 3000,
        holdMs,
        dedupWindowMs: 60_000,
      },
    ];
    const serve = await startServe(
      serveArgs(n, ['--feed-groups', JSON.stringify(groups), '--loader-enabled', 'false']),
    );
    const sim = (source: string, durationS: number) =>
      startCli([
        'sim',
        '--synthetic',
        '--symbols',
        '1',
        '--rate',
        '50',
        '--duration',
        String(durationS),
        '--source',
        source,
        '--port',
        String(serve.ingressPort),
      ]);
    const status = async () =>
      (await fetch(`http://127.0.0.1:${serve.httpPort}/status`).then((r) => r.json())) as {
        feeds: { symbol: string; active: string | null; why: string }[];
      };
    // A websocket client on the merged channel, subscribed before any tick.
    const wsTicks: { time: number; bid: number; source: string; symbol: string }[] = [];
    const ws = new WebSocket(`ws://127.0.0.1:${serve.httpPort}/ws`);
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const subscribed = new Promise((resolve) => ws.once('message', resolve));
    ws.on('message', (data: Buffer) => {
      const m = JSON.parse(data.toString()) as {
        type: string;
        source: string;
        symbol: string;
        ticks?: { time: number; bid: number }[];
      };
      if (m.type === 'ticks')
        for (const t of m.ticks ?? [])
          wsTicks.push({ time: t.time, bid: t.bid, source: m.source, symbol: m.symbol });
    });
    ws.send(JSON.stringify({ op: 'subscribe', channels: ['merged:SYN'] }));
    await subscribed;
    try {
      // The primary first, so the merged stream starts on it.
      const a = sim('fo-a', 40);
      expect(await waitFor(async () => (await status()).feeds[0]?.active === 'fo-a', 30_000)).toBe(true);
      const b = sim('fo-b', 40);
      // Both stream (2 s of the backup's ticks committed), then the primary dies without warning.
      const committedB = () => metric(serve, /^tickstream_ticks_committed_total\{source="fo-b"\} (\S+)$/m);
      expect(await waitFor(async () => ((await committedB()) ?? 0) >= 100, 30_000)).toBe(true);
      a.child.kill('SIGKILL');
      await a.exited;
      expect(await waitFor(async () => (await status()).feeds[0]?.active === 'fo-b', 20_000)).toBe(true);
      // The primary comes back (same source: it resumes from the journal).
      const a2 = sim('fo-a', 25);
      expect(await waitFor(async () => (await status()).feeds[0]?.active === 'fo-a', 30_000)).toBe(true);
      expect((await status()).feeds[0]?.why).toBe('recovered');
      a2.child.kill('SIGTERM');
      b.child.kill('SIGTERM');
      await Promise.all([a2.exited, b.exited]);
    } finally {
      ws.close();
      expect(await serve.stop()).toBe(0);
    }

    const messages = await readMerged(n.mergedTopic);
    const merged = journaledMergedFeed(messages);
    const decisions = merged.decisions;
    expect(decisions.map((d) => [d.from, d.to])).toEqual([
      [null, 'fo-a'],
      ['fo-a', 'fo-b'],
      ['fo-b', 'fo-a'],
      // fo-a stopped first at the end (SIGTERM): fo-b may or may not have taken over before serve stopped.
      ...decisions.slice(3).map((d) => [d.from, d.to]),
    ]);
    const [, away, back] = decisions as [Decision, Decision, Decision];
    expect(['disconnect', 'stall']).toContain(away.reason);
    expect(back.reason).toBe('recovered');
    // Receipt times of fo-a's inputs, as journaled: its last before the kill, its first after.
    const inputsOfA = messages
      .filter((m) => m.headers[MergedHeader.KIND] === 'ticks' && m.headers['source'] === 'fo-a')
      .map((m) => Number(m.headers[MergedHeader.RECEIVED_AT]));
    const lastBefore = Math.max(...inputsOfA.filter((t) => t <= away.atMs));
    const firstAfter = Math.min(...inputsOfA.filter((t) => t > away.atMs));
    expect(away.atMs - lastBefore).toBeLessThanOrEqual(stallMs);
    expect(back.atMs - firstAfter).toBeGreaterThanOrEqual(holdMs);
    // Merged ticks: never older than the last sent; from fo-b between the switches, from fo-a around them.
    for (let i = 1; i < merged.ticks.length; i++)
      expect((merged.ticks[i]?.utcMsc ?? 0) >= (merged.ticks[i - 1]?.utcMsc ?? 0)).toBe(true);
    const sources = merged.ticks.map((t) => t.source);
    const firstB = sources.indexOf('fo-b');
    const backToA = sources.indexOf('fo-a', firstB);
    expect(firstB).toBeGreaterThan(0);
    expect(backToA).toBeGreaterThan(firstB);
    expect(sources.slice(0, firstB).every((s) => s === 'fo-a')).toBe(true);
    expect(sources.slice(firstB, backToA).every((s) => s === 'fo-b')).toBe(true);
    expect(new Set(merged.ticks.map((t) => t.symbol))).toEqual(new Set(['SYN']));
    // The websocket channel merged:SYN carried the same stream.
    expect(new Set(wsTicks.map((t) => `${t.source}:${t.symbol}`))).toEqual(new Set(['merged:SYN']));
    expect(wsTicks.map((t) => [t.time, t.bid])).toEqual(merged.ticks.map((t) => [t.utcMsc, t.bid]));

    const replay = await replayMergedFeed({
      brokers: KAFKA_BROKERS,
      ticksTopic: n.ticksTopic,
      mergedTopic: n.mergedTopic,
      groups,
    });
    expect(replay.recomputed.decisions).toEqual(decisions);
    expect(replay.recomputed.ticks).toEqual(merged.ticks);
  }, 240_000);
});
