// Readers that share no code with tickstream's sinks or file readers: a plain librdkafka
// consumer decoding records with the schema's generated classes, and small parsers of the tick
// files written from their format descriptions (../shared/data/README.md). Integration and
// fault tests check the pipeline against these.
import { readFileSync } from 'node:fs';
import RdKafka from '@confluentinc/kafka-javascript';
import { ByteBuffer } from 'flatbuffers';
import { TickRecord } from '../../codecs/generated/tick_batch_generated.js';
import { KAFKA_BROKERS } from './procs.js';

export interface JournalTick {
  source: string;
  seq: number;
  symbol: string;
  utcMsc: number;
  serverMsc: number;
  bid: number;
  ask: number;
  last: number;
  volume: number;
  volumeReal: number;
  flags: number;
  partition: number;
  offset: number;
}

/**
 * Every committed tick in `topic` (read_committed, all partitions from the start). Stops when
 * `expected` ticks were read (or at `timeoutMs`), or, without `expected`, after `idleMs` with
 * nothing new.
 */
export async function readJournalTicks(
  topic: string,
  options: { expected?: number; idleMs?: number; timeoutMs?: number; brokers?: string } = {},
): Promise<JournalTick[]> {
  const consumer = new RdKafka.KafkaConsumer(
    {
      'metadata.broker.list': options.brokers ?? KAFKA_BROKERS,
      'group.id': `independent-${process.pid}-${Date.now()}`,
      'enable.auto.commit': false,
      'isolation.level': 'read_committed',
    },
    {},
  );
  await new Promise<void>((resolve, reject) =>
    consumer.connect({ timeout: 10_000 }, (err) => (err ? reject(err) : resolve())),
  );
  try {
    const meta = await new Promise<RdKafka.Metadata>((resolve, reject) =>
      consumer.getMetadata({ topic, timeout: 10_000 }, (err, m) => (err ? reject(err) : resolve(m))),
    );
    const partitions = meta.topics.find((t) => t.name === topic)?.partitions ?? [];
    consumer.assign(partitions.map((p) => ({ topic, partition: p.id, offset: 0 })));
    const out: JournalTick[] = [];
    const idleMs = options.idleMs ?? 3000;
    const end = Date.now() + (options.timeoutMs ?? 60_000);
    let lastNew = Date.now();
    // With an expected count, only reaching it or the deadline ends the read: a broker slowed by a
    // loaded machine (or a transaction still open after a restart) can be idle for seconds.
    const idleEnds = options.expected === undefined;
    while (Date.now() < end && (!idleEnds || Date.now() - lastNew < idleMs)) {
      if (options.expected !== undefined && out.length >= options.expected) break;
      const batch = await new Promise<RdKafka.Message[]>((resolve) =>
        consumer.consume(100, (err, m) => resolve(err ? [] : m)),
      );
      if (batch.length) lastNew = Date.now();
      for (const m of batch) if (m.value) out.push(...decodeRecord(m.value, m.partition, m.offset));
    }
    return out;
  } finally {
    await new Promise((resolve) => consumer.disconnect(resolve));
  }
}

function decodeRecord(value: Buffer, partition: number, offset: number): JournalTick[] {
  const r = TickRecord.getRootAsTickRecord(new ByteBuffer(new Uint8Array(value)));
  const source = r.source() ?? '';
  const out: JournalTick[] = [];
  for (let i = 0; i < r.seqLength(); i++) {
    out.push({
      source,
      seq: Number(r.seq(i)),
      symbol: r.symbols(r.symbolIndex(i) ?? 0),
      utcMsc: Number(r.utcMsc(i)),
      serverMsc: Number(r.serverTimeMsc(i)),
      bid: r.bid(i) ?? Number.NaN,
      ask: r.ask(i) ?? Number.NaN,
      last: r.last(i) ?? Number.NaN,
      volume: Number(r.volume(i)),
      volumeReal: r.volumeReal(i) ?? Number.NaN,
      flags: r.flags(i) ?? 0,
      partition,
      offset,
    });
  }
  return out;
}

export interface FileTick {
  utcMsc: number;
  bid: number;
  ask: number;
  last: number;
  volume: number;
  flags: number;
}

/** An MT5 tick export (UTF-8 or UTF-16LE with BOM), server times at a fixed UTC offset. */
export function parseMt5ExportFile(path: string, serverUtcOffsetHours: number): FileTick[] {
  const raw = readFileSync(path);
  const text =
    raw[0] === 0xff && raw[1] === 0xfe
      ? raw.subarray(2).toString('utf16le')
      : raw.toString('utf8').replace(/^\uFEFF/, '');
  const out: FileTick[] = [];
  let bid = 0;
  let ask = 0;
  let last = 0;
  let volume = 0;
  for (const line of text.split('\r\n').slice(1)) {
    if (!line) continue;
    const [date, time, b, a, l, v, f] = line.split('\t') as string[];
    const [y, mo, d] = (date as string).split('.').map(Number) as [number, number, number];
    const [hh, mm, ss] = (time as string).split(':') as [string, string, string];
    const serverMs = Date.UTC(y, mo - 1, d, Number(hh), Number(mm), 0) + Math.round(Number(ss) * 1000);
    if (b) bid = Number(b);
    if (a) ask = Number(a);
    if (l) last = Number(l);
    if (v) volume = Number(v);
    out.push({
      utcMsc: serverMs - serverUtcOffsetHours * 3_600_000,
      bid,
      ask,
      last,
      volume,
      flags: Number(f),
    });
  }
  return out;
}

/** A Dukascopy CSV: timestamp (UTC ms), askPrice, bidPrice, askVolume, bidVolume. */
export function parseDukascopyFile(path: string): FileTick[] {
  const lines = readFileSync(path, 'utf8').trim().split(/\r?\n/).slice(1);
  return lines.map((line) => {
    const [t, ask, bid] = line.split(',').map(Number) as [number, number, number];
    return { utcMsc: t, bid, ask, last: 0, volume: 0, flags: -1 };
  });
}

export interface IndependentBar {
  start: number;
  open: number;
  high: number;
  low: number;
  close: number;
  count: number;
}

/** Bid OHLC and tick count per UTC minute, minutes without ticks absent. */
export function minuteBars(ticks: readonly FileTick[]): IndependentBar[] {
  const bars = new Map<number, IndependentBar>();
  for (const t of ticks) {
    const start = Math.floor(t.utcMsc / 60_000) * 60_000;
    const b = bars.get(start);
    if (!b) bars.set(start, { start, open: t.bid, high: t.bid, low: t.bid, close: t.bid, count: 1 });
    else {
      b.high = Math.max(b.high, t.bid);
      b.low = Math.min(b.low, t.bid);
      b.close = t.bid;
      b.count++;
    }
  }
  return [...bars.values()].sort((a, b) => a.start - b.start);
}
