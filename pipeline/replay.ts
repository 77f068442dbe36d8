/**
 * `tickstream replay`: reads a range of the tick journal (`read_committed`) back and writes it
 * to stdout or a file (JSON lines or CSV), to the Redis live view, rebuilds it in Postgres, or
 * serves it to websocket clients as a replay server (serve's live protocol, marked replay), as
 * fast as the target takes it or paced at N x the ticks' original spacing.
 *
 *   tickstream replay [--source IDS] [--symbol NAMES] [--from TIME] [--to TIME]
 *                     [--from-seq N --to-seq N] [--speed max|N] [--target stdout|redis|postgres|ws]
 *                     [--format jsonl|csv] [--out FILE] [--ws-wait-clients N] [config flags]
 *
 * The range is the journal as it is when replay starts: each partition is read to the high
 * watermark queried then, so a replay always ends even while `serve` keeps appending. With
 * --target postgres each partition is read only up to where the Postgres loader stands (what is
 * past it is the loader's to load): see sinks/postgres/rebuild.ts.
 *
 * Order: each source's ticks come in seq order (the journal keeps a source in one partition, in
 * seq order). At --speed max sources are interleaved as their partitions are fetched (no
 * buffering). Paced (--speed N), the sources are merged by tick time: each record is cut into
 * slices of at most N x PACE_SLICE_MS of event time, each source's slices queue in seq order,
 * and the slice with the earliest first tick goes next once every partition still being read
 * has a slice queued (a partition read to its end no longer holds the others back). The pacer
 * (pipeline/pace.ts) waits per slice, not per tick.
 *
 * Memory: at --speed max records are decoded and written one at a time and the next is taken
 * only once the target has taken the last one (a full pipe or disk waits on 'drain', Redis on
 * its queue). Records of other sources (the record key) or outside the seq range (the
 * seq-first/seq-last headers) are skipped without being decoded (Postgres decodes every record
 * of the selected sources: bars need the ticks before the range too).
 */

import { type CommandSpec, parseCommand } from '../bridge/args.js';
import { ErrorCode, TickstreamError } from '../codecs/errors.js';
import { decodeTickRecord, RecordHeader } from '../codecs/flat-record.js';
import type { TickBatch } from '../codecs/tick-batch.js';
import { readJournal } from '../sinks/kafka/reader.js';
import { configKeys, kafkaSecurityOf, loadConfig } from './config.js';
import { Pacer } from './pace.js';
import {
  type Format,
  OutputClosed,
  PostgresTarget,
  pick,
  RedisTarget,
  ReplayStopped,
  type ReplayTarget,
  StreamTarget,
  signalStatus,
  slice,
  WsTarget,
} from './replay-targets.js';

/** Wall time one paced slice covers at most: the pacing's granularity. */
const PACE_SLICE_MS = 20;
const MINUTE_MS = 60_000;
/** Characters of the progress bar drawn on a terminal. */
const PROGRESS_BAR_WIDTH = 24;

export const REPLAY_COMMAND = {
  name: 'replay',
  summary:
    'Read a range of the tick journal (read_committed, up to its end when replay starts) back: to stdout or a file as JSON lines or CSV, into the Redis live view, rebuilt in Postgres, or served to websocket clients (a replay server for backtests); as fast as possible or paced.',
  flags: {
    source: { type: 'string', value: 'IDS', description: 'only these sources (comma list)' },
    symbol: { type: 'string', value: 'NAMES', description: 'only these symbols (comma list)' },
    from: {
      type: 'string',
      value: 'TIME',
      description: "ticks at or after this UTC time: ISO ('2024-03-01T12:00:00Z') or epoch ms",
    },
    to: {
      type: 'string',
      value: 'TIME',
      description: 'ticks before this UTC time (exclusive): ISO or epoch ms',
    },
    'from-seq': {
      type: 'number',
      integer: true,
      min: 1,
      value: 'N',
      description: 'first seq, inclusive (with exactly one --source)',
    },
    'to-seq': {
      type: 'number',
      integer: true,
      min: 1,
      value: 'N',
      description: 'last seq, inclusive (with exactly one --source)',
    },
    speed: {
      type: 'string',
      value: 'max|N',
      default: 'max',
      description:
        "max: as fast as the target takes it; N: N x the ticks' original spacing (sources merged by time)",
    },
    target: {
      type: 'string',
      choices: ['stdout', 'redis', 'postgres', 'ws'],
      default: 'stdout',
      description:
        'stdout (or --out FILE); redis: the live streams and quotes under --redis-key-prefix (entries already there are refused); postgres: rebuild ticks and bars_1m in --postgres-schema in one transaction; ws: a replay server on --http-host/--http-port publishing to its websocket clients as serve does live',
    },
    'ws-wait-clients': {
      type: 'number',
      integer: true,
      min: 1,
      value: 'N',
      default: 1,
      description: 'ws: start once N clients have subscribed',
    },
    'ws-stall-ms': {
      type: 'number',
      integer: true,
      min: 1,
      value: 'MS',
      default: 30_000,
      description:
        'ws: a client with more than half of wsMaxBackpressureBytes unsent this long is no longer waited for (wsSlowConsumerPolicy applies to it)',
    },
    format: {
      type: 'string',
      choices: ['jsonl', 'csv'],
      default: 'jsonl',
      description: 'output format (stdout)',
    },
    out: { type: 'string', value: 'FILE', description: 'write to FILE (replaced) instead of stdout' },
  },
  configFlags: configKeys(),
  examples: [
    'tickstream replay --source terminal1 --symbol EURUSD --from 2024-03-01T00:00:00Z --to 2024-03-02T00:00:00Z --format csv --out eurusd.csv',
    'tickstream replay --source terminal1 --from-seq 1000 --to-seq 2000',
    'tickstream replay --from 2024-03-01T12:00:00Z --to 2024-03-01T13:00:00Z --speed 60',
    'tickstream replay --target redis --redis-key-prefix rebuilt --from 2024-03-01T00:00:00Z',
    'tickstream replay --target ws --http-port 5002 --ws-wait-clients 2 --from 2024-03-01T00:00:00Z --to 2024-03-02T00:00:00Z --speed 10',
    'tickstream replay --target postgres --postgres-schema research --from 2024-03-01T00:00:00Z --to 2024-03-02T00:00:00Z',
  ],
  notes: [
    'Each source comes in seq order. At --speed max sources are interleaved as read; paced, they are merged by tick time. Times are the tick time (UTC), not the time it was journaled.',
    'A progress bar with an ETA is drawn on stderr when it is a terminal; the summary line always goes to stderr.',
    'ws: tick messages (JSON) and the subscribed answer carry "replay":true; every client gets {"type":"replay_end","ticks":N} at the end, then the server closes. Nobody loses ticks to conflation: writes wait for slow clients.',
    'postgres: only what the loader (--loader-group-id) has loaded already is rebuilt; --from-seq/--to-seq and --speed N do not apply.',
  ],
} as const satisfies CommandSpec;

/** The ticks to write; bounds absent from the command line are infinite. */
interface ReplayRange {
  sources: ReadonlySet<string> | null;
  symbols: ReadonlySet<string> | null;
  fromMs: number;
  toMs: number;
  fromSeq: number;
  toSeq: number;
}

const usage = (message: string) =>
  new TickstreamError(ErrorCode.USAGE, `${message}. Run 'tickstream replay --help' for the flags it takes.`);

function commaList(name: string, raw: string | undefined): Set<string> | null {
  if (raw === undefined) return null;
  const items = raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (items.length === 0) throw usage(`--${name} needs at least one name, got '${raw}'`);
  return new Set(items);
}

// Date.parse takes a date-time without a zone as local time: such input is made UTC first.
const ISO_TIME = /^\d{4}-\d{2}-\d{2}(?:[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)(Z|[+-]\d{2}:\d{2})?)?$/i;

function parseTime(name: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  if (/^\d+$/.test(raw)) return Number(raw);
  const m = ISO_TIME.exec(raw);
  const zone = m?.[1] !== undefined && m[2] === undefined ? 'Z' : '';
  const ms = m ? Date.parse(`${raw.replace(' ', 'T')}${zone}`) : Number.NaN;
  if (!Number.isFinite(ms))
    throw usage(`--${name} expects a UTC ISO time (2024-03-01T12:00:00Z) or epoch ms, got '${raw}'`);
  return ms;
}

function rangeOf(flags: {
  source?: string | undefined;
  symbol?: string | undefined;
  from?: string | undefined;
  to?: string | undefined;
  'from-seq'?: number | undefined;
  'to-seq'?: number | undefined;
}): ReplayRange {
  const sources = commaList('source', flags.source);
  const symbols = commaList('symbol', flags.symbol);
  const fromMs = parseTime('from', flags.from);
  const toMs = parseTime('to', flags.to);
  if (fromMs !== undefined && toMs !== undefined && toMs <= fromMs)
    throw usage(`--to (${flags.to}) must be after --from (${flags.from})`);
  const fromSeq = flags['from-seq'];
  const toSeq = flags['to-seq'];
  if ((fromSeq !== undefined || toSeq !== undefined) && sources?.size !== 1)
    throw usage('--from-seq and --to-seq need exactly one --source: seqs are counted per source');
  if (fromSeq !== undefined && toSeq !== undefined && toSeq < fromSeq)
    throw usage(`--to-seq (${toSeq}) must not be below --from-seq (${fromSeq})`);
  return {
    sources,
    symbols,
    fromMs: fromMs ?? Number.NEGATIVE_INFINITY,
    toMs: toMs ?? Number.POSITIVE_INFINITY,
    fromSeq: fromSeq ?? 1,
    toSeq: toSeq ?? Number.POSITIVE_INFINITY,
  };
}

/** True when a record's seq-first/seq-last headers say none of its ticks is in the seq range. */
function outsideSeqRange(headers: Record<string, string>, range: ReplayRange): boolean {
  const first = Number(headers[RecordHeader.SEQ_FIRST]);
  const last = Number(headers[RecordHeader.SEQ_LAST]);
  // Records without the headers are decoded and filtered tick by tick.
  return Number.isFinite(first) && Number.isFinite(last) && (last < range.fromSeq || first > range.toSeq);
}

/** Share of the journal's records done (written, or skipped) so far, from each partition's offsets. */
class Progress {
  readonly #start = performance.now();
  readonly #low = new Map<number, number>();
  readonly #high = new Map<number, number>();
  readonly #read = new Map<number, number>();
  #total = 0;
  #shownAt = 0;

  partitions(list: readonly { partition: number; low: number; high: number }[]): void {
    for (const p of list) {
      this.#low.set(p.partition, p.low);
      this.#high.set(p.partition, p.high);
      this.#total += p.high - p.low;
    }
  }

  /** Offsets done, counted to the high watermark of the start (markers take offsets too). */
  advance(partition: number, offset: number): void {
    // Paced, merged sources of one partition finish their records out of offset order.
    this.#read.set(partition, Math.max(this.#read.get(partition) ?? 0, offset + 1));
  }

  seconds(): number {
    return (performance.now() - this.#start) / 1000;
  }

  /** A line at most twice a second: share done, ticks written and the time left. */
  line(ticks: number): string | null {
    const now = performance.now();
    if (now - this.#shownAt < 500 || this.#total === 0) return null;
    this.#shownAt = now;
    let done = 0;
    for (const [p, next] of this.#read)
      done += Math.min(next, this.#high.get(p) ?? 0) - (this.#low.get(p) ?? 0);
    const share = done / this.#total;
    const eta = share > 0 ? (this.seconds() * (1 - share)) / share : Number.NaN;
    const filled = Math.round(Math.min(1, share) * PROGRESS_BAR_WIDTH);
    const bar = `[${'#'.repeat(filled)}${'-'.repeat(PROGRESS_BAR_WIDTH - filled)}]`;
    return `replay ${bar} ${(share * 100).toFixed(1)}% of the journal done, ${ticks} ticks written, ETA ${Number.isFinite(eta) ? `${eta.toFixed(0)} s` : '?'}`;
  }
}

/** The ticks of `batch` inside `range`: the batch itself when all are, null when none is. */
function selectTicks(batch: TickBatch, range: ReplayRange): TickBatch | null {
  const rows: number[] = [];
  for (let i = 0; i < batch.length; i++) {
    const seq = batch.seq[i] as number;
    const time = batch.utcMsc[i] as number;
    if (seq < range.fromSeq || seq > range.toSeq || time < range.fromMs || time >= range.toMs) continue;
    if (range.symbols && !range.symbols.has(batch.symbols[batch.symbolIndex[i] as number] ?? '')) continue;
    rows.push(i);
  }
  if (rows.length === 0) return null;
  return rows.length === batch.length ? batch : pick(batch, rows);
}

/** `batch` cut where a slice would span more than `spanMs` of tick time (ticks stay in order). */
function slices(batch: TickBatch, spanMs: number): TickBatch[] {
  const out: TickBatch[] = [];
  let from = 0;
  for (let i = 1; i < batch.length; i++) {
    if ((batch.utcMsc[i] as number) - (batch.utcMsc[from] as number) <= spanMs) continue;
    out.push(slice(batch, from, i));
    from = i;
  }
  out.push(from === 0 ? batch : slice(batch, from, batch.length));
  return out;
}

/** A slice of a record, with where it came from (for the progress). */
interface Slice {
  batch: TickBatch;
  partition: number;
  /** The offset done once this slice is written: its record's for the record's last slice. */
  doneOffset: number;
}

/**
 * The k-way merge by tick time of paced replays (see the header): per source a queue of slices
 * in seq order; `next` gives the slice with the earliest first tick once every partition still
 * being read has one queued, or anything left once all have ended.
 */
class TimeMerge {
  readonly #queues = new Map<string, Slice[]>();
  /** Partitions still being read, with how many slices of theirs are queued. */
  readonly #open = new Map<number, number>();
  #queued = 0;

  open(partition: number): void {
    this.#open.set(partition, 0);
  }

  end(partition: number): void {
    this.#open.delete(partition);
  }

  push(item: Slice): void {
    const { batch, partition } = item;
    let q = this.#queues.get(batch.source);
    if (!q) {
      q = [];
      this.#queues.set(batch.source, q);
    }
    q.push(item);
    this.#queued++;
    const n = this.#open.get(partition);
    if (n !== undefined) this.#open.set(partition, n + 1);
  }

  next(): Slice | null {
    if (this.#queued === 0) return null;
    for (const n of this.#open.values()) if (n === 0) return null;
    let best: Slice[] | null = null;
    let bestMs = Number.POSITIVE_INFINITY;
    for (const q of this.#queues.values()) {
      const head = q[0];
      if (head && (head.batch.utcMsc[0] as number) < bestMs) {
        best = q;
        bestMs = head.batch.utcMsc[0] as number;
      }
    }
    const item = best?.shift() ?? null;
    if (!item) return null;
    this.#queued--;
    const n = this.#open.get(item.partition);
    if (n !== undefined) this.#open.set(item.partition, n - 1);
    return item;
  }
}

function parseSpeed(raw: string): number | 'max' {
  if (raw === 'max') return 'max';
  const n = Number(raw);
  if (!(Number.isFinite(n) && n > 0)) throw usage(`--speed must be max or a positive number, got '${raw}'`);
  return n;
}

export async function replayMain(argv: string[]): Promise<number> {
  const parsed = parseCommand(REPLAY_COMMAND, argv);
  if (!parsed) return 0;
  const range = rangeOf(parsed.flags);
  const speed = parseSpeed(parsed.flags.speed as string);
  const targetName = parsed.flags.target as 'stdout' | 'redis' | 'postgres' | 'ws';
  const format = parsed.flags.format as Format;
  if (targetName !== 'stdout' && parsed.flags.out !== undefined)
    throw usage(`--out writes stdout's lines to a file: it does not go with --target ${targetName}`);
  if (targetName === 'postgres') {
    if (speed !== 'max')
      throw usage('--speed must be max with --target postgres: the rebuild is one transaction');
    if (parsed.flags['from-seq'] !== undefined || parsed.flags['to-seq'] !== undefined)
      throw usage(
        '--from-seq and --to-seq do not go with --target postgres: rebuild a time range (--from/--to)',
      );
  }
  const config = loadConfig({
    ...(parsed.configFile ? { file: parsed.configFile } : {}),
    flags: parsed.config,
  });
  const target: ReplayTarget =
    targetName === 'redis'
      ? await RedisTarget.open(config)
      : targetName === 'postgres'
        ? await PostgresTarget.open(config, {
            fromMs: range.fromMs,
            toMs: range.toMs,
            symbols: range.symbols ? [...range.symbols] : null,
            barsFromMs: Math.ceil(range.fromMs / MINUTE_MS) * MINUTE_MS,
          })
        : targetName === 'ws'
          ? await WsTarget.open(config, {
              waitClients: parsed.flags['ws-wait-clients'] as number,
              stallMs: parsed.flags['ws-stall-ms'] as number,
            })
          : StreamTarget.open(parsed.flags.out, format, usage);
  const tty = process.stderr.isTTY === true;
  const progress = new Progress();
  const pacer = new Pacer(speed);
  const merge = speed === 'max' ? null : new TimeMerge();
  const spanMs = speed === 'max' ? 0 : speed * PACE_SLICE_MS;
  const written = new Map<string, number>();
  let ticks = 0;
  let closed = false;
  let stoppedBy: NodeJS.Signals | null = null;
  let where = '';
  const draw = () => {
    const line = tty ? progress.line(ticks) : null;
    if (line) process.stderr.write(`\r\x1b[K${line}`);
  };
  const emit = async ({ batch, partition, doneOffset }: Slice) => {
    const due = pacer.wait(batch.utcMsc[0] as number);
    await (target.stopped ? Promise.race([due, target.stopped]) : due);
    await target.write(batch);
    ticks += batch.length;
    written.set(batch.source, (written.get(batch.source) ?? 0) + batch.length);
    progress.advance(partition, doneOffset);
    draw();
  };
  const drain = async () => {
    if (!merge) return;
    for (let s = merge.next(); s; s = merge.next()) await emit(s);
  };
  try {
    await target.start?.();
    await readJournal({
      brokers: config.kafkaBrokers,
      security: kafkaSecurityOf(config),
      topic: config.ticksTopic,
      ...(target.endOffsets ? { endOffsets: target.endOffsets } : {}),
      onPartitions: (partitions) => {
        progress.partitions(partitions);
        for (const p of partitions) if (p.low < p.high) merge?.open(p.partition);
      },
      onMessages: async (messages) => {
        for (const m of messages) {
          const skip = () => progress.advance(m.partition, m.offset);
          if (range.sources && !range.sources.has(m.key)) {
            skip();
            continue;
          }
          if (!target.see && outsideSeqRange(m.headers, range)) {
            skip();
            continue;
          }
          target.see?.(m);
          const batch = decodeTickRecord(m.value);
          const selected = selectTicks(batch, range);
          if (!selected) {
            skip();
            continue;
          }
          if (!merge) {
            await emit({ batch: selected, partition: m.partition, doneOffset: m.offset });
            continue;
          }
          const parts = slices(selected, spanMs);
          for (let i = 0; i < parts.length; i++) {
            const batch = parts[i] as TickBatch;
            const doneOffset = i === parts.length - 1 ? m.offset : m.offset - 1;
            merge.push({ batch, partition: m.partition, doneOffset });
          }
        }
        await drain();
        draw();
      },
      onPartitionEnd: async (partition) => {
        merge?.end(partition);
        await drain();
      },
    });
    await drain();
    where = await target.finish();
  } catch (err) {
    await target.abort();
    if (err instanceof ReplayStopped) {
      stoppedBy = err.signal;
      where = err.where;
    } else if (err instanceof OutputClosed) {
      closed = true;
      where = 'stdout';
    } else throw err;
  } finally {
    if (tty) process.stderr.write('\r\x1b[K');
  }
  const names = [...written.keys()];
  const shown = names.length > 10 ? `${names.slice(0, 10).join(', ')}, …` : names.join(', ');
  process.stderr.write(
    `replay: ${ticks} ticks written from ${names.length} source(s)${names.length ? ` (${shown})` : ''} in ${progress.seconds().toFixed(1)} s to ${where}${closed ? ' (the reader closed it early)' : ''}${stoppedBy ? ` (stopped by ${stoppedBy})` : ''}\n`,
  );
  // Stopped by a signal: the shell's status for it, and at once (a paced wait may still be pending).
  return stoppedBy ? signalStatus(stoppedBy) : 0;
}
