/**
 * Tick files a user feeds to `tickstream sim`: MetaTrader 5 tick exports and the public
 * Dukascopy, HistData and TrueFX CSV layouts (../shared/data/README.md).
 *
 * MT5 export ("Symbols → Ticks → Export"): tab-separated, CRLF or LF, UTF-8 (with or without
 * BOM) or UTF-16LE/BE with BOM; header `<DATE> <TIME> <BID> <ASK> <LAST> <VOLUME> <FLAGS>`
 * (columns found by name; others ignored); DATE `YYYY.MM.DD`, TIME `HH:MM:SS[.mmm]`, both broker
 * server time; an empty BID/ASK/LAST/VOLUME means unchanged since the previous tick (0 before
 * the first value); FLAGS kept bit-exact. VOLUME may be fractional on exchange symbols: it is
 * volume_real exactly, and volume is its rounded integer.
 * A UTF-16 file without a byte-order mark cannot be told apart reliably from binary junk, so it
 * is refused with ERR_FILE_ENCODING and the fix.
 *
 * CSVs (times converted to UTC here): Dukascopy `timestamp,askPrice,bidPrice,askVolume,bidVolume`
 * (epoch ms, UTC); HistData `YYYYMMDD HHMMSSmmm,bid,ask,volume` (fixed EST, UTC−5, no DST);
 * TrueFX `timestamp,bid,ask` (ISO with offset). They have no MT5 flags: each tick gets BID (2)
 * if its bid differs from the previous tick's, ASK (4) likewise, both on the first tick — so a
 * row where neither side changed keeps flags 0 (it is kept: every row of the file is a tick).
 */
import { ErrorCode, TickstreamError } from './errors.js';

export type TickFileFormat = 'mt5' | 'dukascopy' | 'histdata' | 'truefx';
export const TICK_FILE_FORMATS: readonly TickFileFormat[] = ['mt5', 'dukascopy', 'histdata', 'truefx'];

export interface TickFile {
  format: TickFileFormat;
  /** 'server': broker server time (MT5 export); 'utc': already UTC. */
  timeBasis: 'server' | 'utc';
  length: number;
  timeMsc: Float64Array;
  bid: Float64Array;
  ask: Float64Array;
  last: Float64Array;
  volume: Float64Array;
  volumeReal: Float64Array;
  flags: Uint32Array;
}

const fail = (
  code: typeof ErrorCode.FILE_FORMAT | typeof ErrorCode.FILE_EMPTY | typeof ErrorCode.FILE_ENCODING,
  message: string,
) => new TickstreamError(code, message);

/** Text of the file, by its byte-order mark; UTF-16 without one is refused. */
export function decodeText(bytes: Uint8Array): string {
  if (bytes.length >= 2 && bytes[0] === 0xff && bytes[1] === 0xfe)
    return new TextDecoder('utf-16le').decode(bytes.subarray(2));
  if (bytes.length >= 2 && bytes[0] === 0xfe && bytes[1] === 0xff)
    return new TextDecoder('utf-16be').decode(bytes.subarray(2));
  const start = bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? 3 : 0;
  const probe = bytes.subarray(start, start + 64);
  let nuls = 0;
  for (const b of probe) if (b === 0) nuls++;
  if (probe.length >= 4 && nuls * 3 >= probe.length) {
    throw fail(
      ErrorCode.FILE_ENCODING,
      'the file looks like UTF-16 without a byte-order mark (every other byte is 0): re-export it from MT5 (which writes a BOM) or convert it to UTF-8',
    );
  }
  return new TextDecoder('utf-8', { fatal: false }).decode(bytes.subarray(start));
}

export function detectTickFileFormat(bytes: Uint8Array): TickFileFormat {
  const text = decodeText(bytes.subarray(0, 4096));
  const first = text.split(/\r?\n/, 1)[0]?.trim() ?? '';
  if (first === '') throw fail(ErrorCode.FILE_EMPTY, 'the file is empty');
  if (first.startsWith('<DATE>')) return 'mt5';
  if (/^timestamp,askPrice,bidPrice/i.test(first)) return 'dukascopy';
  if (/^timestamp,bid,ask/i.test(first)) return 'truefx';
  if (/^\d{8} \d{9},/.test(first)) return 'histdata';
  throw fail(
    ErrorCode.FILE_FORMAT,
    `unrecognised tick file: the first line is ${JSON.stringify(first.slice(0, 80))}; accepted are MT5 tick exports (header <DATE>\\t<TIME>\\t<BID>…), Dukascopy (timestamp,askPrice,bidPrice,…), HistData (YYYYMMDD HHMMSSmmm,bid,ask,vol) and TrueFX (timestamp,bid,ask) CSVs`,
  );
}

export function parseTickFile(bytes: Uint8Array, options: { format?: TickFileFormat } = {}): TickFile {
  const format = options.format ?? detectTickFileFormat(bytes);
  const lines = decodeText(bytes).split(/\r?\n/);
  while (lines.length && (lines[lines.length - 1] as string).trim() === '') lines.pop();
  if (lines.length === 0) throw fail(ErrorCode.FILE_EMPTY, 'the file is empty');
  switch (format) {
    case 'mt5':
      return parseMt5(lines);
    case 'dukascopy':
      return parseCsv(format, lines.slice(1), 2, (f) => [Number(f[0]), Number(f[2]), Number(f[1])]);
    case 'truefx':
      return parseCsv(format, lines.slice(1), 2, (f) => [
        Date.parse((f[0] as string).replace(' ', 'T')),
        Number(f[1]),
        Number(f[2]),
      ]);
    case 'histdata':
      return parseCsv(format, lines, 1, (f) => [histdataUtc(f[0] as string), Number(f[1]), Number(f[2])]);
  }
}

function alloc(format: TickFileFormat, timeBasis: TickFile['timeBasis'], n: number): TickFile {
  return {
    format,
    timeBasis,
    length: 0,
    timeMsc: new Float64Array(n),
    bid: new Float64Array(n),
    ask: new Float64Array(n),
    last: new Float64Array(n),
    volume: new Float64Array(n),
    volumeReal: new Float64Array(n),
    flags: new Uint32Array(n),
  };
}

/** `YYYY.MM.DD` + `HH:MM:SS[.mmm]` as ms on the server clock, NaN when malformed. */
const dayCache = new Map<string, number>();
function mt5Time(date: string, time: string): number {
  let day = dayCache.get(date);
  if (day === undefined) {
    const m = /^(\d{4})\.(\d{2})\.(\d{2})$/.exec(date);
    day = m ? Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])) : Number.NaN;
    if (dayCache.size > 10_000) dayCache.clear();
    dayCache.set(date, day);
  }
  const t = /^(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,3}))?$/.exec(time);
  if (!t) return Number.NaN;
  const ms = t[4] ? Number(t[4].padEnd(3, '0')) : 0;
  return day + ((Number(t[1]) * 60 + Number(t[2])) * 60 + Number(t[3])) * 1000 + ms;
}

function parseMt5(lines: string[]): TickFile {
  const header = (lines[0] as string).split('\t').map((h) => h.trim().toUpperCase());
  const col = (name: string) => header.indexOf(`<${name}>`);
  const [cDate, cTime, cBid, cAsk, cLast, cVol, cFlags] = [
    'DATE',
    'TIME',
    'BID',
    'ASK',
    'LAST',
    'VOLUME',
    'FLAGS',
  ].map(col) as number[];
  if ((cDate as number) < 0 || (cTime as number) < 0 || ((cBid as number) < 0 && (cLast as number) < 0)) {
    throw fail(
      ErrorCode.FILE_FORMAT,
      `line 1: an MT5 tick export header needs <DATE>, <TIME> and <BID>/<ASK> or <LAST>; found ${header.join(' ')}`,
    );
  }
  const n = lines.length - 1;
  if (n === 0) throw fail(ErrorCode.FILE_EMPTY, 'the MT5 export has a header but no ticks');
  const out = alloc('mt5', 'server', n);
  let bid = 0;
  let ask = 0;
  let last = 0;
  let vol = 0;
  let k = 0;
  const num = (fields: string[], c: number, prev: number, what: string, line: number): number => {
    if (c < 0) return prev;
    const s = fields[c]?.trim() ?? '';
    if (s === '') return prev;
    const v = Number(s);
    if (!Number.isFinite(v) || v < 0)
      throw fail(
        ErrorCode.FILE_FORMAT,
        `line ${line}: ${what} ${JSON.stringify(s)} is not a non-negative number`,
      );
    return v;
  };
  for (let i = 1; i <= n; i++) {
    const text = lines[i] as string;
    if (text.trim() === '') continue;
    const f = text.split('\t');
    const line = i + 1;
    const t = mt5Time(f[cDate as number]?.trim() ?? '', f[cTime as number]?.trim() ?? '');
    if (Number.isNaN(t)) {
      throw fail(
        ErrorCode.FILE_FORMAT,
        `line ${line}: date/time ${JSON.stringify(`${f[cDate as number]} ${f[cTime as number]}`)} is not YYYY.MM.DD HH:MM:SS.mmm`,
      );
    }
    bid = num(f, cBid as number, bid, 'BID', line);
    ask = num(f, cAsk as number, ask, 'ASK', line);
    last = num(f, cLast as number, last, 'LAST', line);
    vol = num(f, cVol as number, vol, 'VOLUME', line);
    let flags = 0;
    if ((cFlags as number) >= 0) {
      const s = f[cFlags as number]?.trim() ?? '';
      flags = Number(s);
      if (s === '' || !Number.isInteger(flags) || flags < 0 || flags > 0xffffffff) {
        throw fail(
          ErrorCode.FILE_FORMAT,
          `line ${line}: FLAGS ${JSON.stringify(s)} is not an unsigned 32-bit integer`,
        );
      }
    }
    out.timeMsc[k] = t;
    out.bid[k] = bid;
    out.ask[k] = ask;
    out.last[k] = last;
    out.volume[k] = Math.round(vol);
    out.volumeReal[k] = vol;
    out.flags[k] = flags;
    k++;
  }
  out.length = k;
  return out;
}

function histdataUtc(s: string): number {
  const m = /^(\d{4})(\d{2})(\d{2}) (\d{2})(\d{2})(\d{2})(\d{3})$/.exec(s.trim());
  if (!m) return Number.NaN;
  // HistData stamps fixed EST (UTC−5) all year.
  return (
    Date.UTC(
      Number(m[1]),
      Number(m[2]) - 1,
      Number(m[3]),
      Number(m[4]),
      Number(m[5]),
      Number(m[6]),
      Number(m[7]),
    ) +
    5 * 3_600_000
  );
}

function parseCsv(
  format: TickFileFormat,
  rows: string[],
  minCommas: number,
  read: (f: string[]) => [number, number, number],
): TickFile {
  const lineOffset = format === 'histdata' ? 1 : 2;
  const body = rows.filter((r) => r.trim() !== '');
  if (body.length === 0) throw fail(ErrorCode.FILE_EMPTY, `the ${format} file has no ticks`);
  const out = alloc(format, 'utc', body.length);
  let k = 0;
  for (let i = 0; i < rows.length; i++) {
    const text = rows[i] as string;
    if (text.trim() === '') continue;
    const f = text.split(',');
    const [t, bid, ask] = f.length > minCommas ? read(f) : [Number.NaN, 0, 0];
    if (!Number.isFinite(t) || !(bid >= 0) || !(ask >= 0) || !Number.isFinite(bid + ask)) {
      throw fail(
        ErrorCode.FILE_FORMAT,
        `line ${i + lineOffset}: ${JSON.stringify(text.slice(0, 80))} is not a valid ${format} tick row`,
      );
    }
    out.timeMsc[k] = t;
    out.bid[k] = bid;
    out.ask[k] = ask;
    out.flags[k] = k === 0 ? 6 : (bid !== out.bid[k - 1] ? 2 : 0) | (ask !== out.ask[k - 1] ? 4 : 0);
    k++;
  }
  out.length = k;
  return out;
}
