// Deterministic bars across a bridge crash (issue 13): the same input streamed twice, once
// without interruption and once with the bridge killed with SIGKILL in the middle of a minute
// and restarted; the 1-minute bars in Kafka (record bytes) and in Postgres bars_1m are equal,
// and recomputing the bars from the crashed run's journal alone gives them again.
//
// The input is a generated tick file dated ten minutes ahead of now: the terminals' heartbeat
// GMT (the real clock) never reaches an open bar, so in both runs bars close on ticks only and
// the last minute of each source stays open. --tick-max-ahead-ms lets those ticks in.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeBar } from '../../codecs/flat-record.js';
import { barsFromJournal, byKey } from '../../pipeline/bar-replay.js';
import { readJournal } from '../../sinks/kafka/reader.js';
import {
  freePorts,
  isolatedNames,
  KAFKA_BROKERS,
  type Names,
  POSTGRES_DB,
  removeNames,
  runSim,
  type ServeProcess,
  serveArgs,
  startServe,
  waitFor,
  withPorts,
} from '../helpers/procs.js';

const M = 60_000;
const SOURCES = ['barsA', 'barsB'];
const MINUTES = 4;
const dir = mkdtempSync(join(tmpdir(), 'tickstream-bars-restart-'));
const cleanups: Names[] = [];

afterAll(async () => {
  await removeNames(cleanups);
  rmSync(dir, { recursive: true, force: true });
});

/** A TrueFX CSV: a seeded random walk over MINUTES minutes from `startMs`, a few ticks a second. */
function tickFile(path: string, startMs: number, seed: number): number {
  let s = seed;
  const random = () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s / 2147483648;
  };
  const lines = ['timestamp,bid,ask'];
  let t = startMs;
  let bid = 1.1;
  while (t < startMs + MINUTES * M) {
    bid = Math.round((bid + (random() - 0.5) * 1e-4) * 1e5) / 1e5;
    const ask = Math.round((bid + 1e-4 + random() * 1e-4) * 1e5) / 1e5;
    lines.push(`${new Date(t).toISOString().replace('T', ' ').replace('Z', '+00:00')},${bid},${ask}`);
    t += Math.floor(random() * 400); // sometimes several ticks in one millisecond
  }
  writeFileSync(path, `${lines.join('\n')}\n`);
  return lines.length - 1;
}

function simArgs(source: string, port: number): string[] {
  return [
    '--file',
    join(dir, `${source}.csv`),
    '--symbol',
    'EURUSD',
    '--speed',
    '40',
    '--source',
    source,
    '--port',
    String(port),
  ];
}

async function committed(http: number): Promise<number> {
  try {
    const res = await fetch(`http://127.0.0.1:${http}/status`);
    const body = (await res.json()) as { sources: { source: string; committedSeq: number }[] };
    return body.sources.reduce((n, s) => n + s.committedSeq, 0);
  } catch {
    return 0;
  }
}

/** The bars topic, each record's key fields and its bytes, in (source, symbol, start) order. */
async function kafkaBars(
  n: Names,
): Promise<{ key: string; hex: string; lastSeq: number; tickCount: number }[]> {
  const out: { key: string; hex: string; lastSeq: number; tickCount: number }[] = [];
  await readJournal({
    brokers: KAFKA_BROKERS,
    topic: n.barsTopic,
    onMessages: (messages) => {
      for (const m of messages) {
        const b = decodeBar(m.value);
        out.push({
          key: `${b.source}/${b.symbol}/${b.startMs}`,
          hex: m.value.toString('hex'),
          lastSeq: b.lastSeq,
          tickCount: b.tickCount,
        });
      }
    },
  });
  return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

async function postgresBars(db: pg.Client, n: Names): Promise<unknown[]> {
  const { rows } = await db.query(`select * from "${n.schema}".bars_1m order by source, symbol, start`);
  return rows;
}

describe('bars across a kill -9 of the bridge', () => {
  it('equal those of an uninterrupted run of the same input, in Kafka and Postgres, and recomputed from the journal', async () => {
    const startMs = (Math.floor(Date.now() / M) + 10) * M + 17_000;
    const totals = SOURCES.map((source, i) => tickFile(join(dir, `${source}.csv`), startMs, 7 + i));
    const total = totals.reduce((a, b) => a + b, 0);
    // Closed bars: every minute the ticks touch but the last one, per source.
    const expectedBars = SOURCES.length * MINUTES;
    const extra = ['--tick-max-ahead-ms', String(60 * M)];

    const runA = isolatedNames('barsok');
    const runB = isolatedNames('barskill');
    cleanups.push(runA, runB);
    const [ingress, http] = (await freePorts(2)) as [number, number];
    const argsB = withPorts(serveArgs(runB, extra), ingress, http);
    const serveA = await startServe(serveArgs(runA, extra));
    let serveB: ServeProcess = await startServe(argsB);
    const db = new pg.Client({ connectionString: POSTGRES_DB });
    await db.connect();
    try {
      const simsA = SOURCES.map((s) => runSim(simArgs(s, serveA.ingressPort), 120_000));
      const simsB = SOURCES.map((s) => runSim(simArgs(s, ingress), 120_000));
      // Kill B once about 40 % is committed: the middle of some minute of each source.
      expect(await waitFor(async () => (await committed(http)) >= total * 0.4, 60_000)).toBe(true);
      serveB.child.kill('SIGKILL');
      await serveB.exited;
      serveB = await startServe(argsB, { TICKSTREAM_LOG_LEVEL: 'info' });
      for (const r of await Promise.all([...simsA, ...simsB])) expect(r.code, r.output).toBe(0);
      expect(serveB.output()).toMatch(/open 1-minute bars restored from the journal/);

      // Every closed minute, once each, in both runs.
      let barsA: Awaited<ReturnType<typeof kafkaBars>> = [];
      let barsB: typeof barsA = [];
      expect(
        await waitFor(async () => {
          [barsA, barsB] = await Promise.all([kafkaBars(runA), kafkaBars(runB)]);
          return barsA.length >= expectedBars && barsB.length >= expectedBars;
        }, 60_000),
      ).toBe(true);
      expect(barsA.length).toBe(expectedBars);
      expect(new Set(barsB.map((b) => b.key)).size, 'no minute twice in Kafka').toBe(barsB.length);
      expect(barsB).toEqual(barsA);

      // The same bars again from run B's journal alone (its ticks and bar events).
      const recomputed = await barsFromJournal({ brokers: KAFKA_BROKERS, ticksTopic: runB.ticksTopic });
      expect(recomputed.closed.sort(byKey).map((b) => `${b.source}/${b.symbol}/${b.startMs}`)).toEqual(
        barsB.map((b) => b.key),
      );
      const { encodeBar } = await import('../../codecs/flat-record.js');
      expect(recomputed.closed.map((b) => Buffer.from(encodeBar(b)).toString('hex'))).toEqual(
        barsB.map((b) => b.hex),
      );
      expect(recomputed.open.length).toBe(SOURCES.length);

      // Postgres: the loaders of both runs reach the same bars_1m.
      expect(
        await waitFor(async () => {
          try {
            const [a, b] = await Promise.all([postgresBars(db, runA), postgresBars(db, runB)]);
            return a.length === expectedBars && b.length === expectedBars;
          } catch {
            return false; // the schema is made when the loader starts
          }
        }, 60_000),
      ).toBe(true);
      expect(await postgresBars(db, runB)).toEqual(await postgresBars(db, runA));
    } finally {
      await db.end();
      await Promise.all([serveA.stop(), serveB.stop()]);
    }
  }, 240_000);
});
