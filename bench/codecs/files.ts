/**
 * Tick-file parsing (`tickstream sim --file`): an MT5 "Symbols → Ticks → Export" in UTF-8 and
 * in UTF-16LE with a BOM (what the terminal often writes), and a Dukascopy CSV, all generated
 * in memory from synthetic ticks in the files' exact layouts so the bench needs no data
 * folder. When ../shared/data holds the real MT5 export, it is parsed too.
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { TickBatch } from '../../codecs/tick-batch.js';
import { parseTickFile, type TickFileFormat } from '../../codecs/tick-file.js';
import type { MicroBench } from '../types.js';
import { syntheticTicks } from './synthetic.js';

const ROWS = 10_000;
const root = new URL(import.meta.url.includes('/dist/') ? '../../../' : '../../', import.meta.url);
const realMt5Export = fileURLToPath(
  new URL('../shared/data/EURUSD_mt5_export_derived_from_histdata.csv', root),
);

/** Tab-separated, CRLF, both prices on every row and LAST/VOLUME empty, as MT5 writes forex. */
function mt5Export(t: TickBatch): string {
  const rows = ['<DATE>\t<TIME>\t<BID>\t<ASK>\t<LAST>\t<VOLUME>\t<FLAGS>'];
  for (let i = 0; i < t.length; i++) {
    // Server wall time held as if UTC: 2024-03-27T09:00:00.065Z → 2024.03.27, 09:00:00.065.
    const iso = new Date(t.serverTimeMsc[i] as number).toISOString();
    const date = iso.slice(0, 10).replaceAll('-', '.');
    const time = iso.slice(11, 23);
    rows.push(
      `${date}\t${time}\t${(t.bid[i] as number).toFixed(5)}\t${(t.ask[i] as number).toFixed(5)}\t\t\t${t.flags[i]}`,
    );
  }
  return `${rows.join('\r\n')}\r\n`;
}

/** `timestamp,askPrice,bidPrice,askVolume,bidVolume`, UTC epoch ms, shortest decimal prices. */
function dukascopyCsv(t: TickBatch): string {
  const rows = ['timestamp,askPrice,bidPrice,askVolume,bidVolume'];
  for (let i = 0; i < t.length; i++) {
    const volume = ((i % 7) + 1) * 0.25;
    rows.push(`${t.utcMsc[i]},${t.ask[i]},${t.bid[i]},${volume},${volume * 2}`);
  }
  return `${rows.join('\n')}\n`;
}

const parse = (bytes: Uint8Array, format: TickFileFormat, rows: number) => () => {
  const file = parseTickFile(bytes, { format });
  if (file.length !== rows) throw new Error(`parsed ${file.length} rows of ${rows}`);
  return file.length;
};

export async function benches(): Promise<MicroBench[]> {
  const ticks = syntheticTicks(ROWS);
  const mt5 = mt5Export(ticks);
  const list: MicroBench[] = [
    {
      name: `MT5 tick export parse (UTF-8, ${ROWS} rows)`,
      group: 'codecs',
      ticksPerOp: ROWS,
      fn: parse(Buffer.from(mt5, 'utf8'), 'mt5', ROWS),
    },
    {
      name: `MT5 tick export parse (UTF-16LE with BOM, ${ROWS} rows)`,
      group: 'codecs',
      ticksPerOp: ROWS,
      fn: parse(Buffer.from(`\ufeff${mt5}`, 'utf16le'), 'mt5', ROWS),
    },
    {
      name: `Dukascopy CSV parse (${ROWS} rows)`,
      group: 'codecs',
      ticksPerOp: ROWS,
      fn: parse(Buffer.from(dukascopyCsv(ticks), 'utf8'), 'dukascopy', ROWS),
    },
  ];
  if (existsSync(realMt5Export)) {
    let bytes = new Uint8Array(0);
    // The row count is known once the file is read: beforeAll sets it, before the runner uses it.
    const real: MicroBench = {
      name: 'MT5 tick export parse (../shared/data EURUSD export, real ticks)',
      group: 'codecs',
      ticksPerOp: 0,
      beforeAll: () => {
        bytes = readFileSync(realMt5Export);
        real.ticksPerOp = parseTickFile(bytes, { format: 'mt5' }).length;
      },
      fn: () => parseTickFile(bytes, { format: 'mt5' }).length,
    };
    list.push(real);
  }
  return list;
}
