/**
 * The Kafka journal: a transactional producer (librdkafka through @confluentinc/kafka-javascript)
 * that commits tick records, closed bars and the sources' resume state together. An append's
 * promise resolves only once the transaction holding it has committed — the bridge ACKs ticks
 * to EAs on that, never earlier.
 *
 * - One `transactional.id` per bridge instance: a restarted bridge fences the old one, whose
 *   pending transaction is aborted by the broker.
 * - One transaction is in flight at a time. With none in flight an append goes out at once (after
 *   the current turn of the event loop, so appends made together share it): at low rates each
 *   append commits without waiting. While one is in flight, appends gather and go out together
 *   as soon as it has committed (at most `maxTransactionRecords` records a transaction): at high
 *   rates transactions grow with the load. `transactionIntervalMs` (default 0) is the least time
 *   between the starts of two transactions, for brokers that must see fewer of them.
 * - A failed transaction is aborted and retried with the same content, with backoff, for as
 *   long as the error is not fatal: nothing accepted is lost, and aborted records are invisible
 *   to `read_committed` readers, so nothing is duplicated. While that goes on `ready` is false
 *   and `hasRoom()` turns false once `maxQueuedBytes` are waiting: the bridge stops granting
 *   credit, and sources hold their ticks.
 * - Fenced (another instance took the transactional.id): every pending append is rejected
 *   with ERR_KAFKA; the process must restart.
 * - Fatal but not fenced (librdkafka #3297: a transaction the coordinator timed out while the
 *   broker was away ends in INVALID_TXN_STATE, which librdkafka makes fatal): the producer is
 *   rebuilt with the same transactional.id and the same content retried. Safe: Kafka answers a
 *   commit with INVALID_TXN_STATE only when the transaction was not committed (it was aborted
 *   or is gone), and nothing of it was ACKed. At most MAX_REBUILDS in a row without a commit,
 *   then it stops as for fencing.
 * - No delivery reports without fencing: a committed transaction already means every record in
 *   it is stored, so the event loop is not woken per record. With fencing they are on (only the
 *   sources records' offsets are used; no cost measured, docs/architecture.md).
 * - Records of one source share its key and partition (`murmur2_random`, as Java clients), so
 *   per-source order holds.
 * - Source fencing (`fence`, docs/architecture.md "Sources that move between bridges"): a
 *   transaction that writes source states or claims waits for its sources records' offsets
 *   (delivery reports, on for this only), lets the fence read the sources partition up to the
 *   first of them, and leaves out — rejected with ERR_SOURCE_FENCED — the appends of sources
 *   another bridge has claimed since; the rest is retried at once. The fence need not wait for
 *   its read when the journal knows the claims below the first record are those it read for the
 *   last check (`claimsRead`, see #claimsKnownTo): one bridge alone on its sources partition
 *   then commits without a read of the log per transaction.
 */
import RdKafka from '@confluentinc/kafka-javascript';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { BarSnapshotJson } from '../../codecs/bar-snapshot.js';
import { ErrorCode, TickstreamError } from '../../codecs/errors.js';
import {
  connectKafka,
  describeKafka,
  forwardKafkaLogs,
  type KafkaSecurity,
  kafkaClientProps,
} from '../../codecs/kafka-client.js';
import { claimKey, type FenceItem, type SourceClaim } from './source-log.js';

export interface JournalRecord {
  key: string;
  value: Uint8Array;
  headers?: Record<string, string>;
}
export interface SymbolCursor {
  lastMsc: number;
  countAtMsc: number;
}
export interface SourceState {
  source: string;
  nextSeq: number;
  cursors: Record<string, SymbolCursor>;
  updatedAtMs: number;
  /** The claim epoch of the bridge that wrote this state (absent: written before claims existed, 0). */
  epoch?: number;
  /** The source's open bars as of nextSeq (codecs/bar-snapshot.ts); null or absent: none. */
  bars?: BarSnapshotJson | null;
}
export interface JournalEntry {
  ticks: JournalRecord[];
  bars: JournalRecord[];
  states: SourceState[];
  /** Merged-feed records (pipeline/merged-feed.ts), to `mergedTopic`. */
  merged?: JournalRecord[];
  /** Sources this bridge claims (sinks/kafka/source-log.ts); fenced like states. */
  claims?: SourceClaim[];
}
/** What a committed append reports. */
export interface Committed {
  /** The offset of the last record its transaction wrote to the sources partition (-1: none tracked). */
  sourcesOffset: number;
}

/**
 * Source fencing (docs/architecture.md): called inside each transaction that writes source
 * states or claims, once those records are in the log (not committed); `offset` is the first
 * of them. Returns the sources that must not commit: their appends are rejected with
 * ERR_SOURCE_FENCED and the transaction is retried without them.
 */
export interface TransactionFence {
  /**
   * `claimsRead`: every record between the offset of the last check and `offset` is this
   * journal's own and none is a claim, so the claims below `offset` are those the last check
   * read (the fence need not wait for a read of the log).
   */
  check(offset: number, items: FenceItem[], claimsRead: boolean): Promise<Set<string>>;
}

export interface JournalOptions {
  brokers: string;
  /** TLS/SASL of every connection (client-config.ts); undefined: plaintext. */
  security?: KafkaSecurity;
  transactionalId: string;
  ticksTopic: string;
  barsTopic: string;
  sourcesTopic: string;
  /** Topic of the merged feeds (one partition); only when feed groups are configured. */
  mergedTopic?: string;
  partitions: number;
  /** Replicas and min.insync.replicas of the topics ensureTopics creates (default 1 and 1). */
  replicationFactor?: number;
  minInsyncReplicas?: number;
  retentionMs: number;
  /** Least time between the starts of two transactions (0: the next starts as soon as one commits). */
  transactionIntervalMs: number;
  maxTransactionRecords: number;
  maxQueuedBytes: number;
  registry: Registry;
  logger: Logger;
  /** Fault injection for tests: called at 'journal-mid-transaction' and 'journal-during-abort'. */
  crashPoint?: (name: string) => void;
  /** Test-only: throws at named points (pipeline/faults.ts). */
  failPoint?: (name: string) => void;
  /** Test-only: waits at named points (a deliberately slow journal). */
  slowPoint?: (name: string) => Promise<void>;
  librdkafka?: Record<string, string | number | boolean>;
  /** Source fencing; without it states are written unchecked (one bridge per source). */
  fence?: TransactionFence;
}

interface Pending {
  entry: JournalEntry;
  bytes: number;
  resolve: (c: Committed) => void;
  reject: (err: Error) => void;
}

type KafkaError = Error & {
  code?: number;
  isFatal?: boolean;
  isRetriable?: boolean;
  isTxnRequiresAbort?: boolean;
};

const TXN_TIMEOUT_MS = 30_000;
/** Producer rebuilds after fatal, non-fenced errors without a commit in between, at most. */
const MAX_REBUILDS = 3;
const CALL_TIMEOUT_MS = 10_000;
/** A transaction open this long means the broker is not answering: /readyz says so. */
const STALL_MS = 5000;
const FENCED_CODES = new Set([
  RdKafka.CODES.ERRORS.ERR__FENCED,
  RdKafka.CODES.ERRORS.ERR_PRODUCER_FENCED,
  RdKafka.CODES.ERRORS.ERR_INVALID_PRODUCER_EPOCH,
]);

export class KafkaJournal {
  readonly #o: JournalOptions;
  readonly #config: RdKafka.ProducerGlobalConfig;
  #producer: RdKafka.Producer;
  /** Rebuilds since the last commit (see MAX_REBUILDS). */
  #rebuilds = 0;
  #queue: Pending[] = [];
  #queuedBytes = 0;
  /** Tick records in #queue (not yet taken into a transaction). */
  #queuedRecords = 0;
  #running = false;
  /** A run of #runLoop is scheduled (#timer while it waits out transactionIntervalMs). */
  #scheduled = false;
  #timer: NodeJS.Timeout | null = null;
  /** performance.now() when the last transaction began (transactionIntervalMs counts from it). */
  #lastBeganAt = Number.NEGATIVE_INFINITY;
  /**
   * With fencing: the sources-partition offset up to which every claim is one the fence has
   * read, -1 when unknown. Set after a commit whose sources records were only states, at
   * offsets [F, L] with no gap (no other writer between them): then L + 1 is its commit marker
   * and L + 2 the next free offset, and if the next transaction's first record lands exactly
   * there, nothing but our own states and that marker lies between F and it, so the claims
   * below it are the claims below F, which the check at F read. Any other layout (another
   * bridge wrote in between, an abort, a claim) falls back to reading (docs/architecture.md).
   */
  #claimsKnownTo = -1;
  #ready = false;
  #dead: TickstreamError | null = null;
  /** performance.now() when the open transaction began; 0 when none is open. */
  #txnStartedAt = 0;
  #closing = false;
  /** Sources records whose offset a fenced transaction waits for, by produce opaque. */
  readonly #deliveries = new Map<
    unknown,
    { resolve: (offset: number) => void; reject: (err: Error) => void }
  >();
  readonly #m;

  constructor(options: JournalOptions) {
    this.#o = options;
    const config: Record<string, string | number | boolean> = {
      ...kafkaClientProps(options.brokers, options.security),
      'transactional.id': options.transactionalId,
      'transaction.timeout.ms': TXN_TIMEOUT_MS,
      'enable.idempotence': true,
      acks: 'all',
      partitioner: 'murmur2_random',
      // Records are already batches of ticks: a short linger lets one transaction's records
      // share produce requests without adding to the commit latency that ACKs wait for.
      'linger.ms': 2,
      'batch.size': 1_000_000,
      'message.max.bytes': 8_000_000,
      'queue.buffering.max.kbytes': 1_048_576,
      'queue.buffering.max.messages': 1_000_000,
      'compression.type': 'lz4',
      'socket.keepalive.enable': true,
      // Fencing needs the offsets of the sources records (polled on librdkafka's own thread).
      ...(options.fence ? { dr_cb: true } : {}),
      ...options.librdkafka,
    };
    this.#config = config as RdKafka.ProducerGlobalConfig;
    this.#producer = this.#newProducer();
    const registers = [options.registry];
    this.#m = {
      records: new Counter({
        name: 'tickstream_journal_records_total',
        help: 'Records committed to Kafka',
        labelNames: ['topic'],
        registers,
      }),
      bytes: new Counter({
        name: 'tickstream_journal_bytes_total',
        help: 'Record bytes committed to Kafka',
        registers,
      }),
      txns: new Counter({
        name: 'tickstream_journal_transactions_total',
        help: 'Kafka transactions by outcome',
        labelNames: ['outcome'],
        registers,
      }),
      rebuilds: new Counter({
        name: 'tickstream_journal_producer_rebuilds_total',
        help: 'Producers rebuilt after a fatal, non-fencing transactional error (e.g. INVALID_TXN_STATE after a broker outage)',
        registers,
      }),
      txnSeconds: new Histogram({
        name: 'tickstream_journal_transaction_seconds',
        help: 'Begin to commit of one journal transaction',
        buckets: [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5],
        registers,
      }),
      queued: new Gauge({
        name: 'tickstream_journal_queued_bytes',
        help: 'Bytes appended but not yet committed',
        registers,
      }),
      queuedLimit: new Gauge({
        name: 'tickstream_journal_queued_bytes_limit',
        help: 'Configured maxJournalQueuedBytes',
        registers,
      }),
      ready: new Gauge({ name: 'tickstream_journal_ready', help: '1 while the journal commits', registers }),
    };
    this.#m.queuedLimit.set(options.maxQueuedBytes);
  }

  /** Why the journal stopped for good (fenced, fatal), or null while it works. */
  get failure(): TickstreamError | null {
    return this.#dead;
  }

  /**
   * True while transactions commit. A transaction open for longer than STALL_MS (the broker is
   * unreachable: librdkafka keeps retrying the commit) also makes the journal not ready.
   */
  get ready(): boolean {
    const stalled = this.#txnStartedAt > 0 && performance.now() - this.#txnStartedAt > STALL_MS;
    return this.#ready && !this.#dead && !stalled;
  }

  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  hasRoom(): boolean {
    return !this.#dead && this.#queuedBytes < this.#o.maxQueuedBytes;
  }

  async start(): Promise<void> {
    await this.#connect();
    await ensureTopics(this.#o);
    await this.#call('initTransactions', (cb) => this.#producer.initTransactions(TXN_TIMEOUT_MS, cb)).catch(
      (err: KafkaError) => {
        throw new TickstreamError(
          ErrorCode.KAFKA,
          `Kafka transactions could not start for transactional.id ${this.#o.transactionalId}: ${err.message}`,
        );
      },
    );
    this.#o.logger.info(
      { transactionalId: this.#o.transactionalId, brokers: this.#o.brokers },
      'journal transactions initialised',
    );
    this.#setReady(true);
  }

  /** A producer; with fencing, its delivery reports settle the offsets #produceSources waits for. */
  #newProducer(): RdKafka.Producer {
    const producer = new RdKafka.Producer(this.#config);
    forwardKafkaLogs(producer, this.#o.security, (at, message) => this.#o.logger.warn(at, message));
    if (this.#o.fence)
      producer.on('delivery-report', (err, report) => {
        const waiter = this.#deliveries.get(report.opaque);
        if (!waiter) return;
        this.#deliveries.delete(report.opaque);
        if (err) waiter.reject(new Error(`delivery of a sources record: ${err.message}`));
        else waiter.resolve(report.offset);
      });
    return producer;
  }

  async #connect(): Promise<void> {
    await connectKafka(
      this.#producer,
      this.#o.brokers,
      this.#o.security,
      CALL_TIMEOUT_MS,
      (err) =>
        new TickstreamError(
          ErrorCode.KAFKA,
          `cannot reach Kafka at ${describeKafka(this.#o.brokers, this.#o.security)} (${err.message}). Start it with 'npm run infra:up' or fix kafkaBrokers.`,
        ),
    );
    // With fencing, delivery reports (of the sources records) are polled without a caller.
    if (this.#o.fence) this.#producer.setPollInBackground(true);
  }

  /**
   * A new producer with the same transactional.id (its initTransactions aborts whatever the old
   * one left open). Retried while the broker does not answer; a fencing error ends it.
   */
  async #rebuild(cause: KafkaError, batch: Pending[]): Promise<'retry' | 'fatal'> {
    this.#rebuilds++;
    this.#m.rebuilds.inc();
    this.#o.logger.warn(
      { err: cause.message, code: cause.code, rebuild: this.#rebuilds },
      'journal producer hit a fatal, non-fencing error: rebuilding it with the same transactional.id and retrying the same records (nothing of them was ACKed)',
    );
    await disconnect(this.#producer);
    for (let backoff = 500; ; backoff = Math.min(backoff * 2, 5000)) {
      if (this.#closing) {
        this.#die(
          new TickstreamError(
            ErrorCode.SHUTTING_DOWN,
            'the journal closed while its producer was being rebuilt: these ticks were not ACKed and stay with their EAs',
          ),
          batch,
        );
        return 'fatal';
      }
      // The old producer's delivery reports never come: the attempt waiting on them timed out.
      this.#deliveries.clear();
      this.#producer = this.#newProducer();
      try {
        await this.#connect();
        await this.#call('initTransactions', (cb) => this.#producer.initTransactions(TXN_TIMEOUT_MS, cb));
        return 'retry';
      } catch (err) {
        const e = err as KafkaError;
        await disconnect(this.#producer);
        if (e.code !== undefined && FENCED_CODES.has(e.code)) return this.#recover(e, batch);
        this.#setReady(false);
        await new Promise((r) => setTimeout(r, backoff));
      }
    }
  }

  append(entry: JournalEntry): Promise<Committed> {
    if (this.#dead) return Promise.reject(this.#dead);
    let bytes = 0;
    for (const r of entry.ticks) bytes += r.value.length;
    for (const r of entry.bars) bytes += r.value.length;
    for (const r of entry.merged ?? []) bytes += r.value.length;
    if (entry.merged?.length && !this.#o.mergedTopic)
      return Promise.reject(
        new TickstreamError(
          ErrorCode.INTERNAL,
          'merged-feed records appended to a journal without mergedTopic',
        ),
      );
    return new Promise<Committed>((resolve, reject) => {
      this.#queue.push({ entry, bytes, resolve, reject });
      this.#queuedBytes += bytes;
      this.#queuedRecords += entry.ticks.length;
      this.#m.queued.set(this.#queuedBytes);
      this.#schedule();
    });
  }

  /** Commits what is queued (bounded by `deadlineMs`), then disconnects. */
  async close(deadlineMs = 10_000): Promise<void> {
    this.#closing = true;
    const until = Date.now() + deadlineMs;
    while ((this.#queue.length || this.#running) && !this.#dead && Date.now() < until) {
      if (this.#timer) {
        clearTimeout(this.#timer);
        this.#timer = null;
        this.#scheduled = false;
      }
      void this.#runLoop();
      await new Promise((r) => setTimeout(r, 5));
    }
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#queue.length) {
      this.#die(
        new TickstreamError(
          ErrorCode.SHUTTING_DOWN,
          `the journal closed with ${this.#queue.length} appends not committed within ${deadlineMs} ms`,
        ),
        [],
      );
    }
    await disconnect(this.#producer);
  }

  /**
   * Runs the loop once this turn of the event loop is over (appends made in it share a
   * transaction), or once transactionIntervalMs has passed since the last transaction began.
   */
  #schedule(): void {
    if (this.#running || this.#scheduled || this.#dead) return;
    this.#scheduled = true;
    const run = () => {
      this.#scheduled = false;
      this.#timer = null;
      void this.#runLoop();
    };
    const wait = this.#spacing();
    if (wait > 0) this.#timer = setTimeout(run, wait);
    else setImmediate(run);
  }

  /** How long the next transaction must still wait (transactionIntervalMs); 0: it may begin now. */
  #spacing(): number {
    if (this.#closing || this.#queuedRecords >= this.#o.maxTransactionRecords) return 0;
    return Math.max(0, this.#lastBeganAt + this.#o.transactionIntervalMs - performance.now());
  }

  async #runLoop(): Promise<void> {
    if (this.#running || this.#dead) return;
    this.#running = true;
    let backoff = 100;
    try {
      while (this.#queue.length && !this.#dead) {
        const batch = this.#takeBatch();
        let committed: Committed = { sourcesOffset: -1 };
        for (;;) {
          const outcome = await this.#transaction(batch);
          if (typeof outcome === 'object') {
            committed = outcome;
            break;
          }
          if (outcome === 'fatal') return;
          // Fenced sources were taken out of the batch: the rest goes again at once.
          if (outcome === 'fenced') {
            if (batch.length === 0) break;
            continue;
          }
          this.#setReady(false);
          await new Promise((r) => setTimeout(r, backoff));
          backoff = Math.min(backoff * 2, 5000);
        }
        backoff = 100;
        this.#setReady(true);
        for (const p of batch) {
          this.#queuedBytes -= p.bytes;
          p.resolve(committed);
        }
        this.#m.queued.set(this.#queuedBytes);
        // What gathered while this one was in flight goes out now, unless the spacing says wait.
        if (this.#spacing() > 0) break;
      }
    } finally {
      this.#running = false;
      if (this.#queue.length) this.#schedule();
    }
  }

  #takeBatch(): Pending[] {
    let records = 0;
    let n = 0;
    while (n < this.#queue.length && (n === 0 || records < this.#o.maxTransactionRecords)) {
      records += (this.#queue[n] as Pending).entry.ticks.length;
      n++;
    }
    this.#queuedRecords -= records;
    return this.#queue.splice(0, n);
  }

  /**
   * One attempt: begin, produce everything, (fence check), commit. Aborts on failure; the caller
   * retries. 'fenced': fenced appends were rejected and taken out of `batch`, nothing committed.
   */
  async #transaction(batch: Pending[]): Promise<Committed | 'retry' | 'fatal' | 'fenced'> {
    const started = performance.now();
    this.#txnStartedAt = started;
    this.#lastBeganAt = started;
    // Unknown until this transaction commits (an abort leaves records and a marker behind).
    const claimsKnownTo = this.#claimsKnownTo;
    this.#claimsKnownTo = -1;
    let knownAfter = claimsKnownTo;
    try {
      await this.#call('beginTransaction', (cb) => this.#producer.beginTransaction(cb));
      const states = new Map<string, SourceState>();
      const claims: SourceClaim[] = [];
      let ticks = 0;
      let bytes = 0;
      for (const p of batch) {
        for (const r of p.entry.ticks) {
          this.#produce(this.#o.ticksTopic, r);
          bytes += r.value.length;
        }
        for (const r of p.entry.bars) this.#produce(this.#o.barsTopic, r);
        for (const r of p.entry.merged ?? []) this.#produce(this.#o.mergedTopic as string, r);
        for (const s of p.entry.states) states.set(s.source, s);
        if (p.entry.claims) claims.push(...p.entry.claims);
        ticks += p.entry.ticks.length;
      }
      const offsets: Promise<number>[] = [];
      const items: FenceItem[] = [];
      for (const s of states.values()) {
        offsets.push(this.#produceSources(s.source, s));
        items.push({ source: s.source, epoch: s.epoch ?? 0, kind: 'state' });
      }
      for (const c of claims) {
        offsets.push(this.#produceSources(claimKey(c.source), c));
        items.push({ source: c.source, epoch: c.epoch, kind: 'claim' });
      }
      let sourcesOffset = -1;
      const fence = this.#o.fence;
      if (fence && items.length) {
        const first = Math.min(...(await this.#delivered(offsets)));
        const fenced = await fence.check(first, items, first === claimsKnownTo);
        if (fenced.size) return await this.#dropFenced(batch, fenced);
        // Claims are written again after the check: a claimant that reads up to this second
        // record sees every transaction that began before its claim, including records of
        // theirs that landed after the first one (docs/architecture.md).
        const again = claims.map((c) => this.#produceSources(claimKey(c.source), c));
        const written = await this.#delivered([...offsets, ...again]);
        sourcesOffset = Math.max(...written);
        const contiguous = sourcesOffset - first + 1 === written.length;
        knownAfter = claims.length === 0 && contiguous ? sourcesOffset + 2 : -1;
      } else if (items.length) knownAfter = -1;
      this.#o.crashPoint?.('journal-mid-transaction');
      this.#o.failPoint?.('journal-commit');
      await this.#o.slowPoint?.('journal-commit');
      for (;;) {
        try {
          await this.#call('commitTransaction', (cb) =>
            this.#producer.commitTransaction(CALL_TIMEOUT_MS, cb),
          );
          break;
        } catch (err) {
          const e = err as KafkaError;
          if (!e.isRetriable || e.isTxnRequiresAbort || e.isFatal) throw err;
          // The outcome is unknown until a retry answers (it may have committed): retrying the
          // commit is the only safe move. Meanwhile /readyz and the ready gauge say so.
          this.#o.logger.warn(
            { err: e.message, code: e.code },
            'journal commit not confirmed yet; retrying it',
          );
          this.#setReady(false);
        }
      }
      this.#rebuilds = 0;
      this.#claimsKnownTo = knownAfter;
      this.#m.txns.inc({ outcome: 'committed' });
      this.#m.txnSeconds.observe((performance.now() - started) / 1000);
      this.#m.records.inc({ topic: this.#o.ticksTopic }, ticks);
      this.#m.bytes.inc(bytes);
      return { sourcesOffset };
    } catch (err) {
      return this.#recover(err as KafkaError, batch);
    } finally {
      this.#txnStartedAt = 0;
    }
  }

  async #recover(err: KafkaError, batch: Pending[]): Promise<'retry' | 'fatal'> {
    const fenced = err.code !== undefined && FENCED_CODES.has(err.code);
    // Not while closing: close() disconnects the producer under a transaction still in flight.
    if (err.isFatal && !fenced && !this.#closing && this.#rebuilds < MAX_REBUILDS)
      return this.#rebuild(err, batch);
    if (err.isFatal || fenced) {
      this.#die(
        new TickstreamError(
          ErrorCode.KAFKA,
          `the Kafka journal stopped: ${err.message}. Another bridge with instanceId giving transactional.id ${this.#o.transactionalId} took over, or the producer hit a fatal error ${MAX_REBUILDS} times in a row; restart this bridge (with its own instanceId if both should run).`,
        ),
        batch,
      );
      return 'fatal';
    }
    this.#m.txns.inc({ outcome: 'aborted' });
    this.#o.logger.warn(
      { err: err.message, code: err.code },
      'journal transaction failed; aborting and retrying the same records',
    );
    for (;;) {
      try {
        this.#o.crashPoint?.('journal-during-abort');
        await this.#call('abortTransaction', (cb) => this.#producer.abortTransaction(CALL_TIMEOUT_MS, cb));
        return 'retry';
      } catch (abortErr) {
        const e = abortErr as KafkaError;
        if (e.isFatal || (e.code !== undefined && FENCED_CODES.has(e.code))) return this.#recover(e, batch);
        // No transaction to abort (begin itself failed): nothing to undo.
        if (e.code === RdKafka.CODES.ERRORS.ERR__STATE) return 'retry';
        this.#setReady(false);
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  /**
   * Aborts the open transaction and rejects the appends of fenced sources (taking them out of
   * `batch`); the rest is retried at once by the caller.
   */
  async #dropFenced(batch: Pending[], fenced: Set<string>): Promise<'fenced' | 'retry' | 'fatal'> {
    try {
      await this.#call('abortTransaction', (cb) => this.#producer.abortTransaction(CALL_TIMEOUT_MS, cb));
    } catch (err) {
      return this.#recover(err as KafkaError, batch);
    }
    this.#m.txns.inc({ outcome: 'fenced' });
    const touches = (p: Pending) =>
      p.entry.states.some((s) => fenced.has(s.source)) ||
      (p.entry.claims ?? []).some((c) => fenced.has(c.source));
    const out = batch.filter(touches);
    const keep = batch.filter((p) => !touches(p));
    batch.splice(0, batch.length, ...keep);
    for (const p of out) {
      this.#queuedBytes -= p.bytes;
      const sources = [...fenced].filter(
        (f) => p.entry.states.some((s) => s.source === f) || p.entry.claims?.some((c) => c.source === f),
      );
      p.reject(
        new TickstreamError(
          ErrorCode.SOURCE_FENCED,
          `source ${sources.join(', ')} was claimed by another bridge (a newer epoch in the sources topic): this bridge may not commit for it; its terminal reconnects and resumes where the journal stands`,
        ),
      );
    }
    this.#m.queued.set(this.#queuedBytes);
    this.#o.logger.warn(
      { fenced: [...fenced], appends: out.length },
      'journal appends of fenced sources dropped',
    );
    return 'fenced';
  }

  /** Produces a sources record and resolves with its offset once the broker has it (with fencing). */
  #produceSources(key: string, value: object): Promise<number> {
    const buf = Buffer.from(JSON.stringify(value));
    const headers = [{ 'content-type': 'application/json' }];
    if (!this.#o.fence) {
      this.#producer.produce(this.#o.sourcesTopic, 0, buf, key, null, undefined, headers);
      return Promise.resolve(-1);
    }
    const opaque = {};
    const offset = new Promise<number>((resolve, reject) =>
      this.#deliveries.set(opaque, { resolve, reject }),
    );
    try {
      this.#producer.produce(this.#o.sourcesTopic, 0, buf, key, null, opaque, headers);
    } catch (err) {
      this.#deliveries.delete(opaque);
      throw err;
    }
    return offset;
  }

  /** The offsets, once delivered; a delivery that takes longer than CALL_TIMEOUT_MS fails the attempt. */
  async #delivered(offsets: Promise<number>[]): Promise<number[]> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`the sources records were not delivered within ${CALL_TIMEOUT_MS} ms`)),
        CALL_TIMEOUT_MS,
      );
    });
    try {
      return await Promise.race([Promise.all(offsets), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  #produce(topic: string, r: JournalRecord): void {
    const headers = r.headers ? Object.entries(r.headers).map(([k, v]) => ({ [k]: v })) : undefined;
    this.#producer.produce(
      topic,
      null,
      Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength),
      r.key,
      null,
      undefined,
      headers,
    );
  }

  #die(err: TickstreamError, batch: Pending[]): void {
    this.#dead = err;
    this.#setReady(false);
    this.#o.logger.error({ err: err.message }, 'journal is dead');
    for (const p of [...batch, ...this.#queue]) p.reject(err);
    this.#queue = [];
    this.#queuedBytes = 0;
    this.#queuedRecords = 0;
    this.#m.queued.set(0);
  }

  #setReady(ready: boolean): void {
    if (ready !== this.#ready)
      this.#o.logger[ready ? 'info' : 'warn'](
        `journal ${ready ? 'ready' : 'NOT ready: transactions are failing, retrying'}`,
      );
    this.#ready = ready;
    this.#m.ready.set(ready && !this.#dead ? 1 : 0);
  }

  #call(what: string, fn: (cb: (err: RdKafka.LibrdKafkaError) => void) => void): Promise<void> {
    return new Promise((resolve, reject) =>
      fn((err) => {
        if (err) {
          const e = Object.assign(new Error(`${what}: ${err.message}`), err);
          reject(e);
        } else resolve();
      }),
    );
  }
}

/** Disconnects a producer; one that is not connected (any more) throws at once: nothing to do. */
function disconnect(producer: RdKafka.Producer): Promise<void> {
  return new Promise<void>((resolve) => {
    try {
      producer.disconnect(5000, () => resolve());
    } catch {
      resolve();
    }
  });
}

/**
 * Creates the journal topics when missing: ticks and bars with retention, sources compacted,
 * each with `replicationFactor` replicas and `min.insync.replicas` (a commit waits for them).
 * Topics that exist are left as they are.
 */
export async function ensureTopics(
  o: Pick<
    JournalOptions,
    | 'brokers'
    | 'security'
    | 'ticksTopic'
    | 'barsTopic'
    | 'sourcesTopic'
    | 'partitions'
    | 'retentionMs'
    | 'replicationFactor'
    | 'minInsyncReplicas'
    | 'mergedTopic'
  >,
): Promise<void> {
  const admin = RdKafka.AdminClient.create(kafkaClientProps(o.brokers, o.security) as RdKafka.GlobalConfig);
  const create = (topic: string, partitions: number, topicConfig: Record<string, string>) =>
    new Promise<void>((resolve, reject) =>
      admin.createTopic(
        {
          topic,
          num_partitions: partitions,
          replication_factor: o.replicationFactor ?? 1,
          config: { ...topicConfig, 'min.insync.replicas': String(o.minInsyncReplicas ?? 1) },
        },
        CALL_TIMEOUT_MS,
        (err) => {
          if (!err || err.code === RdKafka.CODES.ERRORS.ERR_TOPIC_ALREADY_EXISTS) resolve();
          else reject(new TickstreamError(ErrorCode.KAFKA, `cannot create topic ${topic}: ${err.message}`));
        },
      ),
    );
  try {
    const retention = { 'retention.ms': String(o.retentionMs), 'max.message.bytes': '8000000' };
    await create(o.ticksTopic, o.partitions, retention);
    await create(o.barsTopic, o.partitions, retention);
    await create(o.sourcesTopic, 1, { 'cleanup.policy': 'compact', 'min.compaction.lag.ms': '0' });
    // One partition: the merged feeds' inputs and decisions keep one order (replayable).
    if (o.mergedTopic) await create(o.mergedTopic, 1, retention);
  } finally {
    admin.disconnect();
  }
}
