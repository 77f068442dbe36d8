// Real `tickstream` processes for integration and fault tests: `serve` on ports of its own
// (0: the OS picks), `sim` runs, each with its own topics, Redis prefix and Postgres schema.
// Every process is stopped by its pid; nothing else is touched.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
export const cliPath = `${repoRoot}bin/tickstream.js`;
export const dataDir = fileURLToPath(new URL('../../../shared/data/', import.meta.url));
export const POSTGRES_DB = 'postgres://postgres@127.0.0.1:5432/tickstream';

/** Names of one test's private Kafka topics, Redis keys and Postgres schema. */
export function isolatedNames(tag: string) {
  const id = `${tag}_${randomUUID().replaceAll('-', '').slice(0, 8)}`;
  return {
    id,
    ticksTopic: `t.${id}.ticks`,
    barsTopic: `t.${id}.bars`,
    sourcesTopic: `t.${id}.sources`,
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
export async function runSim(args: string[], timeoutMs = 120_000): Promise<SimResult> {
  const child = spawn(process.execPath, [cliPath, 'sim', ...args], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d: Buffer) => {
    output += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    output += d.toString();
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const [code] = await once(child, 'exit');
  clearTimeout(timer);
  return { code: code as number | null, output };
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
