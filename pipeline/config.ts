/**
 * One config schema, validated once at start-up. Sources, later ones winning:
 * defaults → JSON file (`--config FILE` or TICKSTREAM_CONFIG) → environment (TICKSTREAM_ +
 * the key in UPPER_SNAKE, e.g. TICKSTREAM_KAFKA_BROKERS) → CLI flags (`--kafka-brokers`).
 * The rest of the code gets the typed, frozen object. The README's configuration table is
 * generated from `configKeys()` (see `tickstream config --table`).
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { ErrorCode, TickstreamError } from '../codecs/errors.js';
import type { KafkaSecurity } from '../codecs/kafka-client.js';
import { createServerClock } from '../codecs/server-clock.js';
import { MERGED_SOURCE } from '../sinks/postgres/history.js';

const port = z.coerce.number().int().min(0).max(65535);
const positive = z.coerce.number().int().positive();
const bool = z.preprocess((v) => (typeof v === 'string' ? v === 'true' || v === '1' : v), z.boolean());
const list = z.preprocess(
  (v) => (typeof v === 'string' ? v.split(',').filter(Boolean) : v),
  z.array(z.string()),
);
const secrets = z.preprocess(
  (v) => (typeof v === 'string' ? Object.fromEntries(v.split(',').filter(Boolean).map(splitPair)) : v),
  z.record(z.string(), z.string().min(8, 'a source secret must be at least 8 characters')),
);
/** A server time zone rule the clock understands (an IANA zone, `+2`, `Europe/Athens+1`, `UTC`). */
const zoneRule = z.string().superRefine((rule, ctx) => {
  try {
    createServerClock(rule);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
  }
});

const zones = z.preprocess(
  (v) => (typeof v === 'string' ? Object.fromEntries(v.split(',').filter(Boolean).map(splitPair)) : v),
  z.record(z.string(), zoneRule),
);

/**
 * Feed groups (docs/operations.md#feed-groups): a canonical symbol carried by several
 * (source, broker symbol) members, in priority order, merged under one policy. Given as JSON
 * (config file, or TICKSTREAM_FEED_GROUPS / --feed-groups holding the JSON array).
 */
const feedGroup = z
  .object({
    symbol: z.string().min(1).max(64).describe('Canonical symbol of the merged stream'),
    policy: z.enum(['failover', 'first-seen']),
    members: z
      .array(z.object({ source: z.string().min(1), symbol: z.string().min(1) }).strict())
      .min(1, 'a feed group needs at least one member'),
    /** A member without a tick for this long (arrival time) while another has ticks is stalled. */
    stallMs: z.number().int().positive().default(3000),
    /** A member whose newest tick is this much older (tick time) than the freshest member's is behind. */
    maxLagMs: z.number().int().positive().default(5000),
    /** A member that recovered must stay healthy this long before it is followed again. */
    holdMs: z.number().int().positive().default(30_000),
    /** first-seen: how far back (tick time) copies are still matched. */
    dedupWindowMs: z.number().int().positive().default(60_000),
  })
  .strict();
export type FeedGroupConfig = z.infer<typeof feedGroup>;

const feedGroups = z.preprocess(
  (v) => {
    if (typeof v !== 'string') return v;
    try {
      return JSON.parse(v) as unknown;
    } catch {
      return v; // not JSON: the array check below names the key
    }
  },
  z.array(feedGroup).superRefine((groups, ctx) => {
    const canonical = new Set<string>();
    const taken = new Map<string, string>();
    for (const g of groups) {
      if (canonical.has(g.symbol))
        ctx.addIssue({
          code: 'custom',
          message: `feed group ${g.symbol} is defined twice: merge its members`,
        });
      canonical.add(g.symbol);
      for (const m of g.members) {
        const key = `${m.source}\u0000${m.symbol}`;
        const other = taken.get(key);
        if (other !== undefined)
          ctx.addIssue({
            code: 'custom',
            message: `source ${m.source} symbol ${m.symbol} is a member of ${other} and of ${g.symbol}: a (source, symbol) pair feeds one group only`,
          });
        taken.set(key, g.symbol);
        if (m.source === MERGED_SOURCE)
          ctx.addIssue({
            code: 'custom',
            message: `source name "${MERGED_SOURCE}" is reserved for the merged streams: rename that source`,
          });
      }
    }
  }),
);

/** The `source` of merged streams in Redis keys, websocket channels, bars and the history API. */
export { MERGED_SOURCE };

function splitPair(item: string): [string, string] {
  const at = item.indexOf('=');
  return at < 0 ? [item, ''] : [item.slice(0, at), item.slice(at + 1)];
}

/** Every key with its default and one line of documentation (shown in the README table). */
export const configShape = {
  instanceId: z
    .string()
    .default('bridge-1')
    .describe('Names this bridge; its Kafka transactional.id is `tickstream-<instanceId>`'),
  ingressHost: z.string().default('127.0.0.1').describe('EA ingress bind address'),
  ingressPort: port.default(5555).describe('EA ingress TCP port'),
  ingressTlsCert: z.string().default('').describe('PEM certificate file: enables TLS on the EA ingress'),
  ingressTlsKey: z.string().default('').describe('PEM private key file for the EA ingress'),
  sourceSecrets: secrets
    .default({})
    .describe(
      'Per-source HMAC secrets, `src1=secret,src2=secret` (empty: any source accepted, with a warning)',
    ),
  sourceTimeZones: zones
    .default({})
    .describe('Per-source server time zone rules, `src1=Europe/Athens,src2=+2`'),
  defaultServerTimeZone: z
    .union([z.literal(''), zoneRule])
    .default('')
    .describe(
      "Rule for sources not in sourceTimeZones; empty: use the offset the source's terminal reports (no DST)",
    ),
  maxConnections: positive
    .default(256)
    .describe('Open EA connections at most; more are refused with ERR_TOO_MANY_CONNECTIONS'),
  handshakeTimeoutMs: positive.default(5000).describe('Time a new connection has to complete HELLO'),
  heartbeatTimeoutMs: positive.default(15000).describe('Silence after which a session is closed'),
  maxFrameBytes: positive.default(1 << 20).describe('Largest frame accepted'),
  creditWindowTicks: positive.default(65536).describe('Un-ACKed ticks a source may have in flight'),
  maxTicksPerSecondPerSource: positive
    .default(2_000_000)
    .describe(
      'Per-source rate limit (ticks/s, token bucket); over it the bridge stops reading that source (TCP backpressure)',
    ),
  decodeThreads: positive.default(1).describe('piscina decode workers (2 cores: 1 worker + main thread)'),
  decodeBatchTicks: positive.default(8192).describe('Ticks per decode task'),
  maxQueuedTicks: positive
    .default(262_144)
    .describe(
      'Ticks accepted but not yet committed to Kafka (about 200 bytes of bridge memory each); at the limit credit stops (TCP backpressure)',
    ),
  kafkaBrokers: z.string().default('127.0.0.1:9092').describe('Kafka bootstrap servers'),
  kafkaSecurityProtocol: z
    .enum(['plaintext', 'ssl', 'sasl_plaintext', 'sasl_ssl'])
    .default('plaintext')
    .describe('How every Kafka client of tickstream connects: TLS (`ssl`), SASL, or both (`sasl_ssl`)'),
  kafkaSaslMechanism: z
    .enum(['PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512'])
    .default('SCRAM-SHA-512')
    .describe('SASL mechanism (with `sasl_plaintext` / `sasl_ssl`)'),
  kafkaSaslUsername: z.string().default('').describe('SASL user name'),
  kafkaSaslPassword: z
    .string()
    .default('')
    .describe('SASL password (never printed: `config` and the logs show `***`)'),
  kafkaSslCaLocation: z
    .string()
    .default('')
    .describe("PEM file of the CA that signed the brokers' certificates (empty: the system's CAs)"),
  kafkaSslCertificateLocation: z
    .string()
    .default('')
    .describe('PEM client certificate, for brokers that require mutual TLS'),
  kafkaSslKeyLocation: z.string().default('').describe('PEM private key of the client certificate'),
  kafkaSslKeyPassword: z.string().default('').describe('Password of an encrypted client key (never printed)'),
  ticksTopic: z.string().default('mt5.ticks').describe('Journal topic for tick records'),
  barsTopic: z.string().default('mt5.bars.1m').describe('Topic for closed 1-minute bars'),
  sourcesTopic: z
    .string()
    .default('mt5.sources')
    .describe("Compacted topic with each source's resume state and claims (one partition)"),
  topicPartitions: positive.default(6).describe('Partitions for new tick/bar topics'),
  topicReplicationFactor: positive
    .default(1)
    .describe('Replicas of each new journal topic (3 on the three-broker cluster; at most the broker count)'),
  topicMinInsyncReplicas: positive
    .default(1)
    .describe(
      '`min.insync.replicas` of new journal topics: a commit waits for this many replicas (2 with replication 3: one broker may fail)',
    ),
  topicRetentionHours: positive.default(24 * 7).describe('Retention of tick/bar topics'),
  transactionIntervalMs: z.coerce
    .number()
    .int()
    .min(0)
    .default(0)
    .describe(
      'Least time between the starts of two Kafka transactions (0: the next begins as soon as one commits, with what arrived meanwhile)',
    ),
  maxJournalQueuedBytes: positive
    .default(32 << 20)
    .describe('Uncommitted journal bytes at most; at the limit credit stops (TCP backpressure)'),
  recordTicks: positive.default(1000).describe('Ticks per Kafka record (1 = one tick per record)'),
  redisUrl: z.string().default('redis://127.0.0.1:6379').describe('Redis URL'),
  redisKeyPrefix: z.string().default('mt5').describe('Prefix of every Redis key'),
  redisStreamMaxLen: positive.default(100_000).describe('XADD MAXLEN ~ per stream'),
  redisMaxQueuedTicks: positive
    .default(200_000)
    .describe('Redis queue; when full ticks are dropped and counted'),
  redisEnabled: bool.default(true).describe('Write to Redis'),
  redisHealTicksPerSecond: z.coerce
    .number()
    .int()
    .min(0)
    .default(20_000)
    .describe(
      'Ticks/s at most for healing Redis: dropped ticks re-read from the journal and written back into their streams, while Redis keeps up (0: no healing)',
    ),
  redisHealMaxRanges: positive
    .default(10_000)
    .describe(
      'Dropped seq ranges kept for healing, over all sources; past it the closest ranges merge (healing skips what is present)',
    ),
  httpHost: z.string().default('127.0.0.1').describe('Websocket/metrics bind address'),
  httpPort: port.default(5001).describe('Websocket, /metrics, /healthz, /readyz and status page port'),
  httpTlsCert: z.string().default('').describe('PEM certificate file: enables TLS on websockets/HTTP'),
  httpTlsKey: z.string().default('').describe('PEM private key file for websockets/HTTP'),
  wsTokens: list.default([]).describe('Accepted websocket tokens (empty: no auth)'),
  wsMaxBackpressureBytes: positive
    .default(1 << 20)
    .describe('Per-client unsent bytes before the slow-consumer policy applies'),
  wsSlowConsumerPolicy: z
    .enum(['conflate', 'disconnect'])
    .default('conflate')
    .describe('What happens to a slow websocket client'),
  wsMaxClients: positive.default(1000).describe('Websocket clients at most'),
  wsMaxChannelsPerClient: positive
    .default(1000)
    .describe('Channels one websocket client may hold; a subscribe past it is refused whole with ERR_LIMIT'),
  wsSnapshotsPerTurn: positive
    .default(256)
    .describe(
      'Snapshot messages sent to a subscribing client per event-loop turn (bounds the work of one subscribe)',
    ),
  wsMaxJournalSessions: positive
    .default(16)
    .describe(
      'Websocket replay and resume sessions reading the journal at once (all clients); more get ERR_LIMIT',
    ),
  wsMaxReplaysPerClient: positive
    .default(2)
    .describe('Websocket replay sessions one client may run at once; more get ERR_LIMIT'),
  wsResumeMaxHeldTicks: positive
    .default(500_000)
    .describe(
      'Live ticks held for a resuming websocket client during its catch-up; past it the resume fails (ERR_LIMIT)',
    ),
  wsResumeIdleTimeoutMs: positive
    .default(30_000)
    .describe(
      'A websocket resume fails when the journal brings nothing new for this long before it caught up',
    ),
  maxSources: positive
    .default(256)
    .describe('Sources the bridge keeps live state for; a new one past it is refused with ERR_LIMIT'),
  maxSymbols: positive
    .default(50_000)
    .describe(
      '(source, symbol) pairs the bridge keeps live state for; ticks of a new pair past it: ERR_LIMIT',
    ),
  sourceForgetAfterMs: positive
    .default(86_400_000)
    .describe(
      'A source without a session or a tick for this long is forgotten: its live state, snapshots and metric labels go (its Redis keys are left to MAXLEN)',
    ),
  metricsMaxSourceLabels: positive
    .default(100)
    .describe(
      'Sources with their own `source` label on /metrics (held until the source is forgotten); the others count under `_other`',
    ),
  tickMaxAheadMs: positive
    .default(300_000)
    .describe(
      "A tick later than the bridge's clock (or the source's HELLO/heartbeat clock) by more than this is journaled but kept out of Redis, websockets and bars",
    ),
  tickMaxBehindMs: z.coerce
    .number()
    .int()
    .min(0)
    .default(0)
    .describe(
      "A tick earlier than the bridge's clock by more than this is journaled but kept out of Redis, websockets and bars (0: no bound; old ticks are normal after an outage or in a replay)",
    ),
  feedGroups: feedGroups
    .default([])
    .describe(
      'Merged per-symbol streams: JSON array of {symbol, policy (failover or first-seen), members [{source, symbol}] by priority, stallMs, maxLagMs, holdMs, dedupWindowMs}',
    ),
  mergedTicksTopic: z
    .string()
    .default('mt5.ticks.merged')
    .describe('Journal topic of the merged feeds: their ticks, inputs and switch decisions (one partition)'),
  postgresUrl: z.string().default('postgres://postgres@127.0.0.1:5432/tickstream').describe('Postgres URL'),
  postgresSchema: z.string().default('public').describe('Schema of the tickstream tables'),
  postgresRetentionDays: positive.default(30).describe('Tick partitions older than this are dropped'),
  loaderEnabled: bool.default(true).describe('Run the Postgres loader inside `serve`'),
  loaderGroupId: z
    .string()
    .default('tickstream-pg-loader')
    .describe('Kafka consumer group of the Postgres loader'),
  loaderMaxBatchTicks: positive.default(50_000).describe('Ticks per COPY transaction at most'),
  loaderHttpPort: port
    .default(5002)
    .describe('HTTP port of a standalone `tickstream loader`: /metrics, /healthz, /readyz, /status'),
  loaderMaxDaysPerTransaction: positive
    .default(32)
    .describe(
      'UTC days (daily tick partitions) one loader transaction writes or creates at most; a record spanning more is parked in ticks_parked',
    ),
  loaderMaxBatchAttempts: positive
    .default(5)
    .describe(
      'Tries of a batch that fails with a data error (not an outage) before its records are parked in ticks_parked',
    ),
  loaderMaxTickAgeDays: positive
    .default(3660)
    .describe('Ticks dated more than this many days ago are parked, not loaded (no partition for them)'),
  loaderMaxTickFutureDays: positive
    .default(2)
    .describe('Ticks dated more than this many days ahead are parked, not loaded (a tick dated 2999)'),
  historyDefaultLimit: positive
    .default(10_000)
    .describe('Rows per history API page when the request gives no `limit`'),
  historyMaxLimit: positive
    .default(1_000_000)
    .describe('Largest `limit` the history API takes (larger: 400); more rows are read page by page'),
  historyFetchRows: positive
    .default(5000)
    .describe(
      'Rows the history API and `export` fetch from the Postgres cursor at a time (and encode as one chunk)',
    ),
  historyMaxQueries: positive
    .default(4)
    .describe('History API pages streamed at once (each holds a Postgres connection); more get 503'),
  historyStallTimeoutMs: positive
    .default(60_000)
    .describe('A history API client that takes no data for this long is cut and its Postgres read ended'),
  shutdownDeadlineMs: positive.default(10_000).describe('SIGTERM drain deadline before a forced exit'),
  logLevel: z
    .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace'])
    .default('info')
    .describe('pino log level'),
  logFormat: z
    .enum(['auto', 'json', 'pretty'])
    .default('auto')
    .describe('Log lines as JSON or readable text; auto: readable on a terminal, JSON otherwise'),
} as const;

export const configSchema = z.object(configShape).strict();
export type Config = Readonly<z.infer<typeof configSchema>>;
export type ConfigKey = keyof typeof configShape;

const toSnake = (key: string) => key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase();
const toKebab = (key: string) => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

export interface ConfigSources {
  file?: string;
  env?: NodeJS.ProcessEnv;
  flags?: Record<string, string>;
}

/** Builds the config from file, environment and flags; throws ERR_CONFIG naming every bad key. */
export function loadConfig(sources: ConfigSources = {}): Config {
  const env = sources.env ?? process.env;
  const raw: Record<string, unknown> = {};
  const file = sources.file ?? env['TICKSTREAM_CONFIG'];
  if (file) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new TickstreamError(
        ErrorCode.CONFIG,
        `cannot read config file ${file}: ${(err as Error).message}`,
      );
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new TickstreamError(ErrorCode.CONFIG, `config file ${file} must hold a JSON object`);
    }
    Object.assign(raw, parsed);
  }
  for (const key of Object.keys(configShape)) {
    const value = env[`TICKSTREAM_${toSnake(key)}`];
    if (value !== undefined) raw[key] = value;
  }
  const known = new Map(Object.keys(configShape).map((k) => [toKebab(k), k]));
  for (const [flag, value] of Object.entries(sources.flags ?? {})) {
    const key = known.get(flag);
    if (!key) throw new TickstreamError(ErrorCode.CONFIG, `unknown option --${flag} (see --help)`);
    raw[key] = value;
  }
  const result = configSchema.safeParse(raw);
  if (!result.success) {
    const problems = result.error.issues.map((i) => {
      const key = String(i.path[0] ?? '');
      const where = key ? `${key} (--${toKebab(key)}, TICKSTREAM_${toSnake(key)})` : 'config';
      return `${where}: ${i.message}`;
    });
    throw new TickstreamError(ErrorCode.CONFIG, `invalid configuration:\n  ${problems.join('\n  ')}`);
  }
  const c = result.data;
  const problems: string[] = [];
  if (c.kafkaSecurityProtocol.startsWith('sasl_') && !c.kafkaSaslUsername) {
    problems.push(
      `kafkaSaslUsername (--kafka-sasl-username, TICKSTREAM_KAFKA_SASL_USERNAME): required with kafkaSecurityProtocol ${c.kafkaSecurityProtocol}`,
    );
  }
  if (c.topicMinInsyncReplicas > c.topicReplicationFactor) {
    problems.push(
      `topicMinInsyncReplicas (--topic-min-insync-replicas): ${c.topicMinInsyncReplicas} is more than topicReplicationFactor ${c.topicReplicationFactor}: no commit could ever succeed`,
    );
  }
  if (problems.length > 0) {
    throw new TickstreamError(ErrorCode.CONFIG, `invalid configuration:\n  ${problems.join('\n  ')}`);
  }
  return Object.freeze(c);
}

/** The Kafka TLS/SASL settings of every client (sinks/kafka/client-config.ts maps them). */
export function kafkaSecurityOf(config: Config): KafkaSecurity {
  return {
    protocol: config.kafkaSecurityProtocol,
    saslMechanism: config.kafkaSaslMechanism,
    saslUsername: config.kafkaSaslUsername,
    saslPassword: config.kafkaSaslPassword,
    sslCaLocation: config.kafkaSslCaLocation,
    sslCertificateLocation: config.kafkaSslCertificateLocation,
    sslKeyLocation: config.kafkaSslKeyLocation,
    sslKeyPassword: config.kafkaSslKeyPassword,
  };
}

/** Keys whose values are secrets: `config` prints them as `***`, the logs redact them. */
export const SECRET_KEYS = ['kafkaSaslPassword', 'kafkaSslKeyPassword'] as const;

/** Rows for the README: key, env var, flag, default, meaning. */
export function configKeys(): {
  key: string;
  env: string;
  flag: string;
  default: string;
  description: string;
}[] {
  const defaults = configSchema.parse({});
  return Object.entries(configShape).map(([key, schema]) => ({
    key,
    env: `TICKSTREAM_${toSnake(key)}`,
    flag: `--${toKebab(key)}`,
    default: JSON.stringify(defaults[key as ConfigKey]),
    description: schema.description ?? '',
  }));
}

/** The websocket server's settings from the config: the same for serve and replay's server. */
export function wsServerSettings(config: Config) {
  return {
    host: config.httpHost,
    port: config.httpPort,
    ...(config.httpTlsCert ? { tls: { certFile: config.httpTlsCert, keyFile: config.httpTlsKey } } : {}),
    tokens: config.wsTokens,
    maxBackpressureBytes: config.wsMaxBackpressureBytes,
    slowConsumerPolicy: config.wsSlowConsumerPolicy,
    maxClients: config.wsMaxClients,
    maxChannelsPerClient: config.wsMaxChannelsPerClient,
    snapshotsPerTurn: config.wsSnapshotsPerTurn,
  };
}
