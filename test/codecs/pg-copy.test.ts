// Binary COPY bytes from our encoder go into the real Postgres and come back equal.
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CopyEncoder } from '../../codecs/pg-copy.js';
import { allocTickBatch } from '../../codecs/tick-batch.js';

const schema = `t_copy_${randomUUID().replaceAll('-', '').slice(0, 10)}`;
const client = new pg.Client({ connectionString: 'postgres://postgres@127.0.0.1:5432/postgres' });

beforeAll(async () => {
  await client.connect();
  await client.query(`create schema ${schema}`);
  await client.query(
    `create table ${schema}.ticks (source text, seq bigint, symbol text, time timestamptz, server_time_msc bigint, bid float8, ask float8, last float8, volume bigint, volume_real float8, flags bigint)`,
  );
  await client.query(
    `create table ${schema}.bars (source text, symbol text, start timestamptz, open float8, high float8, low float8, close float8, tick_count integer, spread_min float8, spread_max float8, spread_avg float8, last_open float8, last_high float8, last_low float8, last_close float8, volume float8, last_seq bigint)`,
  );
});
afterAll(async () => {
  await client.query(`drop schema ${schema} cascade`);
  await client.end();
});

async function copy(table: string, chunks: Buffer[]) {
  const stream = client.query(copyFrom(`copy ${schema}.${table} from stdin (format binary)`));
  for (const c of chunks) stream.write(c);
  stream.end();
  await once(stream, 'finish');
}

describe('binary COPY encoder against the real Postgres', () => {
  it('tick rows come back equal, including huge seqs, negative times, every flag bit and non-ASCII names', async () => {
    const b = allocTickBatch('mt5-ΔΣ', ['EURUSD', 'Si-3.24'], 3);
    const rows = [
      [2 ** 53 - 1, 0, Date.UTC(2024, 0, 1, 0, 0, 0, 65), 1.1, 1.2, 0, 0, 0, 0xffffffff],
      [2, 1, -86_400_000 + 7, 100, 101, 100.5, 12, 12.5, 1030],
      [3, 0, Date.UTC(2099, 11, 31, 23, 59, 59, 999), 0, 0, 0, 2 ** 40, 0.001, 0],
    ];
    rows.forEach(([seq, sym, t, bid, ask, last, vol, vr, flags], i) => {
      b.seq[i] = seq as number;
      b.symbolIndex[i] = sym as number;
      b.utcMsc[i] = t as number;
      b.serverTimeMsc[i] = (t as number) + 7_200_000;
      b.bid[i] = bid as number;
      b.ask[i] = ask as number;
      b.last[i] = last as number;
      b.volume[i] = vol as number;
      b.volumeReal[i] = vr as number;
      b.flags[i] = flags as number;
    });
    b.length = 3;
    const enc = new CopyEncoder();
    // Each encode returns a view of one reused buffer: copy before the next call.
    const chunks = [
      enc.header(),
      Buffer.from(enc.ticks(b, 0, 2)),
      Buffer.from(enc.ticks(b, 2, 3)),
      enc.trailer(),
    ];
    await copy('ticks', chunks);
    const { rows: got } = await client.query(
      `select source, seq::text, symbol, (extract(epoch from time) * 1000)::float8 as t, server_time_msc::text, bid, ask, last, volume::text, volume_real, flags::text from ${schema}.ticks order by seq`,
    );
    expect(
      got.map((r) => [
        r.source,
        Number(r.seq),
        r.symbol,
        Math.round(r.t),
        Number(r.server_time_msc),
        r.bid,
        r.ask,
        r.last,
        Number(r.volume),
        r.volume_real,
        Number(r.flags),
      ]),
    ).toEqual(
      [1, 2, 0].map((i) => [
        b.source,
        b.seq[i],
        b.symbols[b.symbolIndex[i] as number],
        b.utcMsc[i],
        b.serverTimeMsc[i],
        b.bid[i],
        b.ask[i],
        b.last[i],
        b.volume[i],
        b.volumeReal[i],
        b.flags[i],
      ]),
    );
  });

  it('a batch larger than the encoder buffer (every row at its widest) goes in whole', async () => {
    const n = 5000;
    const long = 'S'.repeat(64);
    const b = allocTickBatch('x'.repeat(64), [long], n);
    for (let i = 0; i < n; i++) {
      b.seq[i] = 1_000_000 + i;
      b.utcMsc[i] = 1_700_000_000_000 + i;
      b.serverTimeMsc[i] = 1_700_007_200_000 + i;
      b.bid[i] = 1 + i / 1e5;
      b.ask[i] = 1.0001 + i / 1e5;
      b.flags[i] = 6;
    }
    b.length = n;
    await client.query(`truncate ${schema}.ticks`);
    const enc = new CopyEncoder();
    await copy('ticks', [enc.header(), Buffer.from(enc.ticks(b)), enc.trailer()]);
    const { rows } = await client.query(
      `select count(*)::int as n, min(seq)::text as lo, max(seq)::text as hi, sum(bid) as s from ${schema}.ticks`,
    );
    expect(rows[0]).toEqual({ n, lo: '1000000', hi: String(1_000_000 + n - 1), s: expect.any(Number) });
    expect(rows[0].s).toBeCloseTo(
      Array.from(b.bid.subarray(0, n)).reduce((a, v) => a + v, 0),
      6,
    );
  });

  it('bar rows: NaN last prices become NULL, mean spread computed', async () => {
    const enc = new CopyEncoder();
    const bar = {
      source: 's',
      symbol: 'X',
      startMs: 1_700_000_040_000,
      open: 1,
      high: 2,
      low: 0.5,
      close: 1.5,
      tickCount: 4,
      spreadMin: 0.1,
      spreadMax: 0.3,
      spreadSum: 0.8,
      lastOpen: Number.NaN,
      lastHigh: Number.NaN,
      lastLow: Number.NaN,
      lastClose: Number.NaN,
      volume: 0,
      lastSeq: 10,
    };
    await copy('bars', [
      enc.header(),
      enc.bars([
        bar,
        { ...bar, symbol: 'Y', lastOpen: 3, lastHigh: 4, lastLow: 2, lastClose: 3.5, volume: 1.5 },
      ]),
      enc.trailer(),
    ]);
    const { rows } = await client.query(
      `select symbol, extract(epoch from start) * 1000 as s, tick_count, spread_avg, last_open, last_close, volume from ${schema}.bars order by symbol`,
    );
    expect(
      rows.map((r) => [
        r.symbol,
        Number(r.s),
        r.tick_count,
        r.spread_avg,
        r.last_open,
        r.last_close,
        r.volume,
      ]),
    ).toEqual([
      ['X', bar.startMs, 4, 0.2, null, null, 0],
      ['Y', bar.startMs, 4, 0.2, 3, 3.5, 1.5],
    ]);
  });
});
