import { existsSync, readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ErrorCode, type TickstreamError } from '../../codecs/errors.js';
import { detectTickFileFormat, parseTickFile } from '../../codecs/tick-file.js';
import { dataDir } from '../helpers/procs.js';

const data = dataDir;
const haveData =
  existsSync(`${data}EURUSD_mt5_export_derived_from_histdata.csv`) &&
  existsSync(`${data}histdata_EURUSD_T_20200101_nautilus.csv`);
if (!haveData) console.warn(`SKIPPED golden test: ../shared/data tick files not found under ${data}`);
const utf16 = (text: string) => Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, 'utf16le')]);
const codeOf = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    return `${(err as TickstreamError).code}: ${(err as Error).message}`;
  }
  return 'no error';
};

describe.skipIf(!haveData)('MT5 export golden test against the HistData reference (../shared/data)', () => {
  // The reference is read with a few lines of its own, not with our reader.
  // describe.skipIf still runs this body: read nothing when the files are absent.
  const reference = (haveData ? readFileSync(`${data}histdata_EURUSD_T_20200101_nautilus.csv`, 'utf8') : '')
    .trim()
    .split('\n')
    .map((line) => {
      const [stamp, bid, ask] = line.split(',');
      const s = stamp as string;
      const est = Date.UTC(
        +s.slice(0, 4),
        +s.slice(4, 6) - 1,
        +s.slice(6, 8),
        +s.slice(9, 11),
        +s.slice(11, 13),
        +s.slice(13, 15),
        +s.slice(15, 18),
      );
      return { utc: est + 5 * 3_600_000, bid: Number(bid), ask: Number(ask) };
    });
  // MT5 leaves out quotes where neither side changed; flags say which side did.
  const expected: { utc: number; bid: number; ask: number; flags: number }[] = [];
  reference.forEach((r, i) => {
    const prev = reference[i - 1];
    const flags = prev ? (r.bid !== prev.bid ? 2 : 0) | (r.ask !== prev.ask ? 4 : 0) : 6;
    if (flags) expected.push({ ...r, flags });
  });
  const exportBytes = haveData
    ? readFileSync(`${data}EURUSD_mt5_export_derived_from_histdata.csv`)
    : Buffer.alloc(0);

  function check(bytes: Uint8Array) {
    const f = parseTickFile(bytes);
    expect(f.format).toBe('mt5');
    expect(f.timeBasis).toBe('server');
    expect(f.length).toBe(expected.length);
    for (let i = 0; i < f.length; i++) {
      const e = expected[i] as (typeof expected)[number];
      const got = {
        utc: (f.timeMsc[i] as number) - 2 * 3_600_000,
        bid: f.bid[i],
        ask: f.ask[i],
        flags: f.flags[i],
      };
      if (got.utc !== e.utc || got.bid !== e.bid || got.ask !== e.ask || got.flags !== e.flags) {
        expect({ row: i + 2, ...got }).toEqual({ row: i + 2, ...e });
      }
    }
  }

  it('UTF-8 export: every tick has the reference UTC time (server UTC+2), prices and flags', () =>
    check(exportBytes));
  it('the same export as UTF-16LE with BOM reads identically', () =>
    check(utf16(exportBytes.toString('utf8'))));
  it('the other files are detected and read', () => {
    expect(parseTickFile(readFileSync(`${data}histdata_EURUSD_T_20200101_nautilus.csv`)).length).toBe(
      reference.length,
    );
    const duka = parseTickFile(readFileSync(`${data}dukascopy_BTCUSD_ticks_20230220T12_14_utc.csv`));
    expect([duka.format, duka.length, duka.timeMsc[0], duka.bid[0], duka.ask[0]]).toEqual([
      'dukascopy',
      14716,
      1676894400084,
      24849.4,
      24921.5,
    ]);
    const truefx = parseTickFile(readFileSync(`${data}truefx_USDJPY_ticks_20130101_nautilus.csv`));
    expect([truefx.format, truefx.length, truefx.timeMsc[0], truefx.bid[0]]).toEqual([
      'truefx',
      1000,
      Date.UTC(2013, 0, 1, 22, 0, 0, 295),
      86.655,
    ]);
  });
});

describe('MT5 export reader', () => {
  const header = '<DATE>\t<TIME>\t<BID>\t<ASK>\t<LAST>\t<VOLUME>\t<FLAGS>';
  it('forward-fills empty fields and keeps unknown flag bits; exchange symbols with trades', () => {
    const text = [
      header,
      '2024.03.01\t10:00:00.001\t100.5\t100.7\t\t\t6',
      '2024.03.01\t10:00:00.001\t\t\t100.6\t0.25\t1080',
      '2024.03.01\t10:00:01\t100.4\t\t\t\t98',
    ].join('\r\n');
    const f = parseTickFile(Buffer.from(text));
    expect(f.length).toBe(3);
    expect([...f.bid]).toEqual([100.5, 100.5, 100.4]);
    expect([...f.ask]).toEqual([100.7, 100.7, 100.7]);
    expect([...f.last]).toEqual([0, 100.6, 100.6]);
    expect([...f.volumeReal]).toEqual([0, 0.25, 0.25]);
    expect([...f.flags]).toEqual([6, 1080, 98]);
    expect(f.timeMsc[2]).toBe(Date.UTC(2024, 2, 1, 10, 0, 1));
  });
  it('round-trips arbitrary ticks written as an export, in UTF-8 and UTF-16LE', () => {
    const row = fc.record({
      t: fc.integer({ min: 0, max: 4e12 }),
      bid: fc.integer({ min: 0, max: 1e7 }),
      ask: fc.integer({ min: 0, max: 1e7 }),
      flags: fc.nat(2 ** 32 - 1),
    });
    fc.assert(
      fc.property(fc.array(row, { minLength: 1, maxLength: 30 }), (rows) => {
        const lines = rows.map((r) => {
          const d = new Date(r.t).toISOString();
          return `${d.slice(0, 10).replaceAll('-', '.')}\t${d.slice(11, 23)}\t${r.bid / 1e5}\t${r.ask / 1e5}\t\t\t${r.flags}`;
        });
        const text = [header, ...lines].join('\r\n');
        for (const bytes of [Buffer.from(text), utf16(text)]) {
          const f = parseTickFile(bytes);
          expect(Array.from(f.timeMsc.subarray(0, f.length))).toEqual(rows.map((r) => r.t));
          expect(Array.from(f.bid.subarray(0, f.length))).toEqual(rows.map((r) => r.bid / 1e5));
          expect(Array.from(f.flags.subarray(0, f.length))).toEqual(rows.map((r) => r.flags));
        }
      }),
    );
  });
  it('bad input gets a named error that says what is wrong', () => {
    expect(codeOf(() => parseTickFile(Buffer.alloc(0)))).toMatch(/^ERR_FILE_EMPTY/);
    expect(codeOf(() => parseTickFile(Buffer.from(`${header}\r\n`)))).toMatch(/^ERR_FILE_EMPTY: .*no ticks/);
    expect(
      codeOf(() => parseTickFile(Buffer.from(`${header}\r\n2024.03.01\t10:00:00.001\tabc\t1\t\t\t6`))),
    ).toMatch(/^ERR_FILE_FORMAT: line 2: BID "abc"/);
    expect(codeOf(() => parseTickFile(Buffer.from(`${header}\r\n2024-03-01\t10:00\t1\t1\t\t\t6`)))).toMatch(
      /^ERR_FILE_FORMAT: line 2: date\/time/,
    );
    expect(codeOf(() => parseTickFile(Buffer.from(header, 'utf16le')))).toMatch(
      /^ERR_FILE_ENCODING: .*UTF-16 without a byte-order mark/,
    );
    expect(codeOf(() => detectTickFileFormat(Buffer.from('hello,world\n1,2\n')))).toMatch(
      /^ERR_FILE_FORMAT: unrecognised tick file/,
    );
    expect(ErrorCode.FILE_ENCODING).toBe('ERR_FILE_ENCODING');
  });
});
