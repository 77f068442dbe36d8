/**
 * The process and metrics harness shared by the tests (test/helpers/procs.ts imports it from
 * source) and the bench (bench/e2e.ts, compiled): where the CLI is, the services' addresses,
 * spawning `tickstream` commands with their output kept, starting `serve` and waiting for its
 * ports, stopping a child by its pid, private names for topics/keys/schemas and their removal,
 * reading /metrics and /proc. Every process is stopped by its pid; nothing else is touched.
 */
import { type ChildProcess, type ChildProcessByStdio, execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';

const here = import.meta.url;
/** The repository: bench/ in the source tree, dist/bench/ once built. */
export const repoRoot = fileURLToPath(new URL(here.includes('/dist/') ? '../../' : '../', here));
export const cliPath = `${repoRoot}bin/tickstream.js`;
/**
 * The services: the machine's Redis and Postgres and the project's broker, or the fresh ones
 * .ci/run makes for each run (through these variables).
 */
export const KAFKA_BROKERS = process.env['TICKSTREAM_KAFKA_BROKERS'] ?? '127.0.0.1:9092';
export const REDIS_URL = process.env['TICKSTREAM_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
export const POSTGRES_URL =
  process.env['TICKSTREAM_POSTGRES_URL'] ?? 'postgres://postgres@127.0.0.1:5432/tickstream';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Processes

/** Children still running; killed by pid when this process exits, even after a failure. */
const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of children) if (c.pid && c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

export interface CliProcess {
  child: ChildProcessByStdio<null, Readable, Readable>;
  /** Resolves to the exit code (null when killed by a signal). */
  exited: Promise<number | null>;
  /** What it printed so far, stdout and stderr interleaved (the newest part past `keepChars`). */
  output(): string;
}

export interface CliOptions {
  env?: Record<string, string>;
  /** Flags for node itself, e.g. `--cpu-prof`. */
  nodeArgs?: string[];
  /** Keep at most about this much output (a long bench level prints a lot); default: all. */
  keepChars?: number;
}

/** Spawns `node bin/tickstream.js ARGS` (log level warn unless env says otherwise). */
export function startCli(args: string[], options: CliOptions = {}): CliProcess {
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), cliPath, ...args], {
    cwd: repoRoot,
    env: { ...process.env, TICKSTREAM_LOG_LEVEL: 'warn', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  const keep = options.keepChars ?? Number.POSITIVE_INFINITY;
  let text = '';
  const add = (d: Buffer) => {
    text += d.toString();
    if (text.length > 2 * keep) text = text.slice(-keep);
  };
  child.stdout.on('data', add);
  child.stderr.on('data', add);
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  return { child, exited, output: () => text };
}

export interface ServeProcess extends CliProcess {
  ingressPort: number;
  httpPort: number;
  /** SIGTERM (or `signal`) and wait; resolves to the exit code (null when killed by a signal). */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts `tickstream serve ARGS` and waits until it prints its ports. */
export async function startServe(
  args: string[],
  options: CliOptions & { timeoutMs?: number } = {},
): Promise<ServeProcess> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const p = startCli(['serve', ...args], options);
  const [ingressPort, httpPort] = await new Promise<[number, number]>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`serve did not start in ${timeoutMs} ms:\n${p.output()}`)),
      timeoutMs,
    );
    const check = () => {
      const m = /EA ingress :(\d+), websockets\/metrics :(\d+)/.exec(p.output());
      if (m) {
        clearTimeout(timer);
        p.child.stdout.off('data', check);
        resolve([Number(m[1]), Number(m[2])]);
      }
    };
    p.child.stdout.on('data', check);
    void p.exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`serve exited with ${code} before serving:\n${p.output()}`));
    });
  });
  return {
    ...p,
    ingressPort,
    httpPort,
    stop: async (signal = 'SIGTERM') => {
      if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill(signal);
      return p.exited;
    },
  };
}

/**
 * Waits `graceMs` for a child to leave on its own, then SIGTERM and three times as long, then
 * SIGKILL. Resolves once it is gone.
 */
export async function stopChild(
  child: ChildProcess,
  exited: Promise<unknown>,
  graceMs: number,
): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = () => exited.then(() => true);
  if (await Promise.race([gone(), sleep(graceMs).then(() => false)])) return;
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  if (await Promise.race([gone(), sleep(graceMs * 3).then(() => false)])) return;
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await exited;
}

/** Polls `probe` until it returns true or the time is up; returns the last verdict. */
export async function waitFor(probe: () => Promise<boolean> | boolean, timeoutMs = 30_000): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await probe()) return true;
    if (Date.now() > end) return false;
    await sleep(200);
  }
}

// ---------------------------------------------------------------------------------------------
// Private names and their removal

/**
 * Names of one run's private Kafka topics, Redis keys, Postgres schema and loader group. Tests
 * use the root `t` (topics `t.<id>.ticks`, schema `<id>`), the bench `bench` (topics
 * `bench.<id>.ticks`, schema `bench_<id>`).
 */
export function isolatedNames(tag: string, root: 't' | 'bench' = 't') {
  const id = `${tag}_${randomUUID().replaceAll('-', '').slice(0, 8)}`;
  return {
    id,
    ticksTopic: `${root}.${id}.ticks`,
    barsTopic: `${root}.${id}.bars`,
    sourcesTopic: `${root}.${id}.sources`,
    mergedTopic: `${root}.${id}.merged`,
    redisPrefix: `${root}:${id}`,
    schema: root === 't' ? id : `${root}_${id}`,
    group: root === 't' ? `g-${id}` : `g-${root}-${id}`,
  };
}

export type Names = ReturnType<typeof isolatedNames>;

/**
 * Removes the Kafka topics and loader groups, Redis keys (SCAN + UNLINK by prefix) and Postgres
 * schemas of the given names. Returns what could not be removed (nothing: an empty list).
 */
export async function removeNames(all: readonly Names[], brokers = KAFKA_BROKERS): Promise<string[]> {
  const problems: string[] = [];
  const { Redis } = await import('ioredis');
  const pg = (await import('pg')).default;
  const RdKafka = (await import('@confluentinc/kafka-javascript')).default;
  const admin = RdKafka.AdminClient.create({ 'metadata.broker.list': brokers });
  try {
    for (const n of all) {
      for (const topic of [n.ticksTopic, n.barsTopic, n.sourcesTopic, n.mergedTopic])
        await new Promise<void>((resolve) =>
          admin.deleteTopic(topic, 10_000, (err) => {
            if (err && err.code !== RdKafka.CODES.ERRORS.ERR_UNKNOWN_TOPIC_OR_PART)
              problems.push(`topic ${topic}: ${err.message}`);
            resolve();
          }),
        );
      await new Promise<void>((resolve) =>
        admin.deleteGroups([n.group], { timeout: 10_000 }, () => resolve()),
      );
    }
  } finally {
    admin.disconnect();
  }
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 2 });
  const db = new pg.Client({ connectionString: POSTGRES_URL });
  try {
    await redis.connect();
    for (const n of all) {
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${n.redisPrefix}:*`, 'COUNT', 1000);
        cursor = next;
        if (keys.length) await redis.unlink(...keys);
      } while (cursor !== '0');
    }
  } catch (err) {
    problems.push(`redis keys: ${(err as Error).message}`);
  } finally {
    redis.disconnect();
  }
  try {
    await db.connect();
    for (const n of all) await db.query(`drop schema if exists "${n.schema}" cascade`);
  } catch (err) {
    problems.push(`schemas: ${(err as Error).message}`);
  } finally {
    await db.end().catch(() => undefined);
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// /metrics

/** GET /metrics of a serve as Prometheus text. */
export async function scrape(httpPort: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${httpPort}/metrics`, { signal: AbortSignal.timeout(5000) });
  if (!res.ok) throw new Error(`GET /metrics: ${res.status}`);
  return res.text();
}

/** Series (name with its labels, as printed) → value. */
export type Metrics = Map<string, number>;

export function parseMetrics(text: string): Metrics {
  const out: Metrics = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

export async function fetchMetrics(httpPort: number): Promise<Metrics> {
  return parseMetrics(await scrape(httpPort));
}

// ---------------------------------------------------------------------------------------------
// /proc

let clockTicks = 100;
try {
  clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  // the Linux default
}

export interface ProcSample {
  /** utime + stime of the whole thread group, seconds. */
  cpuS: number;
  rssMb: number;
  /** VmHWM: peak RSS since the process started. */
  hwmMb: number;
}

/** CPU seconds and memory of a process, null when it is gone. */
export function readProc(pid: number): ProcSample | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after "(comm) ": state is field 3, utime 14, stime 15.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cpuS = (Number(rest[11]) + Number(rest[12])) / clockTicks;
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (re: RegExp) => Number(re.exec(status)?.[1] ?? 0);
    return { cpuS, rssMb: kb(/VmRSS:\s+(\d+) kB/) / 1024, hwmMb: kb(/VmHWM:\s+(\d+) kB/) / 1024 };
  } catch {
    return null;
  }
}

/** Busy core-seconds of the whole machine so far (everything but idle and iowait). */
export function machineBusyS(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
  return (total - (v[3] ?? 0) - (v[4] ?? 0)) / clockTicks;
}
