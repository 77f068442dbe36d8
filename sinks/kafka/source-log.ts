/**
 * The sources topic as the bridges' shared, ordered log of ownership (docs/architecture.md,
 * "Sources that move between bridges").
 *
 * The compacted sources topic has one partition. It holds two kinds of records:
 * - `<source>` → the source's resume state (`SourceState`, with the `epoch` of the bridge that
 *   wrote it), written in every journal transaction that carries the source's ticks;
 * - `claim:<source>` → `{ source, epoch, owner }`, written by a bridge when the source says
 *   HELLO to it (`:` never occurs in a source id, so the two never share a key).
 *
 * `SourceLog` tails that partition `read_committed` with one long-lived consumer and keeps, per
 * source, the latest state and the highest claim epoch seen. `readTo(offset)` returns once every
 * record below `offset` has been seen — which, `read_committed`, cannot happen before every
 * transaction with a record below `offset` has committed or aborted (they hold the last stable
 * offset). That is what the fencing rule (`fencedSources`) stands on.
 */
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import RdKafka from '@confluentinc/kafka-javascript';
import { ErrorCode, TickstreamError } from '../../codecs/errors.js';
import {
  connectKafka,
  describeKafka,
  type KafkaSecurity,
  kafkaClientProps,
} from '../../codecs/kafka-client.js';
import type { SourceState } from './journal.js';

/** A claim: bridge `owner` serves `source` from `epoch` on. */
export interface SourceClaim {
  source: string;
  epoch: number;
  owner: string;
}

/** What one transaction writes for a source: its state under `epoch`, or a claim of `epoch`. */
export interface FenceItem {
  source: string;
  epoch: number;
  kind: 'state' | 'claim';
}

const CLAIM_PREFIX = 'claim:';

export function claimKey(source: string): string {
  return `${CLAIM_PREFIX}${source}`;
}

/**
 * The fencing rule. `claimEpoch(source)` is the highest committed claim epoch for the source
 * below the transaction's first record in the sources partition. A state written under epoch
 * e is fenced by any claim > e (another bridge took the source); a claim of epoch e is fenced
 * by any claim >= e (another bridge claimed first). Returns the fenced sources.
 */
export function fencedSources(
  items: readonly FenceItem[],
  claimEpoch: (source: string) => number,
): Set<string> {
  const fenced = new Set<string>();
  for (const item of items) {
    const seen = claimEpoch(item.source);
    if (item.kind === 'state' ? seen > item.epoch : seen >= item.epoch) fenced.add(item.source);
  }
  return fenced;
}

type Consumer = InstanceType<typeof RdKafka.KafkaConsumer>;

const CALL_TIMEOUT_MS = 10_000;

export interface SourceLogOptions {
  brokers: string;
  /** TLS/SASL of the consumer (codecs/kafka-client.ts); undefined: plaintext. */
  security?: KafkaSecurity;
  sourcesTopic: string;
  /** Give up a read that makes no progress for this long (a transaction holds the LSO). */
  stallTimeoutMs: number;
  librdkafka?: Record<string, string | number | boolean>;
}

export class SourceLog {
  readonly #o: SourceLogOptions;
  readonly #consumer: Consumer;
  readonly #states = new Map<string, SourceState>();
  readonly #claims = new Map<string, SourceClaim>();
  /** The next offset to read: every record below it has been applied. */
  #next = 0;
  /** Reads run one at a time. */
  #chain: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(options: SourceLogOptions) {
    this.#o = options;
    this.#consumer = new RdKafka.KafkaConsumer(
      {
        ...kafkaClientProps(options.brokers, options.security),
        'group.id': `tickstream-sources-${randomUUID()}`,
        'enable.auto.commit': false,
        'isolation.level': 'read_committed',
        // At the last stable offset the broker has nothing to return: answer quickly, a
        // transaction waits on this read before it commits.
        'fetch.wait.max.ms': 5,
        'fetch.error.backoff.ms': 20,
        ...options.librdkafka,
      },
      { 'auto.offset.reset': 'earliest' },
    );
  }

  /** Connects, and reads the whole partition (every source's state and claim). */
  async start(): Promise<void> {
    await connectKafka(
      this.#consumer,
      this.#o.brokers,
      this.#o.security,
      CALL_TIMEOUT_MS,
      (err) =>
        new TickstreamError(
          ErrorCode.KAFKA,
          `cannot reach Kafka at ${describeKafka(this.#o.brokers, this.#o.security)} (${err.message}). Is the broker up? (npm run infra:up)`,
        ),
    );
    // A topic journal.start() has just created may not be known to this client yet.
    let low = -1;
    for (const until = Date.now() + CALL_TIMEOUT_MS; low < 0; ) {
      low = await promisify<object, RdKafka.Metadata>(this.#consumer.getMetadata.bind(this.#consumer))({
        topic: this.#o.sourcesTopic,
        timeout: CALL_TIMEOUT_MS,
      })
        .then(() => this.#watermark('low'))
        .catch((err: Error) => {
          if (Date.now() > until) throw err;
          return new Promise<number>((r) => setTimeout(() => r(-1), 200));
        });
    }
    this.#next = low;
    this.#consumer.setDefaultConsumeTimeout(5);
    await this.readToEnd();
  }

  /** The partition, assigned only during reads (see #readTo). */
  get #partition(): RdKafka.TopicPartition[] {
    return [{ topic: this.#o.sourcesTopic, partition: 0 }];
  }

  /** The latest committed state of a source, as far as read. */
  state(source: string): SourceState | undefined {
    return this.#states.get(source);
  }

  /** Every source's latest state, as far as read. */
  states(): Map<string, SourceState> {
    return new Map([...this.#states].map(([k, v]) => [k, { ...v, cursors: { ...v.cursors } }]));
  }

  /** The highest committed claim epoch of a source, as far as read (0: never claimed). */
  claimEpoch(source: string): number {
    return this.#claims.get(source)?.epoch ?? 0;
  }

  claim(source: string): SourceClaim | undefined {
    return this.#claims.get(source);
  }

  /**
   * Reads until every record below `offset` is applied (waits for transactions holding it);
   * throws after `stallTimeoutMs` without progress.
   */
  readTo(offset: number, stallTimeoutMs = this.#o.stallTimeoutMs): Promise<void> {
    const run = this.#chain.then(() => this.#readTo(offset, stallTimeoutMs));
    this.#chain = run.catch(() => undefined);
    return run;
  }

  /** Reads to the partition's end as of now. */
  async readToEnd(stallTimeoutMs = this.#o.stallTimeoutMs): Promise<void> {
    await this.readTo(await this.#watermark('high'), stallTimeoutMs);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#chain;
    await new Promise((resolve) => this.#consumer.disconnect(resolve));
  }

  /**
   * The partition is assigned only while a read runs, from the next offset to apply: assigned
   * and idle, librdkafka would fetch it every fetch.wait.max.ms (5 ms) for good, and those empty
   * fetches cost an idle broker about 15 % of a core here. (Pausing the partition between reads
   * instead left HELLOs unanswered in the bounded-state fault tests; an assignment from an
   * explicit offset leaves librdkafka nothing to guess.)
   */
  async #readTo(offset: number, stallTimeoutMs: number): Promise<void> {
    if (this.#next >= offset) return;
    this.#consumer.assign([{ topic: this.#o.sourcesTopic, partition: 0, offset: this.#next }]);
    try {
      await this.#fetchTo(offset, stallTimeoutMs);
    } finally {
      if (!this.#closed) this.#consumer.unassign();
    }
  }

  async #fetchTo(offset: number, stallTimeoutMs: number): Promise<void> {
    let lastProgress = Date.now();
    while (this.#next < offset) {
      if (this.#closed)
        throw new TickstreamError(ErrorCode.SHUTTING_DOWN, 'the sources log closed during a read');
      const batch = await new Promise<RdKafka.Message[]>((resolve, reject) =>
        this.#consumer.consume(500, (err, m) => (err ? reject(err) : resolve(m))),
      );
      const before = this.#next;
      for (const m of batch) {
        this.#apply(m);
        this.#next = Math.max(this.#next, m.offset + 1);
      }
      // The position moves past transaction markers and aborted records too.
      const [p] = this.#consumer.position(this.#partition);
      if (p?.offset !== undefined && p.offset >= 0) this.#next = Math.max(this.#next, p.offset);
      if (this.#next > before) lastProgress = Date.now();
      else if (Date.now() - lastProgress > stallTimeoutMs)
        throw new TickstreamError(
          ErrorCode.KAFKA,
          `reading ${this.#o.sourcesTopic} made no progress for ${stallTimeoutMs} ms before offset ${offset} (at ${this.#next}): a transaction of some bridge holds it open (a paused bridge's is aborted by Kafka after transaction.timeout.ms)`,
        );
    }
  }

  #apply(m: RdKafka.Message): void {
    const key = m.key ? String(m.key) : '';
    if (!m.value) return;
    const value = JSON.parse(m.value.toString('utf8')) as SourceState | SourceClaim;
    if (key.startsWith(CLAIM_PREFIX)) {
      const claim = value as SourceClaim;
      if (claim.epoch > this.claimEpoch(claim.source)) this.#claims.set(claim.source, claim);
    } else {
      this.#states.set(key, value as SourceState);
    }
  }

  #watermark(which: 'low' | 'high'): Promise<number> {
    return new Promise<number>((resolve, reject) =>
      this.#consumer.queryWatermarkOffsets(this.#o.sourcesTopic, 0, CALL_TIMEOUT_MS, (err, w) =>
        err
          ? reject(
              new TickstreamError(
                ErrorCode.KAFKA,
                `cannot read the offsets of ${this.#o.sourcesTopic} on ${this.#o.brokers}: ${err.message}`,
              ),
            )
          : resolve(which === 'low' ? w.lowOffset : w.highOffset),
      ),
    );
  }
}
