// Round trips through the four real parts (no mocks): the machine's Redis and Postgres, the
// project's Kafka broker (started by globalSetup) and a uWS server on port 0.
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../pipeline/config.js';
import {
  kafkaRoundTrip,
  postgresRoundTrip,
  redisRoundTrip,
  runSmoke,
  websocketRoundTrip,
} from '../../pipeline/smoke.js';
import { KAFKA_BROKERS, POSTGRES_DB, REDIS_URL } from '../helpers/procs.js';

// Only the service addresses come from the environment (.ci/run points them at its own).
const env = {
  TICKSTREAM_KAFKA_BROKERS: KAFKA_BROKERS,
  TICKSTREAM_REDIS_URL: REDIS_URL,
  TICKSTREAM_POSTGRES_URL: POSTGRES_DB,
};
const config = loadConfig({ env });

describe('smoke round trips against the real services', () => {
  it('Kafka: idempotent acks=all produce, read back by a consumer group with committed offsets', async () => {
    expect(await kafkaRoundTrip(config.kafkaBrokers, 500)).toMatch(/produced 500 records/);
  });

  it('Redis: pipelined XADD, then XRANGE returns every entry', async () => {
    expect(await redisRoundTrip(config.redisUrl, 500)).toMatch(/XRANGE returned all/);
  });

  it('Postgres: binary COPY through pg-copy-streams, then SELECT finds every row', async () => {
    const admin = config.postgresUrl.replace(/\/[^/]*$/, '/postgres');
    expect(await postgresRoundTrip(admin, 500)).toMatch(/SELECT found all/);
  });

  it('uWebSockets: a websocket client receives every published message', async () => {
    expect(await websocketRoundTrip(500)).toMatch(/received 500\/500/);
  });

  it('an unreachable service fails its step with a message naming the URL, the others still run', async () => {
    const broken = loadConfig({ env, flags: { 'redis-url': 'redis://127.0.0.1:1' } });
    const steps = await runSmoke(broken, 10);
    const redis = steps.find((s) => s.part === 'redis');
    expect(redis?.ok).toBe(false);
    expect(redis?.detail).toContain('redis://127.0.0.1:1');
    expect(steps.filter((s) => s.ok).map((s) => s.part)).toEqual(['kafka', 'postgres', 'websocket']);
  });

  it('prints no password: Redis and Postgres URLs in failure lines are redacted (issue 20.7)', async () => {
    const secret = 'hunter2-not-for-logs';
    const broken = loadConfig({
      env,
      flags: {
        'redis-url': `redis://ops:${secret}@127.0.0.1:1`,
        'postgres-url': `postgres://ops:${secret}@127.0.0.1:1/tickstream`,
      },
    });
    const steps = await runSmoke(broken, 10);
    for (const part of ['redis', 'postgres'] as const) {
      const step = steps.find((s) => s.part === part);
      expect(step?.ok).toBe(false);
      expect(step?.detail).not.toContain(secret);
      expect(step?.detail).toContain('ops:***@127.0.0.1:1');
    }
  });
});
