/**
 * `tickstream replay`: writes a range of the tick journal (`read_committed`) to stdout or a file,
 * one tick a line, as JSON lines or CSV, for research, backfills and checks by other tools.
 *
 *   tickstream replay [--source IDS] [--symbol NAMES] [--from TIME] [--to TIME]
 *                     [--from-seq N --to-seq N] [--format jsonl|csv] [--out FILE] [config flags]
 *
 * The range is the journal as it is when replay starts: each partition is read to the high
 * watermark queried then, so a replay always ends even while `serve` keeps appending.
 *
 * Order: each source's ticks come in seq order (the journal keeps a source in one partition, in
 * seq order); different sources are interleaved as their partitions are fetched, not by time.
 *
 * Memory: records are decoded and written one at a time and the next is taken only once the
 * output has taken the last one (a full pipe or disk waits on 'drain').
 * Records of other sources (the record key) or outside the seq range (the seq-first/seq-last
 * headers) are skipped without being decoded.
 */
import { once } from 'node:events';
import { createWriteStream, openSync } from 'node:fs';
import type { Writable } from 'node:stream';
import { type CommandSpec, parseCommand } from '../bridge/args.js';
import { ErrorCode, TickstreamError } from '../codecs/errors.js';
import { decodeTickRecord, RecordHeader } from '../codecs/flat-record.js';
import type { TickBatch } from '../codecs/tick-batch.js';
import { readJournal } from '../sinks/kafka/reader.js';
import { configKeys, kafkaSecurityOf, loadConfig } from './config.js';

export const REPLAY_COMMAND = {
  name: 'replay',
  summary:
    'Write a range of the tick journal (read_committed, up to its end when replay starts) to stdout or a file as JSON lines or CSV.',
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
    format: { type: 'string', choices: ['jsonl', 'csv'], default: 'jsonl', description: 'output format' },
    out: { type: 'string', value: 'FILE', description: 'write to FILE (replaced) instead of stdout' },
  },
  configFlags: configKeys(),
  examples: [
    'tickstream replay --source terminal1 --symbol EURUSD --from 2024-03-01T00:00:00Z --to 2024-03-02T00:00:00Z --format csv --out eurusd.csv',
    'tickstream replay --source terminal1 --from-seq 1000 --to-seq 2000',
  ],
  notes: [
    'Each source comes in seq order; sources are interleaved as read, not merged by time. Times are the tick time (UTC), not the time it was journaled.',
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

/** Output columns, in order: the CSV header and the JSON keys. */
const COLUMNS = [
  'source',
  'seq',
  'symbol',
  'time',
  'server_time',
  'bid',
  'ask',
  'last',
  'volume',
  'volume_real',
  'flags',
] as const;

type Format = 'jsonl' | 'csv';

// JSON has no NaN or Infinity; the decoders reject them, this keeps a line valid regardless.
const jsonNumber = (v: number) => (Number.isFinite(v) ? String(v) : 'null');
const csvField = (s: string) => (/[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s);

/** The lines of the ticks of `batch` inside `range`, and how many there are. */
function formatBatch(batch: TickBatch, range: ReplayRange, format: Format): { text: string; ticks: number } {
  const quote = format === 'jsonl' ? (s: string) => JSON.stringify(s) : csvField;
  // Names are quoted once per record, not per tick.
  const source = quote(batch.source);
  const symbols = batch.symbols.map(quote);
  let text = '';
  let ticks = 0;
  for (let i = 0; i < batch.length; i++) {
    const seq = batch.seq[i] as number;
    const time = batch.utcMsc[i] as number;
    if (seq < range.fromSeq || seq > range.toSeq || time < range.fromMs || time >= range.toMs) continue;
    const k = batch.symbolIndex[i] as number;
    if (range.symbols && !range.symbols.has(batch.symbols[k] ?? '')) continue;
    const symbol = symbols[k] ?? quote('');
    const server = batch.serverTimeMsc[i] as number;
    const bid = batch.bid[i] as number;
    const ask = batch.ask[i] as number;
    const last = batch.last[i] as number;
    const volume = batch.volume[i] as number;
    const volumeReal = batch.volumeReal[i] as number;
    const flags = batch.flags[i] as number;
    text +=
      format === 'jsonl'
        ? `{"source":${source},"seq":${seq},"symbol":${symbol},"time":${time},"server_time":${server},"bid":${jsonNumber(bid)},"ask":${jsonNumber(ask)},"last":${jsonNumber(last)},"volume":${volume},"volume_real":${jsonNumber(volumeReal)},"flags":${flags}}\n`
        : `${source},${seq},${symbol},${time},${server},${bid},${ask},${last},${volume},${volumeReal},${flags}\n`;
    ticks++;
  }
  return { text, ticks };
}

/** True when a record's seq-first/seq-last headers say none of its ticks is in the seq range. */
function outsideSeqRange(headers: Record<string, string>, range: ReplayRange): boolean {
  const first = Number(headers[RecordHeader.SEQ_FIRST]);
  const last = Number(headers[RecordHeader.SEQ_LAST]);
  // Records without the headers are decoded and filtered tick by tick.
  return Number.isFinite(first) && Number.isFinite(last) && (last < range.fromSeq || first > range.toSeq);
}

/** The reader of a closed stdout (`tickstream replay | head`) went away: stop, not an error. */
class OutputClosed extends Error {}

/** Writes to a stream, waiting for 'drain' when it is full, so memory stays one record. */
class Output {
  readonly #stream: Writable;
  readonly #name: string;
  #error: NodeJS.ErrnoException | null = null;

  constructor(stream: Writable, name: string) {
    this.#stream = stream;
    this.#name = name;
    stream.on('error', (err: NodeJS.ErrnoException) => {
      this.#error ??= err;
    });
  }

  async write(text: string): Promise<void> {
    this.#check();
    // once() rejects on 'error': the error is already kept, #check turns it into ours.
    if (!this.#stream.write(text)) await once(this.#stream, 'drain').catch(() => undefined);
    this.#check();
  }

  async close(): Promise<void> {
    if (this.#stream === process.stdout) return this.#check();
    this.#stream.end();
    await once(this.#stream, 'finish').catch(() => undefined);
    this.#check();
  }

  #check(): void {
    if (!this.#error) return;
    if (this.#error.code === 'EPIPE') throw new OutputClosed();
    throw new TickstreamError(
      ErrorCode.INTERNAL,
      `cannot write ${this.#name} (${this.#error.message}): check the path and the free space`,
    );
  }
}

/** Share of the journal's records read so far, from each partition's offsets. */
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

  /** Offsets read, counted to the high watermark of the start (markers take offsets too). */
  advance(partition: number, offset: number): void {
    this.#read.set(partition, offset + 1);
  }

  seconds(): number {
    return (performance.now() - this.#start) / 1000;
  }

  /** A line at most twice a second: share read, ticks written and the time left. */
  line(ticks: number): string | null {
    const now = performance.now();
    if (now - this.#shownAt < 500 || this.#total === 0) return null;
    this.#shownAt = now;
    let done = 0;
    for (const [p, next] of this.#read)
      done += Math.min(next, this.#high.get(p) ?? 0) - (this.#low.get(p) ?? 0);
    const share = done / this.#total;
    const eta = share > 0 ? (this.seconds() * (1 - share)) / share : Number.NaN;
    return `replay: ${(share * 100).toFixed(1)}% of the journal read, ${ticks} ticks written, ETA ${Number.isFinite(eta) ? `${eta.toFixed(0)} s` : '?'}`;
  }
}

export async function replayMain(argv: string[]): Promise<number> {
  const parsed = parseCommand(REPLAY_COMMAND, argv);
  if (!parsed) return 0;
  const range = rangeOf(parsed.flags);
  const format = parsed.flags.format as Format;
  const config = loadConfig({
    ...(parsed.configFile ? { file: parsed.configFile } : {}),
    flags: parsed.config,
  });
  const path = parsed.flags.out;
  let stream: Writable = process.stdout;
  if (path !== undefined) {
    // Opened before the broker is asked, so a bad path fails at once and names the flag.
    let fd: number;
    try {
      fd = openSync(path, 'w');
    } catch (err) {
      throw usage(`--out cannot open '${path}' (${(err as Error).message})`);
    }
    stream = createWriteStream('', { fd });
  }
  const output = new Output(stream, path ?? 'stdout');
  const tty = process.stderr.isTTY === true;
  const progress = new Progress();
  const written = new Map<string, number>();
  let ticks = 0;
  let closed = false;
  try {
    if (format === 'csv') await output.write(`${COLUMNS.join(',')}\n`);
    await readJournal({
      brokers: config.kafkaBrokers,
      security: kafkaSecurityOf(config),
      topic: config.ticksTopic,
      onPartitions: (partitions) => progress.partitions(partitions),
      onMessages: async (messages) => {
        for (const m of messages) {
          progress.advance(m.partition, m.offset);
          if (range.sources && !range.sources.has(m.key)) continue;
          if (outsideSeqRange(m.headers, range)) continue;
          const batch = decodeTickRecord(m.value);
          const part = formatBatch(batch, range, format);
          if (part.ticks === 0) continue;
          // One write per record: a fetch of 500 records of thousands of ticks each would
          // otherwise build a string of hundreds of MB before the first byte leaves.
          await output.write(part.text);
          ticks += part.ticks;
          written.set(batch.source, (written.get(batch.source) ?? 0) + part.ticks);
        }
        const line = tty ? progress.line(ticks) : null;
        if (line) process.stderr.write(`\r\x1b[K${line}`);
      },
    });
    await output.close();
  } catch (err) {
    if (!(err instanceof OutputClosed)) throw err;
    closed = true;
  } finally {
    if (tty) process.stderr.write('\r\x1b[K');
  }
  const names = [...written.keys()];
  const shown = names.length > 10 ? `${names.slice(0, 10).join(', ')}, …` : names.join(', ');
  process.stderr.write(
    `replay: ${ticks} ticks written from ${names.length} source(s)${names.length ? ` (${shown})` : ''} in ${progress.seconds().toFixed(1)} s to ${path ?? 'stdout'}${closed ? ' (the reader closed it early)' : ''}\n`,
  );
  return 0;
}
