/**
 * The open state of one source's 1-minute bars (pipeline/bars.ts), as JSON: stored in the
 * source's resume state (`mt5.sources`), written in the same Kafka transaction as the ticks it
 * includes, so a restarted bridge continues the open bars exactly where the journal stands.
 *
 * JSON has no NaN (a bar without trades has NaN last-price OHLC): numbers that are not finite
 * are written as null and read back as NaN. Doubles round-trip exactly through JSON.
 */
import type { Bar } from './bar.js';
import { ErrorCode, TickstreamError } from './errors.js';

/** One source's bar state, as BarAggregator keeps it. */
export interface BarSnapshot {
  /** The source's event time (newest tick or closing heartbeat), null before any. */
  eventTimeMs: number | null;
  /** Open bars, one per symbol. */
  open: Bar[];
  /** Per symbol: bars starting before this are closed (later ticks for them are late). */
  closedBefore: [symbol: string, ms: number][];
}

/** The JSON form: bars as arrays, in the order of BAR_FIELDS after the symbol. */
export interface BarSnapshotJson {
  e: number | null;
  o: (string | number | null)[][];
  c: [string, number][];
}

const BAR_FIELDS = [
  'startMs',
  'open',
  'high',
  'low',
  'close',
  'tickCount',
  'spreadMin',
  'spreadMax',
  'spreadSum',
  'lastOpen',
  'lastHigh',
  'lastLow',
  'lastClose',
  'volume',
  'lastSeq',
] as const satisfies readonly (keyof Bar)[];

export function barSnapshotToJson(s: BarSnapshot): BarSnapshotJson {
  return {
    e: s.eventTimeMs,
    o: s.open.map((b) => [b.symbol, ...BAR_FIELDS.map((f) => (Number.isFinite(b[f]) ? b[f] : null))]),
    c: s.closedBefore,
  };
}

export function barSnapshotFromJson(source: string, j: BarSnapshotJson): BarSnapshot {
  const bad = (what: string) =>
    new TickstreamError(
      ErrorCode.INTERNAL,
      `the bar state of source ${source} in the sources topic is malformed (${what}): delete that source's record to start its bars fresh`,
    );
  if (!j || !Array.isArray(j.o) || !Array.isArray(j.c)) throw bad('no o/c arrays');
  const open = j.o.map((row): Bar => {
    if (!Array.isArray(row) || row.length !== BAR_FIELDS.length + 1 || typeof row[0] !== 'string')
      throw bad(`bar ${JSON.stringify(row).slice(0, 80)}`);
    const bar = { source, symbol: row[0] } as Bar;
    BAR_FIELDS.forEach((f, i) => {
      const v = row[i + 1];
      bar[f] = typeof v === 'number' ? v : Number.NaN;
    });
    return bar;
  });
  return { eventTimeMs: typeof j.e === 'number' ? j.e : null, open, closedBefore: j.c };
}

/**
 * Kafka headers on records of the ticks topic that make the bars reproducible from the journal
 * alone (pipeline/bar-replay.ts). A bar-event record is a TickRecord with no ticks (every reader
 * of the ticks topic takes it as an empty batch) carrying one of the first two.
 */
export const BarJournalHeader = {
  /** A heartbeat's GMT time (ms) that closed bars of the record's source. */
  CLOCK: 'bars-clock-ms',
  /** The source was forgotten (idle): its open bars closed. Value `1`. */
  FORGET: 'bars-forget',
  /**
   * On a tick record: seqs of its ticks held out of the bars and the live views (outside the
   * bridge's time window, pipeline/ingest.ts), as `formatSeqs` writes them (`7,12-15`). Replays
   * and healing leave them out too.
   */
  HELD_OUT: 'held-out-seqs',
} as const;

/** Ascending seqs as a comma list of runs: `[7, 12, 13, 14, 15]` → `7,12-15`. */
export function formatSeqs(seqs: readonly number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < seqs.length; ) {
    let j = i;
    while (j + 1 < seqs.length && seqs[j + 1] === (seqs[j] as number) + 1) j++;
    parts.push(j === i ? `${seqs[i]}` : `${seqs[i]}-${seqs[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

/** The seqs of a `formatSeqs` list. */
export function parseSeqs(list: string): Set<number> {
  const out = new Set<number>();
  for (const part of list.split(',')) {
    if (part === '') continue;
    const dash = part.indexOf('-');
    const lo = Number(dash < 0 ? part : part.slice(0, dash));
    const hi = dash < 0 ? lo : Number(part.slice(dash + 1));
    for (let s = lo; s <= hi; s++) out.add(s);
  }
  return out;
}
