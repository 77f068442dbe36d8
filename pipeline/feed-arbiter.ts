/**
 * Feed arbitration rules (issue 14), pure: no I/O, no wall clock. The arbiter is fed the inputs
 * the pipeline journals — each accepted tick batch with the time the bridge received it, and
 * each source that went down — and decides from those alone, so a replay of the same inputs
 * (pipeline/merged-feed.ts `recomputeMergedFeed`) gives the same merged stream and decisions.
 *
 * Time: the arbiter's clock is the largest input time seen (`atMs`, the bridge's receipt time,
 * journaled with the input). Health is judged on every input of a group:
 * - `disconnect` / `clock`: the source's session closed, or its terminal's clock contradicts
 *   its rule; it is down until a tick received after that arrives;
 * - `stall`: no tick received for `stallMs` while another member has received one within it;
 * - `behind`: its newest tick (tick time) is more than `maxLagMs` older than the freshest
 *   member's;
 * - `no-ticks`: nothing received from it yet.
 *
 * `failover` follows the highest-priority healthy member: it leaves the followed one as soon as
 * it is unhealthy (to the best healthy one), and goes back to a higher-priority one only once
 * that has been healthy for `holdMs` without a break, so a flapping source causes at most one
 * switch per hold time. `first-seen` passes each tick once, from whichever member delivered it
 * first: a tick is matched by (tick time, bid, ask, last, volume, flags) and its occurrence
 * number within its own member (two identical ticks of one feed are two ticks; the other
 * member's copies of them are suppressed), within `dedupWindowMs` of tick time.
 * Under both, a tick older (tick time) than the last one sent on the merged stream is dropped.
 */
import type { FeedGroupConfig } from './config.js';

export type HealthReason = 'disconnect' | 'clock' | 'stall' | 'behind' | 'no-ticks';
export type SwitchReason = HealthReason | 'start' | 'recovered';

/** One switch of a failover group, as journaled. */
export interface Decision {
  symbol: string;
  /** Arbiter time of the decision (the receipt time of the input that caused it). */
  atMs: number;
  from: string | null;
  to: string;
  reason: SwitchReason;
}

/** The rows of a batch that go to one merged stream. */
export interface Pick {
  symbol: string;
  rows: number[];
}

/** The columns of a tick batch the rules read (codecs/tick-batch.ts TickBatch has them). */
export interface TickRows {
  source: string;
  symbols: string[];
  length: number;
  symbolIndex: ArrayLike<number>;
  utcMsc: ArrayLike<number>;
  bid: ArrayLike<number>;
  ask: ArrayLike<number>;
  last: ArrayLike<number>;
  volume: ArrayLike<number>;
  flags: ArrayLike<number>;
}

export interface StepResult {
  picks: Pick[];
  decisions: Decision[];
  /** Per canonical symbol: copies suppressed as duplicates, and ticks dropped as older than the last sent. */
  suppressed: Map<string, { duplicates: number; stale: number }>;
}

export interface MemberStatus {
  source: string;
  symbol: string;
  healthy: boolean;
  problem: HealthReason | null;
  /** Tick time the member lags the freshest member by (ms), null before its first tick. */
  lagMs: number | null;
}

export interface GroupStatus {
  symbol: string;
  policy: FeedGroupConfig['policy'];
  /** The source followed (failover) or that delivered the last tick sent (first-seen). */
  active: string | null;
  /** Why: the reason of the last switch (failover), `first-seen` otherwise. */
  why: string;
  sinceMs: number | null;
  members: MemberStatus[];
  healthy: boolean;
}

interface Member {
  source: string;
  symbol: string;
  lastAtMs: number | null;
  latestUtc: number | null;
  down: { reason: 'disconnect' | 'clock'; atMs: number } | null;
  healthySince: number | null;
  problem: HealthReason | null;
}

/** One distinct tick of a first-seen group: how often each member delivered it, how often it was sent. */
interface Copy {
  bid: number;
  ask: number;
  last: number;
  volume: number;
  flags: number;
  sent: number;
  seen: number[];
}

interface Group {
  cfg: FeedGroupConfig;
  members: Member[];
  active: number | null;
  why: SwitchReason | 'first-seen' | null;
  sinceMs: number | null;
  lastSentUtc: number;
  /** first-seen: copies by tick time (ms, minus `base`). */
  copies: Map<number, Copy[]>;
  /** The tick times of `copies` in insertion order from `head` on (pruned from the front). */
  order: number[];
  head: number;
  /** The first tick time seen: `copies` keys are tick times minus it. */
  base: number;
  newestUtc: number;
}

export class FeedArbiter {
  readonly #groups: Group[];
  /** source → broker symbol → [group, member index]. */
  readonly #bySource = new Map<string, Map<string, [Group, number]>>();
  #nowMs = Number.NEGATIVE_INFINITY;

  constructor(groups: readonly FeedGroupConfig[]) {
    this.#groups = groups.map((cfg) => ({
      cfg,
      members: cfg.members.map((m) => ({
        source: m.source,
        symbol: m.symbol,
        lastAtMs: null,
        latestUtc: null,
        down: null,
        healthySince: null,
        problem: 'no-ticks' as HealthReason,
      })),
      active: null,
      why: null,
      sinceMs: null,
      lastSentUtc: Number.NEGATIVE_INFINITY,
      copies: new Map(),
      order: [],
      head: 0,
      base: Number.NaN,
      newestUtc: Number.NEGATIVE_INFINITY,
    }));
    for (const g of this.#groups)
      g.cfg.members.forEach((m, i) => {
        let symbols = this.#bySource.get(m.source);
        if (!symbols) {
          symbols = new Map();
          this.#bySource.set(m.source, symbols);
        }
        symbols.set(m.symbol, [g, i]);
      });
  }

  /** True when some group has this source as a member. */
  follows(source: string): boolean {
    return this.#bySource.has(source);
  }

  /** A batch of one source, received at `atMs`: which rows go to which merged stream. */
  onTicks(batch: TickRows, atMs: number): StepResult {
    const out: StepResult = { picks: [], decisions: [], suppressed: new Map() };
    const symbols = this.#bySource.get(batch.source);
    if (!symbols) return out;
    this.#advance(atMs);
    const now = this.#nowMs;
    // Rows per group, in batch order.
    const byGroup = new Map<Group, { member: number; rows: number[] }>();
    for (let i = 0; i < batch.length; i++) {
      const hit = symbols.get(batch.symbols[batch.symbolIndex[i] as number] as string);
      if (!hit) continue;
      let entry = byGroup.get(hit[0]);
      if (!entry) {
        entry = { member: hit[1], rows: [] };
        byGroup.set(hit[0], entry);
      }
      entry.rows.push(i);
    }
    for (const [g, { member, rows }] of byGroup) {
      const m = g.members[member] as Member;
      // Ticks received before the source went down (decoded after) do not bring it back.
      if (m.down && atMs > m.down.atMs) m.down = null;
      m.lastAtMs = Math.max(m.lastAtMs ?? atMs, atMs);
      for (const i of rows) {
        const utc = batch.utcMsc[i] as number;
        if (m.latestUtc === null || utc > m.latestUtc) m.latestUtc = utc;
      }
      this.#evaluate(g, now, out.decisions);
      const sent: number[] = [];
      const counts = { duplicates: 0, stale: 0 };
      if (g.cfg.policy === 'failover') {
        if (g.active === member)
          for (const i of rows) {
            const utc = batch.utcMsc[i] as number;
            if (utc < g.lastSentUtc) counts.stale++;
            else {
              g.lastSentUtc = utc;
              sent.push(i);
            }
          }
      } else {
        for (const i of rows) {
          const utc = batch.utcMsc[i] as number;
          const copy = this.#copy(g, batch, i, utc);
          const nth = (copy.seen[member] as number) + 1;
          copy.seen[member] = nth;
          if (nth <= copy.sent) counts.duplicates++;
          else if (utc < g.lastSentUtc) {
            copy.sent = nth;
            counts.stale++;
          } else {
            copy.sent = nth;
            g.lastSentUtc = utc;
            sent.push(i);
          }
          if (utc > g.newestUtc) g.newestUtc = utc;
        }
        this.#prune(g);
        if (sent.length && g.active !== member) {
          g.active = member;
          g.sinceMs = now;
        }
        g.why = 'first-seen';
      }
      if (sent.length) out.picks.push({ symbol: g.cfg.symbol, rows: sent });
      if (counts.duplicates || counts.stale) out.suppressed.set(g.cfg.symbol, counts);
    }
    return out;
  }

  /** A source went down at `atMs` (its session closed, or its terminal's clock is refused). */
  onDown(source: string, reason: 'disconnect' | 'clock', atMs: number): Decision[] {
    const symbols = this.#bySource.get(source);
    if (!symbols) return [];
    this.#advance(atMs);
    const decisions: Decision[] = [];
    for (const [g, i] of symbols.values()) {
      const m = g.members[i] as Member;
      m.down = { reason, atMs };
      this.#evaluate(g, this.#nowMs, decisions);
    }
    return decisions;
  }

  status(): GroupStatus[] {
    return this.#groups.map((g) => {
      const freshest = this.#freshestUtc(g);
      const members = g.members.map((m) => ({
        source: m.source,
        symbol: m.symbol,
        healthy: m.problem === null,
        problem: m.problem,
        lagMs: m.latestUtc === null || freshest === null ? null : freshest - m.latestUtc,
      }));
      return {
        symbol: g.cfg.symbol,
        policy: g.cfg.policy,
        active: g.active === null ? null : (g.members[g.active] as Member).source,
        why: g.why ?? 'no tick yet',
        sinceMs: g.sinceMs,
        members,
        healthy: members.some((m) => m.healthy),
      };
    });
  }

  #advance(atMs: number): void {
    if (atMs > this.#nowMs) this.#nowMs = atMs;
  }

  #freshestUtc(g: Group): number | null {
    let best: number | null = null;
    for (const m of g.members)
      if (m.down === null && m.latestUtc !== null && (best === null || m.latestUtc > best))
        best = m.latestUtc;
    return best;
  }

  #problem(g: Group, m: Member, now: number, freshest: number | null): HealthReason | null {
    if (m.down) return m.down.reason;
    if (m.lastAtMs === null || m.latestUtc === null) return 'no-ticks';
    if (now - m.lastAtMs > g.cfg.stallMs) {
      const othersFlow = g.members.some(
        (o) => o !== m && o.down === null && o.lastAtMs !== null && now - o.lastAtMs <= g.cfg.stallMs,
      );
      if (othersFlow) return 'stall';
    }
    if (freshest !== null && freshest - m.latestUtc > g.cfg.maxLagMs) return 'behind';
    return null;
  }

  /** Re-judges health and, under failover, switches (recording the decision). */
  #evaluate(g: Group, now: number, decisions: Decision[]): void {
    const freshest = this.#freshestUtc(g);
    for (const m of g.members) {
      m.problem = this.#problem(g, m, now, freshest);
      if (m.problem !== null) m.healthySince = null;
      else if (m.healthySince === null) m.healthySince = now;
    }
    if (g.cfg.policy !== 'failover') return;
    const best = g.members.findIndex((m) => m.problem === null);
    if (best < 0) return; // nobody healthy: keep following the current one (shown on /status)
    let reason: SwitchReason | null = null;
    if (g.active === null) reason = 'start';
    else {
      const current = g.members[g.active] as Member;
      if (current.problem !== null) reason = current.problem;
      else if (best < g.active && now - ((g.members[best] as Member).healthySince as number) >= g.cfg.holdMs)
        reason = 'recovered';
    }
    if (reason === null || best === g.active) return;
    decisions.push({
      symbol: g.cfg.symbol,
      atMs: now,
      from: g.active === null ? null : (g.members[g.active] as Member).source,
      to: (g.members[best] as Member).source,
      reason,
    });
    g.active = best;
    g.why = reason;
    g.sinceMs = now;
  }

  /** The copy of row i (same time, prices, volume and flags), made when new. */
  #copy(g: Group, batch: TickRows, i: number, utc: number): Copy {
    const bid = batch.bid[i] as number;
    const ask = batch.ask[i] as number;
    const last = batch.last[i] as number;
    const volume = batch.volume[i] as number;
    const flags = batch.flags[i] as number;
    // Keyed relative to the first tick time seen: small integers, which Maps hash fastest.
    if (Number.isNaN(g.base)) g.base = utc;
    const key = utc - g.base;
    let same = g.copies.get(key);
    if (!same) {
      same = [];
      g.copies.set(key, same);
      g.order.push(key);
    }
    for (const c of same)
      if (c.bid === bid && c.ask === ask && c.last === last && c.volume === volume && c.flags === flags)
        return c;
    const copy: Copy = { bid, ask, last, volume, flags, sent: 0, seen: g.members.map(() => 0) };
    same.push(copy);
    return copy;
  }

  /** Forgets copies older (tick time) than dedupWindowMs before the newest tick. */
  #prune(g: Group): void {
    const horizon = g.newestUtc - g.cfg.dedupWindowMs - g.base;
    const order = g.order;
    while (g.head < order.length && (order[g.head] as number) < horizon)
      g.copies.delete(order[g.head++] as number);
    if (g.head > 4096 && g.head * 2 > order.length) {
      g.order = order.slice(g.head);
      g.head = 0;
    }
  }
}
