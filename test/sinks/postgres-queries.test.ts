// The queries docs/postgres.md documents, read from that file, planned by the real Postgres
// against the project's own migrations: each must use the index the page names and only the
// partitions its time bounds allow. Enough rows and ANALYZE let the planner choose honestly
// (sequential scans stay enabled).
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate, quoteIdent } from '../../sinks/postgres/migrate.js';
import { isolatedNames, POSTGRES_DB, repoRoot } from '../helpers/procs.js';

/** `<!-- query NAME -->` followed by a ```sql block, in document order. */
function documentedQueries(): Map<string, string> {
  const doc = readFileSync(`${repoRoot}docs/postgres.md`, 'utf8');
  const out = new Map<string, string>();
  for (const m of doc.matchAll(/<!-- query ([a-z0-9-]+) -->\n```sql\n([\s\S]*?)```/g))
    out.set(m[1] as string, (m[2] as string).trim());
  return out;
}

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  Plans?: PlanNode[];
}

interface Scan {
  type: string;
  relation: string;
  index: string;
}

/** Every read of a table in a plan, with the index it goes through ('' for none). */
function scans(node: PlanNode, out: Scan[] = []): Scan[] {
  const relation = node['Relation Name'];
  if (relation) {
    // A bitmap heap scan names its table; the bitmap index scans under it name the index.
    const index =
      node['Index Name'] ??
      (node.Plans ?? []).map((c) => c['Index Name']).find((i): i is string => i !== undefined) ??
      '';
    out.push({ type: node['Node Type'], relation, index });
    return out;
  }
  for (const child of node.Plans ?? []) scans(child, out);
  return out;
}

/** What each documented query is run with, and what its plan must read. */
const expectations: Record<string, { params: unknown[]; relations: RegExp; index: RegExp; count?: number }> =
  {
    // One hour of one day: that day's partition only, through its (symbol, time) index.
    'ticks-of-symbol': {
      params: ['SYM07', '2024-03-05T10:00:00Z', '2024-03-05T11:00:00Z'],
      relations: /^ticks_20240305$/,
      index: /^ticks_20240305_symbol_time_idx$/,
      count: 1,
    },
    // Backwards through the (symbol, time) index of each partition, newest first.
    'latest-tick': {
      params: ['SYM07'],
      relations: /^ticks_2024030[456]$/,
      index: /^ticks_2024030[456]_symbol_time_idx$/,
    },
    // No time bound: every partition, each through its BRIN index on seq (migration 005).
    'ticks-by-seq': {
      params: ['src1', 50_000, 51_000],
      relations: /^ticks_2024030[456]$/,
      index: /^ticks_2024030[456]_seq_idx$/,
      count: 3,
    },
    'bars-of-day': {
      params: ['src1', 'SYM07', '2024-03-05T00:00:00Z'],
      relations: /^bars_1m$/,
      index: /^bars_1m_pkey$/,
      count: 1,
    },
    // Every source's bars of a symbol (the history API without `source`): the (symbol, start) index.
    'bars-of-symbol': {
      params: ['SYM07', '2024-03-05T10:00:00Z', '2024-03-05T11:00:00Z'],
      relations: /^bars_1m$/,
      index: /^bars_1m_symbol_start$/,
      count: 1,
    },
  };

describe('docs/postgres.md queries use their indexes (EXPLAIN on the real Postgres)', () => {
  const { schema } = isolatedNames('pgq');
  const db = new pg.Client({ connectionString: POSTGRES_DB });

  beforeAll(async () => {
    await db.connect();
    await migrate(db, schema);
    // Three UTC days, 20 symbols over two sources, a tick every 15 s per symbol: 345 600 ticks
    // and 86 400 bars, so that one symbol-hour is a tiny fraction of a partition.
    await db.query(`select tickstream_ensure_partitions('2024-03-04', '2024-03-06')`);
    await db.query(`
      insert into ticks (source, seq, symbol, time, server_time_msc, bid, ask, last, volume, volume_real, flags)
      select 'src' || (s % 2), i * 10 + s / 2 + 1, 'SYM' || lpad(s::text, 2, '0'), t,
             (extract(epoch from t) * 1000)::bigint + 7200000, 1 + s / 10.0, 1.0001 + s / 10.0, 0, 0, 0, 6
      from generate_series(0, 17279) i, generate_series(0, 19) s,
           lateral (select timestamptz '2024-03-04 00:00Z' + i * interval '15 s' + s * interval '1 ms' as t) x`);
    await db.query(`
      insert into bars_1m (source, symbol, start, open, high, low, close, tick_count, spread_min, spread_max,
                           spread_avg, last_open, last_high, last_low, last_close, volume, last_seq)
      select 'src' || (s % 2), 'SYM' || lpad(s::text, 2, '0'), timestamptz '2024-03-04 00:00Z' + m * interval '1 min',
             1, 1, 1, 1, 4, 1e-4, 1e-4, 1e-4, null, null, null, null, 0, m * 40 + s / 2 + 1
      from generate_series(0, 4319) m, generate_series(0, 19) s`);
    await db.query('analyze ticks');
    await db.query('analyze bars_1m');
    // What a driver's parameterised query gets: a plan for these parameter values.
    await db.query('set plan_cache_mode = force_custom_plan');
  }, 120_000);

  afterAll(async () => {
    await db.query(`drop schema if exists ${quoteIdent(schema)} cascade`);
    await db.end();
  });

  it('every documented query has a plan expectation here, and every expectation a query there', () => {
    expect([...documentedQueries().keys()].sort()).toEqual(Object.keys(expectations).sort());
  });

  for (const [name, want] of Object.entries(expectations)) {
    it(`${name}: only ${want.index.source} on ${want.relations.source}, no sequential scan`, async () => {
      const sql = documentedQueries().get(name) as string;
      await db.query(`prepare q as ${sql}`);
      try {
        const args = want.params.map((p) => db.escapeLiteral(String(p))).join(', ');
        const { rows } = await db.query(`explain (format json) execute q(${args})`);
        const plan = (rows[0]['QUERY PLAN'] as { Plan: PlanNode }[])[0]?.Plan as PlanNode;
        const read = scans(plan);
        const shown = JSON.stringify(read);
        expect(read.length, shown).toBeGreaterThan(0);
        if (want.count !== undefined) expect(read.length, shown).toBe(want.count);
        for (const scan of read) {
          expect(scan.type, shown).not.toBe('Seq Scan');
          expect(scan.relation, shown).toMatch(want.relations);
          expect(scan.index, shown).toMatch(want.index);
        }
        // The query runs, and answers from the loaded rows.
        expect((await db.query(`execute q(${args})`)).rows.length).toBeGreaterThan(0);
      } finally {
        await db.query('deallocate q');
      }
    });
  }
});
