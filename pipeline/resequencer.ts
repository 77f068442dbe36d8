/**
 * Restores per-source order after the decode pool: workers finish out of order, but a source's
 * batches must reach the journal in the order their bytes arrived. Each task takes a ticket
 * from its source's counter; results wait here until every earlier ticket of that source has
 * been released. Memory is bounded by the pool's in-flight task limit.
 */
export class Resequencer<T> {
  readonly #next = new Map<string, number>();
  readonly #issued = new Map<string, number>();
  readonly #waiting = new Map<string, Map<number, T>>();
  readonly #release: (source: string, item: T) => void;

  constructor(release: (source: string, item: T) => void) {
    this.#release = release;
  }

  /** Takes the next ticket of a source, in arrival order. */
  ticket(source: string): number {
    const t = this.#issued.get(source) ?? 0;
    this.#issued.set(source, t + 1);
    return t;
  }

  /** Hands in a finished item; releases it and every consecutive one that waited for it. */
  done(source: string, ticket: number, item: T): void {
    let next = this.#next.get(source) ?? 0;
    if (ticket !== next) {
      let waiting = this.#waiting.get(source);
      if (!waiting) {
        waiting = new Map();
        this.#waiting.set(source, waiting);
      }
      waiting.set(ticket, item);
      return;
    }
    this.#release(source, item);
    next++;
    const waiting = this.#waiting.get(source);
    while (waiting?.has(next)) {
      const queued = waiting.get(next) as T;
      waiting.delete(next);
      this.#release(source, queued);
      next++;
    }
    this.#next.set(source, next);
  }

  /** Tickets issued but not yet released, for a source or all of them. */
  pending(source?: string): number {
    if (source !== undefined) return (this.#issued.get(source) ?? 0) - (this.#next.get(source) ?? 0);
    let n = 0;
    for (const [s, issued] of this.#issued) n += issued - (this.#next.get(s) ?? 0);
    return n;
  }
}
