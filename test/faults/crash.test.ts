// kill -9 at named crash points and at random moments while several simulated terminals
// stream; the bridge is restarted on the same ports and the terminals resend what was not
// ACKed. Checked by a plain consumer that shares no code with the sinks, by `tickstream verify`
// (journal and Postgres), and by reading the Redis streams.
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { samples, scrape } from '../helpers/http-probes.js';
import { readJournalTicks } from '../helpers/independent.js';
import {
  captured,
  freePorts,
  isolatedNames,
  type Names,
  REDIS_URL,
  removeNames,
  runCli,
  runSim,
  type ServeProcess,
  serveArgs,
  startServe,
  verifyArgs,
  waitFor,
  withPorts,
} from '../helpers/procs.js';

const redis = new Redis(REDIS_URL, { lazyConnect: true });
const cleanups: Names[] = [];

beforeAll(async () => {
  await redis.connect();
});
afterAll(async () => {
  await removeNames(cleanups);
  await redis.quit();
});

interface Run {
  names: Names;
  sources: string[];
  perSource: number;
}

/** Synthetic terminals: `rate × duration` ticks each over 3 symbols, sent as fast as credit allows. */
function simArgs(source: string, port: number, perSource: number, extra: string[] = []): string[] {
  return [
    '--synthetic',
    '--speed',
    'max',
    '--symbols',
    '3',
    '--rate',
    String(perSource / 10),
    '--duration',
    '10',
    '--seed',
    String(source.length * 7 + source.charCodeAt(source.length - 1)),
    '--source',
    source,
    '--port',
    String(port),
    ...extra,
  ];
}

/** Every (source, seq) exactly once, in order, in Kafka, in Postgres, and no Redis duplicates. */
async function expectExactlyOnce(run: Run, simOutputs: string[]): Promise<void> {
  const counts = simOutputs.map(captured);
  const total = counts.reduce((a, b) => a + b, 0);
  // The synthetic feed has about rate × duration ticks.
  for (const c of counts) expect(Math.abs(c - run.perSource)).toBeLessThan(run.perSource * 0.01);
  const journal = await readJournalTicks(run.names.ticksTopic, { expected: total, idleMs: 5000 });
  for (const [i, source] of run.sources.entries()) {
    const seqs = journal.filter((t) => t.source === source).map((t) => t.seq);
    expect(seqs.length, `${source}: ticks in Kafka`).toBe(counts[i]);
    expect(
      seqs.every((s, i) => s === i + 1),
      `${source}: seqs 1..N in order, once each`,
    ).toBe(true);
  }
  expect(journal.length).toBe(total);

  const verify = await runCli(verifyArgs(run.names));
  expect(verify.code, `verify said:\n${verify.output}`).toBe(0);
  expect(verify.output).toContain(`all ${run.sources.length} source(s) whole`);

  for (const source of run.sources) {
    const keys = await redis.keys(`${run.names.redisPrefix}:ticks:${source}:*`);
    const seqs: number[] = [];
    for (const k of keys)
      for (const [id] of await redis.xrange(k, '-', '+')) seqs.push(Number(id.split('-')[1]));
    expect(new Set(seqs).size, `${source}: no duplicate entries in Redis`).toBe(seqs.length);
  }
}

interface CrashCase {
  point: string;
  after: number;
  env?: Record<string, string>;
  sim?: string[];
  failPoint?: string;
}

const cases: CrashCase[] = [
  { point: 'after-decode-before-produce', after: 5 },
  { point: 'journal-mid-transaction', after: 3 },
  { point: 'after-commit-before-ack', after: 3 },
  { point: 'bridge-mid-resend', after: 1, sim: ['--drop-frame', '2'] },
  {
    point: 'journal-during-abort',
    after: 1,
    env: { TICKSTREAM_FAIL_AT: 'journal-commit', TICKSTREAM_FAIL_AFTER: '3' },
    failPoint: 'journal-commit',
  },
];

describe('kill -9 of the bridge at each crash point, then restart: exactly once everywhere', () => {
  for (const c of cases) {
    it(`${c.point}`, async () => {
      const names = isolatedNames('crash');
      cleanups.push(names);
      const [ingress, http] = (await freePorts(2)) as [number, number];
      const args = withPorts(serveArgs(names), ingress, http);
      const run: Run = { names, sources: ['ea1', 'ea2', 'ea3'], perSource: 40_000 };
      const first = await startServe(args, {
        TICKSTREAM_CRASH_AT: c.point,
        TICKSTREAM_CRASH_AFTER: String(c.after),
        ...c.env,
      });
      const sims = run.sources.map((s, i) =>
        runSim(simArgs(s, ingress, run.perSource, i === 0 ? (c.sim ?? []) : [])),
      );
      const code = await Promise.race([
        first.exited,
        new Promise((r) => setTimeout(() => r('alive'), 60_000)),
      ]);
      expect(first.output()).toContain(`crash point ${c.point} hit`);
      if (c.failPoint) expect(first.output()).toContain(`fail point ${c.failPoint} hit`);
      expect(code).toBeNull(); // killed by SIGKILL, not exited
      const second = await startServe(args);
      try {
        const results = await Promise.all(sims);
        for (const r of results) expect(r.code, r.output).toBe(0);
        await expectExactlyOnce(
          run,
          results.map((r) => r.output),
        );
      } finally {
        expect(await second.stop()).toBe(0);
      }
    }, 180_000);
  }
});

describe('kill -9 at random moments while 600k ticks stream from 3 terminals', () => {
  it('two random kills, restarts, the terminals resend: exactly once', async () => {
    const names = isolatedNames('random');
    cleanups.push(names);
    const [ingress, http] = (await freePorts(2)) as [number, number];
    const args = withPorts(serveArgs(names), ingress, http);
    const run: Run = { names, sources: ['r1', 'r2', 'r3'], perSource: 200_000 };
    let serve: ServeProcess = await startServe(args);
    const sims = run.sources.map((s) => runSim(simArgs(s, ingress, run.perSource), 240_000));
    const kills: number[] = [];
    for (let k = 0; k < 2; k++) {
      const delay = 300 + Math.floor(Math.random() * 1500);
      kills.push(delay);
      await new Promise((r) => setTimeout(r, delay));
      expect(await serve.stop('SIGKILL')).toBeNull();
      serve = await startServe(args);
    }
    try {
      const results = await Promise.all(sims);
      for (const r of results) expect(r.code, r.output).toBe(0);
      // The kills landed mid-stream: the terminals had to reconnect.
      expect(
        results.some((r) => !/reconnects 0,/.test(r.output)),
        `kills after ${kills.join(', ')} ms`,
      ).toBe(true);
      await expectExactlyOnce(
        run,
        results.map((r) => r.output),
      );
    } finally {
      expect(await serve.stop()).toBe(0);
    }
  }, 300_000);
});

describe('a terminal restarted with an empty memory', () => {
  it('resumes from HELLO_ACK: nothing lost, nothing repeated', async () => {
    const names = isolatedNames('amnesia');
    cleanups.push(names);
    const serve = await startServe(serveArgs(names));
    try {
      const run: Run = { names, sources: ['am1'], perSource: 60_000 };
      const r = await runSim(simArgs('am1', serve.ingressPort, run.perSource, ['--restart-after', '25000']));
      expect(r.code, r.output).toBe(0);
      expect(r.output).toMatch(/restarts 1,/);
      await expectExactlyOnce(run, [r.output]);
    } finally {
      expect(await serve.stop()).toBe(0);
    }
  }, 120_000);
});

describe('SIGTERM', () => {
  it('drains, flushes, ACKs and exits 0 within the deadline; the terminal finishes after a restart', async () => {
    const names = isolatedNames('sigterm');
    cleanups.push(names);
    const [ingress, http] = (await freePorts(2)) as [number, number];
    const args = withPorts(serveArgs(names, ['--shutdown-deadline-ms', '5000']), ingress, http);
    const first = await startServe(args);
    const run: Run = { names, sources: ['st1'], perSource: 150_000 };
    // Paced in real time (15 s of history at 10k ticks/s), so SIGTERM lands mid-stream and the
    // terminal would stream on far past the deadline: serve must not wait for it to leave.
    const sim = runSim([
      '--synthetic',
      '--symbols',
      '2',
      '--rate',
      '10000',
      '--duration',
      '15',
      '--speed',
      '1',
      '--source',
      'st1',
      '--port',
      String(ingress),
    ]);
    // SIGTERM once the journal has committed some of the stream (mid-stream, not before it).
    const committed = async () =>
      samples(await scrape(http), 'tickstream_ticks_committed_total', 'source')['st1'] ?? 0;
    expect(await waitFor(async () => (await committed()) >= 5000, 30_000)).toBe(true);
    const t0 = Date.now();
    expect(await first.stop('SIGTERM')).toBe(0);
    const tookMs = Date.now() - t0;
    expect(tookMs).toBeLessThan(5000 + 3000);
    const second = await startServe(args);
    try {
      const r = await sim;
      expect(r.code, r.output).toBe(0);
      await expectExactlyOnce(run, [r.output]);
    } finally {
      expect(await second.stop()).toBe(0);
    }
  }, 120_000);
});
