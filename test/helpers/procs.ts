// Real `tickstream` processes for integration and fault tests: `serve` on ports of its own
// (0: the OS picks), `sim` runs, each with its own topics, Redis prefix and Postgres schema.
// Spawning, stopping, names and their removal are bench/harness.ts, shared with the bench;
// this file keeps the tests' own conventions (serve flags, signatures). Every process is
// stopped by its pid; nothing else is touched.
import { fileURLToPath } from 'node:url';
import {
  type CliProcess,
  startCli as harnessStartCli,
  startServe as harnessStartServe,
  type Names,
  POSTGRES_URL,
  removeNames as removeHarnessNames,
  type ServeProcess,
} from '../../bench/harness.js';

export {
  cliPath,
  isolatedNames,
  KAFKA_BROKERS,
  type Names,
  REDIS_URL,
  repoRoot,
  type ServeProcess,
  waitFor,
} from '../../bench/harness.js';

/** The shared real tick files: ../shared/data next to the repository, or TICKSTREAM_DATA_DIR. */
export const dataDir = process.env['TICKSTREAM_DATA_DIR']
  ? `${process.env['TICKSTREAM_DATA_DIR'].replace(/\/$/, '')}/`
  : fileURLToPath(new URL('../../../shared/data/', import.meta.url));
export const POSTGRES_DB = POSTGRES_URL;

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

/** Starts `tickstream serve` and waits until it prints its ports. */
export function startServe(
  args: string[],
  env: Record<string, string> = {},
  timeoutMs = 30_000,
): Promise<ServeProcess> {
  return harnessStartServe(args, { env, timeoutMs });
}

export interface SimResult {
  code: number | null;
  output: string;
}

/** Runs `tickstream sim` to its end (killed by pid after `timeoutMs`). */
export function runSim(args: string[], timeoutMs = 120_000): Promise<SimResult> {
  return runCli(['sim', ...args], {}, timeoutMs);
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
export function startCli(args: string[], env: Record<string, string> = {}): CliProcess {
  return harnessStartCli(args, { env });
}

/** Ticks a sim run captured and had ACKed, from its summary line. */
export function captured(output: string): number {
  const m = /(\d+) ticks captured and ACKed/.exec(output);
  if (!m) throw new Error(`no sim summary in: ${output}`);
  return Number(m[1]);
}

/** Removes the Kafka topics, groups, Redis keys and Postgres schemas of tests' isolated names. */
export async function removeNames(all: readonly Names[], brokers?: string): Promise<void> {
  const problems = await removeHarnessNames(all, brokers);
  if (problems.length) console.warn(`removeNames: ${problems.join('; ')}`);
}
