// Ticks of a symbol in a UTC range [FROM, TO) from Postgres (docs/postgres.md, the query the
// index ticks_symbol_time serves), with node-postgres.
//   node dist/examples/ts/postgres.js SYMBOL FROM TO      (FROM, TO: ISO-8601, e.g. 2024-03-05T10:00Z)
// TICKSTREAM_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/tickstream),
// TICKSTREAM_POSTGRES_SCHEMA (default public).
import pg from 'pg';

const [symbol = 'EURUSD', from = '1970-01-01T00:00Z', to = '3000-01-01T00:00Z'] = process.argv.slice(2);
const db = new pg.Client({
  connectionString: process.env['TICKSTREAM_POSTGRES_URL'] ?? 'postgres://postgres@127.0.0.1:5432/tickstream',
});
await db.connect();
await db.query(
  `set search_path to ${pg.escapeIdentifier(process.env['TICKSTREAM_POSTGRES_SCHEMA'] ?? 'public')}`,
);
const { rows } = await db.query<{ source: string; seq: string; time: Date; bid: number; ask: number }>(
  `select source, seq, time, bid, ask
   from ticks
   where symbol = $1 and time >= $2 and time < $3
   order by time, source, seq`,
  [symbol, from, to],
);
for (const r of rows) console.log(r.source, Number(r.seq), symbol, r.time.toISOString(), r.bid, r.ask);
await db.end();
