/**
 * The one place where tickstream's Kafka connection settings become librdkafka properties:
 * the journal producer, the sources log, the readers (`verify`, `replay`), the loader's consumer
 * and the admin clients all start from `kafkaClientProps`, so TLS and SASL apply to every
 * client the same way.
 *
 * A wrong password or an untrusted broker certificate is not an outage: librdkafka would retry
 * it forever and a connect would only time out as "broker transport failure". `connectKafka`
 * watches the client's log for the authentication and TLS failures and turns the first one into
 * an ERR_KAFKA that says what is wrong and which keys to fix, within a second. Secrets never appear in
 * messages: only the mechanism and the user name do.
 */
import { ErrorCode, TickstreamError } from './errors.js';

export type KafkaSecurityProtocol = 'plaintext' | 'ssl' | 'sasl_plaintext' | 'sasl_ssl';
export type KafkaSaslMechanism = 'PLAIN' | 'SCRAM-SHA-256' | 'SCRAM-SHA-512';

export interface KafkaSecurity {
  protocol: KafkaSecurityProtocol;
  saslMechanism: KafkaSaslMechanism;
  saslUsername: string;
  saslPassword: string;
  /** PEM file of the CA(s) that sign the brokers' certificates; empty: the system's CAs. */
  sslCaLocation: string;
  /** Client certificate and key (PEM) for brokers that ask for one (mutual TLS); empty: none. */
  sslCertificateLocation: string;
  sslKeyLocation: string;
  sslKeyPassword: string;
}

type Props = Record<string, string | number | boolean>;

/**
 * Prefetch bounds of the consumers that run inside `serve` (the Postgres loader, the Redis
 * healer's journal reads). librdkafka's defaults (a 64 MiB queue per consumer, up to 64 MiB per
 * fetch response, held in native memory the V8 heap limits never see) made each of them add
 * 70–80 MB to the bridge's RSS under overload; 8 MiB is still over 100k ticks of compressed
 * records prefetched, more than a second of loading at the COPY limit.
 */
export const SERVE_CONSUMER_PREFETCH: Props = {
  'fetch.max.bytes': 8 << 20,
  'queued.max.messages.kbytes': 8192,
};

/** librdkafka properties of a client of `brokers` with `security` (undefined: plaintext). */
export function kafkaClientProps(brokers: string, security?: KafkaSecurity): Props {
  const props: Props = { 'metadata.broker.list': brokers };
  if (!security || security.protocol === 'plaintext') return props;
  props['security.protocol'] = security.protocol;
  // Logs come as events: connectKafka reads the authentication and TLS failures from them,
  // forwardKafkaLogs passes the warnings on to the logger.
  props['event_cb'] = true;
  if (security.protocol === 'sasl_plaintext' || security.protocol === 'sasl_ssl') {
    props['sasl.mechanisms'] = security.saslMechanism;
    props['sasl.username'] = security.saslUsername;
    props['sasl.password'] = security.saslPassword;
  }
  if (security.protocol === 'ssl' || security.protocol === 'sasl_ssl') {
    if (security.sslCaLocation) props['ssl.ca.location'] = security.sslCaLocation;
    if (security.sslCertificateLocation) props['ssl.certificate.location'] = security.sslCertificateLocation;
    if (security.sslKeyLocation) props['ssl.key.location'] = security.sslKeyLocation;
    if (security.sslKeyPassword) props['ssl.key.password'] = security.sslKeyPassword;
  }
  return props;
}

/** How a client reaches Kafka, for messages: brokers, protocol, mechanism and user (never secrets). */
export function describeKafka(brokers: string, security?: KafkaSecurity): string {
  if (!security || security.protocol === 'plaintext') return brokers;
  const sasl = security.protocol.startsWith('sasl_')
    ? `, ${security.saslMechanism} as user '${security.saslUsername}'`
    : '';
  return `${brokers} (${security.protocol}${sasl})`;
}

const securityFailures = new WeakSet<Error>();

/** True for the errors `connectKafka` makes: wrong credentials or TLS trust, not an outage. */
export function isKafkaSecurityFailure(err: unknown): boolean {
  return err instanceof Error && securityFailures.has(err);
}

const SASL_FAILED = /SASL authentication error: (.*)$/;
const SSL_FAILED = /SSL handshake failed: (.*)$/;

/** The ERR_KAFKA for one librdkafka log line, or null when the line is not such a failure. */
export function securityFailureOf(
  line: string,
  brokers: string,
  security?: KafkaSecurity,
): TickstreamError | null {
  const sasl = SASL_FAILED.exec(line);
  const ssl = sasl ? null : SSL_FAILED.exec(line);
  if (!sasl && !ssl) return null;
  const err = sasl
    ? new TickstreamError(
        ErrorCode.KAFKA,
        `Kafka at ${describeKafka(brokers, security)} refused the SASL credentials (${sasl[1]}). Check kafkaSaslUsername and kafkaSaslPassword (TICKSTREAM_KAFKA_SASL_USERNAME / TICKSTREAM_KAFKA_SASL_PASSWORD) and that kafkaSaslMechanism is one the broker enables for this user.`,
      )
    : new TickstreamError(
        ErrorCode.KAFKA,
        `the TLS handshake with Kafka at ${describeKafka(brokers, security)} failed (${ssl?.[1]}). Point kafkaSslCaLocation at the PEM file of the CA that signed the broker's certificate, and check that kafkaSecurityProtocol matches the broker's listener.`,
      );
  securityFailures.add(err);
  return err;
}

/**
 * A secured client's librdkafka log lines of warning level or worse, to `log`: with `event_cb`
 * (set for them by kafkaClientProps) librdkafka no longer prints them on stderr itself.
 */
export function forwardKafkaLogs(
  client: {
    on(
      event: 'event.log',
      listener: (e: { severity: number; fac: string; message: string }) => void,
    ): unknown;
  },
  security: KafkaSecurity | undefined,
  log: (line: { fac: string; severity: number }, message: string) => void,
): void {
  if (!security || security.protocol === 'plaintext') return;
  client.on('event.log', (e) => {
    if (e.severity <= 4) log({ fac: e.fac, severity: e.severity }, e.message);
  });
}

/** What connectKafka needs of a librdkafka client (producer or consumer). */
interface Connectable {
  on(event: 'event.log', listener: (e: { message: string }) => void): unknown;
  removeListener(event: 'event.log', listener: (e: { message: string }) => void): unknown;
  connect(options: { timeout: number }, cb: (err: { message: string } | null | undefined) => void): unknown;
}

/** Longest connect attempt of a secured client: how long it may outlive a security failure. */
const SECURED_ATTEMPT_MS = 1000;

/**
 * Connects `client` within `timeoutMs`, or rejects: with the authentication or TLS failure its
 * log shows (an ERR_KAFKA saying what to fix, as soon as it happens), else with `unreachable`
 * made from the last connect error.
 *
 * A secured client connects in short attempts: a librdkafka connect cannot be cancelled, and one
 * still waiting holds the process open at exit (libuv joins its threads), so after a wrong
 * password the process would stay for the whole timeout.
 */
export async function connectKafka(
  client: Connectable,
  brokers: string,
  security: KafkaSecurity | undefined,
  timeoutMs: number,
  unreachable: (err: Error) => Error,
): Promise<void> {
  let failure: TickstreamError | null = null;
  const onLog = (e: { message: string }) => {
    failure ??= securityFailureOf(e.message, brokers, security);
  };
  client.on('event.log', onLog);
  const secured = security !== undefined && security.protocol !== 'plaintext';
  const end = performance.now() + timeoutMs;
  try {
    for (;;) {
      const left = Math.max(1, Math.round(end - performance.now()));
      const timeout = secured ? Math.min(SECURED_ATTEMPT_MS, left) : left;
      const err = await new Promise<Error | null>((resolve) =>
        client.connect({ timeout }, (e) => resolve(e ? new Error(e.message) : null)),
      );
      if (failure) throw failure;
      if (!err) return;
      if (performance.now() >= end) throw unreachable(err);
    }
  } finally {
    client.removeListener('event.log', onLog);
  }
}
