/**
 * Sources that move between running bridges (docs/architecture.md, "Sources that move between
 * bridges"): a source's HELLO makes this bridge claim it — a claim record with the next epoch,
 * committed in a journal transaction — and its resume state is then read from the journal as it
 * stands after every transaction that began before the claim. Every later transaction that
 * writes the source's state is checked against newer claims (`check`, the journal's
 * TransactionFence), so two bridges never both commit for one source.
 */
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import { ErrorCode, TickstreamError } from '../codecs/errors.js';
import type { KafkaJournal, SourceState, TransactionFence } from '../sinks/kafka/journal.js';
import { type FenceItem, fencedSources, type SourceLog } from '../sinks/kafka/source-log.js';

/** Claims of one HELLO that lose a race with another bridge's claim are retried this often. */
const CLAIM_ATTEMPTS = 3;
/**
 * A claim's reads (outside any transaction of ours) wait this long for a transaction that holds
 * the sources partition: past Kafka's abort of a dead bridge's transaction (transaction.timeout.ms
 * 30 s + the broker's 10 s check), so a HELLO waits it out rather than failing.
 */
const CLAIM_STALL_MS = 60_000;

/** What claims need of the sources log (a fake in tests). */
export type ClaimLog = Pick<SourceLog, 'readTo' | 'readToEnd' | 'claimEpoch' | 'claim' | 'state'>;
/** What claims need of the journal (a fake in tests). */
export type ClaimJournal = Pick<KafkaJournal, 'append'>;

export interface SourceClaimsOptions {
  log: ClaimLog;
  /** This bridge's name in its claims (its transactional.id). */
  owner: string;
  registry: Registry;
  logger: Logger;
}

export class SourceClaims implements TransactionFence {
  readonly #o: SourceClaimsOptions;
  #journal: ClaimJournal | null = null;
  /** A read the check did not wait for is under way (#catchUp). */
  #catchingUp = false;
  readonly #m;

  constructor(options: SourceClaimsOptions) {
    this.#o = options;
    const registers = [options.registry];
    this.#m = {
      claims: new Counter({
        name: 'tickstream_source_claims_total',
        help: 'Sources claimed by this bridge at HELLO (a claim record with a new epoch committed)',
        registers,
      }),
      fenced: new Counter({
        name: 'tickstream_source_fenced_total',
        help: 'Source writes refused because another bridge claimed the source (its ticks are not committed and not ACKed; its session is closed with ERR_SOURCE_FENCED)',
        registers,
      }),
    };
  }

  /** The journal claims are committed through (it checks them with `check`). */
  attach(journal: ClaimJournal): void {
    this.#journal = journal;
  }

  async check(offset: number, items: FenceItem[], claimsRead = false): Promise<Set<string>> {
    // Claims known (the journal's own states since the last read): the rule needs no read, but
    // the log still catches up meanwhile, or its consumer's prefetched records would pile up.
    if (claimsRead) this.#catchUp(offset);
    else await this.#o.log.readTo(offset);
    const fenced = fencedSources(items, (source) => this.#o.log.claimEpoch(source));
    if (fenced.size) {
      this.#m.fenced.inc(fenced.size);
      this.#o.logger.warn(
        {
          fenced: [...fenced].map((source) => ({ source, claim: this.#o.log.claim(source) })),
          owner: this.#o.owner,
        },
        'another bridge claimed these sources: this bridge does not commit for them',
      );
    }
    return fenced;
  }

  #catchUp(offset: number): void {
    if (this.#catchingUp) return;
    this.#catchingUp = true;
    this.#o.log
      .readTo(offset)
      .catch((err: Error) =>
        this.#o.logger.warn(
          { err: err.message },
          'sources log: a catch-up read failed; the next check reads',
        ),
      )
      .finally(() => {
        this.#catchingUp = false;
      });
  }

  /**
   * Claims `source` for this bridge and returns its resume state (with the new epoch), as the
   * journal has it once every transaction that began before the claim has ended.
   */
  async claim(source: string): Promise<SourceState> {
    const journal = this.#journal;
    if (!journal) throw new TickstreamError(ErrorCode.INTERNAL, 'source claims used before attach()');
    for (let attempt = 1; ; attempt++) {
      await this.#o.log.readToEnd(CLAIM_STALL_MS);
      const epoch = this.#o.log.claimEpoch(source) + 1;
      try {
        const committed = await journal.append({
          ticks: [],
          bars: [],
          states: [],
          claims: [{ source, epoch, owner: this.#o.owner }],
        });
        await this.#o.log.readTo(committed.sourcesOffset + 1, CLAIM_STALL_MS);
      } catch (err) {
        if (
          err instanceof TickstreamError &&
          err.code === ErrorCode.SOURCE_FENCED &&
          attempt < CLAIM_ATTEMPTS
        )
          continue;
        throw err;
      }
      this.#m.claims.inc();
      const state = this.#o.log.state(source);
      this.#o.logger.info(
        { source, epoch, nextSeq: state?.nextSeq ?? 1, previousOwnerEpoch: state?.epoch ?? null },
        'source claimed: resuming from the journal',
      );
      return state
        ? { ...state, cursors: { ...state.cursors }, epoch }
        : { source, nextSeq: 1, cursors: {}, updatedAtMs: 0, epoch };
    }
  }
}
