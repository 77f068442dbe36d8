// Private Kafka, Redis and Postgres instances for tests that stop them: each on its own ports
// and directories, started and stopped by this test only (by pid or pid file), never the
// machine's shared servers.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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

export interface SecureKafka {
  /** The SASL_SSL listener clients use. */
  brokers: string;
  /** The plaintext listener the broker uses for itself (tests' own admin clients may use it). */
  internal: string;
  /** PEM of the CA made for this broker (kafkaSslCaLocation). */
  caFile: string;
  users: { scram: { name: string; password: string }; plain: { name: string; password: string } };
  destroy(): Promise<void>;
}

/**
 * A KRaft broker with a SASL_SSL listener (SCRAM-SHA-512 and PLAIN) from the project's jars: a
 * CA and a broker certificate for 127.0.0.1 made now with openssl, the SCRAM user created when
 * the log dir is formatted (`--add-scram`), the PLAIN user in the listener's JAAS config. The
 * broker talks to itself over a plaintext listener. Stopped by its pid.
 */
export async function ownSecureKafka(
  port: number,
  internalPort: number,
  controllerPort: number,
): Promise<SecureKafka> {
  const dir = mkdtempSync(join(tmpdir(), 'ts-kafka-sasl-'));
  const libs = `${repoRoot}.infra/kafka/libs/*`;
  const users = {
    scram: { name: 'ts-scram', password: `scram-${process.pid}-pw` },
    plain: { name: 'ts-plain', password: `plain-${process.pid}-pw` },
  };
  const ssl = (args: string[]) => run('openssl', args, { cwd: dir });
  await ssl(
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem'].concat([
      '-days',
      '1',
      '-subj',
      '/CN=tickstream-test-ca',
    ]),
  );
  await ssl(
    ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'broker.key', '-out', 'broker.csr'].concat([
      '-subj',
      '/CN=127.0.0.1',
    ]),
  );
  writeFileSync(join(dir, 'san.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  await ssl(
    ['x509', '-req', '-in', 'broker.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial'].concat([
      '-out',
      'broker.crt',
      '-days',
      '1',
      '-extfile',
      'san.cnf',
    ]),
  );
  writeFileSync(
    join(dir, 'broker.pem'),
    readFileSync(join(dir, 'broker.key'), 'utf8') + readFileSync(join(dir, 'broker.crt'), 'utf8'),
  );
  const h = '127.0.0.1';
  writeFileSync(
    join(dir, 'server.properties'),
    [
      'process.roles=broker,controller',
      'node.id=1',
      `controller.quorum.voters=1@${h}:${controllerPort}`,
      `listeners=SASL_SSL://${h}:${port},INTERNAL://${h}:${internalPort},CONTROLLER://${h}:${controllerPort}`,
      `advertised.listeners=SASL_SSL://${h}:${port},INTERNAL://${h}:${internalPort}`,
      'controller.listener.names=CONTROLLER',
      'inter.broker.listener.name=INTERNAL',
      'listener.security.protocol.map=SASL_SSL:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT',
      'sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN',
      'listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;',
      `listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_${users.plain.name}="${users.plain.password}";`,
      'ssl.keystore.type=PEM',
      `ssl.keystore.location=${dir}/broker.pem`,
      `log.dirs=${dir}/data`,
      'num.partitions=1',
      'offsets.topic.replication.factor=1',
      'offsets.topic.num.partitions=1',
      'transaction.state.log.replication.factor=1',
      'transaction.state.log.min.isr=1',
      'transaction.state.log.num.partitions=1',
      'share.coordinator.state.topic.replication.factor=1',
      'share.coordinator.state.topic.min.isr=1',
      'group.initial.rebalance.delay.ms=0',
      '',
    ].join('\n'),
  );
  const { stdout: uuid } = await run('java', ['-cp', libs, 'kafka.tools.StorageTool', 'random-uuid']);
  await run('java', [
    '-cp',
    libs,
    'kafka.tools.StorageTool',
    'format',
    '--cluster-id',
    uuid.trim().split('\n').at(-1) ?? '',
    '--config',
    `${dir}/server.properties`,
    '--add-scram',
    `SCRAM-SHA-512=[name=${users.scram.name},password=${users.scram.password}]`,
  ]);
  const child = spawn(
    'java',
    [
      '-Xms128m',
      '-Xmx384m',
      '-XX:+UseSerialGC',
      '-XX:TieredStopAtLevel=1',
      `-Dlog4j2.configurationFile=${repoRoot}ops/kafka/log4j2.properties`,
      `-Dkafka.logs.dir=${dir}`,
      '-cp',
      libs,
      'kafka.Kafka',
      `${dir}/server.properties`,
    ],
    { stdio: 'ignore' },
  );
  const ping = async () => {
    try {
      await run('node', [`${repoRoot}ops/kafka-ping.mjs`, h, String(internalPort), '1000']);
      return true;
    } catch {
      return child.exitCode !== null;
    }
  };
  if (!(await waitFor(ping, 90_000)) || child.exitCode !== null) {
    child.kill('SIGKILL');
    throw new Error(`the SASL_SSL broker did not start (state in ${dir})`);
  }
  return {
    brokers: `${h}:${port}`,
    internal: `${h}:${internalPort}`,
    caFile: join(dir, 'ca.pem'),
    users,
    destroy: async () => {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGKILL');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
