// Private Kafka, Redis and Postgres instances for tests that stop them: each on its own ports
// and directories, started and stopped by this test only (by pid or pid file), never the
// machine's shared servers.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { repoRoot, waitFor } from './procs.js';

const run = promisify(execFile);

export interface Instance {
  url: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Stops it for good and removes its files. */
  destroy(): Promise<void>;
}

/** A KRaft broker through the project's own ops/kafka.sh, state in a temp dir. */
export function ownKafka(port: number, controllerPort: number): Instance {
  const dir = mkdtempSync(join(tmpdir(), 'ts-kafka-'));
  const env = {
    ...process.env,
    KAFKA_PORT: String(port),
    KAFKA_CONTROLLER_PORT: String(controllerPort),
    KAFKA_STATE_DIR: dir,
    KAFKA_HEAP: '256m',
  };
  const kafka = (cmd: string) => run('bash', [`${repoRoot}ops/kafka.sh`, cmd], { env, timeout: 90_000 });
  return {
    url: `127.0.0.1:${port}`,
    start: async () => {
      await kafka('up');
    },
    stop: async () => {
      await kafka('down');
    },
    destroy: async () => {
      await kafka('down').catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** redis-server with an append-only file, so what it acknowledged survives a restart. */
export function ownRedis(port: number): Instance & { pid(): number } {
  const dir = mkdtempSync(join(tmpdir(), 'ts-redis-'));
  let child: ChildProcess | null = null;
  return {
    url: `redis://127.0.0.1:${port}`,
    pid: () => child?.pid ?? 0,
    start: async () => {
      child = spawn(
        'redis-server',
        [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--dir',
          dir,
          '--save',
          '',
          '--appendonly',
          'yes',
          '--appendfsync',
          'always',
        ],
        { stdio: 'ignore' },
      );
      const ok = await waitFor(async () => {
        try {
          const { stdout } = await run('redis-cli', ['-p', String(port), 'ping']);
          return stdout.trim() === 'PONG';
        } catch {
          return false;
        }
      }, 10_000);
      if (!ok) throw new Error(`own redis-server on ${port} did not start`);
    },
    stop: async () => {
      const c = child;
      child = null;
      if (!c || c.exitCode !== null) return;
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGKILL');
      await exited;
    },
    destroy: async function (this: Instance) {
      if (child?.pid) process.kill(child.pid, 'SIGCONT');
      await this.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A Postgres 15 cluster of its own (initdb in a temp dir, run as the postgres user). */
export function ownPostgres(port: number): Instance & { init(): Promise<void> } {
  const dir = mkdtempSync(join(tmpdir(), 'ts-pg-'));
  const bin = '/usr/lib/postgresql/15/bin';
  const asPostgres = (cmd: string, args: string[]) =>
    process.getuid?.() === 0 ? run('runuser', ['-u', 'postgres', '--', cmd, ...args]) : run(cmd, args);
  const pgCtl = (args: string[]) => asPostgres(`${bin}/pg_ctl`, ['-D', `${dir}/data`, ...args]);
  return {
    url: `postgres://postgres@127.0.0.1:${port}/tickstream`,
    init: async () => {
      if (process.getuid?.() === 0) {
        const { stdout } = await run('id', ['-u', 'postgres']);
        const uid = Number(stdout.trim());
        chownSync(dir, uid, uid);
      }
      await asPostgres(`${bin}/initdb`, ['-D', `${dir}/data`, '-A', 'trust', '-U', 'postgres', '--no-sync']);
    },
    start: async () => {
      await pgCtl([
        '-w',
        '-l',
        `${dir}/log`,
        '-o',
        `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`,
        'start',
      ]);
      const admin = new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:${port}/postgres` });
      await admin.connect();
      const { rowCount } = await admin.query(`select 1 from pg_database where datname = 'tickstream'`);
      if (!rowCount) await admin.query('create database tickstream');
      await admin.end();
    },
    stop: async () => {
      await pgCtl(['-m', 'immediate', 'stop']).catch(() => undefined);
    },
    destroy: async () => {
      await pgCtl(['-m', 'immediate', 'stop']).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
