// `tickstream replay --speed N`: paced by the ticks' own UTC spacing. The issue's case: a
// recorded hour (Dukascopy BTCUSD, 12:00-13:00 UTC) replayed at x60 lasts one minute +-2 %,
// measured from outside as the time between the first and the last line reaching the reader.
// Also: paced sources come merged by tick time, each in seq order.
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  captured,
  dataDir,
  isolatedNames,
  removeNames,
  runSim,
  type ServeProcess,
  serveArgs,
  startCli,
  startServe,
} from '../helpers/procs.js';

const dukaFile = `${dataDir}dukascopy_BTCUSD_ticks_20230220T12_14_utc.csv`;
const haveData = existsSync(dukaFile);
if (!haveData) console.warn(`SKIPPED: ../shared/data tick file not found under ${dataDir}`);

interface Line {
  source: string;
  seq: number;
  time: number;
  /** performance.now() when the line reached this process. */
  at: number;
}

/** Runs replay to stdout and timestamps every line as it arrives. */
async function pacedReplay(args: string[]): Promise<{ code: number | null; lines: Line[]; output: string }> {
  const p = startCli(['replay', ...args]);
  const lines: Line[] = [];
  let rest = '';
  p.child.stdout.on('data', (d: Buffer) => {
    const at = performance.now();
    const parts = (rest + d.toString()).split('\n');
    rest = parts.pop() ?? '';
    for (const text of parts) {
      const t = JSON.parse(text) as { source: string; seq: number; time: number };
      lines.push({ source: t.source, seq: t.seq, time: t.time, at });
    }
  });
  const timer = setTimeout(() => p.child.kill('SIGKILL'), 120_000);
  const code = await p.exited;
  clearTimeout(timer);
  return { code, lines, output: p.output() };
}

describe.skipIf(!haveData)('replay --speed N (real serve, sim and broker)', () => {
  const n = isolatedNames('rppace');
  let serve: ServeProcess;

  beforeAll(async () => {
    serve = await startServe(serveArgs(n));
    const port = String(serve.ingressPort);
    const sim = (args: string[]) => runSim([...args, '--port', port]);
    const results = await Promise.all([
      sim(['--file', dukaFile, '--source', 'duka']),
      ...['syna', 'synb'].map((source, i) =>
        sim([
          '--synthetic',
          // One symbol: a source's seq order is then its time order (the sim polls symbol
          // after symbol, so with several a source goes back in time at each symbol).
          '--symbols',
          '1',
          '--rate',
          '200',
          '--duration',
          '20',
          '--seed',
          String(i + 1),
          '--speed',
          'max',
          '--source',
          source,
        ]),
      ),
    ]);
    for (const r of results) expect(r.code, r.output).toBe(0);
    expect(captured(results[0]?.output ?? '')).toBe(14_716);
  }, 180_000);

  afterAll(async () => {
    expect(await serve?.stop()).toBe(0);
    await removeNames([n]);
  }, 60_000);

  it('x60 of a recorded hour lasts one minute +-2 %, every tick of the hour in time order', async () => {
    const r = await pacedReplay([
      '--ticks-topic',
      n.ticksTopic,
      '--source',
      'duka',
      '--from',
      '2023-02-20T12:00:00Z',
      '--to',
      '2023-02-20T13:00:00Z',
      '--speed',
      '60',
    ]);
    expect(r.code, r.output).toBe(0);
    const { lines } = r;
    const first = lines[0] as Line;
    const last = lines[lines.length - 1] as Line;
    // The hour is recorded end to end: its first and last ticks are seconds from its edges.
    expect(first.time - Date.parse('2023-02-20T12:00:00Z')).toBeLessThan(5_000);
    expect(Date.parse('2023-02-20T13:00:00Z') - last.time).toBeLessThan(5_000);
    expect(lines.map((l) => l.seq)).toEqual(lines.map((_, i) => (first.seq as number) + i));
    const want = (last.time - first.time) / 60;
    const took = last.at - first.at;
    expect(
      Math.abs(took - want) / want,
      `took ${took.toFixed(0)} ms for ${want.toFixed(0)} ms`,
    ).toBeLessThanOrEqual(0.02);
  }, 120_000);

  it('paced sources come merged by tick time, each in seq order', async () => {
    const speed = 20;
    const r = await pacedReplay([
      '--ticks-topic',
      n.ticksTopic,
      '--source',
      'syna,synb',
      '--speed',
      String(speed),
    ]);
    expect(r.code, r.output).toBe(0);
    expect(r.lines.length).toBe(8000);
    for (const source of ['syna', 'synb']) {
      const seqs = r.lines.filter((l) => l.source === source).map((l) => l.seq);
      expect(seqs).toEqual(seqs.map((_, i) => i + 1));
    }
    // Slices of one source span at most speed x 20 ms of tick time: the only way back in time.
    let back = 0;
    let latest = Number.NEGATIVE_INFINITY;
    for (const l of r.lines) {
      back = Math.max(back, latest - l.time);
      latest = Math.max(latest, l.time);
    }
    expect(back).toBeLessThanOrEqual(speed * 20);
    // Both sources stream at once: they interleave instead of coming one after the other.
    const switches = r.lines.filter((l, i) => i > 0 && r.lines[i - 1]?.source !== l.source).length;
    expect(switches).toBeGreaterThan(10);
  }, 120_000);
});
