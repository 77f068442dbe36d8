// Real `tickstream` processes for integration and fault tests: `serve` on ports of its own
// (0: the OS picks), `sim` runs, each with its own topics, Redis prefix and Postgres schema.
// Every process is stopped by its pid; nothing else is touched.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
export const cliPath = `${repoRoot}bin/tickstream.js`;
/** The shared real tick files: ../shared/data next to the repository, or TICKSTREAM_DATA_DIR. */
export const dataDir = process.env['TICKSTREAM_DATA_DIR']
  ? `${process.env['TICKSTREAM_DATA_DIR'].replace(/\/$/, '')}/`
  : fileURLToPath(new URL('../../../shared/data/', import.meta.url));
/**
 * The services every test talks to: the machine's Redis and Postgres and the project's broker,
 * or the fresh database and broker that .ci/run makes for each run (through these variables).
 */
export const KAFKA_BROKERS = process.env['TICKSTREAM_KAFKA_BROKERS'] ?? '127.0.0.1:9092';
export const REDIS_URL = process.env['TICKSTREAM_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
export const POSTGRES_DB =
  process.env['TICKSTREAM_POSTGRES_URL'] ?? 'postgres://postgres@127.0.0.1:5432/tickstream';

/** Children still running; killed by pid when this test process exits, even after a failure. */
const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of children) if (c.pid && c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});
function track(child: ChildProcess): void {
  children.add(child);
  child.once('exit', () => children.delete(child));
}

/** Names of one test's private Kafka topics, Redis keys and Postgres schema. */
export function isolatedNames(tag: string) {
  const id = `${tag}_${randomUUID().replaceAll('-', '').slice(0, 8)}`;
  return {
    id,
    ticksTopic: `t.${id}.ticks`,
    barsTopic: `t.${id}.bars`,
    sourcesTopic: `t.${id}.sources`,
    mergedTopic: `t.${id}.merged`,
    redisPrefix: `t:${id}`,
    schema: id,
    group: `g-${id}`,
  };
}

export type Names = ReturnType<typeof isolatedNames>;

export function serveArgs(n: Names, extra: string[] = []): string[] {
  return [
    '--ingress-port',
    '0',
    '--http-port',
    '0',
    '--instance-id',
    n.id,
    '--ticks-topic',
    n.ticksTopic,
    '--bars-topic',
    n.barsTopic,
    '--sources-topic',
    n.sourcesTopic,
    '--merged-ticks-topic',
    n.mergedTopic,
    '--topic-partitions',
    '3',
    '--redis-key-prefix',
    n.redisPrefix,
    '--postgres-schema',
    n.schema,
    '--loader-group-id',
    n.group,
    '--heartbeat-timeout-ms',
    '5000',
    ...extra,
  ];
}

export interface ServeProcess {
  child: ChildProcess;
  ingressPort: number;
  httpPort: number;
  /** Everything the process printed so far (stdout and stderr). */
  output(): string;
  /** SIGTERM and wait; resolves to the exit code (null when killed by a signal). */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  exited: Promise<number | null>;
}

/** Starts `tickstream serve` and waits until it prints its ports. */
export async function startServe(
  args: string[],
  env: Record<string, string> = {},
  timeoutMs = 30_000,
): Promise<ServeProcess> {
  const child = spawn(process.execPath, [cliPath, 'serve', ...args], {
    cwd: repoRoot,
    env: { ...process.env, TICKSTREAM_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  track(child);
  let text = '';
  child.stdout?.on('data', (d: Buffer) => {
    text += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    text += d.toString();
  });
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  const ports = await new Promise<[number, number]>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`serve did not start in ${timeoutMs} ms:\n${text}`)),
      timeoutMs,
    );
    const check = () => {
      const m = /EA ingress :(\d+), websockets\/metrics :(\d+)/.exec(text);
      if (m) {
        clearTimeout(timer);
        resolve([Number(m[1]), Number(m[2])]);
      }
    };
    child.stdout?.on('data', check);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`serve exited with ${code} before serving:\n${text}`));
    });
  });
  return {
    child,
    ingressPort: ports[0],
    httpPort: ports[1],
    output: () => text,
    exited,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

export interface SimResult {
  code: number | null;
  output: string;
}

/** Runs `tickstream sim` to its end (killed by pid after `timeoutMs`). */
export function runSim(args: string[], timeoutMs = 120_000): Promise<SimResult> {
  return runCli(['sim', ...args], {}, timeoutMs);
}

/** Polls `probe` until it returns true or the time is up; returns the last verdict. */
export async function waitFor(probe: () => Promise<boolean> | boolean, timeoutMs = 30_000): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await probe()) return true;
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Ports free right now on loopback (for processes that must come back on the same port). */
export async function freePorts(count: number): Promise<number[]> {
  const { createServer } = await import('node:net');
  const servers = await Promise.all(
    Array.from({ length: count }, async () => {
      const s = createServer();
      await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
      return s;
    }),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
}

/** `serveArgs` with fixed ports instead of 0. */
export function withPorts(args: string[], ingressPort: number, httpPort: number): string[] {
  const out = [...args];
  out[out.indexOf('--ingress-port') + 1] = String(ingressPort);
  out[out.indexOf('--http-port') + 1] = String(httpPort);
  return out;
}

/** Runs any `tickstream` subcommand to its end. */
export async function runCli(
  args: string[],
  env: Record<string, string> = {},
  timeoutMs = 120_000,
): Promise<SimResult> {
  const p = startCli(args, env);
  const timer = setTimeout(() => p.child.kill('SIGKILL'), timeoutMs);
  const code = await p.exited;
  clearTimeout(timer);
  return { code, output: p.output() };
}

/** `tickstream verify` over one test's topic and schema. */
export function verifyArgs(n: Names, waitPostgresS = 60): string[] {
  return [
    'verify',
    '--ticks-topic',
    n.ticksTopic,
    '--postgres-schema',
    n.schema,
    '--wait-postgres',
    String(waitPostgresS),
  ];
}

/** A `tickstream` long-running process (loader, serve without waiting for ports). */
export function startCli(args: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, [cliPath, ...args], {
    cwd: repoRoot,
    env: { ...process.env, TICKSTREAM_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  track(child);
  let output = '';
  child.stdout.on('data', (d: Buffer) => {
    output += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    output += d.toString();
  });
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  return { child, exited, output: () => output };
}

/** Ticks a sim run captured and had ACKed, from its summary line. */
export function captured(output: string): number {
  const m = /(\d+) ticks captured and ACKed/.exec(output);
  if (!m) throw new Error(`no sim summary in: ${output}`);
  return Number(m[1]);
}

/** Removes the Kafka topics, Redis keys and Postgres schemas of tests' isolated names. */
export async function removeNames(all: readonly Names[], brokers = KAFKA_BROKERS): Promise<void> {
  const { Redis } = await import('ioredis');
  const pg = (await import('pg')).default;
  const RdKafka = (await import('@confluentinc/kafka-javascript')).default;
  const admin = RdKafka.AdminClient.create({ 'metadata.broker.list': brokers });
  for (const n of all)
    for (const topic of [n.ticksTopic, n.barsTopic, n.sourcesTopic, n.mergedTopic])
      await new Promise<void>((resolve) => admin.deleteTopic(topic, 10_000, () => resolve()));
  admin.disconnect();
  const redis = new Redis(REDIS_URL);
  const db = new pg.Client({ connectionString: POSTGRES_DB });
  await db.connect();
  try {
    for (const n of all) {
      const keys = await redis.keys(`${n.redisPrefix}:*`);
      if (keys.length) await redis.del(...keys);
      await db.query(`drop schema if exists "${n.schema}" cascade`);
    }
  } finally {
    await redis.quit();
    await db.end();
  }
}
