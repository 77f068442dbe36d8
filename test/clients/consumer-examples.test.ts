// Every example of docs/consumers.md runs here, so none can rot: for each way in (websocket,
// Kafka, Redis, Postgres, history API) the TypeScript one (examples/ts, built into dist/) and the
// Python one (clients/python/examples), against a real `serve` fed by `sim`. Each prints one
// line per tick, `source seq symbol iso-time bid ask`, compared here with the input file.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FileTick, parseMt5ExportFile } from '../helpers/independent.js';
import {
  dataDir,
  isolatedNames,
  KAFKA_BROKERS,
  POSTGRES_DB,
  REDIS_URL,
  removeNames,
  repoRoot,
  runSim,
  type ServeProcess,
  serveArgs,
  startServe,
  waitFor,
} from '../helpers/procs.js';
import { PYTHON, pythonEnv } from '../helpers/python.js';

const mt5File = `${dataDir}EURUSD_mt5_export_derived_from_histdata.csv`;
const haveData = existsSync(mt5File);
if (!haveData) console.warn(`SKIPPED: ../shared/data tick files not found under ${dataDir}`);

type Line = [string, number, string, string, number, number];

const lineOf = (source: string, seq: number, t: FileTick): Line => [
  source,
  seq,
  'EURUSD',
  new Date(t.utcMsc).toISOString(),
  t.bid,
  t.ask,
];

/** Output lines `source seq symbol iso bid ask` (other lines, like `subscribed …`, dropped). */
function parse(output: string): Line[] {
  return output
    .split('\n')
    .map((l) => l.split(' '))
    .filter((p) => p.length === 6)
    .map(([source, seq, symbol, iso, bid, ask]) => [
      source as string,
      Number(seq),
      symbol as string,
      iso as string,
      Number(bid),
      Number(ask),
    ]);
}

/** A process whose code runs with `node` (TypeScript, built) or `python3`, started now. */
function example(kind: 'ts' | 'py', name: string, args: string[], env: Record<string, string>) {
  const cmd =
    kind === 'ts'
      ? ['node', `${repoRoot}dist/examples/ts/${name}.js`, ...args]
      : [PYTHON, `${repoRoot}clients/python/examples/${name}.py`, ...args];
  return runCommand(cmd, env);
}

function runCommand(cmd: string[], env: Record<string, string>) {
  const child = spawn(cmd[0] as string, cmd.slice(1), {
    cwd: repoRoot,
    env: pythonEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  return {
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    /** Waits for the exit (SIGKILL by pid after `timeoutMs`); resolves to the exit code. */
    done: async (timeoutMs = 120_000) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

describe.skipIf(!haveData)('docs/consumers.md examples, TypeScript and Python, against a real serve', () => {
  const n = isolatedNames('examples');
  const source = 'exa';
  const mt5 = haveData ? parseMt5ExportFile(mt5File, 2) : [];
  const all = mt5.map((t, i) => lineOf(source, i + 1, t));
  let serve: ServeProcess;
  let env: Record<string, string> = {};
  const wsRuns: Record<string, ReturnType<typeof runCommand>> = {};
  const db = new pg.Client({ connectionString: POSTGRES_DB });
  // A range of the run for Postgres and the history API: ticks 1000 to 1999's times, half-open.
  const from = new Date((mt5[999] as FileTick | undefined)?.utcMsc ?? 0).toISOString();
  const to = new Date((mt5[1999] as FileTick | undefined)?.utcMsc ?? 0).toISOString();
  const inRange = all.filter((l) => l[3] >= from && l[3] < to);
  // Rows per page of the history examples: the range takes several pages, joined by their cursors.
  const pageRows = 300;

  beforeAll(async () => {
    await db.connect();
    serve = await startServe(
      serveArgs(n, ['--source-time-zones', `${source}=+2`, '--ws-max-backpressure-bytes', String(256 << 20)]),
    );
    env = {
      TICKSTREAM_WS_URL: `ws://127.0.0.1:${serve.httpPort}/ws`,
      TICKSTREAM_HTTP_URL: `http://127.0.0.1:${serve.httpPort}`,
      TICKSTREAM_KAFKA_BROKERS: KAFKA_BROKERS,
      TICKSTREAM_REDIS_URL: REDIS_URL,
      TICKSTREAM_REDIS_KEY_PREFIX: n.redisPrefix,
      TICKSTREAM_POSTGRES_URL: POSTGRES_DB,
      TICKSTREAM_POSTGRES_SCHEMA: n.schema,
    };
    // The websocket examples subscribe before the run and stop after its last tick.
    for (const kind of ['ts', 'py'] as const)
      wsRuns[kind] = example(
        kind,
        kind === 'ts' ? 'websocket' : 'ws_ticks',
        ['EURUSD', String(mt5.length)],
        env,
      );
    for (const [kind, run] of Object.entries(wsRuns))
      expect(
        await waitFor(() => run.stdout().includes('subscribed EURUSD'), 30_000),
        `${kind}: ${run.stderr()}`,
      ).toBe(true);
    const sim = await runSim([
      '--file',
      mt5File,
      '--source',
      source,
      '--server-utc-offset',
      '2',
      '--port',
      String(serve.ingressPort),
    ]);
    expect(sim.code, sim.output).toBe(0);
  }, 180_000);

  afterAll(async () => {
    for (const run of Object.values(wsRuns)) if (run.child.exitCode === null) run.child.kill('SIGKILL');
    expect(await serve?.stop()).toBe(0);
    await db.end();
    await removeNames([n]);
  }, 60_000);

  for (const kind of ['ts', 'py'] as const) {
    it(`websocket (${kind}): every live tick of the run`, async () => {
      const run = wsRuns[kind] as ReturnType<typeof runCommand>;
      expect(await run.done(), run.stderr()).toBe(0);
      expect(parse(run.stdout())).toEqual(all);
    });

    it(`Kafka (${kind}): every committed tick of the journal`, async () => {
      const run = example(kind, kind === 'ts' ? 'kafka' : 'kafka_ticks', [n.ticksTopic], env);
      expect(await run.done(), run.stderr()).toBe(0);
      expect(parse(run.stdout())).toEqual(all);
    });

    it(`Redis (${kind}): every tick of the source's stream`, async () => {
      const key = `${n.redisPrefix}:ticks:${source}:EURUSD`;
      const { Redis } = await import('ioredis');
      const redis = new Redis(REDIS_URL);
      try {
        expect(await waitFor(async () => (await redis.xlen(key)) >= mt5.length, 30_000)).toBe(true);
      } finally {
        await redis.quit();
      }
      const run = example(kind, kind === 'ts' ? 'redis' : 'redis_ticks', [source, 'EURUSD'], env);
      expect(await run.done(), run.stderr()).toBe(0);
      expect(parse(run.stdout())).toEqual(all);
    });

    it(`Postgres (${kind}): the ticks of a UTC range`, async () => {
      const count = async () =>
        Number((await db.query(`select count(*) as n from "${n.schema}".ticks`)).rows[0].n);
      expect(await waitFor(async () => (await count()) >= mt5.length, 90_000)).toBe(true);
      const run = example(kind, kind === 'ts' ? 'postgres' : 'postgres_ticks', ['EURUSD', from, to], env);
      expect(await run.done(), run.stderr()).toBe(0);
      expect(inRange.length).toBeGreaterThan(500);
      expect(parse(run.stdout())).toEqual(inRange);
    });

    it(`history API (${kind}): the ticks of a UTC range, streamed as JSON lines, page after page`, async () => {
      const count = async () =>
        Number((await db.query(`select count(*) as n from "${n.schema}".ticks`)).rows[0].n);
      expect(await waitFor(async () => (await count()) >= mt5.length, 90_000)).toBe(true);
      const run = example(
        kind,
        kind === 'ts' ? 'history' : 'history_ticks',
        ['EURUSD', from, to, String(pageRows)],
        env,
      );
      expect(await run.done(), run.stderr()).toBe(0);
      expect(parse(run.stdout())).toEqual(inRange);
    });
  }
});
