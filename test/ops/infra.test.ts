// The infrastructure scripts fail loudly and helpfully: a port held by something else, a
// service that does not answer. They run the real scripts against real sockets.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { KAFKA_BROKERS } from '../helpers/procs.js';

const ops = fileURLToPath(new URL('../../ops/', import.meta.url));
const stateDir = mkdtempSync(join(tmpdir(), 'tickstream-infra-'));
const [brokerHost = '127.0.0.1', brokerPort = '9092'] = (KAFKA_BROKERS.split(',')[0] ?? '').split(':');

function run(script: string, args: string[], env: Record<string, string> = {}) {
  const r = spawnSync('bash', [join(ops, script), ...args], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

async function listen(): Promise<net.Server> {
  const server = net.createServer((s) => s.end('not kafka\n'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}
const portOf = (s: net.Server) => (s.address() as net.AddressInfo).port;

afterAll(() => rmSync(stateDir, { recursive: true, force: true }));

describe('ops/kafka.sh', () => {
  it('refuses to start when the port is taken by something that is not Kafka, and says what to do', async () => {
    const squatter = await listen();
    try {
      const r = run('kafka.sh', ['up'], {
        KAFKA_PORT: String(portOf(squatter)),
        KAFKA_CONTROLLER_PORT: String(portOf(squatter) + 1),
        KAFKA_STATE_DIR: stateDir,
      });
      expect(r.status).toBe(1);
      expect(r.output).toContain(`port ${portOf(squatter)}`);
      expect(r.output).toMatch(/taken by another process.*KAFKA_PORT/s);
    } finally {
      squatter.close();
    }
  });

  it('`up` on a broker that already answers does nothing', () => {
    const r = run('kafka.sh', ['up'], { KAFKA_HOST: brokerHost, KAFKA_PORT: brokerPort });
    expect(r.status).toBe(0);
    expect(r.output).toMatch(new RegExp(`(already up|answers) on ${brokerHost}:${brokerPort}\\b`));
    expect(r.output).not.toContain('starting');
  });

  it('the metadata ping tells a Kafka broker from another server', async () => {
    const squatter = await listen();
    try {
      const other = spawnSync('node', [
        join(ops, 'kafka-ping.mjs'),
        '127.0.0.1',
        String(portOf(squatter)),
        '1000',
      ]);
      expect(other.status).toBe(1);
      const kafka = spawnSync('node', [join(ops, 'kafka-ping.mjs'), brokerHost, brokerPort, '3000']);
      expect(kafka.status).toBe(0);
    } finally {
      squatter.close();
    }
  });
});

describe('ops/infra.sh', () => {
  it('names Redis and the fix when Redis does not answer', () => {
    const r = run('infra.sh', ['status'], { TICKSTREAM_REDIS_URL: 'redis://127.0.0.1:1' });
    expect(r.status).toBe(1);
    expect(r.output).toMatch(/Redis does not answer at redis:\/\/127\.0\.0\.1:1.*TICKSTREAM_REDIS_URL/s);
  });

  it('names Postgres and the fix when Postgres does not answer', () => {
    const r = run('infra.sh', ['status'], {
      TICKSTREAM_POSTGRES_URL: 'postgres://postgres@127.0.0.1:1/tickstream',
    });
    expect(r.status).toBe(1);
    expect(r.output).toMatch(
      /Postgres does not answer at postgres:\/\/postgres@127\.0\.0\.1:1.*TICKSTREAM_POSTGRES_URL/s,
    );
  });

  it('checks both services and creates the tickstream database when they answer', () => {
    const r = run('infra.sh', ['status']);
    expect(r.status).toBe(0);
    expect(r.output).toContain('redis answers');
    expect(r.output).toContain('postgres answers');
  });
});
