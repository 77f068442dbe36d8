/**
 * `tickstream serve`: the bridge, the decode pool, the journal, the live views, the Postgres
 * loader and the operations surface in one process, with an orderly shutdown: on SIGTERM it
 * stops accepting, drains every queue, flushes every sink, sends final ACKs, closes clients
 * with a reason and exits 0 within `shutdownDeadlineMs`; a second SIGTERM (or the deadline)
 * exits at once — safe, because nothing un-committed was ever ACKed.
 */
import { readFileSync } from 'node:fs';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { IngressServer } from '../bridge/server.js';
import { ErrorCode } from '../codecs/errors.js';
import { KafkaJournal } from '../sinks/kafka/journal.js';
import { openRangeCursor } from '../sinks/kafka/range-reader.js';
import { SourceLog } from '../sinks/kafka/source-log.js';
import { HistoryStore } from '../sinks/postgres/history.js';
import { PostgresLoader } from '../sinks/postgres/loader.js';
import { RedisSink } from '../sinks/redis/sink.js';
import { RedisHealWriter } from '../sinks/redis-heal.js';
import { WsServer } from '../sinks/ws/server.js';
import { type Config, kafkaSecurityOf, wsServerSettings } from './config.js';
import { crashPointFromEnv, failPointFromEnv, slowPointFromEnv } from './faults.js';
import { HISTORY_PATHS, historyRoutes } from './history-api.js';
import { Ingest } from './ingest.js';
import type { LiveSink } from './ingest-commit.js';
import { createLogger, type Logger } from './logger.js';
import { MergedFeed } from './merged-feed.js';
import { createPipelineMetrics } from './metrics.js';
import { Pacer } from './pace.js';
import { MAX_MOVE_ENTRIES, RedisHealer } from './redis-heal.js';
import { SourceClaims } from './source-claims.js';
import { statusPageHtml } from './status-page.js';

export interface Running {
  ingressPort: number;
  httpPort: number;
  registry: Registry;
  stop(reason?: string): Promise<void>;
}

/**
 * A read of the sources topic (a fence check, a claim) gives up after this long without
 * progress: the transaction retries. A bridge that died mid-transaction holds it until Kafka
 * aborts that transaction (transaction.timeout.ms).
 */
const SOURCES_STALL_MS = 20_000;

const LOOPBACK = /^(127\.|::1$|localhost$)/;

export interface ServeOptions {
  /** Called after an orderly stop forced by a failure the bridge cannot recover from. */
  onFatal?: (err: Error) => void;
}

export async function serve(config: Config, options: ServeOptions = {}): Promise<Running> {
  const logger = createLogger(config.logLevel, config.logFormat);
  const registry = new Registry();
  // Process CPU, RSS, heap, GC and event-loop lag, as tickstream_process_* / tickstream_nodejs_*.
  collectDefaultMetrics({ register: registry, prefix: 'tickstream_' });
  const metrics = createPipelineMetrics(registry);
  const crashPoint = crashPointFromEnv();
  const failPoint = failPointFromEnv();
  const slowPoint = slowPointFromEnv();
  const started = Date.now();
  const noAuth = Object.keys(config.sourceSecrets).length === 0;
  if (noAuth && !LOOPBACK.test(config.ingressHost)) {
    logger.warn(
      { host: config.ingressHost },
      'EA ingress listens beyond loopback WITHOUT source secrets: anyone who reaches it can write ticks. Set --source-secrets.',
    );
  }
  if (config.wsTokens.length === 0 && !LOOPBACK.test(config.httpHost)) {
    logger.warn(
      { host: config.httpHost },
      'websockets listen beyond loopback WITHOUT tokens: anyone who reaches them can read the feed. Set --ws-tokens.',
    );
  }

  const transactionalId = `tickstream-${config.instanceId}`;
  const sourceLog = new SourceLog({
    brokers: config.kafkaBrokers,
    security: kafkaSecurityOf(config),
    sourcesTopic: config.sourcesTopic,
    stallTimeoutMs: SOURCES_STALL_MS,
  });
  const claims = new SourceClaims({
    log: sourceLog,
    owner: transactionalId,
    registry,
    logger: logger.child({ part: 'claims' }),
  });
  const journal = new KafkaJournal({
    brokers: config.kafkaBrokers,
    security: kafkaSecurityOf(config),
    replicationFactor: config.topicReplicationFactor,
    minInsyncReplicas: config.topicMinInsyncReplicas,
    transactionalId,
    ticksTopic: config.ticksTopic,
    barsTopic: config.barsTopic,
    sourcesTopic: config.sourcesTopic,
    ...(config.feedGroups.length ? { mergedTopic: config.mergedTicksTopic } : {}),
    partitions: config.topicPartitions,
    retentionMs: config.topicRetentionHours * 3_600_000,
    transactionIntervalMs: config.transactionIntervalMs,
    maxTransactionRecords: 10_000,
    maxQueuedBytes: config.maxJournalQueuedBytes,
    registry,
    logger: logger.child({ part: 'journal' }),
    fence: claims,
    ...(crashPoint ? { crashPoint } : {}),
    ...(failPoint ? { failPoint } : {}),
    ...(slowPoint ? { slowPoint } : {}),
  });
  claims.attach(journal);
  await journal.start();
  await sourceLog.start();
  const states = sourceLog.states();
  logger.info(
    { sources: states.size },
    'resume state loaded from the journal (each source is read again at its HELLO)',
  );

  const live: LiveSink[] = [];
  let redis: RedisSink | null = null;
  let healer: RedisHealer | null = null;
  let healWriter: RedisHealWriter | null = null;
  if (config.redisEnabled) {
    redis = new RedisSink({
      url: config.redisUrl,
      keyPrefix: config.redisKeyPrefix,
      streamMaxLen: config.redisStreamMaxLen,
      maxQueuedTicks: config.redisMaxQueuedTicks,
      maxPipelineCommands: 20_000,
      registry,
      logger: logger.child({ part: 'redis' }),
      onDropped: (source, lo, hi, atMs) => healer?.record(source, lo, hi, atMs),
    });
    if (config.redisHealTicksPerSecond > 0) {
      healWriter = new RedisHealWriter({
        url: config.redisUrl,
        keyPrefix: config.redisKeyPrefix,
        streamMaxLen: config.redisStreamMaxLen,
        maxMoveEntries: MAX_MOVE_ENTRIES,
        logger: logger.child({ part: 'redis-heal' }),
      });
      await healWriter.start();
      healer = new RedisHealer({
        brokers: config.kafkaBrokers,
        security: kafkaSecurityOf(config),
        ticksTopic: config.ticksTopic,
        ticksPerSecond: config.redisHealTicksPerSecond,
        maxRanges: config.redisHealMaxRanges,
        sink: redis,
        sinkMaxQueuedTicks: config.redisMaxQueuedTicks,
        writer: healWriter,
        registry,
        logger: logger.child({ part: 'redis-heal' }),
      });
      healer.start();
    }
    // A live view: Redis down at start-up does not stop the bridge; the sink keeps retrying.
    await redis
      .start()
      .catch((err: Error) =>
        logger.warn(
          { err: err.message },
          'redis unavailable at start-up: ticks for it are dropped and counted until it answers',
        ),
      );
    live.push(redis);
  }
  const ws = new WsServer({
    ...wsServerSettings(config),
    journal: {
      open: () =>
        openRangeCursor({
          brokers: config.kafkaBrokers,
          security: kafkaSecurityOf(config),
          topic: config.ticksTopic,
        }),
      pacer: (speed) => new Pacer(speed),
      maxSessions: config.wsMaxJournalSessions,
      maxReplaysPerClient: config.wsMaxReplaysPerClient,
      resumeMaxHeldTicks: config.wsResumeMaxHeldTicks,
      resumeIdleTimeoutMs: config.wsResumeIdleTimeoutMs,
    },
    registry,
    logger: logger.child({ part: 'ws' }),
    ...(failPoint ? { failPoint } : {}),
  });
  live.push(ws);

  const loader = config.loaderEnabled ? createLoader(config, registry, logger, crashPoint) : null;
  // Postgres is never on the live path: the loader starts (and retries) in the background.
  let loaderStarted = false;
  let stopped = false;
  const startLoader = async (delayMs: number): Promise<void> => {
    if (!loader || stopped) return;
    try {
      await loader.start();
      loaderStarted = true;
      // A stop() that came while the loader was starting did not close it: it would keep the process alive.
      if (stopped) await loader.close();
    } catch (err) {
      logger.warn(
        { err: (err as Error).message, retryInMs: delayMs },
        'postgres loader could not start (is Postgres up? --postgres-url); retrying',
      );
      setTimeout(() => void startLoader(Math.min(delayMs * 2, 30_000)), delayMs).unref();
    }
  };
  void startLoader(1000);

  const feeds = config.feedGroups.length
    ? new MergedFeed({
        groups: config.feedGroups,
        journal,
        live,
        registry,
        logger: logger.child({ part: 'feeds' }),
      })
    : null;
  feeds?.start();
  const ingest = new Ingest({
    config,
    journal,
    live,
    metrics,
    logger: logger.child({ part: 'ingest' }),
    claims,
    states,
    ...(crashPoint ? { crashPoint } : {}),
    ...(feeds ? { feeds } : {}),
  });
  const ingress = new IngressServer(
    {
      host: config.ingressHost,
      port: config.ingressPort,
      ...(config.ingressTlsCert
        ? { tls: { cert: readFileSync(config.ingressTlsCert), key: readFileSync(config.ingressTlsKey) } }
        : {}),
      secrets: config.sourceSecrets,
      maxConnections: config.maxConnections,
      handshakeTimeoutMs: config.handshakeTimeoutMs,
      heartbeatIntervalMs: Math.max(100, Math.floor(config.heartbeatTimeoutMs / 5)),
      heartbeatTimeoutMs: config.heartbeatTimeoutMs,
      maxFrameBytes: config.maxFrameBytes,
      maxTicksPerFrame: 16_384,
      maxSymbols: 1024,
      creditWindowTicks: config.creditWindowTicks,
      maxTicksPerSecondPerSource: config.maxTicksPerSecondPerSource,
      logger: logger.child({ part: 'ingress' }),
      ...(crashPoint ? { crashPoint } : {}),
    },
    ingest,
  );
  ingest.attach(ingress);

  const status = () => ({
    instanceId: config.instanceId,
    ready: journal.ready,
    uptimeS: (Date.now() - started) / 1000,
    rssMb: process.memoryUsage().rss / 2 ** 20,
    totals: {
      connections: ingress.connectionCount,
      'queued ticks (uncommitted)': ingest.queuedTicks,
      'journal queued bytes': journal.queuedBytes,
      'websocket clients': ws.clientCount,
      'redis queued ticks': redis?.queuedTicks ?? 0,
      'redis ticks to heal': healer?.pendingTicks ?? 0,
    },
    sources: ingest.sourceStates().map((s) => ({
      ...s,
      connected: ingress.sources.includes(s.source),
      ticks: s.nextSeq - 1,
    })),
    loader: loaderStarted ? loader?.status() : null,
    feeds: feeds?.status() ?? [],
  });
  ws.route('/metrics', async () => {
    metrics.ready.set(journal.ready ? 1 : 0);
    metrics.connections.set(ingress.connectionCount);
    ingest.updateGauges();
    return { status: 200, contentType: registry.contentType, body: await registry.metrics() };
  });
  ws.route('/healthz', () => ({ status: 200, contentType: 'text/plain', body: 'ok\n' }));
  ws.route('/readyz', () =>
    !journal.ready
      ? { status: 503, contentType: 'text/plain', body: 'not ready: the Kafka journal does not commit\n' }
      : loader && !loader.healthy
        ? { status: 503, contentType: 'text/plain', body: `not ready: ${loader.problems().join('\n')}\n` }
        : { status: 200, contentType: 'text/plain', body: 'ready\n' },
  );
  ws.route('/status', () => ({
    status: 200,
    contentType: 'application/json',
    body: JSON.stringify(status()),
  }));
  ws.route('/', () => ({ status: 200, contentType: 'text/html; charset=utf-8', body: statusPageHtml }));
  // The history API reads Postgres on its own connections, apart from the loader's (docs/history.md).
  const history = new HistoryStore({
    postgresUrl: config.postgresUrl,
    schema: config.postgresSchema,
    maxQueries: config.historyMaxQueries,
    fetchRows: config.historyFetchRows,
  });
  const historyHandlers = historyRoutes({
    store: history,
    defaultLimit: config.historyDefaultLimit,
    maxLimit: config.historyMaxLimit,
    registry,
  });
  const historyRoute = { auth: true, stallTimeoutMs: config.historyStallTimeoutMs };
  ws.route(HISTORY_PATHS.ticks, historyHandlers.ticks, historyRoute);
  ws.route(HISTORY_PATHS.bars, historyHandlers.bars, historyRoute);
  const httpPort = await ws.start();
  const ingressPort = await ingress.start();
  logger.info(
    { ingress: `${config.ingressHost}:${ingressPort}`, http: `${config.httpHost}:${httpPort}` },
    'tickstream serving',
  );

  // A fenced or fatally failed journal never commits again: stop, and let the caller exit non-zero.
  const watchdog = setInterval(() => {
    const failure = journal.failure;
    if (!failure) return;
    clearInterval(watchdog);
    logger.fatal({ err: failure.message }, 'the Kafka journal failed for good: stopping');
    void stop('journal failed').then(() => options.onFatal?.(failure));
  }, 1000);
  watchdog.unref();

  let stopping: Promise<void> | null = null;
  const stop = (reason = 'shutdown') => {
    stopping ??= (async () => {
      logger.info({ reason }, 'stopping: draining queues and flushing sinks');
      ingress.stopAccepting();
      const drained = await ingest.drain(config.shutdownDeadlineMs);
      if (!drained)
        logger.warn('drain deadline passed: un-ACKed ticks stay with their EAs and will be resent');
      ingress.closeAll(ErrorCode.SHUTTING_DOWN, 'the bridge is shutting down: reconnect later');
      await journal.close(2000);
      await sourceLog.close();
      await healer?.close();
      await healWriter?.close();
      await redis?.close(2000);
      await ws.close('the bridge is shutting down');
      await history.close();
      clearInterval(watchdog);
      stopped = true;
      if (loaderStarted) await loader?.close();
      await ingest.close();
      logger.info('stopped');
    })();
    return stopping;
  };
  return { ingressPort, httpPort, registry, stop };
}

export function createLoader(
  config: Config,
  registry: Registry,
  logger: Logger,
  crashPoint?: (name: string) => void,
): PostgresLoader {
  return new PostgresLoader({
    brokers: config.kafkaBrokers,
    security: kafkaSecurityOf(config),
    groupId: config.loaderGroupId,
    instanceId: config.instanceId,
    ticksTopic: config.ticksTopic,
    barsTopic: config.barsTopic,
    ...(config.feedGroups.length ? { mergedTopic: config.mergedTicksTopic } : {}),
    postgresUrl: config.postgresUrl,
    schema: config.postgresSchema,
    maxBatchTicks: config.loaderMaxBatchTicks,
    maxDaysPerTransaction: config.loaderMaxDaysPerTransaction,
    maxBatchAttempts: config.loaderMaxBatchAttempts,
    maxTickAgeDays: config.loaderMaxTickAgeDays,
    maxTickFutureDays: config.loaderMaxTickFutureDays,
    retentionDays: config.postgresRetentionDays,
    registry,
    logger: logger.child({ part: 'loader' }),
    ...(crashPoint ? { crashPoint } : {}),
  });
}
