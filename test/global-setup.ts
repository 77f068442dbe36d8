/**
 * Starts the shared test Kafka broker once for the whole run (a cold start outlasts vitest's
 * hook timeout), reusing one that already answers. Stops it afterwards only if this run
 * started it. Redis and Postgres are the machine's own services and are never stopped here.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const kafkaScript = fileURLToPath(new URL('../ops/kafka.sh', import.meta.url));
const pingScript = fileURLToPath(new URL('../ops/kafka-ping.mjs', import.meta.url));

function brokerAnswers(): boolean {
  try {
    execFileSync('node', [pingScript, '127.0.0.1', '9092', '1500'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export default function setup(): () => void {
  const startedHere = !brokerAnswers();
  if (startedHere) execFileSync('bash', [kafkaScript, 'up'], { stdio: 'inherit' });
  return () => {
    if (startedHere) execFileSync('bash', [kafkaScript, 'down'], { stdio: 'inherit' });
  };
}
