/**
 * `tickstream loader`: the Postgres loader on its own, first-class like the one inside `serve`:
 * the same loader (createLoader), the same logs and errors, its own HTTP port
 * (`loaderHttpPort`) with /metrics, /healthz, /readyz and /status, and the Postgres retention.
 *
 *   tickstream loader [config flags]
 *   tickstream loader --reset-offsets earliest|latest [config flags]
 *
 * `--reset-offsets` re-binds the group's stored offsets to the logs the broker holds now (after
 * a wiped broker, a re-created topic, or retention that outran the loader), prints per partition
 * what will be loaded and what cannot be recovered, and exits.
 */

import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import RdKafka from '@confluentinc/kafka-javascript';
import pg from 'pg';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { type CommandSpec, parseCommand } from '../bridge/args.js';
import { ErrorCode, TickstreamError } from '../codecs/errors.js';
import {
  connectKafka,
  describeKafka,
  isKafkaSecurityFailure,
  kafkaClientProps,
} from '../codecs/kafka-client.js';
import { redactUrl } from '../codecs/redact.js';
import { type ResetTo, resetOffsets } from '../sinks/postgres/log-binding.js';
import { migrate } from '../sinks/postgres/migrate.js';
import { type Config, configKeys, kafkaSecurityOf, loadConfig } from './config.js';
import { crashPointFromEnv } from './faults.js';
import { createLogger } from './logger.js';
import { createLoader } from './serve.js';

const out = (line: string) => process.stdout.write(`${line}\n`);

export const LOADER_COMMAND = {
  name: 'loader',
  summary:
    'Run only the Postgres loader: journal → COPY into Postgres, exactly once (the loader inside serve, on its own), with /metrics, /healthz, /readyz and /status on --loader-http-port.',
  flags: {
    'reset-offsets': {
      type: 'string',
      choices: ['earliest', 'latest'],
      value: 'WHERE',
      description:
        "re-bind the group's stored offsets to the logs the broker holds now, print per partition what will be loaded and what cannot be recovered, and exit",
    },
  },
  configFlags: configKeys(),
  examples: [
    'tickstream loader --postgres-url postgres://postgres@127.0.0.1:5432/tickstream --loader-group-id pg-1',
    'tickstream loader --reset-offsets earliest --loader-group-id pg-1',
  ],
  notes: [
    'A partition whose stored offset belongs to another log (a wiped broker, a re-created topic) or lies outside its log (retention) stops loading until --reset-offsets re-binds it; see docs/operations.md.',
  ],
} as const satisfies CommandSpec;

export async function loaderMain(argv: string[]): Promise<number> {
  const parsed = parseCommand(LOADER_COMMAND, argv);
  if (!parsed) return 0;
  const config = loadConfig({
    ...(parsed.configFile ? { file: parsed.configFile } : {}),
    flags: parsed.config,
  });
  const reset = parsed.flags['reset-offsets'];
  // parseCommand has checked it against the flag's choices.
  return reset === undefined ? runLoader(config) : runReset(config, reset as ResetTo);
}

async function runLoader(config: Config): Promise<number> {
  const logger = createLogger(config.logLevel, config.logFormat);
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'tickstream_' });
  const loader = createLoader(config, registry, logger, crashPointFromEnv());
  let started = false;
  const http = createServer((req, res) => {
    const reply = (status: number, type: string, body: string) => {
      res.writeHead(status, { 'content-type': type });
      res.end(body);
    };
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/metrics') {
      registry.metrics().then(
        (body) => reply(200, registry.contentType, body),
        (err: Error) => reply(500, 'text/plain', `metrics failed: ${err.message}\n`),
      );
    } else if (path === '/healthz') reply(200, 'text/plain', 'ok\n');
    else if (path === '/readyz') {
      if (!started)
        reply(503, 'text/plain', 'not ready: the loader is starting (Postgres or Kafka not reached yet)\n');
      else if (!loader.healthy) reply(503, 'text/plain', `not ready: ${loader.problems().join('\n')}\n`);
      else reply(200, 'text/plain', 'ready\n');
    } else if (path === '/status') {
      reply(
        200,
        'application/json',
        JSON.stringify({ ready: started && loader.healthy, partitions: loader.status() }),
      );
    } else reply(404, 'text/plain', 'not found: /metrics, /healthz, /readyz, /status\n');
  });
  await new Promise<void>((resolve, reject) => {
    http.once('error', (err) =>
      reject(
        new TickstreamError(
          ErrorCode.CONFIG,
          `the loader's HTTP port ${config.httpHost}:${config.loaderHttpPort} cannot be opened (${err.message}): choose another with --loader-http-port (0: any free port)`,
        ),
      ),
    );
    http.listen(config.loaderHttpPort, config.httpHost, resolve);
  });
  const port = (http.address() as { port: number }).port;
  let stop: (() => void) | null = null;
  const stopped = new Promise<void>((resolve) => {
    stop = resolve;
  });
  process.once('SIGTERM', () => stop?.());
  process.once('SIGINT', () => stop?.());
  // Postgres or Kafka down at start-up: the same retry as the loader inside serve.
  for (let delayMs = 1000; ; delayMs = Math.min(delayMs * 2, 30_000)) {
    try {
      await loader.start();
      started = true;
      break;
    } catch (err) {
      // Wrong Kafka credentials or TLS trust do not heal by waiting: say so and exit.
      if (isKafkaSecurityFailure(err)) {
        await new Promise((resolve) => http.close(resolve));
        throw err;
      }
      logger.warn(
        { err: (err as Error).message, retryInMs: delayMs },
        'postgres loader could not start (is Postgres up? --postgres-url); retrying',
      );
      const again = await Promise.race([
        new Promise((r) => setTimeout(r, delayMs, true)),
        stopped.then(() => false),
      ]);
      if (!again) break;
    }
  }
  out(
    `tickstream loader: ${config.ticksTopic} → ${redactUrl(config.postgresUrl)} (schema ${config.postgresSchema}), metrics :${port} (SIGTERM or Ctrl-C to stop)`,
  );
  await stopped;
  if (started) await loader.close();
  await new Promise((resolve) => http.close(resolve));
  return 0;
}

async function runReset(config: Config, to: ResetTo): Promise<number> {
  const security = kafkaSecurityOf(config);
  const consumer = new RdKafka.KafkaConsumer(
    {
      ...kafkaClientProps(config.kafkaBrokers, security),
      'group.id': `tickstream-reset-${randomUUID()}`,
    },
    {},
  );
  await connectKafka(
    consumer,
    config.kafkaBrokers,
    security,
    10_000,
    (err) =>
      new TickstreamError(
        ErrorCode.KAFKA,
        `cannot reach Kafka at ${describeKafka(config.kafkaBrokers, security)} (${err.message})`,
      ),
  );
  const admin = RdKafka.AdminClient.createFrom(consumer);
  const db = new pg.Client({ connectionString: config.postgresUrl });
  try {
    await db.connect();
    await migrate(db, config.postgresSchema);
    out(
      `re-binding the offsets of group ${config.loaderGroupId} (schema ${config.postgresSchema}) to the logs on ${config.kafkaBrokers}, ${to}:`,
    );
    for (const line of await resetOffsets({
      consumer,
      admin,
      db,
      groupId: config.loaderGroupId,
      topics: [config.ticksTopic, config.barsTopic],
      to,
    }))
      out(`  ${line}`);
    out(
      'done. A running loader takes a blocked partition back within 10 s; partitions it was loading are fenced (generation bumped): restart the loaders to load them from the new offsets.',
    );
    return 0;
  } finally {
    await db.end();
    admin.disconnect();
    await new Promise((resolve) => consumer.disconnect(resolve));
  }
}
