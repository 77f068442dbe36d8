/**
 * Makes `npm test` self-sufficient on a new machine: before any test it brings up what the
 * tests talk to with the project's own script (`ops/infra.sh up`): the Kafka broker (a cold
 * start outlasts vitest's hook timeout, so it starts once here; one that already answers is
 * reused), a check of Redis and Postgres, and the database named in TICKSTREAM_POSTGRES_URL
 * (created when missing). Afterwards it stops the broker only if this run started it. Redis
 * and Postgres are the machine's own services and are never stopped here.
 *
 * The services' addresses come from TICKSTREAM_KAFKA_BROKERS and TICKSTREAM_POSTGRES_URL
 * (.ci/run points them at a broker and a database of its own, made fresh for each run).
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { KAFKA_BROKERS } from './helpers/procs.js';

const ops = fileURLToPath(new URL('../ops/', import.meta.url));
const [host = '127.0.0.1', port = '9092'] = (KAFKA_BROKERS.split(',')[0] ?? '').split(':');
// ops/kafka.sh reads the broker's address from these; the controller port follows the broker's.
const env = {
  ...process.env,
  KAFKA_HOST: host,
  KAFKA_PORT: port,
  KAFKA_CONTROLLER_PORT: process.env['KAFKA_CONTROLLER_PORT'] ?? String(Number(port) + 1),
};

function brokerAnswers(): boolean {
  try {
    execFileSync('node', [`${ops}kafka-ping.mjs`, host, port, '1500'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export default function setup(): () => void {
  const startedHere = !brokerAnswers();
  execFileSync('bash', [`${ops}infra.sh`, 'up'], { stdio: 'inherit', env });
  return () => {
    if (startedHere) execFileSync('bash', [`${ops}kafka.sh`, 'down'], { stdio: 'inherit', env });
  };
}
